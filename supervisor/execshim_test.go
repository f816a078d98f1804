package supervisor

import (
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// shimCommand runs this test binary as the exec shim (see TestMain) of
// /bin/sleep, expecting parent as its parent's pid.
func shimCommand(t *testing.T, parent int) []string {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	return shimArgs(self, parent, "-", "/bin/sleep", []string{"sleep", "30"})
}

// The parent-death signal the shim sets is tied to the OS thread that forked
// it, as golang/go#27505 says of SysProcAttr.Pdeathsig: setting it in the
// shim instead changes nothing there. When that thread exits (a goroutine
// that locked it returns), the worker is killed although clusterinit lives.
// This is why Run locks the loop, which forks every worker, to one thread.
func TestParentDeathSignalFollowsTheForkingThread(t *testing.T) {
	argv := shimCommand(t, os.Getpid())
	pids := make(chan int, 1)
	release := make(chan struct{})
	fork := func() {
		runtime.LockOSThread() // never unlocked: the thread exits with this goroutine
		pid, err := syscall.ForkExec(argv[0], argv, &syscall.ProcAttr{Env: os.Environ(),
			Files: []uintptr{0, 1, 2}})
		if err != nil {
			t.Error(err)
			pid = 0
		}
		pids <- pid
		<-release
	}
	go func() {
		// The main thread is never ended (Go parks it instead): hold it,
		// so that fork runs on a thread that does end.
		runtime.LockOSThread()
		if syscall.Gettid() != os.Getpid() {
			fork()
			return
		}
		done := make(chan struct{})
		go func() { defer close(done); fork() }()
		<-done
		runtime.UnlockOSThread()
	}()
	pid := <-pids
	if pid == 0 {
		return
	}
	defer syscall.Kill(pid, syscall.SIGKILL)
	// Wait until the shim has set the signal and exec'd sleep.
	deadline := time.Now().Add(10 * time.Second)
	for {
		comm, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/comm")
		if strings.TrimSpace(string(comm)) == "sleep" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("worker %d did not exec sleep; comm %q", pid, comm)
		}
		time.Sleep(10 * time.Millisecond)
	}
	close(release) // the forking thread exits
	var ws syscall.WaitStatus
	if _, err := syscall.Wait4(pid, &ws, 0, nil); err != nil {
		t.Fatal(err)
	}
	if !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		t.Errorf("worker ended with %v, want SIGKILL from its parent-death signal", describeStatus(unix.WaitStatus(ws)))
	}
}

// A shim whose parent is not the clusterinit that forked it (that one died
// before the parent-death signal was set) does not start the worker.
func TestShimRefusesAnOrphanedWorker(t *testing.T) {
	argv := shimCommand(t, os.Getpid()+1)
	cmd := exec.Command(argv[0], argv[1:]...)
	out, err := cmd.CombinedOutput()
	if cmd.ProcessState == nil || cmd.ProcessState.ExitCode() != 1 {
		t.Fatalf("shim with the wrong parent: %v, %s; want exit status 1", err, out)
	}
	if !strings.Contains(string(out), "exited before this worker started") {
		t.Errorf("shim output %q does not say why", out)
	}
}

// The shim raises the worker's oom_score_adj above clusterinit's.
func TestShimRaisesOOMScoreAdj(t *testing.T) {
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	argv := shimArgs(self, os.Getpid(), "-", "/bin/cat", []string{"cat", "/proc/self/oom_score_adj"})
	out, err := exec.Command(argv[0], argv[1:]...).Output()
	if err != nil {
		t.Fatal(err)
	}
	own, _ := os.ReadFile("/proc/self/oom_score_adj")
	o, _ := strconv.Atoi(strings.TrimSpace(string(own)))
	if got, _ := strconv.Atoi(strings.TrimSpace(string(out))); got != min(o+oomScoreAdjRaise, 1000) {
		t.Errorf("worker oom_score_adj = %q, want %d (clusterinit's %d + %d)", out, min(o+oomScoreAdjRaise, 1000), o, oomScoreAdjRaise)
	}
}
