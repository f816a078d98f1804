package supervisor

import (
	"syscall"

	"golang.org/x/sys/unix"
)

// OOM kills. The kernel's OOM killer ends its victim with SIGKILL, which
// looks like any other SIGKILL (a person's kill -9, a sidecar's). The
// memory cgroup counts its kills, so a worker that dies of a SIGKILL that
// clusterinit did not send is an OOM kill when the counter rose since the
// last reading. The counter is read at start and again at each such death;
// a kill of a worker's own child (which leaves the worker alive) is then
// taken for the next such death's cause: rare, and still a memory problem.

// readOOMKills takes a fresh reading of the counter; ok is false when it
// cannot be read (no memory cgroup, a kernel before 4.13).
func (s *Supervisor) readOOMKills() (n int64, ok bool) {
	if s.opt.OOMKills == nil {
		return 0, false
	}
	n, err := s.opt.OOMKills()
	if err != nil {
		if !s.oomWarned {
			s.oomWarned = true
			s.log.Warn("OOM kills cannot be told from other SIGKILLs", "err", err)
		}
		return 0, false
	}
	return n, true
}

// oomKilled reports whether w, which exited with ws, was killed by the OOM
// killer, and moves the baseline on.
func (s *Supervisor) oomKilled(w *worker, ws unix.WaitStatus) bool {
	if !ws.Signaled() || ws.Signal() != syscall.SIGKILL || w.killed() || w.timedOut {
		return false
	}
	n, ok := s.readOOMKills()
	if !ok {
		return false
	}
	rose := n > s.oomKills
	s.oomKills = n
	return rose
}

// oomFigures are what the log line of an OOM kill adds: the worker's last
// sampled memory, its V8 heap as last reported, and the limit.
func (s *Supervisor) oomFigures(w *worker) []any {
	figures := []any{"rss_bytes", w.lastUsage.RSSBytes, "peak_rss_bytes", w.peakRSS, "memory_limit", s.opt.Limits.MemoryBytes,
		"memory_source", s.opt.Limits.MemorySource, "oom_kills", s.oomKills}
	if !w.sampledAt.IsZero() {
		figures = append(figures, "sampled_at", w.sampledAt)
	}
	if w.beat.HeapLimit > 0 {
		figures = append(figures, "heap_used_bytes", w.beat.HeapUsed, "heap_limit_bytes", w.beat.HeapLimit)
	}
	return figures
}
