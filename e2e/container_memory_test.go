package e2e

// Memory in real containers: each worker's heap budget, the OOM killer's
// kills named, MAX_RSS=auto (the harness and the container tests' helpers
// are in harness_docker_test.go and container_test.go).

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// oomKills is the OOM killer's count of kills in the container's memory
// cgroup, read on the host (cgroup v1 memory.oom_control, kernel ≥ 4.13).
func (c *container) oomKills() int {
	c.t.Helper()
	b, err := os.ReadFile(filepath.Join(c.hostCgroup("memory"), "memory.oom_control"))
	if err != nil {
		c.t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "oom_kill "); ok {
			n, err := strconv.Atoi(v)
			if err != nil {
				c.t.Fatalf("memory.oom_control: %q", line)
			}
			return n
		}
	}
	c.t.Fatalf("memory.oom_control has no oom_kill counter (kernel < 4.13?): %s", b)
	return 0
}

// peakMemory is the most memory the container's cgroup has used, read on
// the host (cgroup v1 memory.max_usage_in_bytes).
func (c *container) peakMemory() int64 {
	c.t.Helper()
	b, err := os.ReadFile(filepath.Join(c.hostCgroup("memory"), "memory.max_usage_in_bytes"))
	if err != nil {
		c.t.Fatal(err)
	}
	n, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	if err != nil {
		c.t.Fatalf("memory.max_usage_in_bytes: %q", b)
	}
	return n
}

// unaskedExits lists the exit lines of workers that clusterinit did not
// stop (any reason but stopped).
func (c *container) unaskedExits() []map[string]any {
	var out []map[string]any
	for _, e := range exitLines(c.logs()) {
		if e["reason"] != "stopped" {
			out = append(out, e)
		}
	}
	return out
}

// With --memory=512m and 2 workers whose heaps grow without bound,
// HEAP_SIZE=auto gives each worker a heap limit that fits its share: each
// dies of its own "JavaScript heap out of memory" (and is restarted), and
// the kernel's OOM killer never kills a worker. (With Node's default heap
// limit, sized from the whole container, two workers outgrow 512 MiB before
// either reaches it.)
func TestContainerHeapBudget(t *testing.T) {
	needLong(t)
	c := containerFleet(t, 2, []string{"--memory=512m", "--memory-swap=512m"}, "hog.js",
		"CLUSTERINIT_WORKERS=2", "CLUSTERINIT_SAMPLE_EVERY=500ms", "HOG=heapleak", "LEAK_MB=4")
	start := c.waitLog("starting", 1, time.Second)[0]
	var doc struct {
		Workers []struct {
			Slot      int   `json:"slot"`
			HeapLimit int64 `json:"heap_limit_bytes"`
		} `json:"workers"`
	}
	waitFor(t, 10*time.Second, "the workers' heap limits in /status", func() bool {
		code, body, err := fetch("GET", c.health()+"/status")
		if err != nil || code != 200 || json.Unmarshal([]byte(body), &doc) != nil || len(doc.Workers) != 2 {
			return false
		}
		return doc.Workers[0].HeapLimit > 0 && doc.Workers[1].HeapLimit > 0
	})
	t.Logf("memory limit %.0f MiB, 2 workers, heap_size %q: heap_size_limit %.0f MiB, %.0f MiB (%s)", mib(int64(num(start, "memory_limit"))),
		start["heap_size"], mib(doc.Workers[0].HeapLimit), mib(doc.Workers[1].HeapLimit), strings.TrimSpace(c.nodeVersion()))

	t0 := time.Now()
	slots := map[int]bool{}
	waitFor(t, 90*time.Second, "a heap-limit death in each slot", func() bool {
		for _, e := range c.unaskedExits() {
			slots[num(e, "slot")] = true
		}
		return len(slots) == 2 || c.oomKills() > 0
	})
	exits := c.unaskedExits()
	heapOOMs := strings.Count(c.stderr.String()+c.stdout.String(), "JavaScript heap out of memory")
	t.Logf("%v: %d worker exits (%d reported JavaScript heap out of memory), OOM killer kills %d, peak container memory %.0f MiB", time.Since(t0).Round(time.Millisecond),
		len(exits), heapOOMs, c.oomKills(), mib(c.peakMemory()))
	for _, e := range exits {
		t.Logf("slot %d pid %d: %v, reason %v, after %v", num(e, "slot"), num(e, "pid"), e["status"], e["reason"], dur(e, "uptime"))
		if e["reason"] == "oom" {
			t.Errorf("worker %d was killed by the OOM killer: %v", num(e, "pid"), e)
		}
	}
	if n := c.oomKills(); n != 0 {
		t.Errorf("the kernel's OOM killer killed %d processes in the container: the workers' heaps do not fit", n)
	}
	if heapOOMs < len(exits) {
		t.Errorf("%d workers exited but only %d reported reaching their heap limit", len(exits), heapOOMs)
	}
	if c.inspect("{{.State.Running}}") != "true" {
		t.Errorf("the container is no longer running")
	}
}

// nodeVersion is `node --version` in the image.
func (c *container) nodeVersion() string {
	out, _ := c.docker("exec", c.id, "node", "--version")
	return out
}

// A worker that leaks Buffers (memory outside the V8 heap, which no heap
// limit bounds) past the container's limit, with no MAX_RSS, is killed by
// the kernel's OOM killer: clusterinit names it (reason=oom in the log and
// clusterinit_worker_exits_total), stays alive (the OOM killer never picks
// it) and the other worker keeps serving.
func TestContainerOOMKillNamed(t *testing.T) {
	needLong(t)
	c := containerFleet(t, 2, []string{"--memory=256m", "--memory-swap=256m"}, "hog.js",
		"CLUSTERINIT_WORKERS=2", "CLUSTERINIT_SAMPLE_EVERY=250ms", "HOG=leak", "HOG_SLOT=0", "LEAK_MB=8")
	l := startLoad(t, c.url("/"), 2, false)
	var oom map[string]any
	waitFor(t, 60*time.Second, "a worker exit with reason oom", func() bool {
		for _, e := range c.unaskedExits() {
			if e["reason"] == "oom" {
				oom = e
				return true
			}
		}
		return false
	})
	t.Logf("OOM kill logged: %v; docker's .State.OOMKilled: %s", oom, c.inspect("{{.State.OOMKilled}}"))
	// Sampled every 250 ms while leaking 80 MB/s towards 256 MiB.
	if peak := num(oom, "peak_rss_bytes"); peak < 128<<20 {
		t.Errorf("the OOM line's peak_rss_bytes %d: want the leak's size, more than half the limit", peak)
	}
	if num(oom, "memory_limit") != 256<<20 {
		t.Errorf("the OOM line's memory_limit %d, want %d", num(oom, "memory_limit"), 256<<20)
	}
	if num(oom, "slot") != 0 {
		t.Errorf("the OOM killer's victim was slot %d, want 0 (the leaking worker)", num(oom, "slot"))
	}
	if n := c.oomKills(); n < 1 {
		t.Errorf("the kernel counts %d OOM kills in the container's cgroup", n)
	}
	waitMetrics(t, c.health(), 5*time.Second, want{name: "clusterinit_worker_exits_total", labels: []string{"reason", "oom"}, value: 1})
	if code, _, err := fetch("GET", c.health()+"/healthz"); err != nil || code != 200 {
		t.Errorf("/healthz after the OOM kill: %d %v", code, err)
	}
	if c.inspect("{{.State.Running}}") != "true" {
		t.Errorf("the container (clusterinit) did not survive the OOM kill")
	}
	// Slot 1 answers throughout (on new connections, so the kernel spreads
	// them over both workers' accepts).
	l.waitRequests(50)
	_, _, _, pids := l.result()
	if len(pids) == 0 {
		t.Errorf("no worker answered")
	}
	if got := answeringWorkers(t, c.url("/"), 1, 5*time.Second, workerOf); len(got) == 0 {
		t.Errorf("no worker answers after the OOM kill")
	}
}

// MAX_RSS=auto recycles a worker at 90% of its share of the container's
// limit: a slow Buffer leak is recycled before the kernel would kill it,
// with no failed request under load.
func TestContainerMaxRSSAutoRecycles(t *testing.T) {
	needLong(t)
	c := containerFleet(t, 2, []string{"--memory=512m", "--memory-swap=512m"}, "hog.js",
		"CLUSTERINIT_WORKERS=2", "CLUSTERINIT_MAX_RSS=auto", "CLUSTERINIT_MAX_RSS_FOR=1s", "CLUSTERINIT_SAMPLE_EVERY=250ms",
		"HOG=leak", "HOG_SLOT=0", "LEAK_MB=2")
	started := c.waitLog("worker ready", 2, time.Second)
	l := startLoad(t, c.url("/"), 4, true)
	rec := c.waitLog("recycling worker", 1, 60*time.Second)[0]
	var readyAt time.Time
	for _, r := range started {
		if num(r, "slot") == 0 {
			readyAt = logTime(r)
		}
	}
	t.Logf("recycled %v after slot 0 got ready: %v", logTime(rec).Sub(readyAt).Round(time.Millisecond), rec)
	if rec["reason"] != "rss" || num(rec, "slot") != 0 {
		t.Errorf("recycle %v: want reason rss, slot 0", rec)
	}
	// The replacement serves.
	waitFor(t, 30*time.Second, "slot 0's replacement ready", func() bool {
		return len(linesWith(c.logs(), "worker ready")) >= 3
	})
	l.waitRequests(200)
	ok, failed, errs, _ := l.result()
	t.Logf("MAX_RSS=auto recycle under load: %d requests, %d failed, peak container memory %.0f MiB", ok, failed, mib(c.peakMemory()))
	if failed != 0 {
		t.Errorf("%d of %d requests failed across the recycle: %v", failed, ok+failed, errs)
	}
	if n := c.oomKills(); n != 0 {
		t.Errorf("the kernel's OOM killer killed %d processes: the recycle came too late", n)
	}
	if exits := c.unaskedExits(); len(exits) != 0 {
		t.Errorf("workers exited unasked: %v", exits)
	}
}
