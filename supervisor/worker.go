package supervisor

import (
	"fmt"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

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

	readyBy time.Time // starting: killed and counted as a failed start after this
	proven  bool      // ran MIN_UPTIME after getting ready: backoff and failed starts reset

	stopReason string    // why it drains ("stop", "reload", "scale", …); "" unless draining
	killAt     time.Time // draining: SIGKILL after this
	killed     bool      // SIGKILLed by clusterinit
	execed     bool      // it sent a message, so it runs the command, not the shim
	resignalAt time.Time // drained in the shim: check then whether to signal again

	// Figures sampled for status and recycling.
	lastUsage    procsample.Usage
	sampledAt    time.Time
	rssOverSince time.Time // over MAX_RSS since (zero: under)
	cpuOverSince time.Time // over MAX_CPU since (zero: under)
	lastBeat     time.Time // last heartbeat answer
	ageJitter    time.Duration
	rssBytes     int64
	cpuRatio     float64
	cpuSeconds   float64
	eventLoopP99 float64
}

// signalGroup sends sig to the worker's whole process group (the worker is
// its leader), so that children it started get it too.
func (w *worker) signalGroup(sig syscall.Signal) error {
	err := unix.Kill(-w.pid, sig)
	if err == unix.ESRCH {
		return nil // exited, not reaped yet or its group is empty
	}
	if err != nil {
		return fmt.Errorf("signal process group %d: %w", w.pid, err)
	}
	return nil
}

// slot is one position of the fleet; its index is CLUSTERINIT_WORKER.
type slot struct {
	index    int
	current  *worker   // starting or ready worker serving this slot; nil while empty
	next     *worker   // replacement being started while current still serves
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
