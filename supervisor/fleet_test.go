package supervisor

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/clusterinit/clusterinit/config"
	"github.com/clusterinit/clusterinit/listeners"
	"github.com/clusterinit/clusterinit/preload"
	"github.com/clusterinit/clusterinit/procsample"
	"github.com/clusterinit/clusterinit/signals"
)

// The fleet's state machine, driven in milliseconds: a fake Procs stands in
// for fork and kill, the clock is fixed and moved by hand, and exits, IPC
// messages, signals and timer ticks are fed to the loop's handlers in the
// order Run would deliver them. Nothing here forks or sleeps.

// fakeProcs records starts and signals; pids count up from 100.
type fakeProcs struct {
	nextPid int
	starts  []start                  // in order
	signals map[int][]syscall.Signal // by pid
	fail    func(slot int) error     // a start of slot fails with this (nil: never)
}

type start struct {
	slot, pid int
	heapMiB   int64
}

func (p *fakeProcs) Start(spec WorkerSpec) (int, *os.File, error) {
	slot := spec.Slot
	if p.fail != nil {
		if err := p.fail(slot); err != nil {
			return 0, nil, err
		}
	}
	p.nextPid++
	pid := 100 + p.nextPid
	p.starts = append(p.starts, start{slot, pid, spec.HeapMiB})
	return pid, nil, nil
}

func (p *fakeProcs) SignalGroup(pid int, sig syscall.Signal) error {
	p.signals[pid] = append(p.signals[pid], sig)
	return nil
}

// logRecorder keeps every record the fleet logs.
type logRecorder struct{ msgs *[]string }

func (l logRecorder) Enabled(context.Context, slog.Level) bool { return true }
func (l logRecorder) Handle(_ context.Context, r slog.Record) error {
	*l.msgs = append(*l.msgs, r.Message)
	return nil
}
func (l logRecorder) WithAttrs([]slog.Attr) slog.Handler { return l }
func (l logRecorder) WithGroup(string) slog.Handler      { return l }

// fleet is a Supervisor under test with its fake processes and clock.
type fleet struct {
	t     *testing.T
	s     *Supervisor
	procs *fakeProcs
	now   time.Time
	logs  []string
}

// newFleet makes a fleet of n slots from CLUSTERINIT_* settings (READY=message
// unless set, so that readiness is the test's to give) and starts it.
func newFleet(t *testing.T, n int, env ...string) *fleet {
	t.Helper()
	return newFleetConfig(t, n, fleetConfig(t, env...))
}

func fleetConfig(t testing.TB, env ...string) *config.Config {
	t.Helper()
	cfg, err := config.Load(append([]string{"CLUSTERINIT_LISTEN=none", "CLUSTERINIT_READY=message",
		"CLUSTERINIT_SHIM=false", "CLUSTERINIT_HEALTH_ADDR=off"}, env...))
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

func newFleetConfig(t *testing.T, n int, cfg *config.Config) *fleet {
	t.Helper()
	socks, err := listeners.Open(nil, false, n)
	if err != nil {
		t.Fatal(err)
	}
	f := &fleet{t: t, procs: &fakeProcs{signals: map[int][]syscall.Signal{}},
		now: time.Date(2026, 12, 2, 3, 0, 0, 0, time.UTC)}
	out := NewLineWriter(io.Discard)
	f.s = New(Options{
		Config: cfg, Path: "/bin/app", Argv: []string{"app"}, Workers: n,
		Listeners: socks, Log: slog.New(logRecorder{&f.logs}), Stdout: out, Stderr: out,
		Procs: f.procs,
	})
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("fleet log:\n  %s", strings.Join(f.logs, "\n  "))
		}
	})
	return f
}

// run starts the first workers, as Run does.
func (f *fleet) run() *fleet {
	f.s.startAll(f.now)
	f.settle()
	return f
}

// settle fires what the timer would fire at once: every deadline not after
// now.
func (f *fleet) settle() { f.advance(0) }

// advance moves the clock by d, firing the timer at each deadline on the way,
// as Run's loop does.
func (f *fleet) advance(d time.Duration) {
	f.t.Helper()
	end := f.now.Add(d)
	for i := 0; ; i++ {
		if i > 10000 {
			f.t.Fatal("the timer keeps firing without time passing")
		}
		next := f.s.nextDeadline(f.now)
		if next.After(end) {
			break
		}
		if next.After(f.now) {
			f.now = next
		}
		f.s.onTimer(f.now)
	}
	f.now = end
}

// until moves the clock from deadline to deadline until cond holds.
func (f *fleet) until(desc string, cond func() bool) {
	f.t.Helper()
	for i := 0; !cond(); i++ {
		if i > 1000 {
			f.t.Fatalf("never: %s", desc)
		}
		f.advance(f.s.nextDeadline(f.now).Sub(f.now))
	}
}

func (f *fleet) exit(pid int, status unix.WaitStatus) {
	f.t.Helper()
	if _, ok := f.s.workers[pid]; !ok {
		f.t.Fatalf("exit of pid %d, not a live worker", pid)
	}
	f.s.onExit(signals.Exit{Pid: pid, Status: status}, f.now)
	f.settle()
}

func (f *fleet) ready(pid int) {
	f.t.Helper()
	f.s.onMessage(message{pid: pid, Message: preload.Message{Kind: preload.KindReady}}, f.now)
	f.settle()
}

func (f *fleet) signal(sig syscall.Signal) {
	f.s.onSignal(sig, f.now)
	f.settle()
}

// Exit statuses.
func exitCode(c int) unix.WaitStatus              { return unix.WaitStatus(c << 8) }
func killedBy(sig syscall.Signal) unix.WaitStatus { return unix.WaitStatus(sig) }

// pidsOf is the pids started, in order, for slot (every slot: -1).
func (f *fleet) pidsOf(slot int) []int {
	var pids []int
	for _, st := range f.procs.starts {
		if slot < 0 || st.slot == slot {
			pids = append(pids, st.pid)
		}
	}
	return pids
}

// last is the pid last started in slot.
func (f *fleet) last(slot int) int {
	f.t.Helper()
	pids := f.pidsOf(slot)
	if len(pids) == 0 {
		f.t.Fatalf("no worker was started in slot %d", slot)
	}
	return pids[len(pids)-1]
}

// readyAll makes every starting worker ready.
func (f *fleet) readyAll() {
	for _, w := range f.s.workersByPid() {
		if w.state == starting {
			f.ready(w.pid)
		}
	}
}

func (f *fleet) state(pid int) string {
	if w, ok := f.s.workers[pid]; ok {
		return w.state.String()
	}
	return "exited"
}

func (f *fleet) wantState(pid int, want string) {
	f.t.Helper()
	if got := f.state(pid); got != want {
		f.t.Fatalf("pid %d is %s, want %s", pid, got, want)
	}
}

func (f *fleet) wantStarts(n int) {
	f.t.Helper()
	if len(f.procs.starts) != n {
		f.t.Fatalf("%d workers started, want %d: %v", len(f.procs.starts), n, f.procs.starts)
	}
}

func (f *fleet) wantSignals(pid int, want ...syscall.Signal) {
	f.t.Helper()
	if got := f.procs.signals[pid]; !slices.Equal(got, want) {
		f.t.Fatalf("pid %d got signals %v, want %v", pid, got, want)
	}
}

// drainExit: every draining worker exits as asked.
func (f *fleet) drainExit() {
	for _, w := range f.s.workersByPid() {
		if w.state == draining {
			f.exit(w.pid, exitCode(0))
		}
	}
}

// replacements counts the workers starting while another one serves their
// slot: at most one in the fleet, ever.
func (f *fleet) replacements() int {
	n := 0
	for _, w := range f.s.workers {
		if sl := f.s.slotOf(w.slot); sl != nil && sl.current != nil && sl.current != w && w.state != draining {
			n++
		}
	}
	return n
}

func (f *fleet) logged(msg string) bool { return slices.Contains(f.logs, msg) }

func TestFleetFirstStart(t *testing.T) {
	f := newFleet(t, 3).run()
	f.wantStarts(3)
	for i, st := range f.procs.starts {
		if st.slot != i {
			t.Fatalf("starts %v, want slots 0, 1, 2 in order", f.procs.starts)
		}
		f.wantState(st.pid, "starting")
	}
	f.readyAll()
	if snap := f.s.makeSnapshot(f.now); snap.Ready != 3 || snap.Starts != 3 {
		t.Fatalf("ready %d starts %d, want 3 and 3", snap.Ready, snap.Starts)
	}
}

// A crash after MIN_UPTIME restarts the slot after RESTART_DELAY; crashes
// sooner are failed starts, each doubling the delay; a worker that then runs
// MIN_UPTIME resets the backoff.
func TestFleetBackoffAndResetAfterMinUptime(t *testing.T) {
	f := newFleet(t, 1, "CLUSTERINIT_RESTART_DELAY=100ms", "CLUSTERINIT_MIN_UPTIME=10s").run()
	f.ready(f.last(0))
	f.advance(time.Minute)
	restartAfter := func(want time.Duration) {
		t.Helper()
		n := len(f.procs.starts)
		f.advance(want - time.Millisecond)
		f.wantStarts(n)
		f.advance(time.Millisecond)
		f.wantStarts(n + 1)
	}
	f.exit(f.last(0), exitCode(1)) // proven: a plain crash
	restartAfter(100 * time.Millisecond)
	f.exit(f.last(0), exitCode(1)) // never ready: a failed start
	restartAfter(200 * time.Millisecond)
	f.ready(f.last(0))
	f.advance(time.Second)
	f.exit(f.last(0), exitCode(1)) // ready, but before MIN_UPTIME
	restartAfter(400 * time.Millisecond)
	if f.s.failedStarts != 2 {
		t.Fatalf("%d consecutive failed starts, want 2", f.s.failedStarts)
	}
	f.ready(f.last(0))
	f.advance(10 * time.Second) // proven now
	if f.s.failedStarts != 0 || f.s.slots[0].crashes != 0 {
		t.Fatalf("after MIN_UPTIME: failed starts %d, crashes %d, want 0 and 0", f.s.failedStarts, f.s.slots[0].crashes)
	}
	f.exit(f.last(0), killedBy(syscall.SIGSEGV))
	restartAfter(100 * time.Millisecond)
	if got := f.s.counters.exits[ExitCrash]; got != 4 {
		t.Fatalf("%d crashes counted, want 4", got)
	}
}

// MAX_FAILED_STARTS consecutive failed starts stop the fleet: everything
// drains, nothing starts again, and the exit status is 1.
func TestFleetGivesUpAfterMaxFailedStarts(t *testing.T) {
	f := newFleet(t, 2, "CLUSTERINIT_MAX_FAILED_STARTS=3").run()
	f.ready(f.last(1))
	f.exit(f.last(0), exitCode(1))
	f.advance(time.Second)
	f.exit(f.last(0), exitCode(1))
	f.advance(time.Second)
	f.exit(f.last(0), exitCode(1))
	if !f.s.stopping || f.s.exitCode != 1 {
		t.Fatalf("stopping %v exit code %d, want a stop with 1", f.s.stopping, f.s.exitCode)
	}
	f.wantState(f.last(1), "draining")
	n := len(f.procs.starts)
	f.drainExit()
	f.advance(time.Minute)
	f.wantStarts(n)
	if !f.s.finished() || f.s.exitCode != 1 {
		t.Fatalf("finished %v with %d, want finished with 1", f.s.finished(), f.s.exitCode)
	}
}

// A rolling reload replaces one worker at a time: the next slot's new
// worker starts only once the previous one is ready and its old worker
// drains.
func TestFleetReloadOneAtATime(t *testing.T) {
	f := newFleet(t, 3).run()
	f.readyAll()
	old := f.pidsOf(-1)
	f.signal(syscall.SIGHUP)
	for i := 0; i < 3; i++ {
		f.wantStarts(4 + i)
		if n := f.replacements(); n != 1 {
			t.Fatalf("step %d: %d replacements under way, want 1", i, n)
		}
		newPid := f.last(i)
		f.wantState(old[i], "ready")
		f.advance(time.Second)
		f.wantStarts(4 + i) // nothing else starts while newPid is not ready
		f.ready(newPid)
		f.wantState(old[i], "draining")
		f.wantSignals(old[i], syscall.SIGTERM)
		for _, later := range old[i+1:] {
			f.wantState(later, "ready")
		}
		f.exit(old[i], exitCode(0))
	}
	f.wantStarts(6)
	if f.s.counters.reloads[ReloadSuccess] != 1 || f.s.counters.recycles[RecycleReload] != 3 {
		t.Fatalf("reloads %v recycles %v, want one success and 3 reload recycles", f.s.counters.reloads, f.s.counters.recycles)
	}
	if f.s.counters.exits[ExitStopped] != 3 || f.s.counters.exits[ExitCrash] != 0 {
		t.Fatalf("exits %v, want 3 stopped", f.s.counters.exits)
	}
}

// A reload stops at a new worker that fails to get ready: the old workers
// keep serving and nothing else is replaced.
func TestFleetReloadStopsAtFailingWorker(t *testing.T) {
	f := newFleet(t, 3, "CLUSTERINIT_READY_TIMEOUT=5s").run()
	f.readyAll()
	old := f.pidsOf(-1)
	f.signal(syscall.SIGHUP)
	f.ready(f.last(0))
	f.exit(old[0], exitCode(0))
	bad := f.last(1)
	f.advance(5 * time.Second) // not ready within READY_TIMEOUT
	f.wantSignals(bad, syscall.SIGKILL)
	f.exit(bad, killedBy(syscall.SIGKILL))
	f.advance(time.Minute)
	f.wantStarts(5)
	for _, pid := range old[1:] {
		f.wantState(pid, "ready")
		f.wantSignals(pid)
	}
	if f.s.counters.reloads[ReloadFailure] != 1 || f.s.counters.reloads[ReloadSuccess] != 0 {
		t.Fatalf("reloads %v, want one failure", f.s.counters.reloads)
	}
	// The next reload starts from the first slot again.
	f.signal(syscall.SIGHUP)
	if st := f.procs.starts[len(f.procs.starts)-1]; st.slot != 0 {
		t.Fatalf("the next reload started in slot %d, want 0", st.slot)
	}
}

// Removing the slot whose worker is being replaced drains both its workers
// and lets the reload go on.
func TestFleetScaleDownDuringReplacement(t *testing.T) {
	f := newFleet(t, 2).run()
	f.readyAll()
	old := f.pidsOf(-1)
	f.signal(syscall.SIGHUP)
	f.ready(f.last(0))
	f.exit(old[0], exitCode(0))
	newer := f.last(1)
	f.wantState(newer, "starting")
	f.signal(syscall.SIGTTOU)
	f.wantState(old[1], "draining")
	f.wantState(newer, "draining")
	if len(f.s.slots) != 1 || f.s.replacing != nil {
		t.Fatalf("%d slots, replacing %v: want 1 slot and no replacement", len(f.s.slots), f.s.replacing)
	}
	f.drainExit()
	f.advance(time.Minute)
	f.wantStarts(4)
	if f.s.counters.reloads[ReloadSuccess] != 1 || f.s.counters.recycles[RecycleScale] != 1 {
		t.Fatalf("reloads %v recycles %v", f.s.counters.reloads, f.s.counters.recycles)
	}
	// The last slot stays.
	f.signal(syscall.SIGTTOU)
	if len(f.s.slots) != 1 || !f.logged("not scaling down: one worker is the minimum") {
		t.Fatalf("%d slots after scaling below one", len(f.s.slots))
	}
}

// A stop while the first workers are still starting drains them, starts
// nothing more, and ends once they have exited.
func TestFleetStopDuringFirstStart(t *testing.T) {
	f := newFleet(t, 2).run()
	f.signal(syscall.SIGTERM)
	for _, pid := range f.pidsOf(-1) {
		f.wantState(pid, "draining")
		f.wantSignals(pid, syscall.SIGTERM)
	}
	f.exit(f.last(0), killedBy(syscall.SIGTERM))
	f.exit(f.last(1), exitCode(143))
	f.advance(time.Minute)
	f.wantStarts(2)
	if !f.s.finished() || f.s.exitCode != 0 {
		t.Fatalf("finished %v with %d, want a clean stop", f.s.finished(), f.s.exitCode)
	}
}

// STOP_DELAY keeps the workers serving, then drains them; a worker still
// there at DRAIN_TIMEOUT is killed, and the stop still exits 0 (SPEC: the
// kill is logged, naming the worker).
func TestFleetStopDelayThenDrainTimeout(t *testing.T) {
	f := newFleet(t, 2, "CLUSTERINIT_STOP_DELAY=3s", "CLUSTERINIT_DRAIN_TIMEOUT=5s").run()
	f.readyAll()
	a, b := f.last(0), f.last(1)
	f.signal(syscall.SIGTERM)
	f.signal(syscall.SIGHUP) // no reload once stopping
	f.signal(syscall.SIGTTIN)
	f.advance(3*time.Second - time.Millisecond)
	f.wantState(a, "ready")
	f.advance(time.Millisecond)
	f.wantSignals(a, syscall.SIGTERM)
	f.exit(a, exitCode(0))
	f.advance(5 * time.Second)
	f.wantSignals(b, syscall.SIGTERM, syscall.SIGKILL)
	f.exit(b, killedBy(syscall.SIGKILL))
	f.wantStarts(2)
	if !f.s.finished() || f.s.exitCode != 0 || f.s.counters.exits[ExitKilled] != 1 || f.s.counters.exits[ExitStopped] != 1 {
		t.Fatalf("finished %v with %d, exits %v: want finished with 0, one killed, one stopped", f.s.finished(), f.s.exitCode, f.s.counters.exits)
	}
	if !f.logged("worker killed: it did not exit within DRAIN_TIMEOUT") {
		t.Fatal("the kill at DRAIN_TIMEOUT was not logged")
	}
}

// A second stop signal kills every worker at once.
func TestFleetSecondStopSignalKills(t *testing.T) {
	f := newFleet(t, 2, "CLUSTERINIT_STOP_DELAY=30s").run()
	f.readyAll()
	f.signal(syscall.SIGTERM)
	f.signal(syscall.SIGINT)
	for _, pid := range f.pidsOf(-1) {
		f.wantSignals(pid, syscall.SIGKILL)
		f.exit(pid, killedBy(syscall.SIGKILL))
	}
	if !f.s.finished() {
		t.Fatal("not finished after every worker was killed")
	}
	// The exits say why they were killed: not DRAIN_TIMEOUT.
	if !f.logged("worker killed: a second stop signal") || f.logged("worker killed: it did not exit within DRAIN_TIMEOUT") {
		t.Error("the kills' log lines do not name the second stop signal")
	}
}

// A worker not ready by READY_TIMEOUT is killed, never counted ready, and its
// exit is a failed start.
func TestFleetReadyTimeout(t *testing.T) {
	f := newFleet(t, 1, "CLUSTERINIT_READY_TIMEOUT=2s").run()
	pid := f.last(0)
	f.advance(2 * time.Second)
	f.wantSignals(pid, syscall.SIGKILL)
	f.ready(pid) // too late: the kill stands
	f.wantState(pid, "starting")
	f.exit(pid, killedBy(syscall.SIGKILL))
	if f.s.failedStarts != 1 {
		t.Fatalf("%d failed starts, want 1", f.s.failedStarts)
	}
}

// MAX_AGE recycles one worker at a time.
func TestFleetMaxAgeOneAtATime(t *testing.T) {
	f := newFleet(t, 3, "CLUSTERINIT_MAX_AGE=1h").run()
	f.readyAll()
	old := f.pidsOf(-1)
	for i := 0; i < 3; i++ {
		f.until("a recycle", func() bool { return f.replacements() > 0 })
		if n := f.replacements(); n != 1 {
			t.Fatalf("%d replacements under way, want 1", n)
		}
		r := f.s.replacing
		if age := f.now.Sub(r.old.startedAt); age > time.Hour || age < 54*time.Minute {
			t.Fatalf("recycled at age %v, want MAX_AGE less up to 10%%", age)
		}
		f.ready(r.new.pid)
		f.drainExit()
	}
	for _, pid := range old {
		f.wantState(pid, "exited")
	}
	if f.s.counters.recycles[RecycleAge] != 3 {
		t.Fatalf("recycles %v, want 3 for age", f.s.counters.recycles)
	}
}

// Signals other than the fleet's own reach every worker's group.
func TestFleetForwardsOtherSignals(t *testing.T) {
	f := newFleet(t, 2).run()
	f.signal(syscall.SIGUSR2)
	f.signal(syscall.SIGPIPE)
	for _, pid := range f.pidsOf(-1) {
		f.wantSignals(pid, syscall.SIGUSR2)
	}
}

// A start that fails is retried with backoff like a crash.
func TestFleetFailedForkIsRetried(t *testing.T) {
	f := newFleet(t, 1)
	f.procs.fail = func(int) error { return errors.New("fork: resource temporarily unavailable") }
	f.run()
	f.wantStarts(0)
	f.procs.fail = nil
	f.advance(100 * time.Millisecond)
	f.wantStarts(1)
	if f.s.failedStarts != 1 {
		t.Fatalf("%d failed starts, want 1", f.s.failedStarts)
	}
}

// Bug: the first start loop went on spawning after a failed start had made
// the fleet give up, and those workers were never drained.
func TestFleetNothingStartsAfterGivingUp(t *testing.T) {
	f := newFleet(t, 3, "CLUSTERINIT_MAX_FAILED_STARTS=1")
	f.procs.fail = func(slot int) error {
		if slot == 0 {
			return errors.New("fork: resource temporarily unavailable")
		}
		return nil
	}
	f.run()
	f.wantStarts(0)
	if !f.s.finished() || f.s.exitCode != 1 {
		t.Fatalf("finished %v with %d, want finished with 1", f.s.finished(), f.s.exitCode)
	}
}

// Bug: a MAX_AGE recycle deferred behind another replacement waited for the
// next unrelated timer; it starts as soon as the replacement ends.
func TestFleetMaxAgeDeferredStartsWhenReplacementEnds(t *testing.T) {
	f := newFleet(t, 2, "CLUSTERINIT_MAX_AGE=1h", "CLUSTERINIT_READY_TIMEOUT=2h").run()
	f.readyAll()
	f.until("a recycle", func() bool { return f.replacements() > 0 })
	first := f.s.replacing.old
	f.advance(6 * time.Minute) // both are past their MAX_AGE now
	f.ready(f.s.replacing.new.pid)
	if f.replacements() != 1 || f.s.replacing.old == first {
		t.Fatalf("the second recycle did not start when the first ended (replacing %+v)", f.s.replacing)
	}
	// A recycle whose new worker dies is retried after backoff, not at
	// the next unrelated timer (here, none for an hour).
	f.exit(f.s.replacing.new.pid, exitCode(1))
	if f.replacements() != 0 {
		t.Fatal("a failed recycle was retried at once")
	}
	f.advance(time.Second)
	if f.replacements() != 1 {
		t.Fatal("no recycle within a second after a failed one")
	}
}

// Bug: a reload cut short by a stop during STOP_DELAY, or one queued behind
// a recycle, was counted in neither result. Every reload asked for ends in
// exactly one.
func TestFleetEveryReloadHasAResult(t *testing.T) {
	t.Run("step ends during STOP_DELAY", func(t *testing.T) {
		f := newFleet(t, 2, "CLUSTERINIT_STOP_DELAY=5s").run()
		f.readyAll()
		f.signal(syscall.SIGHUP)
		f.signal(syscall.SIGTERM)
		f.ready(f.last(0)) // the step ends, the reload goes no further
		f.advance(5 * time.Second)
		f.drainExit()
		if got := f.s.counters.reloads; got[ReloadFailure] != 1 || got[ReloadSuccess] != 0 {
			t.Fatalf("reloads %v, want one failure", got)
		}
	})
	t.Run("step still starting at the drain", func(t *testing.T) {
		f := newFleet(t, 2, "CLUSTERINIT_STOP_DELAY=5s").run()
		f.readyAll()
		f.signal(syscall.SIGHUP)
		f.signal(syscall.SIGTERM)
		f.advance(5 * time.Second)
		f.drainExit()
		if got := f.s.counters.reloads; got[ReloadFailure] != 1 || got[ReloadSuccess] != 0 {
			t.Fatalf("reloads %v, want one failure", got)
		}
	})
	t.Run("queued behind a recycle", func(t *testing.T) {
		f := newFleet(t, 2, "CLUSTERINIT_MAX_AGE=1h").run()
		f.readyAll()
		f.until("a recycle", func() bool { return f.replacements() > 0 })
		f.signal(syscall.SIGHUP)
		f.signal(syscall.SIGTERM)
		f.drainExit()
		if got := f.s.counters.reloads; got[ReloadFailure] != 1 || got[ReloadSuccess] != 0 {
			t.Fatalf("reloads %v, want one failure", got)
		}
	})
	t.Run("queued behind a recycle, then run", func(t *testing.T) {
		f := newFleet(t, 2, "CLUSTERINIT_MAX_AGE=1h").run()
		f.readyAll()
		f.until("a recycle", func() bool { return f.replacements() > 0 })
		f.signal(syscall.SIGHUP)
		f.ready(f.s.replacing.new.pid)
		for i := 0; i < 2; i++ {
			if r := f.s.replacing; r == nil || r.reason != RecycleReload {
				t.Fatalf("step %d: replacing %+v, want a reload step", i, r)
			}
			f.ready(f.s.replacing.new.pid)
		}
		if got := f.s.counters.reloads; got[ReloadSuccess] != 1 || got[ReloadFailure] != 0 {
			t.Fatalf("reloads %v, want one success", got)
		}
	})
	t.Run("one following a failed one", func(t *testing.T) {
		f := newFleet(t, 2).run()
		f.readyAll()
		f.signal(syscall.SIGHUP)
		f.signal(syscall.SIGHUP) // a deploy lands mid-reload: one more follows
		f.exit(f.last(0), exitCode(1))
		if got := f.s.counters.reloads; got[ReloadFailure] != 2 || got[ReloadSuccess] != 0 {
			t.Fatalf("reloads %v, want two failures: the failed one and the one that was to follow", got)
		}
	})
}

// Bug: scaleDown said "one worker is the minimum" when it refused because a
// stop was under way.
func TestFleetScaleDownDuringStopSaysWhy(t *testing.T) {
	f := newFleet(t, 2, "CLUSTERINIT_STOP_DELAY=5s").run()
	f.signal(syscall.SIGTERM)
	f.signal(syscall.SIGTTOU)
	if f.logged("not scaling down: one worker is the minimum") || !f.logged("not scaling down: stopping") {
		t.Fatalf("scale-down during a stop logged %q", f.logs[len(f.logs)-1])
	}
	if len(f.s.slots) != 2 {
		t.Fatalf("%d slots, want 2", len(f.s.slots))
	}
}

// sampling turns sampling on; the test answers each pass itself (sampled).
func (f *fleet) sampling() *fleet {
	sampler, err := procsample.New("")
	if err != nil {
		f.t.Fatal(err)
	}
	f.s.opt.Sampler = sampler
	return f
}

// sampled answers the pass the fleet asked for with rss per pid, as the
// sampler goroutine would.
func (f *fleet) sampled(rss map[int]int64) {
	f.t.Helper()
	var req sampleRequest
	select {
	case req = <-f.s.sampleReqs:
	default:
		f.t.Fatal("no sample was asked for")
	}
	usage := map[int]procsample.Usage{}
	for _, pid := range req.pids {
		usage[pid] = procsample.Usage{RSSBytes: rss[pid], Procs: 1}
	}
	f.s.onSample(sampleResult{at: req.at, usage: usage})
	f.settle()
}

// MAX_RSS recycles a worker only once it has stayed above the limit for
// MAX_RSS_FOR; one sample below resets the window.
func TestFleetRecycleOnSustainedRSS(t *testing.T) {
	f := newFleet(t, 2, "CLUSTERINIT_MAX_RSS=100M", "CLUSTERINIT_MAX_RSS_FOR=3s", "CLUSTERINIT_SAMPLE_EVERY=1s").sampling().run()
	f.readyAll()
	a, b := f.last(0), f.last(1)
	over := map[int]int64{a: 200 << 20, b: 50 << 20}
	for i := 0; i < 3; i++ { // 0, 1, 2 s over: not yet
		f.sampled(over)
		f.advance(time.Second)
	}
	f.sampled(map[int]int64{a: 50 << 20}) // a spike ends: the window resets
	f.advance(time.Second)
	for i := 0; i < 3; i++ {
		f.sampled(over)
		f.advance(time.Second)
	}
	if f.replacements() != 0 {
		t.Fatal("recycled before MAX_RSS_FOR of sustained excess")
	}
	f.sampled(over) // 3 s over
	if r := f.s.replacing; r == nil || r.old.pid != a || r.reason != RecycleRSS || !r.startFirst {
		t.Fatalf("replacing %+v, want a start-first rss recycle of pid %d", r, a)
	}
	f.ready(f.s.replacing.new.pid)
	f.wantState(a, "draining")
	f.wantState(b, "ready")
}

// Without headroom for another worker of its size a worker is replaced
// drain-first, except the last ready one, which is always replaced
// start-first.
func TestFleetRecycleDrainFirstWithoutHeadroom(t *testing.T) {
	f := newFleet(t, 2, "CLUSTERINIT_MAX_RSS=100M", "CLUSTERINIT_MAX_RSS_FOR=1s", "CLUSTERINIT_SAMPLE_EVERY=1s").sampling()
	f.s.opt.Headroom = func() (int64, error) { return 150 << 20, nil }
	f.run()
	f.readyAll()
	a, b := f.last(0), f.last(1)
	f.sampled(map[int]int64{a: 200 << 20})
	f.advance(time.Second)
	f.sampled(map[int]int64{a: 200 << 20})
	if r := f.s.replacing; r == nil || r.old.pid != a || r.startFirst {
		t.Fatalf("replacing %+v, want a drain-first recycle of pid %d", r, a)
	}
	f.wantState(a, "draining")
	f.wantStarts(2) // the replacement starts once a is gone
	f.exit(a, exitCode(0))
	f.wantStarts(3)
	refill := f.last(0)
	// The replacement lasts until the refill is ready: b, over the limit
	// meanwhile, is not recycled while the refill boots.
	if r := f.s.replacing; r == nil || r.new == nil || r.new.pid != refill {
		t.Fatalf("replacing %+v, want the drain-first one until its refill %d is ready", r, refill)
	}
	f.advance(time.Second)
	f.sampled(map[int]int64{b: 200 << 20})
	f.advance(time.Second)
	f.sampled(map[int]int64{b: 200 << 20})
	f.wantStarts(3)
	f.wantState(b, "ready")
	f.ready(refill)
	if f.s.replacing != nil {
		t.Fatalf("replacing %+v after the refill got ready, want none", f.s.replacing)
	}
	// Kill the refill: b is now the only ready worker, never drained first.
	f.exit(refill, killedBy(syscall.SIGKILL))
	f.advance(time.Second)
	f.sampled(map[int]int64{b: 200 << 20})
	f.advance(time.Second)
	f.sampled(map[int]int64{b: 200 << 20})
	if r := f.s.replacing; r == nil || r.old.pid != b || !r.startFirst {
		t.Fatalf("replacing %+v, want a start-first recycle of the last ready worker %d", r, b)
	}
}

// FleetUp is called once, when every slot first has a ready worker, and
// not again after a crash and restart.
func TestFleetUpOnce(t *testing.T) {
	f := newFleet(t, 2)
	calls := 0
	f.s.opt.FleetUp = func() { calls++ }
	f.run()
	f.ready(f.last(0))
	if calls != 0 {
		t.Fatalf("FleetUp called with one of two workers ready")
	}
	f.ready(f.last(1))
	if calls != 1 {
		t.Fatalf("FleetUp called %d times once both are ready, want 1", calls)
	}
	f.exit(f.last(0), exitCode(1))
	f.advance(time.Second)
	f.ready(f.last(0))
	if calls != 1 {
		t.Fatalf("FleetUp called %d times after a restart, want 1", calls)
	}
}

// A reload follows the same memory rule as a recycle (SPEC, "Recycling"):
// without headroom for another worker of its size, each slot's old worker
// drains first and the next slot waits until the refill is ready; a refill
// that never gets ready stops the reload and its slot restarts.
func TestFleetReloadDrainFirstWithoutHeadroom(t *testing.T) {
	f := newFleet(t, 3, "CLUSTERINIT_READY_TIMEOUT=5s", "CLUSTERINIT_SAMPLE_EVERY=1s").sampling()
	f.s.opt.Headroom = func() (int64, error) { return 150 << 20, nil }
	f.run()
	f.readyAll()
	old := f.pidsOf(-1)
	f.sampled(map[int]int64{old[0]: 200 << 20, old[1]: 200 << 20, old[2]: 200 << 20})
	f.signal(syscall.SIGHUP)
	f.wantState(old[0], "draining")
	f.wantSignals(old[0], syscall.SIGTERM)
	f.wantStarts(3) // nothing starts before old[0] is gone
	f.exit(old[0], exitCode(0))
	f.wantStarts(4)
	refill := f.last(0)
	f.advance(time.Second)
	f.wantState(old[1], "ready") // the next slot waits for the refill
	f.ready(refill)
	f.wantState(old[1], "draining")
	f.wantStarts(4)
	f.exit(old[1], exitCode(0))
	f.wantStarts(5)
	bad := f.last(1)
	f.advance(5 * time.Second) // not ready within READY_TIMEOUT
	f.exit(bad, killedBy(syscall.SIGKILL))
	if f.s.counters.reloads[ReloadFailure] != 1 {
		t.Fatalf("reloads %v, want one failure", f.s.counters.reloads)
	}
	f.wantState(old[2], "ready")
	f.wantSignals(old[2])
	f.advance(time.Second) // the slot restarts as after a crash
	f.wantStarts(6)
	if st := f.procs.starts[len(f.procs.starts)-1]; st.slot != 1 {
		t.Fatalf("restarted slot %d, want 1", st.slot)
	}
}

// With headroom, a reload starts each new worker first (the default when no
// memory limit is known: TestFleetReloadOneAtATime).
func TestFleetReloadStartFirstWithHeadroom(t *testing.T) {
	f := newFleet(t, 2, "CLUSTERINIT_SAMPLE_EVERY=1s").sampling()
	f.s.opt.Headroom = func() (int64, error) { return 250 << 20, nil }
	f.run()
	f.readyAll()
	old := f.pidsOf(-1)
	f.sampled(map[int]int64{old[0]: 200 << 20, old[1]: 200 << 20})
	f.signal(syscall.SIGHUP)
	f.wantStarts(3)
	f.wantState(old[0], "ready")
	if r := f.s.replacing; r == nil || !r.startFirst {
		t.Fatalf("replacing %+v, want a start-first reload step", r)
	}
}

// HANG_TIMEOUT recycles a Node worker whose event loop stops answering the
// heartbeat; answers keep it.
func TestFleetRecycleHungEventLoop(t *testing.T) {
	f := newFleet(t, 2, "CLUSTERINIT_SHIM=true", "CLUSTERINIT_HANG_TIMEOUT=3s", "CLUSTERINIT_SAMPLE_EVERY=1s").sampling()
	f.s.opt.NodeOptions = "--import data:preload" // heartbeats need the preload
	f.run()
	f.readyAll()
	a, b := f.last(0), f.last(1)
	for i := 0; i < 5; i++ {
		// a (the lower pid, first in line) answers; b is silent.
		f.s.onMessage(message{pid: a, Message: preload.Message{Kind: preload.KindPong, Seq: uint64(i)}}, f.now)
		f.sampled(nil)
		f.advance(time.Second)
	}
	if r := f.s.replacing; r == nil || r.old.pid != b || r.reason != RecycleHang {
		t.Fatalf("replacing %+v, want a hang recycle of the silent pid %d", r, b)
	}
}

// An unclean exit of a worker during the stop makes the exit status 1;
// orphans are reaped and counted, and change nothing else.
func TestFleetStopExitStatusAndOrphans(t *testing.T) {
	f := newFleet(t, 2).run()
	f.readyAll()
	f.s.onExit(signals.Exit{Pid: 4242, Status: exitCode(0)}, f.now)
	f.signal(syscall.SIGTERM)
	if err := f.s.onRequest(request{kind: "reload"}, f.now); err != errStopping {
		t.Fatalf("a reload request during a stop got %v, want errStopping", err)
	}
	f.exit(f.last(0), exitCode(0))
	f.exit(f.last(1), exitCode(1))
	if !f.s.finished() || f.s.exitCode != 1 || f.s.counters.orphans != 1 {
		t.Fatalf("finished %v with %d, %d orphans: want finished with 1, one orphan", f.s.finished(), f.s.exitCode, f.s.counters.orphans)
	}
}

// SIGTTIN adds a slot with its own worker; SIGTTOU removes the last one.
func TestFleetScaleUpAndDown(t *testing.T) {
	f := newFleet(t, 1).run()
	f.readyAll()
	f.signal(syscall.SIGTTIN)
	if len(f.s.slots) != 2 || f.procs.starts[1].slot != 1 {
		t.Fatalf("%d slots, starts %v: want a worker in a new slot 1", len(f.s.slots), f.procs.starts)
	}
	added := f.last(1)
	f.ready(added)
	f.signal(syscall.SIGTTOU)
	f.wantState(added, "draining")
	f.exit(added, exitCode(0))
	f.advance(time.Minute)
	f.wantStarts(2)
	if f.s.counters.exits[ExitStopped] != 1 || f.s.counters.recycles[RecycleScale] != 1 {
		t.Fatalf("exits %v recycles %v", f.s.counters.exits, f.s.counters.recycles)
	}
}

// check asserts the fleet's invariants (doc.go) in its current state.
func (f *fleet) check(stopStarts int) {
	f.t.Helper()
	s := f.s
	if n := f.replacements(); n > 1 {
		f.t.Fatalf("%d replacements under way", n)
	}
	if s.stopping && len(f.procs.starts) != stopStarts {
		f.t.Fatalf("%d workers started after the stop began", len(f.procs.starts)-stopStarts)
	}
	for _, sl := range s.slots {
		// (In a stop every worker drains where it is; the slots are done.)
		if w := sl.current; !s.stopping && w != nil && (s.workers[w.pid] != w || w.state == draining || w.slot != sl.index) {
			f.t.Fatalf("slot %d's current worker %+v is not a live serving worker of it", sl.index, w)
		}
	}
	for _, w := range s.workers {
		sl := s.slotOf(w.slot)
		if w.state == draining || sl == nil {
			continue
		}
		if sl.current != w && s.pendingOf(sl) != w {
			f.t.Fatalf("worker %d (%s) in slot %d is neither its current, nor pending, nor draining", w.pid, w.state, w.slot)
		}
	}
	for _, sl := range s.slots {
		// No slot is left empty with nothing on the way: a restart is
		// pending, or a drain-first replacement refills it.
		if r := s.replacing; !s.stopping && sl.current == nil && sl.retryAt.IsZero() && (r == nil || r.slot != sl.index) {
			f.t.Fatalf("slot %d is empty with no restart pending", sl.index)
		}
	}
	if r := s.replacing; r != nil && s.slotOf(r.slot) == nil {
		f.t.Fatalf("replacing in removed slot %d", r.slot)
	}
	if r := s.replacing; r != nil && s.stopping && s.drainAt.IsZero() {
		f.t.Fatal("a replacement outlived the drain")
	}
}

// FuzzFleet drives the fleet with arbitrary sequences of events, checking
// the invariants after each, and then that a stop always ends: every
// worker drained, nothing left, a result for every reload.
func FuzzFleet(f *testing.F) {
	f.Add([]byte{0, 1, 13, 3, 1, 11, 21, 2, 7, 4, 2, 0})
	f.Add([]byte{3, 1, 3, 11, 0, 7, 7, 5, 1, 6, 3, 1, 21, 4, 7, 2})
	f.Add([]byte{8, 5, 7, 7, 7, 8, 1, 1, 0, 10, 20, 30, 9, 4})
	f.Add([]byte{1, 11, 21, 7, 7, 7, 7, 7, 7, 3, 6, 6, 6, 5, 5})
	cfg := fleetConfig(f, "CLUSTERINIT_MAX_AGE=1m", "CLUSTERINIT_READY_TIMEOUT=5s", "CLUSTERINIT_STOP_DELAY=2s",
		"CLUSTERINIT_DRAIN_TIMEOUT=3s", "CLUSTERINIT_MIN_UPTIME=2s", "CLUSTERINIT_MAX_FAILED_STARTS=20")
	f.Fuzz(func(t *testing.T, events []byte) {
		if len(events) > 64 {
			events = events[:64]
		}
		fl := newFleetConfig(t, 3, cfg)
		failing := false
		fl.procs.fail = func(int) error {
			if failing {
				return errors.New("fork: resource temporarily unavailable")
			}
			return nil
		}
		fl.run()
		stopStarts := -1
		pick := func(arg byte, ok func(*worker) bool) *worker {
			var ws []*worker
			for _, w := range fl.s.workersByPid() {
				if ok(w) {
					ws = append(ws, w)
				}
			}
			if len(ws) == 0 {
				return nil
			}
			return ws[int(arg)%len(ws)]
		}
		for _, ev := range events {
			op, arg := ev%10, ev/10
			switch op {
			case 0: // a worker exits cleanly, or crashes
				if w := pick(arg, func(*worker) bool { return true }); w != nil {
					status := exitCode(int(arg % 3))
					fl.exit(w.pid, status)
				}
			case 1: // a starting worker gets ready
				if w := pick(arg, func(w *worker) bool { return w.state == starting }); w != nil {
					fl.ready(w.pid)
				}
			case 2:
				fl.advance(time.Duration(arg) * 100 * time.Millisecond)
			case 3:
				fl.signal(syscall.SIGHUP)
			case 4:
				fl.signal(syscall.SIGTERM)
			case 5:
				fl.signal(syscall.SIGTTIN)
			case 6:
				fl.signal(syscall.SIGTTOU)
			case 7: // to the next deadline
				fl.advance(fl.s.nextDeadline(fl.now).Sub(fl.now))
			case 8:
				failing = !failing
			case 9: // a draining worker exits
				if w := pick(arg, func(w *worker) bool { return w.state == draining }); w != nil {
					fl.exit(w.pid, exitCode(0))
				}
			}
			if fl.s.stopping && stopStarts < 0 {
				stopStarts = len(fl.procs.starts)
			}
			fl.check(stopStarts)
			if fl.s.finished() {
				break
			}
		}
		// Stop, let every worker exit as signalled, and the stop ends.
		fl.signal(syscall.SIGTERM)
		if stopStarts < 0 {
			stopStarts = len(fl.procs.starts)
		}
		for i := 0; !fl.s.finished(); i++ {
			if i > 100 {
				t.Fatalf("the stop never ended: %d workers left", len(fl.s.workers))
			}
			fl.advance(fl.s.nextDeadline(fl.now).Sub(fl.now))
			for _, w := range fl.s.workersByPid() {
				if len(fl.procs.signals[w.pid]) > 0 {
					fl.exit(w.pid, exitCode(0))
				}
			}
			fl.check(stopStarts)
		}
		started := 0
		for _, m := range fl.logs {
			if m == "rolling reload started" {
				started++
			}
		}
		if got := fl.s.counters.reloads[ReloadSuccess] + fl.s.counters.reloads[ReloadFailure]; got < uint64(started) {
			t.Fatalf("%d reloads started, %d ended with a result", started, got)
		}
	})
}

// A reload skips a slot whose worker crashed and waits for its restart: the
// restart brings up a fresh worker anyway.
func TestFleetReloadSkipsEmptySlot(t *testing.T) {
	f := newFleet(t, 2, "CLUSTERINIT_RESTART_DELAY=1s").run()
	f.readyAll()
	old0 := f.last(0)
	f.exit(f.last(1), exitCode(1)) // slot 1 is empty, its restart pending
	f.signal(syscall.SIGHUP)
	f.ready(f.last(0))
	f.wantState(old0, "draining")
	f.wantStarts(3) // slot 0's new worker, and nothing for slot 1 yet
	if got := f.s.counters.reloads[ReloadSuccess]; got != 1 {
		t.Fatalf("reloads %v, want one success", f.s.counters.reloads)
	}
	f.advance(time.Second)
	f.wantStarts(4)
	if st := f.procs.starts[3]; st.slot != 1 {
		t.Fatalf("start %v, want slot 1's restart", st)
	}
}

// A reload hands each old Node worker's connections over: the drain line
// goes at once, the stop signal only at the end of the handover window (the
// DRAIN_TIMEOUT deadline counting from it), and a stop during a handover
// sends the signal at once.
func TestReloadHandsOverBeforeTheStopSignal(t *testing.T) {
	f := newFleet(t, 2, "CLUSTERINIT_DRAIN_TIMEOUT=25s")
	f.s.opt.NodeOptions = "--import data:preload"
	f.run()
	f.readyAll()
	old0, old1 := f.last(0), f.last(1)
	f.signal(syscall.SIGHUP)
	f.ready(f.last(0))
	f.wantState(old0, "draining")
	f.wantSignals(old0) // handing over: no signal yet
	f.advance(handoverWindow - time.Millisecond)
	f.wantSignals(old0)
	f.advance(time.Millisecond)
	f.wantSignals(old0, syscall.SIGTERM)
	if w := f.s.workers[old0]; !w.killAt.Equal(f.now.Add(25 * time.Second)) {
		t.Errorf("killed at %v, want DRAIN_TIMEOUT after the stop signal (%v)", w.killAt, f.now.Add(25*time.Second))
	}
	f.exit(old0, exitCode(0))

	f.ready(f.last(1))
	f.wantSignals(old1)
	f.signal(syscall.SIGTERM)
	f.wantSignals(old1, syscall.SIGTERM)
	for _, w := range f.s.workersByPid() {
		if w.pid != old1 {
			f.wantSignals(w.pid, syscall.SIGTERM)
		}
	}
}

// A worker without the preload has nothing to hand over with: it gets its
// stop signal as soon as its successor is ready.
func TestNoHandoverWithoutThePreload(t *testing.T) {
	f := newFleet(t, 2)
	f.run()
	f.readyAll()
	old := f.last(0)
	f.signal(syscall.SIGHUP)
	f.ready(f.last(0))
	f.wantSignals(old, syscall.SIGTERM) // no preload: no handover
}

// A reload's next slot starts only once the previous old worker's handover
// is over (its window ended, or it exited first): the successor that is
// still warming up on the connections handed to it never shares the CPUs
// with the next one's boot and handover. A recycle waits for it too.
func TestReloadWaitsForEachHandover(t *testing.T) {
	f := newFleet(t, 3, "CLUSTERINIT_MAX_AGE=1h")
	f.s.opt.NodeOptions = "--import data:preload"
	f.run()
	f.readyAll()
	old := f.pidsOf(-1)
	f.signal(syscall.SIGHUP)
	f.ready(f.last(0))
	f.wantState(old[0], "draining")
	f.wantStarts(4)
	f.advance(handoverWindow - time.Millisecond)
	f.wantStarts(4) // slot 1 waits while slot 0 hands over
	f.advance(time.Millisecond)
	f.wantStarts(5) // the window is over: slot 1's successor starts
	f.wantSignals(old[0], syscall.SIGTERM)
	f.ready(f.last(1))
	f.wantState(old[1], "draining")
	f.advance(time.Second)
	f.wantStarts(5)
	f.exit(old[1], exitCode(0)) // gone before its window ended
	f.wantStarts(6)
	f.ready(f.last(2))
	f.exit(old[0], exitCode(0))
	f.exit(old[2], exitCode(0)) // ends slot 2's handover
	if f.s.counters.reloads[ReloadSuccess] != 1 {
		t.Fatalf("reloads %v, want one success", f.s.counters.reloads)
	}

	// MAX_AGE: the first recycle's handover holds the next one back.
	f.until("a recycle", func() bool { return f.replacements() > 0 })
	r := f.s.replacing
	f.ready(r.new.pid)
	f.wantState(r.old.pid, "draining")
	starts := len(f.procs.starts)
	f.advance(handoverWindow - time.Millisecond)
	if got := len(f.procs.starts); got != starts {
		t.Fatalf("%d workers started during the recycle's handover, want none", got-starts)
	}
}

// Alive is answered by the loop itself, not by the last snapshot: while no
// loop takes requests (none runs here, as when the loop is stuck in one
// event) it fails within its timeout; once the loop's side takes the
// request, as Run's select does, it passes.
func TestAliveNeedsTheLoop(t *testing.T) {
	f := newFleet(t, 1).run()
	const wait = 50 * time.Millisecond
	t0 := time.Now()
	if err := f.s.Alive(wait); !errors.Is(err, errNoAnswer) {
		t.Fatalf("Alive with no loop = %v, want %v", err, errNoAnswer)
	}
	if took := time.Since(t0); took < wait {
		t.Errorf("Alive gave up after %v, before its %v", took, wait)
	}
	// The loop's side, which also answers the request left unanswered above.
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		for {
			select {
			case req := <-f.s.reqs:
				req.reply <- f.s.onRequest(req, f.now)
			case <-stop:
				return
			}
		}
	}()
	if err := f.s.Alive(time.Minute); err != nil {
		t.Fatalf("Alive with the loop answering = %v, want nil", err)
	}
}
