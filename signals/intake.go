package signals

import (
	"os"
	"os/signal"
	"syscall"
)

// Intake relays every signal this process receives. Call Start before any
// child is forked, so that no SIGCHLD or SIGTERM can arrive unhandled (a Go
// PID 1 without a SIGTERM handler would exit 2).
type Intake struct {
	raw    chan os.Signal
	out    chan syscall.Signal
	reaper *Reaper
}

// NewIntake returns an intake that pokes reaper on SIGCHLD.
func NewIntake(reaper *Reaper) *Intake {
	return &Intake{
		// Buffered: signal.Notify drops signals it cannot deliver at once.
		raw:    make(chan os.Signal, 64),
		out:    make(chan syscall.Signal, 64),
		reaper: reaper,
	}
}

// Signals delivers every signal except SIGCHLD and SIGURG.
func (in *Intake) Signals() <-chan syscall.Signal { return in.out }

// Start subscribes to all signals and relays them until done is closed.
func (in *Intake) Start(done <-chan struct{}) {
	signal.Notify(in.raw) // no list: every signal, so none keeps its default action
	go func() {
		defer signal.Stop(in.raw)
		for {
			select {
			case <-done:
				return
			case s := <-in.raw:
				sig, ok := s.(syscall.Signal)
				if !ok {
					continue
				}
				switch sig {
				case syscall.SIGURG: // the Go runtime's preemption signal, never ours
				case syscall.SIGCHLD:
					in.reaper.Poke()
				default:
					select {
					case in.out <- sig:
					case <-done:
						return
					}
				}
			}
		}
	}()
}
