package supervisor

import (
	"syscall"
	"time"
)

// deadline is one thing the loop must do at a given time. The list of them
// is made afresh from the fleet's state (deadlines), and the same list both
// arms the timer (armTimer: the earliest) and acts when it fires (onTimer:
// each one due), so what the timer waits for and what it then does cannot
// drift apart. A deadline is listed only while firing it would act, and
// firing it acts: it then leaves the list or moves later.
type deadline struct {
	at   time.Time // may be past: due at once
	key  deadlineKey
	fire func(now time.Time)
}

// deadlineKey names a deadline, so that one timer tick fires each at most
// once even though the list is remade after every fire.
type deadlineKey struct {
	what string
	id   int // pid or slot index
}

// idleWake is when the timer fires with nothing due.
const idleWake = time.Hour

// deadlines lists every pending deadline, in a stable order.
func (s *Supervisor) deadlines() []deadline {
	var ds []deadline
	add := func(at time.Time, what string, id int, fire func(time.Time)) {
		if !at.IsZero() {
			ds = append(ds, deadline{at: at, key: deadlineKey{what, id}, fire: fire})
		}
	}
	if s.stopping {
		add(s.drainAt, "drain all", 0, s.drainAll) // end of STOP_DELAY
	}
	for _, w := range s.workersByPid() {
		switch w.state {
		case starting:
			if !w.timedOut {
				add(w.readyBy, "ready timeout", w.pid, func(time.Time) { s.readyTimedOut(w) })
			}
		case ready:
			if !w.proven {
				add(w.startedAt.Add(s.cfg.MinUptime), "min uptime", w.pid, func(now time.Time) { s.checkProven(w, now) })
			}
			if at := s.ageDeadline(w); !at.IsZero() && s.canRecycle(w) {
				add(latest(at, s.recycleRetryAt), "max age", w.pid, func(now time.Time) {
					s.recycle(w, RecycleAge, now, "age", now.Sub(w.startedAt).Round(time.Second), "max_age", s.cfg.MaxAge)
				})
			}
		case draining:
			if !w.killed() {
				add(w.signalAt, "stop signal", w.pid, func(now time.Time) {
					s.sendStop(w, "handover done", now)
					s.advance(now)
				})
				add(w.resignalAt, "resignal", w.pid, func(now time.Time) { s.resignalAfterShim(w, now) })
				add(w.killAt, "drain timeout", w.pid, func(time.Time) { s.drainTimedOut(w) })
			}
		}
	}
	if !s.stopping {
		for _, sl := range s.slots {
			if s.vacant(sl) {
				add(sl.retryAt, "restart", sl.index, func(now time.Time) { sl.current = s.start(sl, now) })
			}
		}
		if s.samplingEnabled() {
			add(s.lastSample.Add(s.cfg.SampleEvery), "sample", 0, s.sample)
		}
	}
	return ds
}

func latest(a, b time.Time) time.Time {
	if a.Before(b) {
		return b
	}
	return a
}

// nextDeadline is when the timer must fire: the earliest deadline, or
// idleWake from now.
func (s *Supervisor) nextDeadline(now time.Time) time.Time {
	next := now.Add(idleWake)
	for _, d := range s.deadlines() {
		if d.at.Before(next) {
			next = d.at
		}
	}
	return next
}

// armTimer sets the timer for nextDeadline.
func (s *Supervisor) armTimer(now time.Time) {
	if !s.timer.Stop() {
		select {
		case <-s.timer.C:
		default:
		}
	}
	s.timer.Reset(max(s.nextDeadline(now).Sub(now), 0))
}

// onTimer fires every deadline due at now, earliest first. Firing one can
// change others (drainAll makes starting workers draining, so their ready
// timeout is gone), so the list is remade after each.
func (s *Supervisor) onTimer(now time.Time) {
	fired := map[deadlineKey]bool{}
	for {
		var due *deadline
		for _, d := range s.deadlines() {
			if !d.at.After(now) && !fired[d.key] && (due == nil || d.at.Before(due.at)) {
				due = &d
			}
		}
		if due == nil {
			return
		}
		fired[due.key] = true
		due.fire(now)
	}
}

// readyTimedOut kills a worker not ready within READY_TIMEOUT; its exit is
// then a failed start.
func (s *Supervisor) readyTimedOut(w *worker) {
	s.log.Error("worker not ready within READY_TIMEOUT: killing it", "slot", w.slot, "pid", w.pid, "ready_timeout", s.cfg.ReadyTimeout)
	w.timedOut = true
	s.signal(w, syscall.SIGKILL)
}

// drainTimedOut kills a worker still there DRAIN_TIMEOUT after its stop
// signal.
func (s *Supervisor) drainTimedOut(w *worker) {
	s.log.Warn("drain deadline passed: killing worker", "slot", w.slot, "pid", w.pid, "drain_timeout", s.cfg.DrainTimeout)
	w.killedFor = "it did not exit within DRAIN_TIMEOUT"
	s.signal(w, syscall.SIGKILL)
}
