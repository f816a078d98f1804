package supervisor

import (
	"maps"
	"time"
)

// Snapshot is an immutable view of the fleet, made by the loop after every
// event, for the HTTP side to read without locks.
type Snapshot struct {
	Time       time.Time
	Stopping   bool
	StopReason string
	Desired    int // slots
	Ready      int // ready workers
	Workers    []WorkerStatus
	Listeners  []string

	Starts   uint64
	Exits    map[string]uint64 // crash, stopped, killed
	Recycles map[string]uint64 // rss, cpu, age, hang, reload, scale
	Reloads  map[string]uint64 // success, failure
	Orphans  uint64
}

// WorkerStatus is one worker in a Snapshot.
type WorkerStatus struct {
	Slot              int       `json:"slot"`
	Pid               int       `json:"pid"`
	State             string    `json:"state"`
	StartedAt         time.Time `json:"started_at"`
	Restarts          int       `json:"restarts"`
	RSSBytes          int64     `json:"rss_bytes"`
	CPURatio          float64   `json:"cpu_ratio"`
	CPUSeconds        float64   `json:"cpu_seconds"`
	EventLoopDelaySec float64   `json:"event_loop_delay_seconds"`
}

// Snapshot returns the latest view of the fleet; safe from any goroutine.
func (s *Supervisor) Snapshot() *Snapshot { return s.snapshot.Load() }

func (s *Supervisor) makeSnapshot(now time.Time) *Snapshot {
	snap := &Snapshot{
		Time:       now,
		Stopping:   s.stopping,
		StopReason: s.stopReason,
		Desired:    len(s.slots),
		Starts:     s.counters.starts,
		Exits:      maps.Clone(s.counters.exits),
		Recycles:   maps.Clone(s.counters.recycles),
		Reloads:    maps.Clone(s.counters.reloads),
		Orphans:    s.counters.orphans,
	}
	for _, sock := range s.opt.Listeners.Sockets() {
		snap.Listeners = append(snap.Listeners, sock.Bound)
	}
	for _, w := range s.workersByPid() {
		restarts := 0
		if sl := s.slotOf(w.slot); sl != nil {
			restarts = sl.restarts
		}
		if w.state == ready {
			snap.Ready++
		}
		snap.Workers = append(snap.Workers, WorkerStatus{
			Slot: w.slot, Pid: w.pid, State: w.state.String(), StartedAt: w.startedAt,
			Restarts: restarts, RSSBytes: w.rssBytes, CPURatio: w.cpuRatio,
			CPUSeconds: w.cpuSeconds, EventLoopDelaySec: w.eventLoopP99,
		})
	}
	return snap
}
