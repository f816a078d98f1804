package supervisor

import (
	"maps"
	"time"

	"github.com/clusterinit/clusterinit/limits"
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
	Limits     limits.Limits // as detected at start

	Starts   uint64
	Exits    map[ExitReason]uint64
	Recycles map[RecycleReason]uint64
	Reloads  map[ReloadResult]uint64
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

	// From the preload's heartbeat (zero for a worker without it):
	// event-loop utilization over the last heartbeat interval, V8 heap,
	// time spent in GC and HTTP requests answered since the worker started.
	EventLoopUtilization float64 `json:"event_loop_utilization"`
	HeapUsedBytes        int64   `json:"heap_used_bytes"`
	HeapLimitBytes       int64   `json:"heap_limit_bytes"`
	GCSeconds            float64 `json:"gc_seconds"`
	Requests             uint64  `json:"requests"`
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
		Limits:     s.opt.Limits,
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
			Restarts: restarts, RSSBytes: w.lastUsage.RSSBytes, CPURatio: w.cpuRatio,
			CPUSeconds: w.lastUsage.CPUSeconds, EventLoopDelaySec: w.beat.ELD,
			EventLoopUtilization: w.beat.ELU, HeapUsedBytes: w.beat.HeapUsed, HeapLimitBytes: w.beat.HeapLimit,
			GCSeconds: w.beat.GCSeconds, Requests: w.beat.Requests,
		})
	}
	return snap
}
