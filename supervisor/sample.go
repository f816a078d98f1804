package supervisor

import "time"

// samplingEnabled: whether the loop wakes every SAMPLE_EVERY.
func (s *Supervisor) samplingEnabled() bool { return false }

func (s *Supervisor) sample(now time.Time) {}

func (s *Supervisor) onPong(w *worker, m message, now time.Time) {}
