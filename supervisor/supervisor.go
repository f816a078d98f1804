package supervisor

import (
	"errors"
	"log/slog"
	"os"
	"sort"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/clusterinit/clusterinit/config"
	"github.com/clusterinit/clusterinit/listeners"
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

	// Headroom, when set, returns how many bytes of memory the container
	// can still use; recycling starts a replacement first only if a worker
	// of the current size fits.
	Headroom func() (int64, error)
}

// Supervisor is the fleet. Create it with New and call Run once.
type Supervisor struct {
	opt  Options
	cfg  *config.Config
	log  *slog.Logger
	env  []string // the environment every worker starts from
	cred string   // "uid:gid" for the exec shim, or "-"

	stdout, stderr *LineWriter    // shared by prefixed worker output and the logger
	copiers        sync.WaitGroup // running WORKER_LOG_PREFIX copies, flushed before Run returns
	selfExe        os.FileInfo    // clusterinit's executable, to tell a worker still in the shim

	slots   []*slot
	workers map[int]*worker // by pid: every live worker, current, next or draining

	msgs  chan message
	reqs  chan request
	done  chan struct{} // closed when Run returns: stops IPC goroutines
	timer *time.Timer

	// Stopping.
	stopping   bool
	stopReason string
	drainAt    time.Time // end of STOP_DELAY; zero once draining began
	exitCode   int

	// Replacement (reload, recycle, scale-down): at most one at a time.
	reloadQueue   []int // slots still to reload
	reloadPending bool  // another reload was asked for during this one
	replacing     *replacement

	failedStarts int // consecutive, all slots together
	counters     counters
	snapshot     atomic.Pointer[Snapshot]
	pingSeq      int64
	lastSample   time.Time

	sampleReqs    chan sampleRequest
	sampleResults chan sampleResult
	sampling      bool // a pass is under way
}

// counters are the fleet's monotonic totals, exported in snapshots.
type counters struct {
	starts   uint64
	exits    map[string]uint64 // crash, stopped, killed
	recycles map[string]uint64 // rss, cpu, age, hang, reload, scale
	reloads  map[string]uint64 // success, failure
	orphans  uint64
}

type request struct {
	kind  string // "reload"
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

		sampleReqs:    make(chan sampleRequest, 1),
		sampleResults: make(chan sampleResult, 1),
		cred:          "-",
		stdout:        opt.Stdout,
		stderr:        opt.Stderr,
		counters: counters{
			exits:    map[string]uint64{},
			recycles: map[string]uint64{},
			reloads:  map[string]uint64{},
		},
	}
	if u := opt.Config.User; u.Set {
		s.cred = uidGid(u.UID, u.GID)
	}
	s.env = baseEnv(os.Environ(), opt.NodeOptions)
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
func (s *Supervisor) Reload() error {
	req := request{kind: "reload", reply: make(chan error, 1)}
	select {
	case s.reqs <- req:
	case <-s.done:
		return errStopping
	}
	select {
	case err := <-req.reply:
		return err
	case <-s.done:
		return errStopping
	}
}

// Run starts the workers and supervises them until a stop completes; it
// returns clusterinit's exit status.
func (s *Supervisor) Run() int {
	defer close(s.done)
	s.timer = time.NewTimer(time.Hour)
	defer s.timer.Stop()
	if s.samplingEnabled() {
		go s.runSampler()
	}
	now := time.Now()
	for _, sl := range s.slots {
		sl.current = s.start(sl, now)
	}
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
// as for a crash.
func (s *Supervisor) start(sl *slot, now time.Time) *worker {
	sl.retryAt = time.Time{}
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
	reason := "crash"
	switch {
	case w.killed:
		reason = "killed"
	case requested:
		reason = "stopped"
	}
	s.counters.exits[reason]++
	attrs := []any{"slot", w.slot, "pid", w.pid, "status", status, "uptime", uptime, "reason", reason}
	switch {
	case requested && w.killed:
		s.log.Warn("worker killed: it did not exit within DRAIN_TIMEOUT", attrs...)
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
	if sl.next == w {
		sl.next = nil
	}
	if sl.current != nil || sl.next != nil || !sl.retryAt.IsZero() {
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
			if err := w.signalGroup(sig); err != nil {
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
	switch m.kind {
	case msgReady:
		s.markReady(w, "message", now)
	case msgListening:
		if s.cfg.Ready == config.ReadyAuto {
			s.markReady(w, "listening", now)
		}
	case msgPong:
		s.onPong(w, m, now)
	}
}

// markReady moves a starting worker to ready.
func (s *Supervisor) markReady(w *worker, how string, now time.Time) {
	if w.state != starting {
		return
	}
	w.state = ready
	w.readyAt = now
	s.log.Info("worker ready", "slot", w.slot, "pid", w.pid, "after", now.Sub(w.startedAt).Round(time.Millisecond), "by", how)
	if r := s.replacing; r != nil && r.new == w {
		s.replacementReady(r, now)
	}
	s.checkProven(w, now)
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

// onTimer handles every deadline that has passed.
func (s *Supervisor) onTimer(now time.Time) {
	if s.stopping && !s.drainAt.IsZero() && !now.Before(s.drainAt) {
		s.drainAll(now)
	}
	for _, w := range s.workersByPid() {
		switch w.state {
		case starting:
			if !w.readyBy.IsZero() && !now.Before(w.readyBy) {
				s.log.Error("worker not ready within READY_TIMEOUT: killing it", "slot", w.slot, "pid", w.pid, "ready_timeout", s.cfg.ReadyTimeout)
				w.readyAt = time.Time{}
				w.readyBy = time.Time{}
				w.signalGroup(syscall.SIGKILL)
			}
		case ready:
			s.checkProven(w, now)
		case draining:
			s.resignalAfterShim(w, now)
			if !w.killed && !now.Before(w.killAt) {
				s.log.Warn("drain deadline passed: killing worker", "slot", w.slot, "pid", w.pid, "drain_timeout", s.cfg.DrainTimeout)
				w.killed = true
				w.signalGroup(syscall.SIGKILL)
			}
		}
	}
	if s.stopping {
		return
	}
	for _, sl := range s.slots {
		if !sl.retryAt.IsZero() && !now.Before(sl.retryAt) && sl.current == nil && sl.next == nil {
			sl.current = s.start(sl, now)
		}
	}
	s.checkAges(now)
	s.sample(now)
}

// armTimer sets the timer to the earliest pending deadline.
func (s *Supervisor) armTimer(now time.Time) {
	next := now.Add(time.Hour)
	earlier := func(t time.Time) {
		if !t.IsZero() && t.Before(next) {
			next = t
		}
	}
	if s.stopping {
		earlier(s.drainAt)
	}
	for _, w := range s.workers {
		switch w.state {
		case starting:
			earlier(w.readyBy)
		case ready:
			if !w.proven {
				earlier(w.startedAt.Add(s.cfg.MinUptime))
			}
			if d := s.ageDeadline(w); d.After(now) {
				earlier(d)
			}
		case draining:
			if !w.killed {
				earlier(w.killAt)
				earlier(w.resignalAt)
			}
		}
	}
	if !s.stopping {
		for _, sl := range s.slots {
			earlier(sl.retryAt)
		}
		if s.samplingEnabled() {
			earlier(s.lastSample.Add(s.cfg.SampleEvery))
		}
	}
	if !s.timer.Stop() {
		select {
		case <-s.timer.C:
		default:
		}
	}
	s.timer.Reset(max(next.Sub(now), 0))
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
func (s *Supervisor) drain(w *worker, reason string, now time.Time) {
	if w.state == draining {
		return
	}
	w.state = draining
	w.stopReason = reason
	w.killAt = now.Add(s.cfg.DrainTimeout)
	if s.cfg.StopMessage {
		w.ipc.send(lineShutdown)
	}
	if s.opt.NodeOptions != "" {
		w.ipc.send(lineDrain)
	}
	s.log.Info("draining worker", "slot", w.slot, "pid", w.pid, "reason", reason, "signal", s.cfg.StopSignal.String())
	if err := w.signalGroup(s.cfg.StopSignal.Sys()); err != nil {
		s.log.Warn("drain worker", "slot", w.slot, "pid", w.pid, "err", err)
	}
	s.noteStopInShim(w, now)
}

// killAll SIGKILLs every worker's group at once (a second stop signal).
func (s *Supervisor) killAll(now time.Time) {
	s.drainAt = time.Time{}
	for _, w := range s.workersByPid() {
		if w.state != draining {
			w.state = draining
			w.stopReason = "stop"
		}
		w.killed = true
		w.killAt = now
		w.signalGroup(syscall.SIGKILL)
	}
}

// publish stores a fresh snapshot for the HTTP side.
func (s *Supervisor) publish() {
	s.snapshot.Store(s.makeSnapshot(time.Now()))
}
