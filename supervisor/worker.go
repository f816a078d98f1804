package supervisor

import (
	"fmt"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/clusterinit/clusterinit/preload"
	"github.com/clusterinit/clusterinit/procsample"
)

// state is where a worker is in its life. An exited worker is simply
// forgotten, so there is no state for it.
type state int

const (
	starting state = iota // forked, not ready yet
	ready                 // serving
	draining              // asked to stop; killed at killAt
)

func (s state) String() string {
	switch s {
	case starting:
		return "starting"
	case ready:
		return "ready"
	default:
		return "draining"
	}
}

// worker is one process of the fleet, owned by the loop.
type worker struct {
	slot      int
	pid       int
	state     state
	startedAt time.Time
	readyAt   time.Time // zero until ready
	ipc       *channel

	readyBy  time.Time // starting: killed and counted as a failed start after this
	timedOut bool      // killed at readyBy: a ready message still on its way changes nothing
	proven   bool      // ran MIN_UPTIME after getting ready: backoff and failed starts reset

	signalAt   time.Time // draining, handing over: the stop signal is sent then
	killAt     time.Time // draining: SIGKILL after this
	killedFor  string    // SIGKILLed by clusterinit, and why (the exit's log line says it); "" if not
	execed     bool      // it sent a message, so it runs the command, not the shim
	resignalAt time.Time // drained in the shim: check then whether to signal again

	// Figures sampled for status and recycling.
	lastUsage    procsample.Usage
	peakRSS      int64 // the most lastUsage.RSSBytes has been, for an OOM kill's log line
	sampledAt    time.Time
	rssOverSince time.Time       // over MAX_RSS since (zero: under)
	cpuOverSince time.Time       // over MAX_CPU since (zero: under)
	lastBeat     time.Time       // last heartbeat answer
	beat         preload.Message // what it said: event loop, heap, GC
	ageJitter    time.Duration   // taken off MAX_AGE for this worker
	requestLimit uint64          // MAX_REQUESTS less this worker's jitter; 0: off
	cpuRatio     float64
}

// slot is one position of the fleet; its index is CLUSTERINIT_WORKER.
type slot struct {
	index    int
	current  *worker   // starting or ready worker serving this slot; nil while empty
	crashes  int       // consecutive failed starts of this slot, for backoff
	restarts int       // workers started in this slot after the first
	started  bool      // a first worker was started
	retryAt  time.Time // a restart is pending at this time (zero: none)
}

// maxRestartDelay caps the backoff.
const maxRestartDelay = 30 * time.Second

// backoff is the delay before the nth consecutive restart (n ≥ 1) of a slot:
// base, doubling each time, capped at 30 s.
func backoff(base time.Duration, n int) time.Duration {
	d := base
	for i := 1; i < n && d < maxRestartDelay; i++ {
		d *= 2
	}
	return min(d, maxRestartDelay)
}

// describeStatus renders a wait status for logs: "exit code 1" or "signal SIGKILL".
func describeStatus(ws unix.WaitStatus) string {
	switch {
	case ws.Exited():
		return fmt.Sprintf("exit code %d", ws.ExitStatus())
	case ws.Signaled():
		return "signal " + unix.SignalName(ws.Signal())
	default:
		return fmt.Sprintf("status %#x", uint32(ws))
	}
}

// cleanStop reports whether a status counts as a clean exit after a stop
// request: 0, 130 (SIGINT), 143 (SIGTERM), or death by the stop signal itself.
func cleanStop(ws unix.WaitStatus, stopSignal syscall.Signal) bool {
	if ws.Exited() {
		c := ws.ExitStatus()
		return c == 0 || c == 130 || c == 143 || c == 128+int(stopSignal)
	}
	return ws.Signaled() && ws.Signal() == stopSignal
}

// handingOver: w is draining but still inside its handover window (its stop
// signal is yet to come).
func (w *worker) handingOver() bool { return w.state == draining && !w.signalAt.IsZero() }

// killed: clusterinit SIGKILLed w (a deadline, a second stop signal).
func (w *worker) killed() bool { return w.killedFor != "" }
