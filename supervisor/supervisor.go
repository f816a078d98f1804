package supervisor

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"runtime"
	"sort"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/clusterinit/clusterinit/config"
	"github.com/clusterinit/clusterinit/limits"
	"github.com/clusterinit/clusterinit/listeners"
	"github.com/clusterinit/clusterinit/preload"
	"github.com/clusterinit/clusterinit/procsample"
	"github.com/clusterinit/clusterinit/signals"
)

// Options is everything the fleet needs; main wires it.
type Options struct {
	Config  *config.Config
	Path    string   // the command, resolved on PATH
	Argv    []string // the command's argv, argv[0] as the user wrote it
	Workers int      // initial number of slots
	Self    string   // clusterinit's own executable, for the exec shim

	// NodeOptions is the worker's NODE_OPTIONS with the preload appended,
	// or "" to leave NODE_OPTIONS alone (SHIM=false).
	NodeOptions string

	Listeners *listeners.Set // may hold no sockets (LISTEN=none)
	Exits     <-chan signals.Exit
	Signals   <-chan syscall.Signal
	Log       *slog.Logger

	// Stdout and Stderr receive prefixed worker output (WORKER_LOG_PREFIX);
	// Log must write through Stderr so its lines never split a worker's.
	Stdout, Stderr *LineWriter

	// Sampler reads the workers' CPU and memory; nil turns sampling off.
	Sampler *procsample.Sampler

	// Limits are the task's CPU and memory limits as detected at start:
	// shown in snapshots, and the base of HEAP_SIZE=auto and MAX_RSS=auto.
	Limits limits.Limits

	// OOMKills, when set, reads the OOM killer's kill counter of the
	// memory cgroup the workers are in (limits.Detector.OOMKills): a worker
	// that dies of a SIGKILL clusterinit did not send while it rose was
	// killed for memory.
	OOMKills func() (int64, error)

	// UserHeapSize: the user gave --max-old-space-size (NODE_OPTIONS or the
	// command line), which HEAP_SIZE never overrides.
	UserHeapSize bool

	// Headroom, when set, returns how many bytes of memory the container
	// can still use; recycling starts a replacement first only if a worker
	// of the current size fits.
	Headroom func() (int64, error)

	// FleetUp, when set, is called once, from the loop, the first time every
	// slot has a ready worker: startup is over. It must not block.
	FleetUp func()

	// Procs starts and signals workers; nil forks real ones. Unit tests of
	// the fleet's logic set a fake.
	Procs Procs
}

// Supervisor is the fleet. Create it with New and call Run once.
type Supervisor struct {
	opt   Options
	cfg   *config.Config
	log   *slog.Logger
	procs Procs

	stdout, stderr *LineWriter    // shared by prefixed worker output and the logger
	copiers        sync.WaitGroup // running WORKER_LOG_PREFIX copies, flushed before Run returns
	selfExe        os.FileInfo    // clusterinit's executable, to tell a worker still in the shim

	slots   []*slot
	workers map[int]*worker // by pid: every live worker, current, pending or draining

	msgs  chan message
	reqs  chan request
	done  chan struct{} // closed when Run returns: stops IPC goroutines
	timer *time.Timer

	// Stopping.
	stopping   bool
	stopReason string
	drainAt    time.Time // end of STOP_DELAY; zero once draining began
	exitCode   int
	fleetUp    bool // FleetUp has been called

	// Replacement (reload, recycle, scale-down): at most one at a time.
	reloadQueue     []int // slots still to reload; nil: no reload under way
	reloadPending   bool  // another reload was asked for during this one
	replacing       *replacement
	recycleFailures int       // consecutive failed recycles, for backoff
	recycleRetryAt  time.Time // no recycle starts before this

	failedStarts int   // consecutive, all slots together
	oomKills     int64 // the OOM kill counter at its last reading
	oomWarned    bool  // said once that it cannot be read
	counters     counters
	snapshot     atomic.Pointer[Snapshot]
	pingSeq      uint64
	lastSample   time.Time

	scrapeReqs chan scrapeRequest
	scrapes    map[uint64]*Scrape // /metrics/app scrapes under way, by seq
	scrapeSeq  uint64

	sampleReqs    chan sampleRequest
	sampleResults chan sampleResult
	sampling      bool // a pass is under way
}

// counters are the fleet's monotonic totals, exported in snapshots.
type counters struct {
	starts   uint64
	exits    map[ExitReason]uint64
	recycles map[RecycleReason]uint64
	reloads  map[ReloadResult]uint64
	orphans  uint64
}

type request struct {
	kind  string // "reload", "ping"
	reply chan error
}

// New prepares the fleet; nothing starts until Run.
func New(opt Options) *Supervisor {
	s := &Supervisor{
		opt:     opt,
		cfg:     opt.Config,
		log:     opt.Log,
		workers: make(map[int]*worker),
		msgs:    make(chan message, 256),
		reqs:    make(chan request, 8),
		done:    make(chan struct{}),

		scrapeReqs:    make(chan scrapeRequest),
		scrapes:       map[uint64]*Scrape{},
		sampleReqs:    make(chan sampleRequest, 1),
		sampleResults: make(chan sampleResult, 1),
		stdout:        opt.Stdout,
		stderr:        opt.Stderr,
		counters: counters{
			exits:    map[ExitReason]uint64{},
			recycles: map[RecycleReason]uint64{},
			reloads:  map[ReloadResult]uint64{},
		},
	}
	s.procs = opt.Procs
	if s.procs == nil {
		s.procs = newForker(opt, &s.copiers)
	}
	s.selfExe, _ = os.Stat(opt.Self) // nil: workers are never taken for the shim
	for i := 0; i < opt.Workers; i++ {
		s.slots = append(s.slots, &slot{index: i})
	}
	s.publish()
	return s
}

// errStopping answers requests that come in during a stop.
var errStopping = errors.New("clusterinit is stopping")

// Reload asks for a rolling reload, as SIGHUP does. It is safe from any
// goroutine.
func (s *Supervisor) Reload() error { return s.ask("reload", 0) }

// errNoAnswer: the loop did not take or answer a request in time.
var errNoAnswer = errors.New("the supervisor loop did not answer")

// Alive reports whether the loop is turning: it sends the loop a request
// that the loop answers as soon as it takes it, and waits at most timeout.
// A loop stuck in one event (a deadlock, a call that blocks) fails it, where
// the last published Snapshot would still look fine. It is safe from any
// goroutine.
func (s *Supervisor) Alive(timeout time.Duration) error { return s.ask("ping", timeout) }

// ask hands the loop a request of kind and waits for its answer, at most
// timeout (0: until the loop answers or stops).
func (s *Supervisor) ask(kind string, timeout time.Duration) error {
	req := request{kind: kind, reply: make(chan error, 1)}
	var expired <-chan time.Time // nil, never ready, without a timeout
	if timeout > 0 {
		deadline := time.NewTimer(timeout)
		defer deadline.Stop()
		expired = deadline.C
	}
	select {
	case s.reqs <- req:
	case <-s.done:
		return errStopping
	case <-expired:
		return fmt.Errorf("%w within %v", errNoAnswer, timeout)
	}
	select {
	case err := <-req.reply:
		return err
	case <-s.done:
		return errStopping
	case <-expired:
		return fmt.Errorf("%w within %v", errNoAnswer, timeout)
	}
}

// Run starts the workers and supervises them until a stop completes; it
// returns clusterinit's exit status.
func (s *Supervisor) Run() int {
	// Every worker is forked from this goroutine, and its parent-death
	// signal fires when the forking OS thread exits: pin the loop to one
	// thread, which then lives as long as the loop (see dieWithParent).
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	defer close(s.done)
	s.timer = time.NewTimer(time.Hour)
	defer s.timer.Stop()
	if s.samplingEnabled() {
		go s.runSampler()
	}
	s.oomKills, _ = s.readOOMKills() // the baseline, before any worker exists
	s.startAll(time.Now())
	for !s.finished() {
		s.armTimer(time.Now())
		select {
		case ex := <-s.opt.Exits:
			s.onExit(ex, time.Now())
		case sig := <-s.opt.Signals:
			s.onSignal(sig, time.Now())
		case m := <-s.msgs:
			s.onMessage(m, time.Now())
		case req := <-s.reqs:
			req.reply <- s.onRequest(req, time.Now())
		case req := <-s.scrapeReqs:
			s.onScrape(req, time.Now())
		case r := <-s.sampleResults:
			s.onSample(r)
		case <-s.timer.C:
			s.onTimer(time.Now())
		}
		s.publish()
	}
	s.flushOutput()
	return s.exitCode
}

// startAll starts the first worker of every slot.
func (s *Supervisor) startAll(now time.Time) {
	for _, sl := range s.slots {
		sl.current = s.start(sl, now)
	}
}

// outputFlushTimeout bounds how long Run waits for prefixed output after the
// last worker is gone: a daemon a worker left behind may hold the pipe open
// for ever.
const outputFlushTimeout = time.Second

// flushOutput waits for the prefixed copies of the workers' output to end, so
// that a worker's last lines, written just before it exited and still in the
// pipe, are out before clusterinit exits.
func (s *Supervisor) flushOutput() {
	flushed := make(chan struct{})
	go func() {
		s.copiers.Wait()
		close(flushed)
	}()
	select {
	case <-flushed:
	case <-time.After(outputFlushTimeout):
		s.log.Warn("worker output still open after the last worker exited: not waiting for it", "waited", outputFlushTimeout)
	}
}

// finished: a stop has drained every worker.
func (s *Supervisor) finished() bool {
	return s.stopping && s.drainAt.IsZero() && len(s.workers) == 0
}

// start forks a new worker for sl now, or, if that fails, schedules a retry
// as for a crash. Once stopping (a failed start may just have given up),
// nothing is started.
func (s *Supervisor) start(sl *slot, now time.Time) *worker {
	sl.retryAt = time.Time{}
	if s.stopping {
		return nil
	}
	w, err := s.spawn(sl.index, now)
	if err != nil {
		s.log.Error("start worker", "slot", sl.index, "err", err)
		s.failedStart(sl, now)
		return nil
	}
	if sl.started {
		sl.restarts++
	}
	sl.started = true
	return w
}

// failedStart counts a failed start of sl and schedules its retry with
// backoff, or gives up once MAX_FAILED_STARTS is reached.
func (s *Supervisor) failedStart(sl *slot, now time.Time) {
	s.failedStarts++
	sl.crashes++
	if s.failedStarts >= s.cfg.MaxFailedStarts {
		s.log.Error("giving up: too many consecutive failed starts",
			"failed_starts", s.failedStarts, "max_failed_starts", s.cfg.MaxFailedStarts)
		s.exitCode = 1
		s.beginStop("gave up", now)
		return
	}
	s.scheduleRestart(sl, now)
}

func (s *Supervisor) scheduleRestart(sl *slot, now time.Time) {
	delay := backoff(s.cfg.RestartDelay, max(sl.crashes, 1))
	sl.retryAt = now.Add(delay)
	s.log.Info("restarting worker after backoff", "slot", sl.index, "delay", delay, "consecutive_crashes", sl.crashes)
}

// slotOf returns the live slot with index i, or nil if it was removed.
func (s *Supervisor) slotOf(i int) *slot {
	if i < len(s.slots) {
		return s.slots[i]
	}
	return nil
}

// onExit handles one reaped child.
func (s *Supervisor) onExit(ex signals.Exit, now time.Time) {
	w, ok := s.workers[ex.Pid]
	if !ok {
		s.counters.orphans++
		s.log.Debug("reaped orphan", "pid", ex.Pid, "status", describeStatus(ex.Status))
		return
	}
	delete(s.workers, ex.Pid)
	w.ipc.close()
	uptime := now.Sub(w.startedAt).Round(time.Millisecond)
	status := describeStatus(ex.Status)

	requested := w.state == draining
	wasHandingOver := w.handingOver()
	oom := s.oomKilled(w, ex.Status)
	reason := ExitCrash
	switch {
	case oom:
		reason = ExitOOM
	case w.killed():
		reason = ExitKilled
	case requested:
		reason = ExitStopped
	}
	s.counters.exits[reason]++
	attrs := []any{"slot", w.slot, "pid", w.pid, "status", status, "uptime", uptime, "reason", reason}
	switch {
	case oom:
		s.log.Error("worker killed by the kernel's OOM killer: the task ran out of memory", append(attrs, s.oomFigures(w)...)...)
	case requested && w.killed():
		s.log.Warn("worker killed: "+w.killedFor, attrs...)
	case requested && !cleanStop(ex.Status, s.cfg.StopSignal.Sys()):
		s.log.Error("worker exited uncleanly while draining", attrs...)
		if s.stopping && s.exitCode == 0 {
			s.exitCode = 1
		}
	case requested:
		s.log.Info("worker exited", attrs...)
	default:
		s.log.Warn("worker exited unexpectedly", attrs...)
	}

	sl := s.slotOf(w.slot)
	if r := s.replacing; r != nil && (r.old == w || r.new == w) {
		s.replacementExited(r, w, now)
	}
	if wasHandingOver {
		s.advance(now) // the next reload step waited for this handover
	}
	if sl == nil {
		s.releaseSlotIfIdle(w.slot)
		return
	}
	if s.stopping || requested {
		return
	}
	// An unrequested exit: refill the slot unless another worker holds it
	// or a restart is already pending.
	if sl.current == w {
		sl.current = nil
	}
	if !s.vacant(sl) || !sl.retryAt.IsZero() {
		return
	}
	if oom {
		// Memory, not the release, is at fault: no failed start (a fleet
		// short of memory must not give up), but the backoff still grows
		// while the slot keeps dying young.
		if w.readyAt.IsZero() || uptime < s.cfg.MinUptime {
			sl.crashes++
		} else {
			sl.crashes = 1
		}
		s.scheduleRestart(sl, now)
		return
	}
	if w.readyAt.IsZero() || uptime < s.cfg.MinUptime {
		s.failedStart(sl, now)
		return
	}
	sl.crashes = 1
	s.scheduleRestart(sl, now)
}

// onSignal is the one place that decides what a signal means.
func (s *Supervisor) onSignal(sig syscall.Signal, now time.Time) {
	switch sig {
	case syscall.SIGTERM, syscall.SIGINT:
		if s.stopping {
			s.log.Warn("second stop signal: killing every worker now", "signal", config.SignalName(sig))
			s.killAll(now)
			return
		}
		s.log.Info("stop requested", "signal", config.SignalName(sig))
		s.beginStop(config.SignalName(sig), now)
	case syscall.SIGHUP:
		s.requestReload(now)
	case syscall.SIGTTIN:
		s.scaleUp(now)
	case syscall.SIGTTOU:
		s.scaleDown(now)
	case syscall.SIGPIPE:
		// Raised by our own write to a closed stdout/stderr: meaningless to
		// workers, and forwarding it would kill those that keep the default.
	default:
		s.log.Debug("forwarding signal", "signal", config.SignalName(sig))
		for _, w := range s.workers {
			if err := s.signal(w, sig); err != nil {
				s.log.Warn("forward signal", "signal", config.SignalName(sig), "slot", w.slot, "pid", w.pid, "err", err)
			}
		}
	}
}

func (s *Supervisor) onRequest(req request, now time.Time) error {
	switch req.kind {
	case "reload":
		if s.stopping {
			return errStopping
		}
		s.requestReload(now)
	case "ping": // Alive: taking it is the answer
	}
	return nil
}

// onMessage handles a parsed IPC message.
func (s *Supervisor) onMessage(m message, now time.Time) {
	w, ok := s.workers[m.pid]
	if !ok {
		return
	}
	w.execed = true
	switch m.Kind {
	case preload.KindReady:
		s.markReady(w, "message", now)
	case preload.KindListening:
		if s.cfg.Ready == config.ReadyAuto {
			s.markReady(w, "listening", now)
		}
	case preload.KindPong:
		s.onPong(w, m, now)
	case preload.KindMetrics:
		s.onMetrics(w, m)
	case preload.KindDenied:
		s.onDenied(w, m, now)
	}
}

// onDenied: the worker may not listen on its socket under Node's permission
// model. Every restart would fail the same way, so clusterinit stops with
// one line naming the fix rather than crash-loop to MAX_FAILED_STARTS.
func (s *Supervisor) onDenied(w *worker, m message, now time.Time) {
	if s.stopping {
		return
	}
	s.log.Error("giving up: Node's permission model denies the worker its listening socket; add --allow-net to the node command or NODE_OPTIONS",
		"slot", w.slot, "pid", w.pid, "permission", m.Permission)
	s.exitCode = 1
	s.beginStop("gave up", now)
}

// markReady moves a starting worker to ready.
func (s *Supervisor) markReady(w *worker, how string, now time.Time) {
	if w.state != starting || w.timedOut {
		return
	}
	w.state = ready
	w.readyAt = now
	s.log.Info("worker ready", "slot", w.slot, "pid", w.pid, "after", now.Sub(w.startedAt).Round(time.Millisecond), "by", how)
	if r := s.replacing; r != nil && r.new == w {
		s.replacementReady(r, now)
	}
	s.checkProven(w, now)
	s.checkFleetUp()
}

// checkFleetUp calls FleetUp the first time every slot has a ready worker.
func (s *Supervisor) checkFleetUp() {
	if s.fleetUp || s.opt.FleetUp == nil {
		return
	}
	for _, sl := range s.slots {
		if sl.current == nil || sl.current.state != ready {
			return
		}
	}
	s.fleetUp = true
	s.opt.FleetUp()
}

// checkProven resets backoff and the failed-start count once a ready worker
// has run MIN_UPTIME.
func (s *Supervisor) checkProven(w *worker, now time.Time) {
	if w.proven || w.state != ready || now.Sub(w.startedAt) < s.cfg.MinUptime {
		return
	}
	w.proven = true
	s.failedStarts = 0
	if sl := s.slotOf(w.slot); sl != nil && (sl.current == w) {
		sl.crashes = 0
	}
}

// workersByPid lists live workers in a stable order, for deterministic logs.
func (s *Supervisor) workersByPid() []*worker {
	ws := make([]*worker, 0, len(s.workers))
	for _, w := range s.workers {
		ws = append(ws, w)
	}
	sort.Slice(ws, func(i, j int) bool { return ws[i].pid < ws[j].pid })
	return ws
}

// drain asks w to stop: STOP_SIGNAL to its group, the drain message to the
// preload, and "shutdown" with STOP_MESSAGE; it is killed at DRAIN_TIMEOUT.
// A worker already draining that is still handing over (below) is told to
// finish at once and gets its stop signal now: a stop does not wait.
func (s *Supervisor) drain(w *worker, reason string, now time.Time) {
	if w.state == draining {
		if !w.signalAt.IsZero() {
			w.ipc.send(preload.DrainLine(0))
			s.sendStop(w, reason, now)
		}
		return
	}
	s.startDrain(w, reason, 0, now)
}

// handoverWindow is how long a replaced worker takes to hand its keep-alive
// connections over (at most a quarter of DRAIN_TIMEOUT). A fresh node needs
// 2-3 s of load on a CPU of its own to reach its steady p99 (4-6× higher in
// its first second), twice that on CPUs it shares with busy workers; over
// 5 s the successor takes its connections a few at a time while it warms
// up. A 2 s window handed it all of them still cold: a reload's p99 was
// 1.5-2× the steady p99, against 1.1-1.6× with 5 s, at 3× the reload's
// length (docs/benchmarks.md, "The handover window").
const handoverWindow = 5 * time.Second

// handOver drains w, whose successor in its slot is ready, gradually: for
// the handover window the preload keeps serving w's keep-alive connections
// and closes them one by one, each after a response carrying Connection:
// close, so that the successor (whose V8 is still cold) takes them over a
// few at a time instead of all at once; the stop signal, and with it the
// app's own shutdown code, follows at the end of the window. Only Node
// workers with the preload hand over, and not a hung one.
func (s *Supervisor) handOver(w *worker, reason RecycleReason, now time.Time) {
	window := min(handoverWindow, s.cfg.DrainTimeout/4)
	if s.opt.NodeOptions == "" || reason == RecycleHang || w.state != ready {
		window = 0
	}
	s.startDrain(w, string(reason), window, now)
}

// handingOver: a replaced worker is still within its handover window.
func (s *Supervisor) handingOver() bool {
	for _, w := range s.workers {
		if w.handingOver() {
			return true
		}
	}
	return false
}

// startDrain moves w to draining: the drain line first (the preload then
// drains before the app's own 'shutdown' listener runs: both arrive in
// order on one channel, so whatever that listener closes is closed the
// drain's way), then, at once or at the end of a handover, the stop.
func (s *Supervisor) startDrain(w *worker, reason string, handover time.Duration, now time.Time) {
	w.state = draining
	if s.opt.NodeOptions != "" {
		w.ipc.send(preload.DrainLine(handover))
	}
	if handover > 0 {
		w.signalAt = now.Add(handover)
		w.killAt = w.signalAt.Add(s.cfg.DrainTimeout)
		s.log.Info("draining worker", "slot", w.slot, "pid", w.pid, "reason", reason, "handover", handover,
			"signal", s.cfg.StopSignal.String())
		return
	}
	s.log.Info("draining worker", "slot", w.slot, "pid", w.pid, "reason", reason, "signal", s.cfg.StopSignal.String())
	s.sendStop(w, reason, now)
}

// sendStop sends a draining worker its stop: "shutdown" with STOP_MESSAGE
// and STOP_SIGNAL to its group; it is killed DRAIN_TIMEOUT later.
func (s *Supervisor) sendStop(w *worker, reason string, now time.Time) {
	w.signalAt = time.Time{}
	w.killAt = now.Add(s.cfg.DrainTimeout)
	if s.cfg.StopMessage {
		w.ipc.send(preload.ShutdownLine())
	}
	if err := s.signal(w, s.cfg.StopSignal.Sys()); err != nil {
		s.log.Warn("drain worker", "slot", w.slot, "pid", w.pid, "reason", reason, "err", err)
	}
	s.noteStopInShim(w, now)
}

// killAll SIGKILLs every worker's group at once (a second stop signal).
func (s *Supervisor) killAll(now time.Time) {
	s.drainAt = time.Time{}
	s.replacing = nil // as in drainAll: every worker is going
	for _, w := range s.workersByPid() {
		w.state = draining
		w.killedFor = "a second stop signal"
		w.killAt = now
		s.signal(w, syscall.SIGKILL)
	}
}

// publish stores a fresh snapshot for the HTTP side.
func (s *Supervisor) publish() {
	s.snapshot.Store(s.makeSnapshot(time.Now()))
}
