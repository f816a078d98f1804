package health

import (
	"bytes"
	"maps"
	"math"
	"runtime"
	"slices"
	"strconv"
	"strings"

	"github.com/clusterinit/clusterinit/supervisor"
)

// metricsContentType is the Prometheus text exposition format, version
// 0.0.4, which every Prometheus-compatible scraper accepts.
const metricsContentType = "text/plain; version=0.0.4; charset=utf-8"

// Metric types, as the # TYPE line spells them.
const (
	gauge   = "gauge"
	counter = "counter"
)

// The fixed label values (the reasons and results are the supervisor's:
// supervisor.ExitReasons and the like). They are functions because Go has no
// constant slices and the package keeps no variables; every value is always
// exposed, at 0 when nothing happened, so that rate() and alerts work from
// the first scrape.
func workerStates() []string { return []string{"starting", "ready", "draining"} }

// writeMetrics renders snap (nil reads as an empty fleet) and the
// process's own figures.
func (s *Server) writeMetrics(b *bytes.Buffer, snap *supervisor.Snapshot) {
	if snap == nil {
		snap = &supervisor.Snapshot{}
	}
	t := textWriter{b: b}

	states := make(map[string]uint64)
	for _, w := range snap.Workers {
		states[w.State]++
	}
	t.family("clusterinit_workers", gauge, "Worker processes by state: starting (not ready yet), ready, draining.")
	labelled(&t, "clusterinit_workers", "state", states, workerStates())

	t.family("clusterinit_workers_desired", gauge, "Worker slots the supervisor keeps filled.")
	t.value("clusterinit_workers_desired", float64(snap.Desired))

	t.family("clusterinit_worker_starts_total", counter, "Worker processes started.")
	t.count("clusterinit_worker_starts_total", snap.Starts)

	t.family("clusterinit_worker_exits_total", counter,
		"Worker exits by reason: crash (not asked to stop), oom (killed by the kernel's OOM killer), stopped (exited after its stop signal), killed (SIGKILLed at DRAIN_TIMEOUT).")
	labelled(&t, "clusterinit_worker_exits_total", "reason", snap.Exits, supervisor.ExitReasons())

	t.family("clusterinit_worker_recycles_total", counter, "Workers replaced on purpose, by reason.")
	labelled(&t, "clusterinit_worker_recycles_total", "reason", snap.Recycles, supervisor.RecycleReasons())

	// One series per slot: during a replacement two workers share a slot,
	// and two samples with the same label set would make the whole scrape
	// invalid.
	current := currentPerSlot(snap.Workers)
	t.family("clusterinit_worker_resident_memory_bytes", gauge,
		"Resident memory of the slot's current worker and its descendants, as last sampled.")
	for _, w := range current {
		t.value("clusterinit_worker_resident_memory_bytes", float64(w.RSSBytes), "slot", strconv.Itoa(w.Slot))
	}
	t.family("clusterinit_worker_cpu_seconds_total", counter,
		"CPU time of the slot's current worker and its descendants, as last sampled; restarts from 0 with each new worker.")
	for _, w := range current {
		t.value("clusterinit_worker_cpu_seconds_total", w.CPUSeconds, "slot", strconv.Itoa(w.Slot))
	}
	t.family("clusterinit_worker_event_loop_delay_seconds", gauge,
		"Event-loop delay of the slot's current worker, as last reported by the Node preload.")
	for _, w := range current {
		t.value("clusterinit_worker_event_loop_delay_seconds", w.EventLoopDelaySec, "slot", strconv.Itoa(w.Slot))
	}
	// The rest of the Node preload's heartbeat. A worker without the
	// preload (SHIM=false, not Node) reports none of these.
	for _, f := range []struct {
		name, typ, help string
		value           func(supervisor.WorkerStatus) float64
	}{
		{"clusterinit_worker_event_loop_utilization", gauge,
			"Event-loop utilization (0 to 1) of the slot's current worker between its last two heartbeats: the share of time its event loop was busy.",
			func(w supervisor.WorkerStatus) float64 { return w.EventLoopUtilization }},
		{"clusterinit_worker_heap_used_bytes", gauge,
			"V8 heap in use by the slot's current worker, as last reported.",
			func(w supervisor.WorkerStatus) float64 { return float64(w.HeapUsedBytes) }},
		{"clusterinit_worker_heap_limit_bytes", gauge,
			"V8 heap limit of the slot's current worker (heap_size_limit: old space and young generation).",
			func(w supervisor.WorkerStatus) float64 { return float64(w.HeapLimitBytes) }},
		{"clusterinit_worker_requests_total", counter,
			"HTTP requests received by the slot's current worker, as last reported; restarts from 0 with each new worker.",
			func(w supervisor.WorkerStatus) float64 { return float64(w.Requests) }},
		{"clusterinit_worker_gc_seconds_total", counter,
			"Time the slot's current worker spent in garbage collection; restarts from 0 with each new worker.",
			func(w supervisor.WorkerStatus) float64 { return w.GCSeconds }},
	} {
		t.family(f.name, f.typ, f.help)
		for _, w := range current {
			if w.HeapLimitBytes > 0 { // it has answered a heartbeat
				t.value(f.name, f.value(w), "slot", strconv.Itoa(w.Slot))
			}
		}
	}

	// 0 means no limit was found: the source is in /status and the start line.
	t.family("clusterinit_cpu_limit", gauge, "The task's CPU limit in vCPUs (ECS task metadata or a cgroup quota); 0: none found.")
	t.value("clusterinit_cpu_limit", finite(snap.Limits.CPU))
	t.family("clusterinit_memory_limit_bytes", gauge, "The task's memory limit (ECS task metadata or cgroup); 0: none found.")
	t.value("clusterinit_memory_limit_bytes", float64(snap.Limits.MemoryBytes))

	t.family("clusterinit_reloads_total", counter, "Rolling reloads by result.")
	labelled(&t, "clusterinit_reloads_total", "result", snap.Reloads, supervisor.ReloadResults())

	t.family("clusterinit_app_metrics_missed_total", counter,
		"Workers left out of a /metrics/app scrape because they did not answer within 1s.")
	t.count("clusterinit_app_metrics_missed_total", s.appMetricsMissed.Load())

	t.family("clusterinit_orphans_reaped_total", counter, "Adopted orphan processes reaped.")
	t.count("clusterinit_orphans_reaped_total", snap.Orphans)

	t.family("clusterinit_build_info", gauge, "Always 1; the version label is clusterinit's version.")
	t.value("clusterinit_build_info", 1, "version", s.version)

	s.writeProcessMetrics(&t)
}

// writeProcessMetrics adds clusterinit's own process figures under the
// names client_golang's process collector uses, so existing dashboards
// work. A figure that cannot be read is left out rather than faked as 0.
func (s *Server) writeProcessMetrics(t *textWriter) {
	if !s.self.ok {
		return
	}
	if stat, err := s.self.proc.Stat(); err != nil {
		s.log.Debug("read /proc/self/stat", "err", err)
	} else {
		t.family("process_cpu_seconds_total", counter, "Total user and system CPU time spent in seconds.")
		t.value("process_cpu_seconds_total", stat.CPUTime())
		t.family("process_resident_memory_bytes", gauge, "Resident memory size in bytes.")
		t.value("process_resident_memory_bytes", float64(stat.ResidentMemory()))
	}
	if s.self.startTime > 0 {
		t.family("process_start_time_seconds", gauge, "Start time of the process since unix epoch in seconds.")
		t.value("process_start_time_seconds", s.self.startTime)
	}
	if n, err := s.self.proc.FileDescriptorsLen(); err != nil {
		s.log.Debug("count /proc/self/fd", "err", err)
	} else {
		t.family("process_open_fds", gauge, "Number of open file descriptors.")
		t.value("process_open_fds", float64(n))
	}
	// Leak checks (chaos and soak tests) compare this before and after.
	t.family("go_goroutines", gauge, "Number of goroutines in clusterinit.")
	t.value("go_goroutines", float64(runtime.NumGoroutine()))
}

// currentPerSlot picks one worker per slot, in slot order: the newest by
// StartedAt (then by pid, for a tie), which is the slot's current worker or
// the replacement that is about to become it.
func currentPerSlot(ws []supervisor.WorkerStatus) []supervisor.WorkerStatus {
	bySlot := make(map[int]supervisor.WorkerStatus, len(ws))
	for _, w := range ws {
		if cur, seen := bySlot[w.Slot]; !seen || newer(w, cur) {
			bySlot[w.Slot] = w
		}
	}
	return slices.SortedFunc(maps.Values(bySlot), func(a, b supervisor.WorkerStatus) int {
		return a.Slot - b.Slot
	})
}

func newer(a, b supervisor.WorkerStatus) bool {
	if !a.StartedAt.Equal(b.StartedAt) {
		return a.StartedAt.After(b.StartedAt)
	}
	return a.Pid > b.Pid
}

// textWriter writes the Prometheus text format. Metric and label names come
// from this file and are valid by construction; label values and help texts
// are escaped.
type textWriter struct {
	b *bytes.Buffer
}

// family writes the HELP and TYPE lines; call it once per metric name,
// before that name's samples.
func (t *textWriter) family(name, kind, help string) {
	t.b.WriteString("# HELP ")
	t.b.WriteString(name)
	t.b.WriteByte(' ')
	t.b.WriteString(escapeHelp(help))
	t.b.WriteString("\n# TYPE ")
	t.b.WriteString(name)
	t.b.WriteByte(' ')
	t.b.WriteString(kind)
	t.b.WriteByte('\n')
}

// value writes one sample; labels are name, value pairs.
func (t *textWriter) value(name string, v float64, labels ...string) {
	t.series(name, labels)
	t.b.WriteString(formatFloat(v))
	t.b.WriteByte('\n')
}

// count writes one sample of a whole number exactly (a float64 would round
// above 2^53).
func (t *textWriter) count(name string, v uint64, labels ...string) {
	t.series(name, labels)
	t.b.WriteString(strconv.FormatUint(v, 10))
	t.b.WriteByte('\n')
}

// labelled writes one sample per label value: every value of fixed, in that
// order, then any other key of m in sorted order, so that a reason the
// supervisor adds later shows up instead of vanishing.
func labelled[K ~string](t *textWriter, name, label string, m map[K]uint64, fixed []K) {
	for _, v := range fixed {
		t.count(name, m[v], label, string(v))
	}
	for _, v := range slices.Sorted(maps.Keys(m)) {
		if !slices.Contains(fixed, v) {
			t.count(name, m[v], label, string(v))
		}
	}
}

func (t *textWriter) series(name string, labels []string) {
	t.b.WriteString(name)
	if len(labels) > 0 {
		t.b.WriteByte('{')
		for i := 0; i+1 < len(labels); i += 2 {
			if i > 0 {
				t.b.WriteByte(',')
			}
			t.b.WriteString(labels[i])
			t.b.WriteString(`="`)
			t.b.WriteString(escapeLabelValue(labels[i+1]))
			t.b.WriteByte('"')
		}
		t.b.WriteByte('}')
	}
	t.b.WriteByte(' ')
}

// escapeLabelValue escapes what the format requires inside double quotes:
// backslash, double quote and newline. The format is UTF-8, so invalid bytes
// (a version stamped from arbitrary input) become U+FFFD instead of
// corrupting the page.
func escapeLabelValue(s string) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	if !strings.ContainsAny(s, "\\\"\n") {
		return s
	}
	return strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`).Replace(s)
}

// escapeHelp escapes backslash and newline, the two characters a HELP line
// cannot hold as they are.
func escapeHelp(s string) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	if !strings.ContainsAny(s, "\\\n") {
		return s
	}
	return strings.NewReplacer(`\`, `\\`, "\n", `\n`).Replace(s)
}

// formatFloat writes a form that parses back to exactly v, with the
// format's spellings of the special values.
func formatFloat(v float64) string {
	switch {
	case math.IsNaN(v):
		return "NaN"
	case math.IsInf(v, 1):
		return "+Inf"
	case math.IsInf(v, -1):
		return "-Inf"
	}
	// Plain decimals for the everyday range (byte counts, unix times) read
	// better than 1.048576e+08 and are just as exact: -1 asks for the
	// fewest digits that parse back to v in either form.
	if a := math.Abs(v); a == 0 || (a >= 1e-4 && a < 1e15) {
		return strconv.FormatFloat(v, 'f', -1, 64)
	}
	return strconv.FormatFloat(v, 'g', -1, 64)
}
