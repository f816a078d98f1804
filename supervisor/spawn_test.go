package supervisor

import (
	"os"
	"strconv"
	"sync"
	"syscall"
	"testing"

	"github.com/clusterinit/clusterinit/config"
	"github.com/clusterinit/clusterinit/listeners"
)

// openFds lists the fds this process has open.
func openFds(t *testing.T) map[int]bool {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skipf("no /proc/self/fd: %v", err)
	}
	fds := map[int]bool{}
	for _, e := range ents {
		if fd, err := strconv.Atoi(e.Name()); err == nil {
			fds[fd] = true
		}
	}
	return fds
}

// Bug: when setting up prefixed output failed, the parent's end of the IPC
// socketpair was never closed, leaking an fd exactly when fds are scarce.
func TestStartLeaksNoFdWhenOutputPipeFails(t *testing.T) {
	cfg, err := config.Load([]string{"CLUSTERINIT_LISTEN=none", "CLUSTERINIT_WORKER_LOG_PREFIX=true"})
	if err != nil {
		t.Fatal(err)
	}
	socks, err := listeners.Open(nil, false, 1)
	if err != nil {
		t.Fatal(err)
	}
	out := NewLineWriter(os.Stdout)
	var copiers sync.WaitGroup
	f := newForker(Options{Config: cfg, Self: "/nonexistent", Path: "/bin/true", Argv: []string{"true"},
		Listeners: socks, Stdout: out, Stderr: out}, &copiers)

	// Leave too few free fd numbers under the limit for one step after
	// another: the socketpair (2), /dev/null (1), the stdout and stderr
	// pipes (2 each), the fork's own status pipe (2); Self does not exist,
	// so with fds enough the exec fails last.
	for free := 1; free <= 10; free++ {
		startWithFreeFds(t, f, &copiers, free)
	}
}

func startWithFreeFds(t *testing.T, f *forker, copiers *sync.WaitGroup, want int) {
	var old syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &old); err != nil {
		t.Fatal(err)
	}
	before := openFds(t)
	limit, free := 0, 0
	for ; free < want; limit++ {
		if !before[limit] {
			free++
		}
	}
	lowered := old
	lowered.Cur = uint64(limit)
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lowered); err != nil {
		t.Fatal(err)
	}
	_, ipc, err := f.Start(WorkerSpec{Slot: 0})
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &old); err != nil {
		t.Fatal(err)
	}
	copiers.Wait()
	if err == nil {
		t.Fatalf("Start succeeded with %d fds free", free)
	}
	if ipc != nil {
		t.Errorf("Start failed (%v) but returned an ipc end", err)
	}
	for fd := range openFds(t) {
		if !before[fd] {
			target, _ := os.Readlink("/proc/self/fd/" + strconv.Itoa(fd))
			t.Errorf("fd %d (%s) left open after the failed start (%v)", fd, target, err)
		}
	}
}
