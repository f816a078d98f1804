package supervisor

import (
	"os"
	"strconv"
	"time"
)

// A worker begins life as clusterinit's exec shim (see ExecShim), a Go
// program with several threads, which then execve's the command. A stop
// signal sent in those first milliseconds is now and then lost: one of the
// shim's threads takes it just as another thread's execve ends them all
// (measured: 7 of 18,018 workers drained 3-11 ms after their start ran on
// until DRAIN_TIMEOUT). So a worker drained while it is still the shim gets
// its stop signal again once it has become the command. Sending it twice is
// harmless: the preload's drain and the apps' handlers start once.

// shimPoll is how often a worker drained in the shim is checked for having
// left it; execve normally follows the fork by a few milliseconds.
const shimPoll = 5 * time.Millisecond

// inShim reports whether pid still runs clusterinit's own executable. An
// unreadable /proc entry (exited, or /proc missing) counts as not.
func (s *Supervisor) inShim(pid int) bool {
	if s.selfExe == nil {
		return false
	}
	exe, err := os.Stat("/proc/" + strconv.Itoa(pid) + "/exe")
	return err == nil && os.SameFile(exe, s.selfExe)
}

// noteStopInShim is called as w is sent its stop signal.
func (s *Supervisor) noteStopInShim(w *worker, now time.Time) {
	if !w.execed && s.inShim(w.pid) {
		w.resignalAt = now.Add(shimPoll)
	}
}

// resignalAfterShim sends the stop signal again to a worker drained in the
// shim once it has left it.
func (s *Supervisor) resignalAfterShim(w *worker, now time.Time) {
	if w.resignalAt.IsZero() || now.Before(w.resignalAt) || w.killed() {
		return
	}
	if s.inShim(w.pid) {
		w.resignalAt = now.Add(shimPoll)
		return
	}
	w.resignalAt = time.Time{}
	s.log.Info("stop signal sent again: the worker was still starting when it was first sent", "slot", w.slot, "pid", w.pid)
	if err := s.signal(w, s.cfg.StopSignal.Sys()); err != nil {
		s.log.Warn("drain worker", "slot", w.slot, "pid", w.pid, "err", err)
	}
}
