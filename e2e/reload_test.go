package e2e

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

// nodeFleet starts clusterinit over a testdata/apps Node app on a free port.
func nodeFleet(t *testing.T, workers int, app string, extra ...string) (*proc, string) {
	t.Helper()
	return nodeFleetAt(t, workers, filepath.Join("testdata", "apps", app), extra...)
}

// nodeFleetAt starts clusterinit over the Node app at path on a free port.
func nodeFleetAt(t testing.TB, workers int, path string, extra ...string) (*proc, string) {
	t.Helper()
	port := freePort(t)
	env := testEnv(append([]string{
		fmt.Sprintf("CLUSTERINIT_WORKERS=%d", workers),
		fmt.Sprintf("CLUSTERINIT_LISTEN=:%d", port),
		fmt.Sprintf("PORT=%d", port),
		"HOSTNAME=does-not-resolve.invalid",
		"CLUSTERINIT_LOG_LEVEL=info",
	}, extra...)...)
	p := start(t, false, env, "--", "node", path)
	p.waitLog("worker ready", workers, 20*time.Second)
	return p, fmt.Sprintf("http://127.0.0.1:%d", port)
}

// slowRequest starts a request that takes d, and returns its status later.
func slowRequest(url string, d time.Duration) <-chan string {
	return slowRequestUntil(url, d, "")
}

// slowRequestUntil is slowRequest answered sooner once the file release
// exists (testdata/apps/http.js's until=).
func slowRequestUntil(url string, d time.Duration, release string) <-chan string {
	out := make(chan string, 1)
	go func() {
		client := &http.Client{Timeout: d + 20*time.Second}
		resp, err := client.Get(fmt.Sprintf("%s/slow?ms=%d&until=%s", url, d.Milliseconds(), release))
		if err != nil {
			out <- err.Error()
			return
		}
		resp.Body.Close()
		out <- fmt.Sprint(resp.StatusCode)
	}()
	return out
}

func TestReloadUnderLoadLosesNothing(t *testing.T) {
	for _, c := range []struct {
		name      string
		mode      string
		keepAlive bool
	}{
		{"shared/keep-alive", "shared", true},
		{"shared/new-connection", "shared", false},
		{"reuseport/keep-alive", "reuseport", true},
		{"reuseport/new-connection", "reuseport", false},
	} {
		t.Run(c.name, func(t *testing.T) {
			p, url := nodeFleet(t, 2, "http.js", "CLUSTERINIT_LISTEN_MODE="+c.mode, "KEEP_ALIVE_TIMEOUT=65000")
			before := readyPids(p.logs())
			l := startLoad(t, url+"/", 8, c.keepAlive)
			l.waitRequests(300)
			// In flight during its worker's drain by construction: it
			// ends when released, once that worker drains.
			release := filepath.Join(t.TempDir(), "release")
			slow := slowRequestUntil(url, 2*time.Minute, release)
			slowPID := loggedPID(t, p, "slow-start pid")
			l.mark()
			p.signal(syscall.SIGHUP)
			releaseWhenDraining(t, p, slowPID, release)
			p.waitLog("rolling reload done", 1, 60*time.Second)
			l.mark()
			l.waitRequests(300)
			l.reach(url+"/", before, 2, 200)
			if got := <-slow; got != "200" {
				t.Errorf("request in flight during the reload: %s, want 200", got)
			}
			p99 := l.p99s()
			ok, failed, errs, pids := l.result()
			t.Logf("%s: %d requests, %d failed, p99 before %v during %v after %v", c.name, ok, failed, p99[0], p99[1], p99[2])
			if failed != 0 {
				t.Errorf("%d of %d requests failed during the reload: %v", failed, ok+failed, errs)
			}
			if newServed := countNew(pids, before); newServed != 2 {
				t.Errorf("%d new workers answered after the reload, want 2 (pids %v)", newServed, pids)
			}
			drained := p.logsWith("draining worker")
			if len(drained) != 2 || drained[0]["reason"] != "reload" {
				t.Errorf("want both old workers drained for the reload, got %v", drained)
			}
			p.signal(syscall.SIGTERM)
			if code := p.wait(30 * time.Second); code != 0 {
				t.Errorf("exit code %d", code)
			}
		})
	}
}

// A reload hands each old worker's keep-alive connections to its successor
// gradually: the old worker keeps serving them and ends them one by one
// through the handover window (5 s), each after a response carrying
// Connection: close, instead of all at its next responses; nothing fails.
func TestReloadHandsConnectionsOverGradually(t *testing.T) {
	p, url := nodeFleet(t, 2, "http.js", "KEEP_ALIVE_TIMEOUT=65000")
	before := readyPids(p.logs())
	l := startLoad(t, url+"/", 20, true)
	l.waitRequests(500)
	p.signal(syscall.SIGHUP)
	p.waitLog("rolling reload done", 1, 60*time.Second)
	p.waitExits(2, 30*time.Second)
	l.waitRequests(100)
	l.mu.Lock()
	closes := slices.Clone(l.closes)
	l.mu.Unlock()
	ok, failed, errs, _ := l.result()
	if failed != 0 {
		t.Errorf("%d of %d requests failed during the handover: %v", failed, ok+failed, errs)
	}
	spread := 0
	for pid := range before {
		var first, last time.Time
		n := 0
		for _, c := range closes {
			if c.pid != pid {
				continue
			}
			if n == 0 {
				first = c.at
			}
			last, n = c.at, n+1
		}
		t.Logf("old worker %d: %d connections closed over %v", pid, n, last.Sub(first).Round(time.Millisecond))
		// The k-th of n closes at k/n of the window less its 0.5 s tail
		// (the last one's close goes out before the stop signal): the first
		// and the last are (n-1)/n of 4.5 s apart. Shared accept spreads
		// connections unevenly (19 and 1 seen in CI): a worker holding one
		// shows no spread, but of 20 connections over two workers one
		// always holds 10 or more, and that one is checked.
		if n < 2 {
			continue
		}
		if want := 4500 * time.Millisecond * time.Duration(n-1) / time.Duration(n) * 8 / 10; last.Sub(first) < want {
			t.Errorf("old worker %d ended %d keep-alive connections within %v: want them spread over the 5 s handover's 4.5 s of turns (at least %v apart)",
				pid, n, last.Sub(first), want)
		}
		spread = max(spread, n)
	}
	if spread < 10 {
		t.Errorf("no old worker ended 10 connections or more (%d at most): the handover's spread is not shown", spread)
	}
	for _, d := range p.logsWith("draining worker") {
		if h, _ := d["handover"].(float64); time.Duration(h) != 5*time.Second {
			t.Errorf("drain %v: want a 5s handover", d)
		}
	}
}

func TestReloadWithCrashingReleaseKeepsOldWorkers(t *testing.T) {
	marker := filepath.Join(t.TempDir(), "bad-release")
	port := freePort(t)
	health := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	p, url := nodeFleet(t, 2, "crash-if.js", "CRASH_FILE="+marker, "CLUSTERINIT_HEALTH_ADDR="+health)
	_ = port
	old := map[int]bool{}
	for _, l := range p.logsWith("worker ready") {
		old[num(l, "pid")] = true
	}
	l := startLoad(t, url+"/", 8, true)
	l.waitRequests(200)
	os.WriteFile(marker, nil, 0o644)
	p.signal(syscall.SIGHUP)
	p.waitLog("rolling reload failed: a new worker did not get ready; the old workers keep serving", 1, 20*time.Second)
	l.waitRequests(200)
	ok, failed, errs, pids := l.result()
	if failed != 0 {
		t.Errorf("%d of %d requests failed: %v", failed, ok+failed, errs)
	}
	for pid := range pids {
		if !old[pid] {
			t.Errorf("pid %d of the bad release answered", pid)
		}
	}
	if len(p.logsWith("draining worker")) != 0 {
		t.Errorf("an old worker was drained although its replacement never got ready")
	}
	metrics := httpGet(t, "http://"+health+"/metrics")
	if !strings.Contains(metrics, `clusterinit_reloads_total{result="failure"} 1`) {
		t.Errorf("the failed reload is not counted:\n%s", metrics)
	}
	p.signal(syscall.SIGTERM)
	if code := p.wait(30 * time.Second); code != 0 {
		t.Errorf("exit code %d", code)
	}
}

func TestStopUnderLoadFinishesInFlight(t *testing.T) {
	p, url := nodeFleet(t, 2, "http.js", "CLUSTERINIT_DRAIN_TIMEOUT=10s")
	l := startLoad(t, url+"/", 4, true)
	l.waitRequests(100)
	slow := slowRequest(url, 2*time.Second)
	waitFor(t, 5*time.Second, "the slow request in a worker", func() bool {
		return strings.Contains(p.stdout.String(), "slow-start")
	})
	t0 := time.Now()
	p.signal(syscall.SIGTERM)
	if code := p.wait(15 * time.Second); code != 0 {
		t.Errorf("exit code %d, want 0", code)
	}
	if d := time.Since(t0); d > 10*time.Second {
		t.Errorf("stop took %v, longer than DRAIN_TIMEOUT", d)
	}
	if got := <-slow; got != "200" {
		t.Errorf("in-flight request: %s, want 200", got)
	}
	l.finish()
	for _, e := range p.exits() {
		if e["reason"] != "stopped" || e["status"] != "exit code 0" {
			t.Errorf("worker exit %v, want a clean stop", e)
		}
	}
}

func TestPM2StyleAppReadyMessageAndSIGINT(t *testing.T) {
	p, url := nodeFleet(t, 2, "pm2-style.js", "CLUSTERINIT_READY=message", "CLUSTERINIT_STOP_SIGNAL=SIGINT")
	for _, l := range p.logsWith("worker ready") {
		if l["by"] != "message" {
			t.Errorf("ready by %v, want the app's process.send('ready')", l["by"])
		}
	}
	httpGet(t, url+"/")
	p.signal(syscall.SIGHUP)
	p.waitLog("rolling reload done", 1, 60*time.Second)
	p.signal(syscall.SIGTERM)
	if code := p.wait(20 * time.Second); code != 0 {
		t.Errorf("exit code %d", code)
	}
	for _, e := range p.logsWith("draining worker") {
		if e["signal"] != "SIGINT" {
			t.Errorf("drained with %v, want SIGINT", e["signal"])
		}
	}
	for _, e := range p.exits() {
		if e["reason"] != "stopped" || e["status"] != "exit code 0" {
			t.Errorf("worker exit %v, want its own clean SIGINT exit", e)
		}
	}
}

func TestReadyTimeoutKillsAndNeverCountsReady(t *testing.T) {
	// READY=message and an app that never says ready.
	port := freePort(t)
	env := testEnv("CLUSTERINIT_WORKERS=1", fmt.Sprintf("CLUSTERINIT_LISTEN=:%d", port), fmt.Sprintf("PORT=%d", port),
		"CLUSTERINIT_READY=message", "CLUSTERINIT_READY_TIMEOUT=500ms", "CLUSTERINIT_MAX_FAILED_STARTS=2",
		"CLUSTERINIT_RESTART_DELAY=10ms")
	p := start(t, false, env, "--", "node", "testdata/apps/http.js")
	if code := p.wait(20 * time.Second); code != 1 {
		t.Errorf("exit code %d, want 1 after MAX_FAILED_STARTS of ready timeouts", code)
	}
	if n := len(p.logsWith("worker not ready within READY_TIMEOUT: killing it")); n != 2 {
		t.Errorf("%d ready timeouts logged, want 2", n)
	}
	if n := len(p.logsWith("worker ready")); n != 0 {
		t.Errorf("a worker that never said ready was counted ready")
	}
}

func TestWorkerSendingAHandleIsNotStalled(t *testing.T) {
	p, url := nodeFleet(t, 1, "send-handle.js", "CLUSTERINIT_READY=message")
	// "ready" follows the handle: it arrives only because clusterinit refused
	// the handle (Node queues every send until then).
	if l := p.logsWith("worker ready"); l[0]["by"] != "message" {
		t.Errorf("ready by %v", l[0]["by"])
	}
	if len(p.logsWith("refused a handle sent over ipc (clusterinit does not take handles)")) == 0 {
		t.Errorf("the handle was not refused")
	}
	httpGet(t, url+"/")
}

func httpGet(t *testing.T, url string) string {
	t.Helper()
	client := &http.Client{Timeout: 10 * time.Second}
	resp, err := client.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	var b strings.Builder
	buf := make([]byte, 32<<10)
	for {
		n, err := resp.Body.Read(buf)
		b.Write(buf[:n])
		if err != nil {
			break
		}
	}
	return b.String()
}
