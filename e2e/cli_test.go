package e2e

import (
	"net"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// runCLI runs clusterinit to completion and returns its exit code and output.
func runCLI(t *testing.T, env []string, args ...string) (int, string, string) {
	t.Helper()
	cmd := exec.Command(binary, args...)
	cmd.Env = env
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	done := make(chan error, 1)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { done <- cmd.Wait() }()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		cmd.Process.Kill()
		t.Fatalf("clusterinit %v did not exit", args)
	}
	return cmd.ProcessState.ExitCode(), stdout.String(), stderr.String()
}

func TestInvalidVariablesExit2(t *testing.T) {
	cases := []struct{ kv, want string }{
		{"CLUSTERINIT_MAX_RSS=300X", `CLUSTERINIT_MAX_RSS="300X"`},
		{"CLUSTERINIT_WORKERS=many", `CLUSTERINIT_WORKERS="many"`},
		{"CLUSTERINIT_DRAIN_TIMEOUT=30", `CLUSTERINIT_DRAIN_TIMEOUT="30"`},
		{"CLUSTERINIT_MAX_CPU=lots", `CLUSTERINIT_MAX_CPU="lots"`},
		{"CLUSTERINIT_STOP_SIGNAL=SIGNOPE", `CLUSTERINIT_STOP_SIGNAL="SIGNOPE"`},
		{"CLUSTERINIT_LISTEN=:99999", `CLUSTERINIT_LISTEN=":99999"`},
		{"CLUSTERINIT_LISTEN_MODE=fast", `CLUSTERINIT_LISTEN_MODE="fast"`},
		{"CLUSTERINIT_READY=maybe", `CLUSTERINIT_READY="maybe"`},
		{"CLUSTERINIT_SHIM=perhaps", `CLUSTERINIT_SHIM="perhaps"`},
		{"CLUSTERINIT_USER=no-such-user-here", `CLUSTERINIT_USER="no-such-user-here"`},
		{"CLUSTERINIT_LOG_LEVEL=loud", `CLUSTERINIT_LOG_LEVEL="loud"`},
		{"CLUSTERINIT_MAX_FAILED_STARTS=0", `CLUSTERINIT_MAX_FAILED_STARTS="0"`},
		{"CLUSTERINIT_MAX_RS=300M", `CLUSTERINIT_MAX_RS="300M": unknown variable (did you mean CLUSTERINIT_MAX_RSS?)`},
	}
	for _, c := range cases {
		t.Run(c.kv, func(t *testing.T) {
			t.Parallel()
			// The command would run if configuration were accepted: it must not.
			code, stdout, stderr := runCLI(t, testEnv(c.kv), "--", "sh", "-c", "echo STARTED")
			if code != 2 {
				t.Errorf("exit code %d, want 2", code)
			}
			if !strings.Contains(stderr, c.want) || !strings.Contains(stderr, "want") && !strings.Contains(stderr, "unknown") {
				t.Errorf("stderr %q does not name %s with what is accepted", stderr, c.want)
			}
			if strings.Contains(stdout, "STARTED") {
				t.Errorf("a worker started despite the invalid configuration")
			}
		})
	}
}

func TestSeveralProblemsOneLineEach(t *testing.T) {
	code, _, stderr := runCLI(t, testEnv("CLUSTERINIT_MAX_RSS=1X", "CLUSTERINIT_WORKERS=0"), "--", "true")
	if code != 2 {
		t.Fatalf("exit code %d, want 2", code)
	}
	lines := strings.Split(strings.TrimSpace(stderr), "\n")
	if len(lines) != 2 {
		t.Fatalf("want one line per problem, got %q", stderr)
	}
}

func TestMissingCommandExit1(t *testing.T) {
	for _, cmd := range []string{"no-such-command-anywhere", "/nonexistent/server", "/etc"} {
		code, _, stderr := runCLI(t, testEnv(), "--", cmd)
		if code != 1 {
			t.Errorf("%s: exit code %d, want 1", cmd, code)
		}
		if !strings.Contains(stderr, "cannot start the command") || !strings.Contains(stderr, cmd) {
			t.Errorf("%s: stderr does not say why: %s", cmd, stderr)
		}
	}
}

func TestUsage(t *testing.T) {
	if code, _, _ := runCLI(t, testEnv()); code != 2 {
		t.Errorf("no arguments: exit %d, want 2", code)
	}
	if code, _, _ := runCLI(t, testEnv(), "--bogus"); code != 2 {
		t.Errorf("unknown option: exit %d, want 2", code)
	}
	code, out, _ := runCLI(t, testEnv(), "help")
	if code != 0 || !strings.Contains(out, "CLUSTERINIT_MAX_RSS") || !strings.Contains(out, "CLUSTERINIT_DRAIN_TIMEOUT") {
		t.Errorf("help: exit %d, output %q", code, out)
	}
	code, out, _ = runCLI(t, testEnv(), "version")
	if code != 0 || !strings.HasPrefix(out, "clusterinit ") {
		t.Errorf("version: exit %d, output %q", code, out)
	}
	code, out, _ = runCLI(t, testEnv("CLUSTERINIT_WORKERS=3", "CLUSTERINIT_MAX_RSS=1.5Gi"), "config")
	if code != 0 || !strings.Contains(out, "CLUSTERINIT_WORKERS=3") || !strings.Contains(out, "CLUSTERINIT_MAX_RSS=1.5Gi") {
		t.Errorf("config: exit %d, output %q", code, out)
	}
	if code, _, _ := runCLI(t, testEnv("CLUSTERINIT_WORKERS=x"), "config"); code != 2 {
		t.Errorf("config with an invalid variable: exit %d, want 2", code)
	}
}

func TestListenPortTakenExit1(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	code, stdout, stderr := runCLI(t, testEnv("CLUSTERINIT_LISTEN="+ln.Addr().String()), "--", "sh", "-c", "echo STARTED")
	if code != 1 {
		t.Errorf("exit code %d, want 1", code)
	}
	if !strings.Contains(stderr, "address already in use") || !strings.Contains(stderr, ln.Addr().String()) {
		t.Errorf("stderr does not say which address is taken: %s", stderr)
	}
	if strings.Contains(stdout, "STARTED") {
		t.Errorf("a worker started although the listener could not be bound")
	}
}

// A HEALTH_ADDR that cannot be bound is exit 1 before any worker starts:
// the orchestrator's health check could never pass.
func TestHealthAddrTakenExit1(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	code, stdout, stderr := runCLI(t, testEnv("CLUSTERINIT_LISTEN=none", "CLUSTERINIT_HEALTH_ADDR="+ln.Addr().String()),
		"--", "sh", "-c", "echo STARTED")
	if code != 1 {
		t.Errorf("exit code %d, want 1", code)
	}
	if !strings.Contains(stderr, "address already in use") || !strings.Contains(stderr, ln.Addr().String()) {
		t.Errorf("stderr does not say which address is taken: %s", stderr)
	}
	if strings.Contains(stdout, "STARTED") || strings.Contains(stderr, "worker started") {
		t.Errorf("a worker started although the health server could not be bound")
	}
}

// More workers than the fd limit allows: the ones that fit start, the rest
// fail with a clear error and back off, and clusterinit gives up with exit 1
// after MAX_FAILED_STARTS instead of spinning.
func TestMoreWorkersThanFDLimit(t *testing.T) {
	env := testEnv("CLUSTERINIT_WORKERS=20", "CLUSTERINIT_LISTEN=none", "CLUSTERINIT_SHIM=false",
		"CLUSTERINIT_MAX_FAILED_STARTS=8", "CLUSTERINIT_RESTART_DELAY=10ms", "CLUSTERINIT_DRAIN_TIMEOUT=2s")
	code, _, stderr := runCmd(t, env, "sh", "-c", `ulimit -n 24; exec "$@"`, "sh", binary, "--", "sleep", "60")
	if code != 1 {
		t.Errorf("exit code %d, want 1", code)
	}
	if !strings.Contains(stderr, "too many open files") || !strings.Contains(stderr, "giving up") {
		t.Errorf("stderr does not explain: %s", tail(stderr, 10))
	}
	if strings.Count(stderr, `"worker started"`) == 0 {
		t.Errorf("not even the workers that fit were started")
	}
}
