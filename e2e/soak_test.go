package e2e

import (
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/clusterinit/clusterinit/internal/testkit"
)

// TestSoakRestartsAndReloads: 10,000 worker restarts, then 1,000 rolling
// reloads, with clusterinit's RSS, fd count and goroutine count sampled as
// they go. SOAK_EXITS and SOAK_RELOADS change the counts for a quick local
// run; the defaults are what docs/reliability.md reports.
func TestSoakRestartsAndReloads(t *testing.T) {
	needLong(t)
	exits := soakCount(t, "SOAK_EXITS", 10000)
	reloads := soakCount(t, "SOAK_RELOADS", 1000)
	t.Run("restarts", func(t *testing.T) { soakRestarts(t, exits) })
	t.Run("reloads", func(t *testing.T) { soakReloads(t, reloads) })
}

func soakCount(t *testing.T, key string, def int) int {
	s := os.Getenv(key)
	if s == "" {
		return def
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 10 {
		t.Fatalf("%s=%q: want a whole number, at least 10", key, s)
	}
	return n
}

// soakWorkers run the restart phase: with 4, two cores stay busy forking.
const soakWorkers = 4

// soakRestarts: shell workers that exit as soon as they start, each
// restarted 1 ms later, until `exits` exits were counted, with readings at a
// tenth, half and all of them. Then, on SIGTERM, STOP_DELAY holds
// clusterinit up with nothing restarting: the one quiet moment, with no
// worker at all, to read it exactly.
func soakRestarts(t *testing.T, exits int) {
	ref := soakReference(t)
	t.Logf("reference: a fresh clusterinit holds %d fds (%d seen from /proc) and %d goroutines besides its workers'",
		ref.fds, ref.procFds, ref.goroutines)

	hport := freePort(t)
	health := fmt.Sprintf("http://127.0.0.1:%d", hport)
	// Each worker exits at once with a status that names its slot. A shell,
	// not this test binary: under -race the binary takes 50-70 ms of CPU
	// to start (the soak ran at 14 exits/s), and what is soaked here is
	// clusterinit's bookkeeping, not the worker.
	p := start(t, false, fleetEnv(soakWorkers,
		fmt.Sprintf("CLUSTERINIT_HEALTH_ADDR=127.0.0.1:%d", hport),
		"CLUSTERINIT_RESTART_DELAY=1ms", "CLUSTERINIT_MIN_UPTIME=1ms",
		"CLUSTERINIT_MAX_FAILED_STARTS=1000000",
		"CLUSTERINIT_STOP_DELAY=5s",
		"CLUSTERINIT_LOG_LEVEL=info"), "--", "/bin/sh", "-c", "exit $((10 + CLUSTERINIT_WORKER))")
	pid := p.cmd.Process.Pid

	t0 := time.Now()
	var first churnFigures
	n, progressAt := 0, time.Now()
	for i, cp := range []int{exits / 10, exits / 2, exits} {
		// No bound on the whole: machines differ fivefold in how fast they
		// start processes. A fleet that stops restarting fails.
		for n < cp {
			if time.Since(progressAt) > time.Minute {
				t.Fatalf("%d exits, and none for a minute; want %d", n, cp)
			}
			time.Sleep(20 * time.Millisecond)
			if m, err := relMetrics(health); err == nil {
				if now := int(relSum(m, "clusterinit_worker_exits_total")); now > n {
					n, progressAt = now, time.Now()
				}
			}
		}
		el := time.Since(t0)
		f := churnReadings(t, health, pid)
		t.Logf("%6d exits after %5.1f s (%3.0f/s): %s", n, el.Seconds(), float64(n)/el.Seconds(), f)
		// A leak raises every reading; transients (a spawn under way, a
		// worker dead but not reaped yet) move single readings either way.
		if f.minFds > ref.fds || f.minGoroutines > ref.goroutines {
			t.Errorf("after %d exits: never as few as the reference's %d fds and %d goroutines besides the workers' (at least %d and %d)",
				n, ref.fds, ref.goroutines, f.minFds, f.minGoroutines)
		}
		if i == 0 {
			first = f
		} else if f.rss > first.rss+soakRSSSlack {
			t.Errorf("after %d exits: RSS %.1f MiB, up %.1f MiB from %.1f MiB after %d (slack %.0f MiB)",
				n, mib(f.rss), mib(f.rss-first.rss), mib(first.rss), exits/10, mib(soakRSSSlack))
		}
	}

	// The quiet moment: stopping, STOP_DELAY, every worker gone by itself.
	p.signal(syscall.SIGTERM)
	quiet, m := quietReading(t, health, pid, 0, 4*time.Second)
	t.Logf("stopping, no worker left: %d fds (%d seen from /proc), %d goroutines, RSS %.1f MiB",
		quiet.fds, quiet.procFds, quiet.goroutines, mib(vmRSS(pid)))
	if quiet.fds != ref.fds || quiet.procFds != ref.procFds || quiet.goroutines != ref.goroutines {
		t.Errorf("with no worker left: %d fds (%d from /proc) and %d goroutines, want the reference's %d (%d) and %d",
			quiet.fds, quiet.procFds, quiet.goroutines, ref.fds, ref.procFds, ref.goroutines)
	}
	if code := p.wait(30 * time.Second); code != 0 {
		t.Errorf("exit code %d, want 0", code)
	}

	// Every exit attributed: each to the worker started with that pid, in
	// that slot, with the status that names the slot (10+slot).
	led := attributeExits(p, func(l map[string]any) string {
		if want := fmt.Sprintf("exit code %d", 10+num(l, "slot")); l["status"] != want || l["reason"] != "crash" {
			return fmt.Sprintf("%v (%v), want %s (crash)", l["status"], l["reason"], want)
		}
		return ""
	})
	reportLedger(t, led, int(relSum(m, "clusterinit_worker_exits_total")))
}

// soakReference measures a fresh clusterinit configured as the restart
// soak's, with soakWorkers workers that stay up, and returns what it holds
// besides them: each worker costs it one fd (its IPC socket) and two
// goroutines (the socket's reader and writer).
func soakReference(t *testing.T) resources {
	hport := freePort(t)
	health := fmt.Sprintf("http://127.0.0.1:%d", hport)
	env, args := helper("serve")
	p := start(t, false, fleetEnv(soakWorkers, append(env,
		fmt.Sprintf("CLUSTERINIT_HEALTH_ADDR=127.0.0.1:%d", hport),
		"CLUSTERINIT_RESTART_DELAY=1ms", "CLUSTERINIT_MIN_UPTIME=1ms",
		"CLUSTERINIT_MAX_FAILED_STARTS=1000000",
		"CLUSTERINIT_STOP_DELAY=5s",
		"CLUSTERINIT_LOG_LEVEL=info")...), args...)
	p.waitUp(soakWorkers)
	r, _ := quietReading(t, health, p.cmd.Process.Pid, soakWorkers, 10*time.Second)
	p.signal(syscall.SIGINT)
	p.waitLog("stop: still serving during STOP_DELAY", 1, 5*time.Second)
	p.signal(syscall.SIGINT) // the second one skips the wait
	p.wait(30 * time.Second)
	return resources{fds: r.fds - soakWorkers, procFds: r.procFds - soakWorkers, goroutines: r.goroutines - 2*soakWorkers}
}

// soakRSSSlack is how much clusterinit's RSS may grow between the first
// reading and the later ones: the Go heap and the runtime's free lists grow
// over the first thousands of allocations (log records, snapshots, exec
// arguments) before the garbage collector's target levels off. A leak of
// 256 bytes per exit would exceed it within the run.
const soakRSSSlack = 2 << 20

// churnFigures describe clusterinit while workers come and go, over 60
// readings: the fds and goroutines it holds besides its workers' (as the
// same scrape counts them), and the largest VmRSS seen.
type churnFigures struct {
	minFds, modeFds               int
	minGoroutines, modeGoroutines int
	rss                           int64
	fdsSpread, goroutineSpread    string
}

func (f churnFigures) String() string {
	return fmt.Sprintf("besides the workers' %d fds (%s) and %d goroutines (%s), RSS %.1f MiB",
		f.modeFds, f.fdsSpread, f.modeGoroutines, f.goroutineSpread, mib(f.rss))
}

func churnReadings(t *testing.T, health string, pid int) churnFigures {
	t.Helper()
	fds, gor := map[int]int{}, map[int]int{}
	var f churnFigures
	for i := 0; i < 60; i++ {
		r, err := readResources(health)
		if err != nil {
			t.Fatalf("read clusterinit's metrics: %v", err)
		}
		fds[r.fds-r.live]++
		gor[r.goroutines-2*r.live]++
		f.rss = max(f.rss, vmRSS(pid))
		time.Sleep(10 * time.Millisecond)
	}
	f.minFds, f.modeFds, f.fdsSpread = spread(fds)
	f.minGoroutines, f.modeGoroutines, f.goroutineSpread = spread(gor)
	return f
}

// spread returns the smallest and the most frequent value of a histogram,
// and the histogram as value×count.
func spread(h map[int]int) (lo, mode int, hist string) {
	var ks []int
	for k := range h {
		ks = append(ks, k)
	}
	sort.Ints(ks)
	lo, mode = ks[0], ks[0]
	var b strings.Builder
	for i, k := range ks {
		if h[k] > h[mode] {
			mode = k
		}
		if i > 0 {
			b.WriteByte(' ')
		}
		fmt.Fprintf(&b, "%d×%d", k, h[k])
	}
	return lo, mode, b.String()
}

// quietReading waits until clusterinit has exactly `live` workers, none
// draining, and the same fds and goroutines (as it reports them during a
// scrape) twice in a row; then it counts its fds in /proc/pid/fd with no
// scrape under way. It returns that reading and the metrics it came with.
func quietReading(t *testing.T, health string, pid, live int, timeout time.Duration) (resources, map[string]float64) {
	t.Helper()
	var prev, r resources
	var m map[string]float64
	var err error
	if !testkit.Poll(timeout, func() bool {
		if m, err = relMetrics(health); err != nil {
			return false
		}
		r = resources{fds: int(m["process_open_fds"]), goroutines: int(m["go_goroutines"]),
			live: int(relSum(m, "clusterinit_workers"))}
		quiet := r.live == live && m[`clusterinit_workers{state="draining"}`] == 0 && r == prev
		prev = r
		return quiet
	}) {
		t.Fatalf("clusterinit not quiet with %d workers within %v: last %+v, err %v", live, timeout, prev, err)
	}
	// The scrape's connection may take a moment to close on clusterinit's
	// side; nothing else changes now.
	r.procFds = fdCount(pid)
	for i := 0; i < 10; i++ {
		time.Sleep(10 * time.Millisecond)
		r.procFds = min(r.procFds, fdCount(pid))
	}
	return r, m
}

// reportLedger checks the log's account of exits against the counter.
func reportLedger(t *testing.T, led *ledger, counted int) {
	t.Helper()
	reused := 0
	for range led.reused {
		reused++
	}
	t.Logf("log: %d workers started, %d exits %v, statuses %v; %d pids reused by a later worker",
		led.starts, led.exits, led.reasons, led.statuses, reused)
	if led.exits != counted {
		t.Errorf("%d worker exits logged, clusterinit_worker_exits_total says %d", led.exits, counted)
	}
	if len(led.live) != 0 {
		t.Errorf("%d workers started and never reported exited: %v", len(led.live), led.live)
	}
	for i, prob := range led.problems {
		if i == 20 {
			t.Errorf("… and %d more", len(led.problems)-20)
			break
		}
		t.Error(prob)
	}
}

// soakReloads: 2 serving workers, `reloads` rolling reloads one after the
// other, alternately asked for with POST /reload and SIGHUP, each waiting
// for "rolling reload done". With SHIM=false a worker is ready at spawn, so
// a reload takes as long as two forks; before the next one the test waits
// until both new workers are up (their SIGTERM handler installed), so that
// each reload drains workers that were serving, as in production.
// SOAK_UNPACED=1 reloads without waiting, so that many workers are drained
// while still in clusterinit's exec shim, where a stop signal can be lost
// (see docs/reliability.md): then a worker may also die of SIGTERM before
// its handler is installed, but none may be left to DRAIN_TIMEOUT. Between
// reloads the fleet is quiet (2 workers, none draining), so every reading
// is exact.
func soakReloads(t *testing.T, reloads int) {
	paced := os.Getenv("SOAK_UNPACED") == ""
	hport := freePort(t)
	health := fmt.Sprintf("http://127.0.0.1:%d", hport)
	env, args := helper("serve")
	if os.Getenv("GORACE") == "" {
		// Under -race a Go program exiting 0 sleeps 1 s first (to catch
		// races at exit): drained workers would linger that long.
		env = append(env, "GORACE=atexit_sleep_ms=0")
	}
	p := start(t, false, fleetEnv(2, append(env,
		fmt.Sprintf("CLUSTERINIT_HEALTH_ADDR=127.0.0.1:%d", hport),
		"CLUSTERINIT_DRAIN_TIMEOUT=5s",
		"CLUSTERINIT_LOG_LEVEL=info")...), args...)
	pid := p.cmd.Process.Pid

	up := bufCounter{buf: p.stdout, msg: "helper up"}
	done := bufCounter{buf: p.stderr, msg: `"msg":"rolling reload done"`}
	waitCount(t, &up, 2, 10*time.Second)
	base, _ := quietReading(t, health, pid, 2, 10*time.Second)
	t.Logf("before the reloads: %d fds (%d seen from /proc), %d goroutines, RSS %.1f MiB",
		base.fds, base.procFds, base.goroutines, mib(vmRSS(pid)))

	t0 := time.Now()
	var firstRSS int64
	for i := 1; i <= reloads; i++ {
		if paced {
			waitCount(t, &up, 2*i, 10*time.Second)
		}
		if i%2 == 1 {
			resp, err := relClient.Post(health+"/reload", "", nil)
			if err != nil {
				t.Fatalf("reload %d: POST /reload: %v", i, err)
			}
			resp.Body.Close()
			if resp.StatusCode != 202 {
				t.Fatalf("reload %d: POST /reload: %s", i, resp.Status)
			}
		} else {
			p.signal(syscall.SIGHUP)
		}
		waitCount(t, &done, i, 10*time.Second)
		if i != reloads/10 && i != reloads/2 && i != reloads {
			continue
		}
		r, _ := quietReading(t, health, pid, 2, 10*time.Second)
		rss := vmRSS(pid)
		el := time.Since(t0)
		t.Logf("%5d reloads after %5.1f s (%3.0f/s): %d fds (%d seen from /proc), %d goroutines, RSS %.1f MiB",
			i, el.Seconds(), float64(i)/el.Seconds(), r.fds, r.procFds, r.goroutines, mib(rss))
		if r != base {
			t.Errorf("after %d reloads: %d fds (%d from /proc) and %d goroutines, want %d (%d) and %d as before them",
				i, r.fds, r.procFds, r.goroutines, base.fds, base.procFds, base.goroutines)
		}
		if firstRSS == 0 {
			firstRSS = rss
		} else if rss > firstRSS+soakRSSSlack {
			t.Errorf("after %d reloads: RSS %.1f MiB, up %.1f MiB from %.1f MiB after %d (slack %.0f MiB)",
				i, mib(rss), mib(rss-firstRSS), mib(firstRSS), reloads/10, mib(soakRSSSlack))
		}
	}

	_, m := quietReading(t, health, pid, 2, 10*time.Second)
	if got := m[`clusterinit_reloads_total{result="success"}`]; int(got) != reloads {
		t.Errorf("clusterinit_reloads_total{result=\"success\"} %v, want %d", got, reloads)
	}
	if got := m[`clusterinit_reloads_total{result="failure"}`]; got != 0 {
		t.Errorf("clusterinit_reloads_total{result=\"failure\"} %v, want 0", got)
	}
	if got := m[`clusterinit_worker_recycles_total{reason="reload"}`]; int(got) != 2*reloads {
		t.Errorf("clusterinit_worker_recycles_total{reason=\"reload\"} %v, want %d", got, 2*reloads)
	}
	counted := int(relSum(m, "clusterinit_worker_exits_total"))
	if paced {
		waitCount(t, &up, 2*reloads+2, 10*time.Second)
	}
	p.signal(syscall.SIGTERM)
	if code := p.wait(30 * time.Second); code != 0 {
		t.Errorf("exit code %d, want 0", code)
	}
	if n := len(p.logsWith("rolling reload done")); n != reloads {
		t.Errorf("%d \"rolling reload done\" lines, want %d", n, reloads)
	}
	// Every worker was asked to stop (drained by a reload, or at the end)
	// once up, and exited 0 from its handler. Unpaced, a worker may also
	// die of SIGTERM before its handler is installed; none may be killed.
	early := 0
	led := attributeExits(p, func(l map[string]any) string {
		switch {
		case l["reason"] == "stopped" && l["status"] == "exit code 0":
			return ""
		case !paced && l["reason"] == "stopped" && l["status"] == "signal SIGTERM":
			early++
			return ""
		}
		return fmt.Sprintf("%v (%v), drained %v after its start: want a clean stop", l["status"], l["reason"], l["drained_after_start"])
	})
	if !paced {
		t.Logf("unpaced: %d of %d workers died of SIGTERM before their handler was installed, %d were sent it again after the shim",
			early, led.exits, len(p.logsWith("stop signal sent again: the worker was still starting when it was first sent")))
	}
	// The 2 workers stopped at the end exited after the counter was read.
	reportLedger(t, led, counted+2)
}

// bufCounter counts the lines of a growing output that hold msg, reading
// only what was written since its last call (the log grows to megabytes).
type bufCounter struct {
	buf *syncBuffer
	msg string
	off int
	n   int
}

func (c *bufCounter) count() int {
	s := c.buf.String()
	if end := strings.LastIndexByte(s, '\n') + 1; end > c.off {
		c.n += strings.Count(s[c.off:end], c.msg)
		c.off = end
	}
	return c.n
}

// waitCount waits until c counts n lines.
func waitCount(t *testing.T, c *bufCounter, n int, timeout time.Duration) {
	t.Helper()
	if !testkit.Poll(timeout, func() bool { return c.count() >= n }) {
		t.Fatalf("%d lines with %q after %v, want %d", c.count(), c.msg, timeout, n)
	}
}
