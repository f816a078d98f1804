package supervisor

import "time"

// beginStop is the first step of the shutdown sequence:
//
//  1. stopping is set, so /readyz answers 503 from this moment and nothing
//     is started again (pending restarts and replacements are dropped);
//  2. for STOP_DELAY the workers keep serving, while the load balancer
//     deregisters the task;
//  3. drainAll sends every worker its stop signal at once;
//  4. a worker still there DRAIN_TIMEOUT later is SIGKILLed (drainTimedOut);
//  5. Run returns once the last worker is reaped.
//
// DRAIN_TIMEOUT defaults to 25 s so that the whole sequence ends inside ECS's
// default 30 s stopTimeout, before the agent's own SIGKILL.
func (s *Supervisor) beginStop(reason string, now time.Time) {
	if s.stopping {
		return
	}
	s.stopping = true
	s.stopReason = reason
	s.reloadFailed() // cut short; a step under way finishes or fails uncounted
	for _, sl := range s.slots {
		sl.retryAt = time.Time{}
	}
	if d := s.cfg.StopDelay; d > 0 && reason != "gave up" {
		s.drainAt = now.Add(d)
		s.log.Info("stop: still serving during STOP_DELAY", "stop_delay", d)
		return
	}
	s.drainAll(now)
}

// drainAll is step 3.
func (s *Supervisor) drainAll(now time.Time) {
	s.drainAt = time.Time{}
	s.replacing = nil
	s.log.Info("stop: draining every worker", "workers", len(s.workers), "drain_timeout", s.cfg.DrainTimeout)
	for _, w := range s.workersByPid() {
		s.drain(w, "stop", now)
	}
}
