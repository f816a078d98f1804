package supervisor

import (
	"log/slog"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/clusterinit/clusterinit/config"
	"github.com/clusterinit/clusterinit/internal/testkit"
	"github.com/clusterinit/clusterinit/listeners"
	"github.com/clusterinit/clusterinit/signals"
	"go.uber.org/goleak"
)

// TestMain lets this test binary serve as the exec shim of the workers that
// the tests below start. This shim loses every stop signal sent before it
// execs, as the real one occasionally does (its threads race execve), but
// deterministically: it ignores SIGTERM for lossyShimFor first.
func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == ExecShimArg {
		signal.Ignore(syscall.SIGTERM)
		time.Sleep(lossyShimFor)
		// Back to a caught signal, which execve resets to the default
		// (signal.Reset would leave it ignored).
		signal.Notify(make(chan os.Signal, 1), syscall.SIGTERM)
		os.Exit(ExecShim(os.Args[2:]))
	}
	// Every Supervisor the tests run must leave no goroutine behind once
	// Run has returned (its IPC readers and writers, output copies, the
	// sampler): clusterinit runs for the life of the container, so one
	// leaked per worker adds up.
	goleak.VerifyTestMain(m)
}

const lossyShimFor = 500 * time.Millisecond

// A worker drained while still in the shim gets its stop signal again once
// it runs the command, instead of running on until DRAIN_TIMEOUT.
func TestStopSignalLostInShimIsSentAgain(t *testing.T) {
	cfg, err := config.Load([]string{
		"CLUSTERINIT_WORKERS=1", "CLUSTERINIT_LISTEN=none", "CLUSTERINIT_READY=none",
		"CLUSTERINIT_SHIM=false", "CLUSTERINIT_HEALTH_ADDR=off", "CLUSTERINIT_DRAIN_TIMEOUT=20s",
	})
	if err != nil {
		t.Fatal(err)
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	socks, err := listeners.Open(nil, false, 1)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	defer close(done)
	reaper := signals.NewReaper()
	go reaper.Run(done)
	chld := make(chan os.Signal, 8)
	signal.Notify(chld, syscall.SIGCHLD)
	defer signal.Stop(chld)
	go func() {
		for {
			select {
			case <-chld:
				reaper.Poke()
			case <-done:
				return
			}
		}
	}()

	logs := &testkit.Buffer{}
	sigs := make(chan syscall.Signal, 1)
	out := NewLineWriter(os.Stdout)
	sup := New(Options{
		Config: cfg, Path: "/bin/sleep", Argv: []string{"sleep", "60"}, Workers: 1, Self: self,
		Listeners: socks, Exits: reaper.Exits(), Signals: sigs,
		Log:    slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Stdout: out, Stderr: out,
	})
	t0 := time.Now()
	exited := make(chan int, 1)
	go func() { exited <- sup.Run() }()
	// Stop while the worker is in the shim and drops SIGTERM.
	pid := 0
	if !testkit.Poll(5*time.Second, func() bool {
		if _, after, ok := strings.Cut(logs.String(), `msg="worker started" slot=0 pid=`); ok {
			pid, _ = strconv.Atoi(strings.Fields(after)[0])
		}
		return pid != 0 && ignoresSIGTERM(pid)
	}) {
		t.Fatalf("the worker never ignored SIGTERM in the shim\n%s", logs)
	}
	sigs <- syscall.SIGTERM
	code := <-exited
	took := time.Since(t0)
	if code != 0 || took > 10*time.Second {
		t.Errorf("stopped with %d after %s, want 0 well before DRAIN_TIMEOUT (20s)\n%s", code, took.Round(time.Millisecond), logs)
	}
	if took < lossyShimFor {
		t.Errorf("stopped after %s, before the shim could exec: the test proves nothing\n%s", took, logs)
	}
	if !strings.Contains(logs.String(), "stop signal sent again") {
		t.Errorf("no \"stop signal sent again\" line:\n%s", logs)
	}
}

// ignoresSIGTERM reads the SigIgn mask of pid.
func ignoresSIGTERM(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return false
	}
	_, rest, _ := strings.Cut(string(b), "SigIgn:")
	mask, err := strconv.ParseUint(strings.Fields(rest)[0], 16, 64)
	return err == nil && mask&(1<<(syscall.SIGTERM-1)) != 0
}
