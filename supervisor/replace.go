package supervisor

import (
	"time"
)

// replacement is the one worker swap under way: a rolling reload's current
// slot, a recycle, or a scale-down.
type replacement struct {
	slot       int
	reason     RecycleReason
	old        *worker
	new        *worker // nil until started; drain-first: the slot's refill, once old has exited
	startFirst bool    // start new, then drain old once new is ready
}

// pendingOf is the worker being started to take over sl from its current
// one, or nil.
func (s *Supervisor) pendingOf(sl *slot) *worker {
	if r := s.replacing; r != nil && r.slot == sl.index {
		return r.new
	}
	return nil
}

// vacant: sl has no worker serving or about to.
func (s *Supervisor) vacant(sl *slot) bool {
	return sl.current == nil && s.pendingOf(sl) == nil
}

// Rolling reloads. One is under way while reloadQueue is non-nil: its
// current step is the replacement, or it waits behind a recycle. Every
// reload asked for ends in exactly one result: success once every slot has
// a new worker, failure when a new worker fails to get ready or a stop cuts
// it short. Requests during a reload become one more reload after it
// (reloadPending): a deploy that lands mid-reload must still reach every
// worker; it fails with the one it follows.

// requestReload starts a rolling reload of every slot, or queues one more
// after the reload under way.
func (s *Supervisor) requestReload(now time.Time) {
	if s.stopping {
		return
	}
	if s.reloadQueue != nil {
		s.reloadPending = true
		s.log.Info("reload requested during a reload: another one follows it")
		return
	}
	s.log.Info("rolling reload started", "workers", len(s.slots))
	s.reloadQueue = make([]int, 0, len(s.slots))
	for _, sl := range s.slots {
		s.reloadQueue = append(s.reloadQueue, sl.index)
	}
	s.advance(now)
}

// reloadFailed ends the reload under way, if any, and the one that was to
// follow it, as failures.
func (s *Supervisor) reloadFailed() {
	if s.reloadQueue == nil {
		return
	}
	s.counters.reloads[ReloadFailure]++
	if s.reloadPending {
		s.counters.reloads[ReloadFailure]++
	}
	s.reloadQueue = nil
	s.reloadPending = false
}

// advance starts the next queued reload step when no replacement is under
// way and no replaced worker is still handing over: a successor still warming
// up on the connections handed to it must not share the CPUs with the next
// one's boot and handover (README, "Handover").
func (s *Supervisor) advance(now time.Time) {
	for s.replacing == nil && !s.handingOver() && !s.stopping {
		if len(s.reloadQueue) == 0 {
			if s.reloadQueue != nil {
				s.reloadQueue = nil
				s.counters.reloads[ReloadSuccess]++
				s.log.Info("rolling reload done")
				if s.reloadPending {
					s.reloadPending = false
					s.requestReload(now)
					continue
				}
			}
			return
		}
		i := s.reloadQueue[0]
		s.reloadQueue = s.reloadQueue[1:]
		sl := s.slotOf(i)
		if sl == nil || sl.current == nil {
			// Removed, or empty with a restart pending: the restart brings
			// up a fresh worker anyway.
			continue
		}
		startFirst, headroom := s.replacementPath(sl.current)
		s.log.Info("reloading worker", "slot", sl.index, "pid", sl.current.pid, "path", pathName(startFirst),
			"headroom_bytes", headroom, "rss_bytes", sl.current.lastUsage.RSSBytes)
		s.replace(sl, RecycleReload, startFirst, now)
	}
}

// replace swaps sl's current worker. startFirst: fork the new one, and drain
// the old one once the new is ready; else drain the old one first and fill
// the slot when it has exited.
func (s *Supervisor) replace(sl *slot, reason RecycleReason, startFirst bool, now time.Time) {
	old := sl.current
	r := &replacement{slot: sl.index, reason: reason, old: old, startFirst: startFirst}
	s.replacing = r
	s.counters.recycles[reason]++
	if !startFirst {
		sl.current = nil
		s.drain(old, string(reason), now)
		return
	}
	w, err := s.spawn(sl.index, now)
	if err != nil {
		s.log.Error("start replacement worker", "slot", sl.index, "reason", reason, "err", err)
		s.replacementFailed(r, now)
		return
	}
	sl.restarts++
	r.new = w
	if w.state == ready {
		s.replacementReady(r, now)
	}
}

// replacementReady: the new worker serves, so the old one drains (drain-first:
// it is gone already, and the replacement is over).
func (s *Supervisor) replacementReady(r *replacement, now time.Time) {
	sl := s.slotOf(r.slot) // the slot is there: removing it ends r
	old := sl.current
	if old == r.new {
		old = nil // drain-first: the refill is already the slot's worker
	}
	sl.current = r.new
	s.replacing = nil
	if r.reason != RecycleReload {
		s.recycleFailures = 0
	}
	if old != nil {
		s.handOver(old, r.reason, now)
	}
	s.advance(now)
}

// replacementExited handles the exit of either side of the replacement.
func (s *Supervisor) replacementExited(r *replacement, w *worker, now time.Time) {
	switch {
	case w == r.new && w.state != draining:
		// The new worker died before it was ready.
		s.replacementFailed(r, now)
	case w == r.old && !r.startFirst:
		// Drain-first: the old worker is gone, fill the slot now. The
		// replacement lasts until the refill is ready, so the next one (a
		// reload's next slot, another recycle) never overlaps its boot; a
		// refill that dies first ends it as a failed one, and the slot is
		// restarted as after any crash.
		r.old = nil
		sl := s.slotOf(r.slot)
		if sl == nil || s.stopping || !s.vacant(sl) {
			s.replacing = nil
			s.advance(now)
			return
		}
		if sl.current = s.start(sl, now); sl.current == nil {
			s.replacementFailed(r, now) // the fork failed: retried as a crash
			return
		}
		r.new = sl.current
		if r.new.state == ready {
			s.replacementReady(r, now)
		}
	}
}

// replacementFailed ends a replacement whose new worker did not get ready:
// start-first, the old worker keeps serving; drain-first, the old worker is
// gone and the slot restarts as after any crash. A failed reload stops, so a
// bad release never replaces more than one worker at a time; a failed
// recycle is tried again after backoff.
func (s *Supervisor) replacementFailed(r *replacement, now time.Time) {
	s.replacing = nil
	if r.reason == RecycleReload {
		if s.reloadQueue != nil {
			msg := "rolling reload failed: a new worker did not get ready; the old workers keep serving"
			if !r.startFirst {
				msg = "rolling reload failed: a new worker did not get ready; its slot restarts, the other old workers keep serving"
			}
			s.log.Error(msg, "slot", r.slot, "skipped_slots", len(s.reloadQueue))
		}
		s.reloadFailed()
		return
	}
	s.recycleFailures++
	delay := backoff(s.cfg.RestartDelay, s.recycleFailures)
	s.recycleRetryAt = now.Add(delay)
	msg := "replacement worker did not get ready; the old worker keeps serving"
	if !r.startFirst {
		msg = "replacement worker did not get ready; its slot restarts"
	}
	s.log.Error(msg, "slot", r.slot, "reason", r.reason, "retry_in", delay)
}

// scaleUp adds a slot (SIGTTIN).
func (s *Supervisor) scaleUp(now time.Time) {
	if s.stopping {
		return
	}
	sl := &slot{index: len(s.slots)}
	s.slots = append(s.slots, sl)
	s.log.Info("scaling up", "workers", len(s.slots))
	sl.current = s.start(sl, now)
}

// scaleDown removes the last slot (SIGTTOU), draining its workers; the fleet
// keeps at least one slot.
func (s *Supervisor) scaleDown(now time.Time) {
	if s.stopping {
		s.log.Warn("not scaling down: stopping")
		return
	}
	if len(s.slots) <= 1 {
		s.log.Warn("not scaling down: one worker is the minimum")
		return
	}
	sl := s.slots[len(s.slots)-1]
	pending := s.pendingOf(sl)
	s.slots = s.slots[:len(s.slots)-1]
	s.log.Info("scaling down", "workers", len(s.slots), "slot", sl.index)
	s.counters.recycles[RecycleScale]++
	for _, w := range []*worker{pending, sl.current} {
		if w != nil {
			s.drain(w, string(RecycleScale), now)
		}
	}
	if r := s.replacing; r != nil && r.slot == sl.index {
		s.replacing = nil
		s.advance(now)
	}
	s.releaseSlotIfIdle(sl.index)
}

// releaseSlotIfIdle closes a removed slot's reuseport sockets once none of
// its workers is left (closing earlier would reset connections queued there).
func (s *Supervisor) releaseSlotIfIdle(index int) {
	if index < len(s.slots) {
		return
	}
	for _, w := range s.workers {
		if w.slot == index {
			return
		}
	}
	s.opt.Listeners.ReleaseSlot(index)
}
