package supervisor

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/clusterinit/clusterinit/config"
)

// baseEnv is the environment every worker starts from: clusterinit's own,
// less anything that would mislead the worker (a socket-activation or IPC
// hand-over meant for clusterinit itself, and NODE_UNIQUE_ID, with which a
// child believes it is a cluster worker and waits for a primary on every
// listen), with NODE_OPTIONS carrying the preload when SHIM is on.
func baseEnv(environ []string, nodeOptions string) []string {
	env := withoutEnv(environ,
		"LISTEN_FDS", "LISTEN_FDNAMES", "LISTEN_PID",
		"NODE_CHANNEL_FD", "NODE_CHANNEL_SERIALIZATION_MODE", "NODE_UNIQUE_ID")
	if nodeOptions != "" {
		env = setEnv(env, "NODE_OPTIONS", nodeOptions)
	}
	return env
}

func uidGid(uid, gid uint32) string {
	return strconv.FormatUint(uint64(uid), 10) + ":" + strconv.FormatUint(uint64(gid), 10)
}

// spawn forks a worker for slot and registers it. Its fds are: 0 /dev/null
// (N workers cannot share a terminal's input), 1 and 2 clusterinit's own, 3…
// the listening sockets, then its end of the IPC socketpair.
func (s *Supervisor) spawn(slotIndex int, now time.Time) (*worker, error) {
	socks, err := s.opt.Listeners.ForSlot(slotIndex)
	if err != nil {
		return nil, err
	}
	childIPC, parentIPC, err := newIPCPair()
	if err != nil {
		return nil, err
	}
	defer childIPC.Close()

	stdin, err := os.Open(os.DevNull)
	if err != nil {
		stdin = os.Stdin // a bare scratch image may lack /dev/null
	} else {
		defer stdin.Close()
	}
	stdout, stderr := os.Stdout, os.Stderr
	if s.cfg.WorkerLogPrefix {
		if stdout, err = prefixOutput(slotIndex, s.stdout, &s.copiers); err != nil {
			return nil, fmt.Errorf("pipe worker output: %w", err)
		}
		defer stdout.Close()
		if stderr, err = prefixOutput(slotIndex, s.stderr, &s.copiers); err != nil {
			return nil, fmt.Errorf("pipe worker output: %w", err)
		}
		defer stderr.Close()
	}
	files := []uintptr{stdin.Fd(), stdout.Fd(), stderr.Fd()}
	names := make([]string, 0, len(socks))
	for _, sock := range socks {
		files = append(files, uintptr(sock.Fd()))
		names = append(names, sock.Name())
	}
	ipcFd := len(files)
	files = append(files, childIPC.Fd())

	env := append([]string(nil), s.env...)
	env = append(env,
		"CLUSTERINIT_WORKER="+strconv.Itoa(slotIndex),
		"NODE_APP_INSTANCE="+strconv.Itoa(slotIndex),
		"NODE_CHANNEL_FD="+strconv.Itoa(ipcFd),
		"NODE_CHANNEL_SERIALIZATION_MODE=json",
	)
	if len(socks) > 0 {
		env = append(env,
			"LISTEN_FDS="+strconv.Itoa(len(socks)),
			"LISTEN_FDNAMES="+strings.Join(names, ":"))
	}

	argv := shimArgs(s.opt.Self, s.cred, s.opt.Path, s.opt.Argv)
	pid, err := syscall.ForkExec(s.opt.Self, argv, &syscall.ProcAttr{
		Env:   env,
		Files: files,
		// Its own process group: signals for a worker reach its children,
		// and a terminal's ^C reaches only clusterinit, which drains.
		Sys: &syscall.SysProcAttr{Setpgid: true},
	})
	if err != nil {
		parentIPC.Close()
		return nil, fmt.Errorf("fork worker for slot %d: %w", slotIndex, err)
	}
	w := &worker{slot: slotIndex, pid: pid, state: starting, startedAt: now}
	// Registered before the loop reads another exit: see the package doc.
	s.workers[pid] = w
	s.counters.starts++
	w.ipc, err = openChannel(parentIPC, pid, s.msgs, s.done, s.log)
	if err != nil {
		// Without a channel the worker still runs; it just cannot report.
		s.log.Warn("worker has no ipc channel", "slot", slotIndex, "pid", pid, "err", err)
	}
	s.log.Info("worker started", "slot", slotIndex, "pid", pid)
	if s.readyAtSpawn() {
		s.markReady(w, "spawn", now)
	} else {
		w.readyBy = now.Add(s.cfg.ReadyTimeout)
	}
	return w, nil
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
