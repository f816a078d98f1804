package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// statusWorker is what a script reads of one worker in `clusterinit status
// --json`.
type statusWorker struct {
	Slot           int     `json:"slot"`
	Pid            int     `json:"pid"`
	State          string  `json:"state"`
	RSSBytes       int64   `json:"rss_bytes"`
	HeapUsedBytes  int64   `json:"heap_used_bytes"`
	HeapLimitBytes int64   `json:"heap_limit_bytes"`
	ELU            float64 `json:"event_loop_utilization"`
	GCSeconds      float64 `json:"gc_seconds"`
	Requests       uint64  `json:"requests"`
}

// statusJSON runs `clusterinit status --json` and decodes its workers.
func statusJSON(t *testing.T, cli []string) []statusWorker {
	t.Helper()
	code, stdout, stderr := runCLI(t, cli, "status", "--json")
	if code != 0 {
		t.Fatalf("clusterinit status --json: exit %d, stderr %q", code, stderr)
	}
	var doc struct {
		Workers []statusWorker `json:"workers"`
	}
	if err := json.Unmarshal([]byte(stdout), &doc); err != nil {
		t.Fatalf("clusterinit status --json is not JSON: %v\n%s", err, stdout)
	}
	return doc.Workers
}

// `clusterinit status` against a running fleet of real node workers: one
// row per worker with its pid and state, the totals last, --json for
// scripts, and exit 1 with one clear line once nothing answers.
func TestStatusCommand(t *testing.T) {
	health := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	p, url := nodeFleet(t, 2, "http.js", "CLUSTERINIT_HEALTH_ADDR="+health, "CLUSTERINIT_SAMPLE_EVERY=200ms")
	cli := testEnv("CLUSTERINIT_HEALTH_ADDR=" + health)
	for range 10 {
		resp, err := http.Get(url + "/")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}

	// The preload's heartbeat carries the runtime figures.
	var workers []statusWorker
	waitFor(t, 10*time.Second, "both workers' heap figures and the 10 requests counted", func() bool {
		workers = statusJSON(t, cli)
		return len(workers) == 2 && workers[0].HeapLimitBytes > 0 && workers[1].HeapLimitBytes > 0 &&
			workers[0].Requests+workers[1].Requests == 10
	})
	for _, w := range workers {
		if w.HeapUsedBytes <= 0 || w.HeapUsedBytes > w.HeapLimitBytes || w.ELU < 0 || w.ELU > 1 || w.GCSeconds < 0 {
			t.Errorf("worker %d: heap %d of %d, event-loop utilization %v, GC %vs: not a live Node worker's figures",
				w.Slot, w.HeapUsedBytes, w.HeapLimitBytes, w.ELU, w.GCSeconds)
		}
	}
	fams := parseText(t, scrapeText(t, "http://"+health+"/metrics"))
	for _, name := range []string{"clusterinit_worker_event_loop_utilization", "clusterinit_worker_heap_used_bytes",
		"clusterinit_worker_heap_limit_bytes", "clusterinit_worker_gc_seconds_total", "clusterinit_worker_requests_total"} {
		if n := len(fams[name].GetMetric()); n != 2 {
			t.Errorf("/metrics %s: %d series, want one per slot", name, n)
		}
	}
	code, stdout, stderr := runCLI(t, cli, "status")
	if code != 0 {
		t.Fatalf("clusterinit status: exit %d, stderr %q", code, stderr)
	}
	lines := strings.Split(strings.TrimRight(stdout, "\n"), "\n")
	if !strings.Contains(lines[0], "2 of 2 workers ready") {
		t.Errorf("first line %q does not say how many workers are ready", lines[0])
	}
	header := -1
	for i, l := range lines {
		if strings.HasPrefix(strings.TrimSpace(l), "SLOT") {
			header = i
		}
	}
	if header < 0 || len(lines) != header+4 {
		t.Fatalf("want a header, 2 worker rows and a totals row:\n%s", stdout)
	}
	for i, w := range workers {
		row := strings.Fields(lines[header+1+i])
		if row[0] != strconv.Itoa(w.Slot) || row[1] != strconv.Itoa(w.Pid) || row[2] != w.State || w.State != "ready" {
			t.Errorf("row %q, want slot %d pid %d ready", lines[header+1+i], w.Slot, w.Pid)
		}
	}
	if total := strings.Fields(lines[len(lines)-1]); total[0] != "total" || total[1] != "2" || total[len(total)-1] != "10" {
		t.Errorf("last line %q, want the totals over 2 workers", lines[len(lines)-1])
	}

	if code, _, stderr := runCLI(t, cli, "status", "--yaml"); code != 2 || !strings.Contains(stderr, "--yaml") {
		t.Errorf("status --yaml: exit %d, stderr %q; want 2 naming the option", code, stderr)
	}
	p.signal(syscall.SIGTERM)
	if code := p.wait(10 * time.Second); code != 0 {
		t.Errorf("exit %d, want 0", code)
	}
	code, stdout, stderr = runCLI(t, cli, "status")
	if code != 1 || stdout != "" || !strings.Contains(stderr, "no supervisor answered") || strings.Count(stderr, "\n") != 1 {
		t.Errorf("status with nothing running: exit %d, stdout %q, stderr %q; want 1 and one line", code, stdout, stderr)
	}
}
