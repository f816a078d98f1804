package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// binary is the clusterinit built once by TestMain.
var binary string

func TestMain(m *testing.M) {
	if mode := os.Getenv("CITEST_HELPER"); mode != "" {
		os.Exit(helperMain(mode))
	}
	dir, err := os.MkdirTemp("", "clusterinit-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	// World-readable so that tests running workers as nobody can exec it.
	os.Chmod(dir, 0o755)
	binary = filepath.Join(dir, "clusterinit")
	build := exec.Command("go", "build", "-o", binary, ".")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build clusterinit:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// syncBuffer collects a process's output while tests read it.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// proc is a running clusterinit.
type proc struct {
	t      *testing.T
	cmd    *exec.Cmd
	stdout *syncBuffer
	stderr *syncBuffer
	done   chan struct{}
	state  *os.ProcessState
	pid1   bool
}

// testEnv is the environment for clusterinit under test: the test's own,
// without any CLUSTERINIT_* variable, with the health server off unless the
// test sets it (parallel tests would fight over its default port).
func testEnv(extra ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "CLUSTERINIT_") && !strings.HasPrefix(kv, "CITEST_") {
			env = append(env, kv)
		}
	}
	env = append(env, "CLUSTERINIT_HEALTH_ADDR=off", "CLUSTERINIT_LOG_FORMAT=json", "CLUSTERINIT_LOG_LEVEL=debug")
	return append(env, extra...)
}

// start runs clusterinit with args; asPID1 runs it as PID 1 of a new PID
// namespace.
func start(t *testing.T, asPID1 bool, env []string, args ...string) *proc {
	t.Helper()
	if asPID1 {
		return startArgv(t, true, env, append([]string{"unshare", "--pid", "--fork", "--mount-proc", binary}, args...)...)
	}
	return startArgv(t, false, env, append([]string{binary}, args...)...)
}

// startArgv runs argv, which must end up exec'ing clusterinit in the same
// process (a shell wrapper that moves itself into a cgroup, say) or, with
// asPID1, as unshare's child.
func startArgv(t *testing.T, asPID1 bool, env []string, argv ...string) *proc {
	t.Helper()
	cmd := exec.Command(argv[0], argv[1:]...)
	p := &proc{t: t, cmd: cmd, stdout: &syncBuffer{}, stderr: &syncBuffer{}, done: make(chan struct{}), pid1: asPID1}
	cmd.Env = env
	cmd.Stdout, cmd.Stderr = p.stdout, p.stderr
	// Output pipes may be held by workers that outlive a killed clusterinit:
	// do not let Wait block on them.
	cmd.WaitDelay = 2 * time.Second
	if err := cmd.Start(); err != nil {
		t.Fatalf("start clusterinit: %v", err)
	}
	go func() {
		cmd.Wait()
		p.state = cmd.ProcessState
		close(p.done)
	}()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			p.signal(syscall.SIGTERM)
			select {
			case <-p.done:
			case <-time.After(10 * time.Second):
				p.signal(syscall.SIGKILL)
				cmd.Process.Kill()
				<-p.done
			}
		}
		// Whatever the outcome, no worker of this test may outlive it. As
		// PID 1, clusterinit's namespace died with it (and its pids name
		// unrelated processes here).
		if !p.pid1 {
			for _, pid := range p.liveWorkers() {
				syscall.Kill(-pid, syscall.SIGKILL)
			}
		}
		if t.Failed() {
			t.Logf("clusterinit stderr:\n%s", tail(p.stderr.String(), 60))
			t.Logf("clusterinit stdout:\n%s", tail(p.stdout.String(), 20))
		}
	})
	return p
}

// liveWorkers lists the workers the log shows started and not exited that
// still lead their own process group: after thousands of restarts, the pid
// of a long-gone worker may name another process by now.
func (p *proc) liveWorkers() []int {
	live := map[int]bool{}
	for _, line := range p.logs() {
		msg, _ := line["msg"].(string)
		switch {
		case msg == "worker started":
			live[num(line, "pid")] = true
		case strings.HasPrefix(msg, "worker exited") || strings.HasPrefix(msg, "worker killed"):
			delete(live, num(line, "pid"))
		}
	}
	var pids []int
	for pid := range live {
		if pgid, err := syscall.Getpgid(pid); err == nil && pgid == pid {
			pids = append(pids, pid)
		}
	}
	return pids
}

func tail(s string, lines int) string {
	ls := strings.Split(s, "\n")
	if len(ls) > lines {
		ls = ls[len(ls)-lines:]
	}
	return strings.Join(ls, "\n")
}

// pid is clusterinit's pid as seen from the test (in a namespace: the host
// pid of the namespace's PID 1).
func (p *proc) pid() int {
	if !p.pid1 {
		return p.cmd.Process.Pid
	}
	var pid int
	waitFor(p.t, 5*time.Second, "unshare's child", func() bool {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", p.cmd.Process.Pid, p.cmd.Process.Pid))
		if err != nil {
			return false
		}
		f := strings.Fields(string(b))
		if len(f) == 0 {
			return false
		}
		pid, _ = strconv.Atoi(f[0])
		return true
	})
	return pid
}

func (p *proc) signal(sig syscall.Signal) {
	if err := syscall.Kill(p.pid(), sig); err != nil {
		p.t.Logf("signal %v: %v", sig, err)
	}
}

// wait returns clusterinit's exit status, failing the test after timeout.
func (p *proc) wait(timeout time.Duration) int {
	p.t.Helper()
	select {
	case <-p.done:
	case <-time.After(timeout):
		p.t.Fatalf("clusterinit did not exit within %v", timeout)
	}
	return p.state.ExitCode()
}

// logs parses clusterinit's JSON log lines.
func (p *proc) logs() []map[string]any {
	var out []map[string]any
	sc := bufio.NewScanner(strings.NewReader(p.stderr.String()))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var m map[string]any
		if json.Unmarshal(sc.Bytes(), &m) == nil {
			out = append(out, m)
		}
	}
	return out
}

// logsWith returns the log lines whose msg contains msg.
func (p *proc) logsWith(msg string) []map[string]any {
	var out []map[string]any
	for _, l := range p.logs() {
		if s, _ := l["msg"].(string); strings.Contains(s, msg) {
			out = append(out, l)
		}
	}
	return out
}

// waitLog waits until at least n log lines contain msg.
func (p *proc) waitLog(msg string, n int, timeout time.Duration) []map[string]any {
	p.t.Helper()
	var got []map[string]any
	waitFor(p.t, timeout, fmt.Sprintf("%d log lines %q", n, msg), func() bool {
		got = p.logsWith(msg)
		return len(got) >= n
	})
	return got
}

// waitFor polls cond until it holds, failing the test after timeout.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// num reads a JSON number attribute of a log line.
func num(l map[string]any, key string) int {
	f, _ := l[key].(float64)
	return int(f)
}

// zombiesOf lists the zombie children of pid.
func zombiesOf(pid int) []int {
	var zs []int
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		child, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		// comm may hold spaces and parentheses: fields start after the last ')'.
		s := string(b)
		f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
		if len(f) > 1 && f[0] == "Z" && f[1] == strconv.Itoa(pid) {
			zs = append(zs, child)
		}
	}
	return zs
}

// helper returns env and args that run the test binary as a worker in mode.
func helper(mode string, env ...string) ([]string, []string) {
	return append([]string{"CITEST_HELPER=" + mode}, env...), []string{"--", os.Args[0]}
}

// waitUp waits until n helper workers have installed their signal handlers
// (with SHIM=false a worker is ready at spawn, before its handlers exist).
func (p *proc) waitUp(n int) {
	p.t.Helper()
	waitFor(p.t, 10*time.Second, fmt.Sprintf("%d helper workers up", n), func() bool {
		return strings.Count(p.stdout.String(), "helper up") >= n
	})
}
