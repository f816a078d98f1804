package health

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/clusterinit/clusterinit/config"
	"github.com/clusterinit/clusterinit/supervisor"
)

// maxStatus bounds the /status document read: a few hundred bytes a worker.
const maxStatus = 8 << 20

// Status is `clusterinit status`: the running fleet as a table a person reads
// at a glance (in `docker exec` or ECS Exec), or with asJSON the /status
// document itself, for scripts. It returns 0 when the supervisor answered,
// and 1 with one line on stderr when nothing did.
func Status(addr config.Addr, asJSON bool, stdout, stderr io.Writer) int {
	a, err := call(addr, http.MethodGet, "/status", probeTimeout, maxStatus)
	if err != nil {
		fmt.Fprintf(stderr, "clusterinit status: no supervisor answered: %v\n", err)
		return 1
	}
	if a.code != http.StatusOK {
		fmt.Fprintf(stderr, "clusterinit status: %s answered %s %s\n", a.url, a.status, firstLine(a.body))
		return 1
	}
	var doc statusDoc
	if err := json.Unmarshal(a.body, &doc); err != nil {
		fmt.Fprintf(stderr, "clusterinit status: %s answered something other than clusterinit's status: %v\n", a.url, err)
		return 1
	}
	if asJSON {
		stdout.Write(a.body)
		return 0
	}
	writeStatusTable(stdout, &doc)
	return 0
}

// writeStatusTable renders the fleet: the supervisor and its listeners
// above, one line per worker, the totals last.
func writeStatusTable(w io.Writer, doc *statusDoc) {
	state := fmt.Sprintf("%d of %d workers ready", doc.Ready, doc.Desired)
	if doc.Stopping {
		state += ", stopping (" + doc.StopReason + ")"
	}
	fmt.Fprintf(w, "clusterinit %s: %s\n", doc.Version, state)
	if len(doc.Listeners) > 0 {
		fmt.Fprintf(w, "listening on %s\n", strings.Join(doc.Listeners, ", "))
	}
	fmt.Fprintf(w, "limits: cpu %s, memory %s\n",
		limitText(fmt.Sprintf("%g", doc.Limits.CPU), doc.Limits.CPU > 0, doc.Limits.CPUSource),
		limitText(mib(doc.Limits.MemoryBytes), doc.Limits.MemoryBytes > 0, doc.Limits.MemorySource))
	fmt.Fprintln(w)

	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "SLOT\tPID\tSTATE\tUPTIME\tRESTARTS\tCPU\tMEMORY\tHEAP USED/LIMIT\tLOOP DELAY\tLOOP UTIL\tREQUESTS\t")
	var total supervisor.WorkerStatus
	for _, ws := range sortedWorkers(doc.Workers) {
		fmt.Fprintf(tw, "%d\t%d\t%s\t%s\t%d\t%s\t%s\t%s\t%s\t%s\t%d\t\n",
			ws.Slot, ws.Pid, ws.State, uptime(time.Now(), ws.StartedAt), ws.Restarts,
			percent(ws.CPURatio), mib(ws.RSSBytes), heap(ws.HeapUsedBytes, ws.HeapLimitBytes),
			millis(ws.EventLoopDelaySec), percent(ws.EventLoopUtilization), ws.Requests)
		total.Restarts += ws.Restarts
		total.CPURatio += ws.CPURatio
		total.RSSBytes += ws.RSSBytes
		total.HeapUsedBytes += ws.HeapUsedBytes
		total.HeapLimitBytes += ws.HeapLimitBytes
		total.Requests += ws.Requests
	}
	fmt.Fprintf(tw, "total\t%d\t\t\t%d\t%s\t%s\t%s\t\t\t%d\t\n",
		len(doc.Workers), total.Restarts, percent(total.CPURatio), mib(total.RSSBytes),
		heap(total.HeapUsedBytes, total.HeapLimitBytes), total.Requests)
	tw.Flush()
}

// limitText is a detected limit and where it came from, or "none found".
func limitText(value string, found bool, source string) string {
	if !found {
		return "none found"
	}
	return value + " (" + source + ")"
}

// uptime is how long a worker has run, in the two largest units.
func uptime(now, started time.Time) string {
	if started.IsZero() || now.Before(started) {
		return "-"
	}
	d := now.Sub(started).Round(time.Second)
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm%02ds", int(d.Minutes()), int(d.Seconds())%60)
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh%02dm", int(d.Hours()), int(d.Minutes())%60)
	}
	return fmt.Sprintf("%dd%02dh", int(d.Hours())/24, int(d.Hours())%24)
}

func percent(ratio float64) string { return fmt.Sprintf("%.0f%%", 100*finite(ratio)) }

func millis(sec float64) string { return fmt.Sprintf("%.1fms", 1000*finite(sec)) }

func mib(b int64) string {
	if b <= 0 {
		return "-"
	}
	return fmt.Sprintf("%.0fMi", float64(b)/(1<<20))
}

// heap is "used/limit"; "-" for a worker that reports none (no preload).
func heap(used, limit int64) string {
	if used <= 0 && limit <= 0 {
		return "-"
	}
	return mib(used) + "/" + mib(limit)
}
