package signals

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"time"

	"golang.org/x/sys/unix"
)

// Exit is one reaped child.
type Exit struct {
	Pid    int
	Status unix.WaitStatus
}

// reapTick bounds how long a status can wait if a SIGCHLD is ever lost or
// coalesced past the loop; one wait4 call a second costs nothing measurable.
const reapTick = time.Second

// Reaper owns wait4. Create it with NewReaper, start it with Run.
type Reaper struct {
	pokeC chan struct{}
	exits chan Exit
}

// NewReaper returns a reaper whose exits are delivered on Exits. The
// channel is buffered so that a burst of exits is reaped at once (zombies do
// not linger) even while the consumer is busy.
func NewReaper() *Reaper {
	return &Reaper{
		pokeC: make(chan struct{}, 1),
		exits: make(chan Exit, 1024),
	}
}

// Exits is the stream of reaped children.
func (r *Reaper) Exits() <-chan Exit { return r.exits }

// Poke asks for a reaping pass; it never blocks, and pokes that arrive while
// one is pending merge, which is safe because each pass reaps everything.
func (r *Reaper) Poke() {
	select {
	case r.pokeC <- struct{}{}:
	default:
	}
}

// Run reaps until done is closed.
func (r *Reaper) Run(done <-chan struct{}) {
	tick := time.NewTicker(reapTick)
	defer tick.Stop()
	for {
		r.reapAll(done)
		select {
		case <-done:
			return
		case <-r.pokeC:
		case <-tick.C:
		}
	}
}

// reapAll calls wait4(-1, WNOHANG) until there is nothing left to reap.
func (r *Reaper) reapAll(done <-chan struct{}) {
	for {
		var status unix.WaitStatus
		pid, err := unix.Wait4(-1, &status, unix.WNOHANG, nil)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil || pid <= 0 { // ECHILD: no children at all; 0: none exited
			return
		}
		select {
		case r.exits <- Exit{Pid: pid, Status: status}:
		case <-done:
			return
		}
	}
}

// BecomeSubreaper makes orphaned descendants re-parent to this process
// instead of to the namespace's init, so that they are reaped here even when
// clusterinit is not PID 1 (under ECS initProcessEnabled, for instance).
func BecomeSubreaper() error {
	return unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
}

// CloseInheritedFds marks every fd from 3 up close-on-exec, so that what
// clusterinit itself inherited (from a wrapper, a debugger, a CI runner) is
// not passed on to workers, who may run as another user. Workers get only
// the fds the supervisor hands them explicitly.
func CloseInheritedFds() error {
	err := unix.CloseRange(3, ^uint(0), unix.CLOSE_RANGE_CLOEXEC)
	if err == nil {
		return nil
	}
	// Before Linux 5.11 (still found on Amazon Linux 2 hosts): one by one.
	ents, rerr := os.ReadDir("/proc/self/fd")
	if rerr != nil {
		return fmt.Errorf("mark inherited fds close-on-exec: %w (and list /proc/self/fd: %v)", err, rerr)
	}
	for _, e := range ents {
		if fd, cerr := strconv.Atoi(e.Name()); cerr == nil && fd >= 3 {
			unix.CloseOnExec(fd)
		}
	}
	return nil
}
