package supervisor

import (
	"fmt"
	"os"
	"strconv"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/clusterinit/clusterinit/config"
	"github.com/clusterinit/clusterinit/listeners"
	"github.com/clusterinit/clusterinit/preload"
)

// Procs is the fleet's one seam to the operating system for its workers:
// starting one and signalling its process group. The default (Options.Procs
// nil) forks real workers (forker, below); fleet_test.go drives the fleet's
// state machine with a fake one.
type Procs interface {
	// Start forks the worker spec describes. It returns the worker's pid
	// and clusterinit's end of its IPC socketpair (nil: no channel).
	Start(spec WorkerSpec) (pid int, ipc *os.File, err error)
	// SignalGroup sends sig to the process group the worker pid leads; a
	// group already empty is not an error.
	SignalGroup(pid int, sig syscall.Signal) error
}

// WorkerSpec is what differs from one worker to the next.
type WorkerSpec struct {
	Slot int
	// HeapMiB is the --max-old-space-size added to NODE_OPTIONS; 0: none.
	HeapMiB int64
}

// forker is the real Procs: fork and exec through clusterinit's exec shim.
type forker struct {
	self, path  string
	argv        []string
	cred        string   // "uid:gid" for the exec shim, or "-"
	env         []string // preload.BaseEnv: what every worker starts from
	nodeOptions string   // the NODE_OPTIONS in env
	listeners   *listeners.Set

	prefix         bool            // WORKER_LOG_PREFIX
	stdout, stderr *LineWriter     // where prefixed output goes
	copiers        *sync.WaitGroup // running prefixed copies
}

func newForker(opt Options, copiers *sync.WaitGroup) *forker {
	f := &forker{
		self: opt.Self, path: opt.Path, argv: opt.Argv, cred: "-",
		env:         preload.BaseEnv(os.Environ(), opt.NodeOptions),
		nodeOptions: opt.NodeOptions,
		listeners:   opt.Listeners,
		prefix:      opt.Config.WorkerLogPrefix, stdout: opt.Stdout, stderr: opt.Stderr,
		copiers: copiers,
	}
	if u := opt.Config.User; u.Set {
		f.cred = uidGid(u.UID, u.GID)
	}
	return f
}

func uidGid(uid, gid uint32) string {
	return strconv.FormatUint(uint64(uid), 10) + ":" + strconv.FormatUint(uint64(gid), 10)
}

// Start forks a worker for slot. Its fds are: 0 /dev/null (N workers cannot
// share a terminal's input), 1 and 2 clusterinit's own (or pipes to the
// prefixer), 3… the listening sockets, then its end of the IPC socketpair.
func (f *forker) Start(spec WorkerSpec) (pid int, _ *os.File, err error) {
	slot := spec.Slot
	socks, err := f.listeners.ForSlot(slot)
	if err != nil {
		return 0, nil, err
	}
	childIPC, ipc, err := newIPCPair()
	if err != nil {
		return 0, nil, err
	}
	defer childIPC.Close()
	defer func() {
		if err != nil {
			ipc.Close()
		}
	}()

	stdin, err := os.Open(os.DevNull)
	if err != nil {
		stdin = os.Stdin // a bare scratch image may lack /dev/null
	} else {
		defer stdin.Close()
	}
	stdout, stderr := os.Stdout, os.Stderr
	if f.prefix {
		if stdout, err = prefixOutput(slot, f.stdout, f.copiers); err != nil {
			return 0, nil, fmt.Errorf("pipe worker output: %w", err)
		}
		defer stdout.Close()
		if stderr, err = prefixOutput(slot, f.stderr, f.copiers); err != nil {
			return 0, nil, fmt.Errorf("pipe worker output: %w", err)
		}
		defer stderr.Close()
	}
	files := []uintptr{stdin.Fd(), stdout.Fd(), stderr.Fd()}
	names := make([]string, 0, len(socks))
	for _, sock := range socks {
		files = append(files, uintptr(sock.Fd()))
		names = append(names, sock.Name())
	}
	files = append(files, childIPC.Fd()) // fd preload.IPCFd(len(socks))
	env := append(append([]string(nil), f.env...), preload.WorkerEnv(slot, names)...)
	if spec.HeapMiB > 0 {
		env = setEnv(env, "NODE_OPTIONS", preload.WithHeapSize(f.nodeOptions, spec.HeapMiB))
	}

	pid, err = syscall.ForkExec(f.self, shimArgs(f.self, os.Getpid(), f.cred, f.path, f.argv), &syscall.ProcAttr{
		Env:   env,
		Files: files,
		// Its own process group: signals for a worker reach its children,
		// and a terminal's ^C reaches only clusterinit, which drains.
		Sys: &syscall.SysProcAttr{Setpgid: true},
	})
	if err != nil {
		return 0, nil, fmt.Errorf("fork worker for slot %d: %w", slot, err)
	}
	return pid, ipc, nil
}

// SignalGroup signals the whole process group (the worker is its leader),
// so that children it started get sig too.
func (f *forker) SignalGroup(pid int, sig syscall.Signal) error {
	err := unix.Kill(-pid, sig)
	if err == unix.ESRCH {
		return nil // exited, not reaped yet or its group is empty
	}
	if err != nil {
		return fmt.Errorf("signal process group %d: %w", pid, err)
	}
	return nil
}

// spawn starts a worker for slot and registers it. Once stopping, nothing is
// started again: it fails instead.
func (s *Supervisor) spawn(slotIndex int, now time.Time) (*worker, error) {
	if s.stopping {
		return nil, errStopping
	}
	heap := s.heapSizeMiB()
	pid, parentIPC, err := s.procs.Start(WorkerSpec{Slot: slotIndex, HeapMiB: heap})
	if err != nil {
		return nil, err
	}
	w := &worker{slot: slotIndex, pid: pid, state: starting, startedAt: now, ageJitter: ageJitter(s.cfg.MaxAge),
		requestLimit: requestLimit(s.cfg.MaxRequests)}
	// Registered before the loop reads another exit: see the package doc.
	s.workers[pid] = w
	s.counters.starts++
	if parentIPC != nil {
		w.ipc, err = openChannel(parentIPC, pid, s.msgs, s.done, s.log)
		if err != nil {
			// Without a channel the worker still runs; it just cannot report.
			s.log.Warn("worker has no ipc channel", "slot", slotIndex, "pid", pid, "err", err)
		}
	}
	if heap > 0 {
		s.log.Info("worker started", "slot", slotIndex, "pid", pid, "heap_size_mib", heap)
	} else {
		s.log.Info("worker started", "slot", slotIndex, "pid", pid)
	}
	if s.readyAtSpawn() {
		s.markReady(w, "spawn", now)
	} else {
		w.readyBy = now.Add(s.cfg.ReadyTimeout)
	}
	return w, nil
}

// signal sends sig to w's process group.
func (s *Supervisor) signal(w *worker, sig syscall.Signal) error {
	return s.procs.SignalGroup(w.pid, sig)
}

// readyAtSpawn: READY=none, or READY=auto without the preload to report.
func (s *Supervisor) readyAtSpawn() bool {
	switch s.cfg.Ready {
	case config.ReadyNone:
		return true
	case config.ReadyAuto:
		return s.opt.NodeOptions == ""
	}
	return false
}
