package e2e

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/clusterinit/clusterinit/internal/testkit"
)

// binary is the clusterinit built once by TestMain.
var binary string

// TestMain builds clusterinit from the module root and runs the tests from
// there, so that fixture paths read as in the README (testdata/apps/http.js).
func TestMain(m *testing.M) {
	if mode := os.Getenv("CITEST_HELPER"); mode != "" {
		os.Exit(helperMain(mode))
	}
	os.Exit(runTests(m))
}

func runTests(m *testing.M) int {
	if err := os.Chdir(".."); err != nil {
		fmt.Fprintln(os.Stderr, "e2e: chdir to the module root:", err)
		return 1
	}
	dir, err := os.MkdirTemp("", "clusterinit-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	defer dockerCleanup()
	// World-readable so that tests running workers as nobody can exec it.
	os.Chmod(dir, 0o755)
	binary = filepath.Join(dir, "clusterinit")
	build := exec.Command("go", "build", "-o", binary, ".")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build clusterinit:", err)
		return 1
	}
	return m.Run()
}

// syncBuffer collects a process's output while tests read it.
type syncBuffer = testkit.Buffer

// proc is a running clusterinit.
type proc struct {
	t      testing.TB
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
func start(t testing.TB, asPID1 bool, env []string, args ...string) *proc {
	t.Helper()
	if asPID1 {
		return startArgv(t, true, env, append([]string{"unshare", "--pid", "--fork", "--mount-proc", binary}, args...)...)
	}
	return startArgv(t, false, env, append([]string{binary}, args...)...)
}

// startArgv runs argv, which must end up exec'ing clusterinit in the same
// process (a shell wrapper that moves itself into a cgroup, say) or, with
// asPID1, as unshare's child.
func startArgv(t testing.TB, asPID1 bool, env []string, argv ...string) *proc {
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
		case isExitLine(line):
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
func (p *proc) logs() []map[string]any { return jsonLines(p.stderr.String()) }

// jsonLines parses the JSON lines of s, skipping any other line.
func jsonLines(s string) []map[string]any {
	var out []map[string]any
	sc := bufio.NewScanner(strings.NewReader(s))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var m map[string]any
		if json.Unmarshal(sc.Bytes(), &m) == nil {
			out = append(out, m)
		}
	}
	return out
}

// logsWith returns the log lines whose message is msg.
func (p *proc) logsWith(msg string) []map[string]any { return linesWith(p.logs(), msg) }

// linesWith returns the lines whose message (slog's msg) is exactly msg: a
// substring would also match a longer message that means something else
// ("worker exited" in "worker exited unexpectedly").
func linesWith(lines []map[string]any, msg string) []map[string]any {
	var out []map[string]any
	for _, l := range lines {
		if l["msg"] == msg {
			out = append(out, l)
		}
	}
	return out
}

// exits returns the lines of every worker exit, whatever its message says
// about how the worker ended.
func (p *proc) exits() []map[string]any { return exitLines(p.logs()) }

// waitExits waits until at least n worker exits are logged.
func (p *proc) waitExits(n int, timeout time.Duration) []map[string]any {
	p.t.Helper()
	var got []map[string]any
	waitFor(p.t, timeout, fmt.Sprintf("%d worker exits logged", n), func() bool {
		got = p.exits()
		return len(got) >= n
	})
	return got
}

func exitLines(lines []map[string]any) []map[string]any {
	var out []map[string]any
	for _, l := range lines {
		if isExitLine(l) {
			out = append(out, l)
		}
	}
	return out
}

// isExitLine: l is the line of a worker's exit, whatever its message says
// about how it ended; only exit lines carry the wait status and the uptime.
func isExitLine(l map[string]any) bool {
	_, status := l["status"]
	_, uptime := l["uptime"]
	return status && uptime
}

// waitLog waits until at least n log lines have the message msg.
func (p *proc) waitLog(msg string, n int, timeout time.Duration) []map[string]any {
	p.t.Helper()
	return waitLines(p.t, p.logs, msg, n, timeout)
}

// waitLines waits until at least n of the lines that logs returns have the
// message msg.
func waitLines(t testing.TB, logs func() []map[string]any, msg string, n int, timeout time.Duration) []map[string]any {
	t.Helper()
	var got []map[string]any
	waitFor(t, timeout, fmt.Sprintf("%d log lines %q", n, msg), func() bool {
		got = linesWith(logs(), msg)
		return len(got) >= n
	})
	return got
}

// waitFor polls cond until it holds, failing the test after timeout.
func waitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	testkit.WaitFor(t, timeout, what, cond)
}

// loggedPID waits for the app's stdout line "<marker> <pid>" (a slow
// request reaching a worker) and returns that pid.
func loggedPID(t testing.TB, p *proc, marker string) int {
	t.Helper()
	var pid int
	waitFor(t, 10*time.Second, fmt.Sprintf("%q on the app's stdout", marker), func() bool {
		out := p.stdout.String()
		i := strings.Index(out, marker+" ")
		if i < 0 {
			return false
		}
		_, err := fmt.Sscanf(out[i:], marker+" %d", &pid)
		return err == nil
	})
	return pid
}

// releaseWhenDraining waits until clusterinit has told worker pid to drain,
// then creates the file release: a slow request held until then (the test
// apps' until=) is in flight during that drain by construction, however
// long the reload takes to reach its worker.
func releaseWhenDraining(t testing.TB, p *proc, pid int, release string) {
	t.Helper()
	waitFor(t, 90*time.Second, fmt.Sprintf("worker %d to drain", pid), func() bool {
		for _, d := range p.logsWith("draining worker") {
			if num(d, "pid") == pid {
				return true
			}
		}
		return false
	})
	if err := os.WriteFile(release, nil, 0o644); err != nil {
		t.Fatal(err)
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

// runAll reports whether every test must run (E2E_ALL=1, as `make test` and
// CI set): long tests run, and a missing prerequisite fails instead of
// skipping.
func runAll() bool { return os.Getenv("E2E_ALL") == "1" }

// needLong skips a test that takes more than a few seconds unless every test
// must run, so that `go test ./...` stays quick on a laptop.
func needLong(t *testing.T) {
	t.Helper()
	if !runAll() {
		t.Skip("long test: runs with E2E_ALL=1 (make test sets it)")
	}
}

// need skips a test whose prerequisite is missing, with why, or fails it when
// every test must run: in CI a skipped test hides a missing install step.
func need(t *testing.T, what string, err error) {
	t.Helper()
	if err == nil {
		return
	}
	if runAll() {
		t.Fatalf("%s is needed: %v", what, err)
	}
	t.Skipf("%s is missing (E2E_ALL=1 makes this a failure): %v", what, err)
}

// drainedWorkers lists the pids clusterinit drained, in order ("draining
// worker" log lines: reloads, recycles and the final stop alike).
func (p *proc) drainedWorkers() []int {
	var pids []int
	for _, l := range p.logsWith("draining worker") {
		pids = append(pids, num(l, "pid"))
	}
	return pids
}

// printedBy returns the pids of the workers that printed a stdout line
// starting with mark and naming their pid as "pid=N" ("hook ran pid=42").
func (p *proc) printedBy(mark string) map[int]bool {
	pids := map[int]bool{}
	for _, line := range strings.Split(p.stdout.String(), "\n") {
		rest, ok := strings.CutPrefix(strings.TrimSpace(line), mark)
		if !ok {
			continue
		}
		for _, f := range strings.Fields(rest) {
			if v, ok := strings.CutPrefix(f, "pid="); ok {
				if pid, err := strconv.Atoi(v); err == nil {
					pids[pid] = true
				}
			}
		}
	}
	return pids
}

// checkHooksRan checks that every drained worker printed each of marks (an
// app's shutdown hook, its completion) and exited 0 by itself, and returns
// how many were drained. Call it once clusterinit has exited.
func checkHooksRan(t *testing.T, p *proc, marks ...string) int {
	t.Helper()
	drained := p.drainedWorkers()
	for _, mark := range marks {
		by := p.printedBy(mark)
		var missing []int
		for _, pid := range drained {
			if !by[pid] {
				missing = append(missing, pid)
			}
		}
		t.Logf("%q printed by %d of %d drained workers", mark, len(drained)-len(missing), len(drained))
		if len(missing) > 0 {
			t.Errorf("%q missing from %d of %d drained workers: pids %v", mark, len(missing), len(drained), missing)
		}
	}
	exited := map[int]map[string]any{}
	for _, l := range p.logsWith("worker exited") {
		exited[num(l, "pid")] = l
	}
	for _, pid := range drained {
		if e := exited[pid]; e == nil || e["status"] != "exit code 0" {
			t.Errorf("drained worker %d: exit %v, want exit code 0 by itself", pid, e)
		}
	}
	return len(drained)
}

// reloads sends n SIGHUPs one after the other, each once the previous
// rolling reload is done.
func (p *proc) reloads(n int) {
	p.t.Helper()
	done := len(p.logsWith("rolling reload done"))
	for i := 1; i <= n; i++ {
		p.signal(syscall.SIGHUP)
		p.waitLog("rolling reload done", done+i, 60*time.Second)
	}
}
