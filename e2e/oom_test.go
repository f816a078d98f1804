package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// oomKillCount reads the oom_kill counter of a v1 memory cgroup.
func oomKillCount(t *testing.T, dir string) int {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, "memory.oom_control"))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "oom_kill "); ok {
			n, _ := strconv.Atoi(v)
			return n
		}
	}
	t.Fatalf("no oom_kill in %s/memory.oom_control (Linux 4.13 or later has it)", dir)
	return 0
}

func oomScoreAdj(t *testing.T, pid int) int {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/oom_score_adj", pid))
	if err != nil {
		t.Fatal(err)
	}
	n, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	return n
}

// A worker that leaks Buffers (outside the V8 heap, so HEAP_SIZE cannot stop
// it) past a real cgroup's limit is killed by the kernel's OOM killer: the
// kernel picks the worker, never clusterinit (its oom_score_adj is raised),
// clusterinit names it an OOM kill in its log and in
// clusterinit_worker_exits_total{reason="oom"}, restarts it without counting
// a failed start, and the other worker serves throughout.
func TestOOMKillOfAWorkerIsNamed(t *testing.T) {
	needLong(t)
	const limit = 384 << 20
	mem := v1Cgroup(t, "memory", "", uniqueName("clusterinit-oom"))
	mustWrite(t, filepath.Join(mem, "memory.limit_in_bytes"), fmt.Sprint(limit))
	// Swap would let the cgroup page out instead of killing.
	if err := os.WriteFile(filepath.Join(mem, "memory.swappiness"), []byte("0"), 0); err != nil {
		t.Logf("memory.swappiness: %v", err)
	}
	port, health := freePort(t), freeAddr(t)
	env := testEnv("CLUSTERINIT_WORKERS=2", fmt.Sprintf("CLUSTERINIT_LISTEN=:%d", port), fmt.Sprintf("PORT=%d", port),
		"CLUSTERINIT_LOG_LEVEL=info", "CLUSTERINIT_HEALTH_ADDR="+health, "CLUSTERINIT_SAMPLE_EVERY=200ms",
		"CLUSTERINIT_MAX_FAILED_STARTS=1", "HOG=leak", "LEAK_MB=8", "HOG_SLOT=0")
	p := startArgv(t, false, env, append(inCgroups(mem), binary, "--", "node", filepath.Join("testdata", "apps", "hog.js"))...)
	p.waitLog("worker ready", 2, 20*time.Second)
	url := fmt.Sprintf("http://127.0.0.1:%d/", port)
	started := p.logsWith("worker started")
	leaker, other := num(started[0], "pid"), num(started[1], "pid")
	if started[0]["slot"] != 0.0 {
		leaker, other = other, leaker
	}
	if w, c := oomScoreAdj(t, leaker), oomScoreAdj(t, p.pid()); w <= c {
		t.Errorf("worker oom_score_adj %d, clusterinit's %d: want the worker's higher", w, c)
	}
	before := oomKillCount(t, mem)

	l := p.waitLog("worker killed by the kernel's OOM killer: the task ran out of memory", 1, 60*time.Second)[0]
	t.Logf("OOM kill: %v", l)
	if l["reason"] != "oom" || num(l, "pid") != leaker || l["status"] != "signal SIGKILL" || num(l, "memory_limit") != limit {
		t.Errorf("log line %v: want reason oom for pid %d, signal SIGKILL, memory_limit %d", l, leaker, limit)
	}
	if rss := num(l, "peak_rss_bytes"); rss < 100<<20 {
		t.Errorf("peak_rss_bytes %d: want the leaker's sampled figure, above 100 MiB", rss)
	}
	if after := oomKillCount(t, mem); after <= before {
		t.Errorf("the cgroup's oom_kill count went from %d to %d", before, after)
	}
	select {
	case <-p.done:
		t.Fatalf("clusterinit exited: %v", p.state)
	default:
	}
	// The other worker still serves, and slot 0 is restarted (not a failed
	// start: MAX_FAILED_STARTS=1 would have given up).
	if !alive(other) {
		t.Errorf("the other worker (pid %d) is gone", other)
	}
	p.waitLog("worker ready", 3, 20*time.Second)
	for range 20 {
		httpGet(t, url)
	}
	// The restarted worker of slot 0 leaks again: count at least one.
	waitFor(t, 10*time.Second, `clusterinit_worker_exits_total{reason="oom"} ≥ 1`, func() bool {
		m, err := relMetrics("http://" + health)
		return err == nil && m[`clusterinit_worker_exits_total{reason="oom"}`] >= 1
	})
	if len(p.logsWith("giving up")) > 0 {
		t.Errorf("clusterinit gave up: an OOM kill was counted as a failed start")
	}
}
