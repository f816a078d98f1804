package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/clusterinit/clusterinit/internal/testkit"
)

// hogFleet runs testdata/apps/hog.js with fast sampling.
func hogFleet(t *testing.T, workers int, extra ...string) (*proc, string) {
	t.Helper()
	return nodeFleet(t, workers, "hog.js", append([]string{"CLUSTERINIT_SAMPLE_EVERY=250ms", "CLUSTERINIT_DRAIN_TIMEOUT=2s"}, extra...)...)
}

// recycled waits for n recycles and returns their log lines.
func recycled(p *proc, n int, timeout time.Duration) []map[string]any {
	return p.waitLog("recycling worker", n, timeout)
}

func stopClean(t *testing.T, p *proc) {
	t.Helper()
	p.signal(syscall.SIGTERM)
	if code := p.wait(30 * time.Second); code != 0 {
		t.Errorf("exit code %d", code)
	}
}

func dur(l map[string]any, key string) time.Duration {
	f, _ := l[key].(float64)
	return time.Duration(f)
}

func TestRecycleOnSustainedRSS(t *testing.T) {
	needLong(t)
	// Leaks 10 MB/s from ~50 MB: over 150M after ~10 s, recycled 2 s later.
	p, url := hogFleet(t, 2, "HOG=leak", "CLUSTERINIT_MAX_RSS=150M", "CLUSTERINIT_MAX_RSS_FOR=2s")
	l := startLoad(t, url+"/", 4, true)
	r := recycled(p, 1, 40*time.Second)[0]
	if r["reason"] != "rss" || r["path"] != "start-first" {
		t.Errorf("recycle %v, want reason rss, start-first (no memory limit here)", r)
	}
	if got := dur(r, "above_for"); got < 2*time.Second {
		t.Errorf("recycled after %v above MAX_RSS, before MAX_RSS_FOR (2s)", got)
	}
	if rss := num(r, "rss_bytes"); rss <= 150e6 {
		t.Errorf("recycled at rss %d, not above MAX_RSS", rss)
	}
	p.waitExits(1, 20*time.Second)
	l.waitRequests(100)
	ok, failed, errs, _ := l.result()
	if failed != 0 {
		t.Errorf("%d of %d requests failed during the recycle: %v", failed, ok+failed, errs)
	}
	stopClean(t, p)
}

// A spike shorter than the window is not a reason: a child holds 300 MB for
// 1 s, MAX_RSS_FOR is 3 s.
func TestShortSpikeIsNotRecycled(t *testing.T) {
	needLong(t)
	p, _ := hogFleet(t, 1, "HOG=child", "CHILD_MB=300", "CHILD_MS=1000",
		"CLUSTERINIT_MAX_RSS=200M", "CLUSTERINIT_MAX_RSS_FOR=3s")
	waitFor(t, 20*time.Second, "the spike to end", func() bool {
		return strings.Contains(p.stdout.String(), "hog: child exited")
	})
	// Two more windows' worth of samples after the spike.
	testkit.Never(t, 4*time.Second, "a 1 s spike was recycled", func() bool {
		return len(p.logsWith("recycling worker")) != 0
	})
	stopClean(t, p)
}

// Memory held by a worker's child counts towards the worker.
func TestChildMemoryCounts(t *testing.T) {
	p, _ := hogFleet(t, 1, "HOG=child", "CHILD_MB=300", "CLUSTERINIT_MAX_RSS=200M", "CLUSTERINIT_MAX_RSS_FOR=1s")
	r := recycled(p, 1, 30*time.Second)[0]
	if r["reason"] != "rss" || num(r, "processes") < 2 {
		t.Errorf("recycle %v, want rss over a tree of ≥ 2 processes", r)
	}
	stopClean(t, p)
}

func TestRecycleOnSustainedCPU(t *testing.T) {
	p, url := hogFleet(t, 1, "HOG=burn", "CLUSTERINIT_MAX_CPU=50%", "CLUSTERINIT_MAX_CPU_FOR=2s")
	l := startLoad(t, url+"/", 2, true)
	r := recycled(p, 1, 30*time.Second)[0]
	if r["reason"] != "cpu" || dur(r, "above_for") < 2*time.Second {
		t.Errorf("recycle %v, want cpu after ≥ 2s above", r)
	}
	if ratio, _ := r["cpu_ratio"].(float64); ratio < 0.5 {
		t.Errorf("cpu_ratio %v under MAX_CPU", ratio)
	}
	p.waitExits(1, 20*time.Second)
	ok, failed, errs, _ := l.result()
	if failed != 0 {
		t.Errorf("%d of %d requests failed during the recycle: %v", failed, ok+failed, errs)
	}
	stopClean(t, p)
}

func TestModerateCPUIsNotRecycled(t *testing.T) {
	needLong(t)
	p, _ := hogFleet(t, 1, "HOG=burn30", "CLUSTERINIT_MAX_CPU=0.7", "CLUSTERINIT_MAX_CPU_FOR=2s")
	testkit.Never(t, 6*time.Second, "a worker at ~30% CPU was recycled", func() bool {
		return len(p.logsWith("recycling worker")) != 0
	})
	stopClean(t, p)
}

func TestRecycleHungEventLoop(t *testing.T) {
	p, _ := hogFleet(t, 2, "HOG=hang", "HANG_AFTER_MS=500", "CLUSTERINIT_HANG_TIMEOUT=2s")
	r := recycled(p, 1, 30*time.Second)[0]
	if r["reason"] != "hang" || dur(r, "silent_for") < 2*time.Second {
		t.Errorf("recycle %v, want hang after ≥ 2s of silence", r)
	}
	// A blocked loop cannot drain: it is killed at DRAIN_TIMEOUT.
	ex := p.waitLog("worker killed: it did not exit within DRAIN_TIMEOUT", 1, 20*time.Second)[0]
	if ex["status"] != "signal SIGKILL" || ex["reason"] != "killed" || ex["slot"] != r["slot"] {
		t.Errorf("hung worker exit %v, want killed", ex)
	}
	p.signal(syscall.SIGKILL) // the replacements hang too; nothing to check there
}

// MAX_AGE recycles every worker in turn, one at a time.
func TestMaxAgeRecyclesOneAtATime(t *testing.T) {
	p, url := hogFleet(t, 3, "CLUSTERINIT_MAX_AGE=3s")
	l := startLoad(t, url+"/", 4, true)
	recycled(p, 3, 30*time.Second)
	p.waitExits(3, 20*time.Second)
	ok, failed, errs, _ := l.result()
	if failed != 0 {
		t.Errorf("%d of %d requests failed: %v", failed, ok+failed, errs)
	}
	stopClean(t, p)
	// Replay the log: between a recycle and its replacement's readiness, no
	// other recycle may start.
	inFlight, slots := 0, map[int]bool{}
	for _, l := range p.logs() {
		switch l["msg"] {
		case "recycling worker":
			if l["reason"] != "age" {
				t.Errorf("recycle for %v", l["reason"])
			}
			inFlight++
			slots[num(l, "slot")] = true
			if inFlight > 1 {
				t.Errorf("two recycles at once: %v", l)
			}
		case "worker ready":
			if inFlight > 0 {
				inFlight--
			}
		}
	}
	if len(slots) != 3 {
		t.Errorf("recycled slots %v, want all 3", slots)
	}
}

// memoryCgroup creates a memory cgroup (v1, as root) under the test's own,
// limited to limit, and returns its directory; it is removed at the end.
func memoryCgroup(t *testing.T, limit string) string {
	t.Helper()
	base := "/sys/fs/cgroup/memory"
	own, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		t.Fatal(err)
	}
	parent := base
	for _, line := range strings.Split(string(own), "\n") {
		var id int
		var ctl, path string
		if n, _ := fmt.Sscanf(strings.ReplaceAll(line, ":", " "), "%d %s %s", &id, &ctl, &path); n == 3 && ctl == "memory" {
			parent = filepath.Join(base, path)
		}
	}
	dir := filepath.Join(parent, fmt.Sprintf("clusterinit-e2e-mem-%d-%s", os.Getpid(), t.Name()))
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatalf("create memory cgroup (tests run as root on cgroup v1): %v", err)
	}
	t.Cleanup(func() { os.Remove(dir) })
	mustWrite(t, filepath.Join(dir, "memory.limit_in_bytes"), limit)
	return dir
}

// startInCgroup starts clusterinit inside the cgroup dir.
func startInCgroup(t *testing.T, dir string, env []string, args ...string) *proc {
	t.Helper()
	argv := append([]string{"sh", "-c", fmt.Sprintf(`echo $$ > %s/cgroup.procs && exec "$@"`, dir), "sh", binary}, args...)
	return startArgv(t, false, env, argv...)
}

// Under a memory limit with no room for one more worker of the current size,
// the old worker drains first; the other keeps serving.
func TestDrainFirstWithoutHeadroom(t *testing.T) {
	// Two workers leaking to ~120 MB each fit in 200M (shared pages count once there), but a third does not
	// fit beside them.
	dir := memoryCgroup(t, "200M")
	port := freePort(t)
	env := testEnv("CLUSTERINIT_WORKERS=2", fmt.Sprintf("CLUSTERINIT_LISTEN=:%d", port), fmt.Sprintf("PORT=%d", port),
		"CLUSTERINIT_SAMPLE_EVERY=250ms", "CLUSTERINIT_DRAIN_TIMEOUT=2s", "CLUSTERINIT_LOG_LEVEL=info",
		"HOG=leak", "LEAK_MAX_MB=80", "CLUSTERINIT_MAX_RSS=100M", "CLUSTERINIT_MAX_RSS_FOR=1s")
	abs, _ := filepath.Abs("testdata/apps/hog.js")
	p := startInCgroup(t, dir, env, "--", "node", abs)
	p.waitLog("worker ready", 2, 20*time.Second)
	l := startLoad(t, fmt.Sprintf("http://127.0.0.1:%d/", port), 4, true)
	r := recycled(p, 1, 40*time.Second)[0]
	if r["path"] != "drain-first" {
		t.Errorf("recycle %v, want drain-first under the memory limit", r)
	}
	if h := num(r, "headroom_bytes"); h < 0 || int64(h) >= int64(num(r, "rss_bytes")) {
		t.Errorf("headroom %d should be known and below the worker's rss %d", h, num(r, "rss_bytes"))
	}
	p.waitLog("worker ready", 3, 20*time.Second)
	l.waitRequests(100)
	ok, failed, errs, _ := l.result()
	if failed != 0 {
		t.Errorf("%d of %d requests failed: %v", failed, ok+failed, errs)
	}
	p.signal(syscall.SIGTERM)
	p.wait(30 * time.Second)
}

// A reload follows the same memory rule (SPEC, "Recycling"): with no room
// for one more worker of the current size, each slot's old worker drains
// first and its refill is ready before the next slot's turn; the other
// worker serves throughout, and nothing fails.
func TestReloadDrainFirstWithoutHeadroom(t *testing.T) {
	dir := memoryCgroup(t, "200M")
	port, health := freePort(t), fmt.Sprintf("127.0.0.1:%d", freePort(t))
	env := testEnv("CLUSTERINIT_WORKERS=2", fmt.Sprintf("CLUSTERINIT_LISTEN=:%d", port), fmt.Sprintf("PORT=%d", port),
		"CLUSTERINIT_HEALTH_ADDR="+health, "CLUSTERINIT_SAMPLE_EVERY=250ms", "CLUSTERINIT_DRAIN_TIMEOUT=2s",
		"CLUSTERINIT_LOG_LEVEL=info", "HOG=leak", "LEAK_MAX_MB=60")
	abs, _ := filepath.Abs("testdata/apps/hog.js")
	p := startInCgroup(t, dir, env, "--", "node", abs)
	p.waitLog("worker ready", 2, 20*time.Second)
	// Each worker has leaked its 60 MB and been sampled at that size: with
	// ~15 MB of its own besides, two fit in 200M, a third beside them does
	// not (the node binary's pages are charged once, to whoever read them first).
	cli := testEnv("CLUSTERINIT_HEALTH_ADDR=" + health)
	waitFor(t, 30*time.Second, "both workers sampled at 95 MB or more", func() bool {
		ws := statusJSON(t, cli)
		big := 0
		for _, w := range ws {
			if w.RSSBytes >= 95<<20 {
				big++
			}
		}
		return big == 2
	})
	l := startLoad(t, fmt.Sprintf("http://127.0.0.1:%d/", port), 4, true)
	l.waitRequests(50)
	p.reloads(1)
	steps := p.logsWith("reloading worker")
	if len(steps) != 2 {
		t.Fatalf("%d reload steps logged, want 2:\n%s", len(steps), tail(p.stderr.String(), 30))
	}
	// Slot 0's step is drain-first; slot 1's is whatever the headroom then
	// allows (slot 0's old worker has freed its memory by then).
	if st := steps[0]; num(st, "slot") != 0 || st["path"] != "drain-first" {
		t.Errorf("first step %v, want slot 0 drain-first", st)
	} else if h := num(st, "headroom_bytes"); h < 0 || int64(h) >= int64(num(st, "rss_bytes")) {
		t.Errorf("step %v: headroom should be known and below the worker's rss", st)
	}
	// Slot 0's old worker exits, then its refill starts and gets ready; only
	// then does anything happen to slot 1.
	var order []string
	reloading := false
	for _, l := range p.logs() {
		msg, _ := l["msg"].(string)
		reloading = reloading || msg == "rolling reload started"
		switch msg {
		case "draining worker", "worker exited", "worker started", "worker ready":
			if reloading {
				order = append(order, fmt.Sprintf("%s/%d", msg, num(l, "slot")))
			}
		}
	}
	want := []string{"draining worker/0", "worker exited/0", "worker started/0", "worker ready/0"}
	if len(order) < 5 || strings.Join(order[:4], ",") != strings.Join(want, ",") || !strings.HasSuffix(order[4], "/1") {
		t.Errorf("reload events %v, want %v and then slot 1's", order, want)
	}
	l.waitRequests(50)
	ok, failed, errs, _ := l.result()
	if failed != 0 {
		t.Errorf("%d of %d requests failed: %v", failed, ok+failed, errs)
	}
	p.signal(syscall.SIGTERM)
	p.wait(30 * time.Second)
}
