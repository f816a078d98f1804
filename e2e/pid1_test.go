package e2e

import (
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"
)

// fleetEnv is the common configuration of fleet tests: Go helper workers, no
// listeners, no preload.
func fleetEnv(workers int, extra ...string) []string {
	return testEnv(append([]string{
		fmt.Sprintf("CLUSTERINIT_WORKERS=%d", workers),
		"CLUSTERINIT_LISTEN=none", "CLUSTERINIT_SHIM=false",
	}, extra...)...)
}

func TestPID1ReapsOrphanedGrandchildren(t *testing.T) {
	env, args := helper("daemonize", "CITEST_ORPHANS=100", "CITEST_ORPHAN_SLEEP=300ms")
	p := start(t, true, fleetEnv(1, env...), args...)
	p.waitLog("worker ready", 1, 10*time.Second)
	pid := p.pid()
	// Each orphan is this (race-built, on CI) test binary: on a loaded
	// machine 100 of them take far longer than 10 s to start.
	p.waitLog("reaped orphan", 100, 60*time.Second)
	// All 100 are reaped, so no zombie may be left under clusterinit
	// (polled for up to 2 s, as the other zombie checks are).
	waitFor(t, 2*time.Second, "no zombie under clusterinit (PID 1)", func() bool {
		return len(zombiesOf(pid)) == 0
	})
	if n := len(p.exits()); n != 0 {
		t.Errorf("an orphan's exit was taken for a worker's: %d worker exits", n)
	}
	p.signal(syscall.SIGTERM)
	if code := p.wait(10 * time.Second); code != 0 {
		t.Fatalf("exit code %d, want 0", code)
	}
}

func TestPID1ExitsOnSIGTERM(t *testing.T) {
	env, args := helper("serve")
	p := start(t, true, fleetEnv(2, env...), args...)
	p.waitLog("worker ready", 2, 10*time.Second)
	p.signal(syscall.SIGTERM)
	if code := p.wait(10 * time.Second); code != 0 {
		t.Fatalf("exit code %d, want 0 (a Go PID 1 without a handler exits 2)", code)
	}
}

// Workers that exit every few milliseconds with a status naming their slot,
// each leaving orphans that exit at about the same time: the reaper sees
// bursts of mixed exits, and not one worker status may be lost or
// misattributed.
func TestExitAttributionUnderBursts(t *testing.T) {
	env, args := helper("orphans", "CITEST_ORPHANS=10", "CITEST_THEN=exit",
		"CITEST_EXIT_AFTER=15ms", "CITEST_ORPHAN_SLEEP=15ms")
	p := start(t, true, fleetEnv(4, append(env, "CLUSTERINIT_RESTART_DELAY=1ms",
		"CLUSTERINIT_MIN_UPTIME=1ms", "CLUSTERINIT_MAX_FAILED_STARTS=1000", "CLUSTERINIT_LOG_LEVEL=debug")...), args...)
	waitFor(t, 60*time.Second, "500 exits of workers and orphans", func() bool {
		return len(p.exits())+len(p.logsWith("reaped orphan")) >= 500
	})
	pid := p.pid()
	p.signal(syscall.SIGTERM)
	p.wait(20 * time.Second)

	started := map[int]int{} // pid → slot
	for _, l := range p.logsWith("worker started") {
		started[num(l, "pid")] = num(l, "slot")
	}
	exited := map[int]bool{}
	for _, l := range p.exits() {
		wpid, slot := num(l, "pid"), num(l, "slot")
		if exited[wpid] {
			t.Errorf("pid %d exited twice", wpid)
		}
		exited[wpid] = true
		if s, ok := started[wpid]; !ok || s != slot {
			t.Errorf("exit of pid %d attributed to slot %d, started in slot %d (known %v)", wpid, slot, s, ok)
		}
		// A worker stopped at the end may have exited by itself at the same
		// moment, or died of SIGTERM before its handler was installed.
		want := fmt.Sprintf("exit code %d", 10+slot)
		if l["status"] != want && !(l["reason"] == "stopped" && (l["status"] == "exit code 0" || l["status"] == "signal SIGTERM")) {
			t.Errorf("pid %d slot %d: status %v (%v), want %s", wpid, slot, l["status"], l["reason"], want)
		}
	}
	for wpid, slot := range started {
		if !exited[wpid] {
			t.Errorf("worker pid %d (slot %d) started but its exit was never reported", wpid, slot)
		}
	}
	if len(exited) < 40 {
		t.Errorf("only %d worker exits: the test did not exercise restarts", len(exited))
	}
	if zs := zombiesOf(pid); len(zs) > 0 {
		t.Errorf("zombies: %v", zs)
	}
}

func TestStopWaitsForSlowWorker(t *testing.T) {
	env, args := helper("serve", "CITEST_TERM_DELAY=1s")
	p := start(t, false, fleetEnv(2, env...), args...)
	p.waitUp(2)
	t0 := time.Now()
	p.signal(syscall.SIGTERM)
	code := p.wait(10 * time.Second)
	if code != 0 {
		t.Fatalf("exit code %d, want 0", code)
	}
	if d := time.Since(t0); d < time.Second {
		t.Errorf("exited after %v, before the workers' 1 s drain", d)
	}
	for _, l := range p.exits() {
		if l["reason"] != "stopped" || l["status"] != "exit code 0" {
			t.Errorf("worker exit %v, want stopped with exit code 0", l)
		}
	}
}

func TestStopKillsWorkerIgnoringSIGTERM(t *testing.T) {
	env, args := helper("ignore")
	p := start(t, false, fleetEnv(1, append(env, "CLUSTERINIT_DRAIN_TIMEOUT=1s")...), args...)
	p.waitUp(1)
	t0 := time.Now()
	p.signal(syscall.SIGTERM)
	if code := p.wait(10 * time.Second); code != 0 {
		t.Fatalf("exit code %d, want 0", code)
	}
	if d := time.Since(t0); d < time.Second || d > 5*time.Second {
		t.Errorf("stopped after %v, want about DRAIN_TIMEOUT (1s)", d)
	}
	killed := p.logsWith("worker killed: it did not exit within DRAIN_TIMEOUT")
	if len(killed) != 1 || killed[0]["level"] != "WARN" || killed[0]["status"] != "signal SIGKILL" {
		t.Errorf("want one warning naming the killed worker, got %v", killed)
	}
}

func TestSecondSignalKillsAtOnce(t *testing.T) {
	env, args := helper("ignore")
	p := start(t, false, fleetEnv(1, append(env, "CLUSTERINIT_DRAIN_TIMEOUT=60s")...), args...)
	p.waitUp(1)
	p.signal(syscall.SIGTERM)
	p.waitLog("draining worker", 1, 5*time.Second)
	p.signal(syscall.SIGINT)
	if code := p.wait(10 * time.Second); code != 0 {
		t.Fatalf("exit code %d, want 0", code)
	}
}

func TestStopDelayKeepsServing(t *testing.T) {
	env, args := helper("serve")
	p := start(t, false, fleetEnv(1, append(env, "CLUSTERINIT_STOP_DELAY=1s")...), args...)
	p.waitLog("worker ready", 1, 10*time.Second)
	t0 := time.Now()
	p.signal(syscall.SIGTERM)
	drain := p.waitLog("draining worker", 1, 5*time.Second)
	if d := time.Since(t0); d < time.Second {
		t.Errorf("drained after %v, before STOP_DELAY", d)
	}
	_ = drain
	if code := p.wait(10 * time.Second); code != 0 {
		t.Fatalf("exit code %d", code)
	}
}

func TestSignalsForwardedToEveryWorker(t *testing.T) {
	env, args := helper("serve")
	p := start(t, false, fleetEnv(3, env...), args...)
	p.waitLog("worker ready", 3, 10*time.Second)
	waitFor(t, 5*time.Second, "3 workers up", func() bool { return strings.Count(p.stdout.String(), "helper up") == 3 })
	p.signal(syscall.SIGUSR2)
	waitFor(t, 5*time.Second, "SIGUSR2 in every worker", func() bool {
		out := p.stdout.String()
		for slot := 0; slot < 3; slot++ {
			if !strings.Contains(out, fmt.Sprintf("helper got SIGUSR2 slot=%d", slot)) {
				return false
			}
		}
		return true
	})
	p.signal(syscall.SIGTERM)
	if code := p.wait(10 * time.Second); code != 0 {
		t.Fatalf("exit code %d", code)
	}
}

func TestCrashRestartKeepsSlot(t *testing.T) {
	env, args := helper("crashonce", "CITEST_DIR="+t.TempDir())
	p := start(t, false, fleetEnv(2, env...), args...)
	p.waitLog("worker exited unexpectedly", 2, 10*time.Second)
	ready := p.waitLog("worker ready", 4, 10*time.Second)
	slots := map[int]int{}
	for _, l := range ready {
		slots[num(l, "slot")]++
	}
	if slots[0] != 2 || slots[1] != 2 {
		t.Errorf("want each slot started twice (crash, restart), got %v", slots)
	}
	waitFor(t, 5*time.Second, "restarted workers up", func() bool {
		out := p.stdout.String()
		return strings.Contains(out, "helper up slot=0") && strings.Contains(out, "helper up slot=1")
	})
	p.signal(syscall.SIGTERM)
	if code := p.wait(10 * time.Second); code != 0 {
		t.Fatalf("exit code %d", code)
	}
}

func TestCrashLoopBacksOffThenGivesUp(t *testing.T) {
	env, args := helper("exit", "CITEST_EXIT_CODE=3")
	p := start(t, false, fleetEnv(1, append(env, "CLUSTERINIT_RESTART_DELAY=50ms", "CLUSTERINIT_MAX_FAILED_STARTS=5")...), args...)
	if code := p.wait(20 * time.Second); code != 1 {
		t.Fatalf("exit code %d, want 1 after MAX_FAILED_STARTS", code)
	}
	var delays []string
	for _, l := range p.logsWith("restarting worker after backoff") {
		delays = append(delays, fmt.Sprint(l["delay"]))
	}
	// slog renders durations in nanoseconds in JSON.
	want := []string{"5e+07", "1e+08", "2e+08", "4e+08"}
	if fmt.Sprint(delays) != fmt.Sprint(want) {
		t.Errorf("backoff delays %v, want %v (doubling from 50ms)", delays, want)
	}
	if len(p.logsWith("giving up: too many consecutive failed starts")) != 1 {
		t.Errorf("no give-up line")
	}
	for _, l := range p.exits() {
		if l["status"] != "exit code 3" || num(l, "slot") != 0 {
			t.Errorf("exit %v, want slot 0 exit code 3", l)
		}
	}
}

func TestScaleWithTTINAndTTOU(t *testing.T) {
	env, args := helper("serve")
	p := start(t, false, fleetEnv(1, env...), args...)
	p.waitLog("worker ready", 1, 10*time.Second)
	p.signal(syscall.SIGTTIN)
	ready := p.waitLog("worker ready", 2, 10*time.Second)
	if num(ready[1], "slot") != 1 {
		t.Errorf("new worker in slot %d, want 1", num(ready[1], "slot"))
	}
	p.signal(syscall.SIGTTOU)
	ex := p.waitExits(1, 10*time.Second)
	if num(ex[0], "slot") != 1 || ex[0]["reason"] != "stopped" {
		t.Errorf("scale-down exit %v, want slot 1 stopped", ex[0])
	}
	p.signal(syscall.SIGTERM)
	if code := p.wait(10 * time.Second); code != 0 {
		t.Fatalf("exit code %d", code)
	}
}
