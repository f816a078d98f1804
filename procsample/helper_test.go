package procsample

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/clusterinit/clusterinit/internal/testkit"
)

// The test binary doubles as the processes being measured: with helperEnv
// set it runs helperMain instead of the tests. Helpers live until their
// stdin reaches EOF (the test closes it, or dies) or they are killed; every
// helper started by a test is in a process group of its own, which the
// test's cleanup kills as a whole, descendants included.
const helperEnv = "PROCSAMPLE_TEST_HELPER"

func TestMain(m *testing.M) {
	if os.Getenv(helperEnv) != "" {
		os.Exit(helperMain(os.Args[1:]))
	}
	os.Exit(m.Run())
}

// sink keeps the helpers' allocations reachable.
var sink [][]byte

// helperMain runs one helper. Commands:
//
//	mem MB [CHILD_MB]   touch MB MiB; with CHILD_MB, start "mem CHILD_MB" and
//	                    wait until it is ready; print "ready <childpid|0>"; idle
//	spin                print "ready 0"; burn one core until stdin's EOF
//	burn MS exit|idle   burn MS ms of CPU time on top of what start-up took,
//	                    then exit, or print "burnt 0" and idle
//	parent-of-burn MS reap|keep
//	                    start "burn MS"; with reap, let it exit and reap it;
//	                    print "ready <childpid>" (with keep, as soon as the
//	                    child is started); idle
func helperMain(args []string) int {
	if len(args) == 0 {
		fmt.Fprintln(os.Stderr, "helper: no command")
		return 2
	}
	switch args[0] {
	case "mem":
		touch(atoi(args[1]))
		child := 0
		if len(args) > 2 {
			c, out := spawnSelf("mem", args[2])
			readToken(out, "ready")
			child = c.Process.Pid
		}
		fmt.Printf("ready %d\n", child)
		idle()
	case "spin":
		fmt.Println("ready 0")
		go idle()
		for {
			spinOnce()
		}
	case "burn":
		burnCPU(time.Duration(atoi(args[1])) * time.Millisecond)
		if args[2] == "exit" {
			return 0
		}
		fmt.Println("burnt 0")
		idle()
	case "parent-of-burn":
		switch args[2] {
		case "reap":
			c, _ := spawnSelf("burn", args[1], "exit")
			if err := c.Wait(); err != nil {
				fmt.Fprintln(os.Stderr, "helper: burn:", err)
				return 1
			}
			fmt.Printf("ready %d\n", c.Process.Pid)
		case "keep":
			c, out := spawnSelf("burn", args[1], "idle")
			go func() { _, _ = io.Copy(io.Discard, out) }()
			fmt.Printf("ready %d\n", c.Process.Pid)
		}
		idle()
	default:
		fmt.Fprintln(os.Stderr, "helper: unknown command", args[0])
		return 2
	}
	return 0
}

func atoi(s string) int {
	n, err := strconv.Atoi(s)
	if err != nil {
		panic(err)
	}
	return n
}

// touch allocates mb MiB and writes to every page so that it is resident.
func touch(mb int) {
	b := make([]byte, mb<<20)
	for i := 0; i < len(b); i += 4096 {
		b[i] = 1
	}
	sink = append(sink, b)
}

var spinSink uint64

func spinOnce() {
	for i := range 1 << 16 {
		spinSink += uint64(i) * 2654435761
	}
}

// burnCPU spins until this process has used d more CPU time (user+system)
// than when it was called, which keeps the amount right on a loaded machine.
func burnCPU(d time.Duration) {
	start := cpuUsed()
	for cpuUsed()-start < d {
		spinOnce()
	}
}

func cpuUsed() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		panic(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// idle blocks until stdin reaches EOF, then exits. A helper's own children
// share its stdin, so a whole tree goes away when the test's end closes.
func idle() {
	_, _ = io.Copy(io.Discard, os.Stdin)
	os.Exit(0)
}

// spawnSelf starts a child helper sharing this helper's stdin and process
// group, and returns it with its stdout.
func spawnSelf(args ...string) (*exec.Cmd, *bufio.Reader) {
	c := exec.Command(os.Args[0], args...)
	c.Stdin = os.Stdin
	c.Stderr = os.Stderr
	out, err := c.StdoutPipe()
	if err != nil {
		panic(err)
	}
	if err := c.Start(); err != nil {
		panic(err)
	}
	return c, bufio.NewReader(out)
}

// readToken reads one line and checks that it starts with want; it returns
// the number that follows.
func readToken(r *bufio.Reader, want string) int {
	line, err := r.ReadString('\n')
	if err != nil {
		panic(fmt.Sprintf("helper: reading %q: %v (got %q)", want, err, line))
	}
	f := strings.Fields(line)
	if len(f) != 2 || f[0] != want {
		panic(fmt.Sprintf("helper: want %q, got %q", want, line))
	}
	return atoi(f[1])
}

// proc is a process tree started by a test.
type proc struct {
	cmd *exec.Cmd
	out *bufio.Reader
}

func (p *proc) pid() int { return p.cmd.Process.Pid }

// startHelper starts the test binary as a helper running args.
func startHelper(tb testing.TB, args ...string) *proc {
	tb.Helper()
	c := exec.Command(os.Args[0], args...)
	c.Env = append(os.Environ(), helperEnv+"=1")
	return startTree(tb, c)
}

// startShell starts sh -c script.
func startShell(tb testing.TB, script string) *proc {
	tb.Helper()
	return startTree(tb, exec.Command("sh", "-c", script))
}

// startTree starts c in a new process group and registers a cleanup that
// closes its stdin, kills the whole group and reaps c.
func startTree(tb testing.TB, c *exec.Cmd) *proc {
	tb.Helper()
	c.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	c.Stderr = os.Stderr
	in, err := c.StdinPipe()
	if err != nil {
		tb.Fatal(err)
	}
	out, err := c.StdoutPipe()
	if err != nil {
		tb.Fatal(err)
	}
	if err := c.Start(); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		_ = in.Close()
		_ = syscall.Kill(-c.Process.Pid, syscall.SIGKILL)
		_ = c.Wait()
	})
	return &proc{cmd: c, out: bufio.NewReader(out)}
}

// expect reads the tree's next line, which must be "<word> <n>", within
// timeout, and returns n.
func (p *proc) expect(tb testing.TB, word string, timeout time.Duration) int {
	tb.Helper()
	type result struct {
		line string
		err  error
	}
	ch := make(chan result, 1)
	go func() {
		line, err := p.out.ReadString('\n')
		ch <- result{line, err}
	}()
	select {
	case r := <-ch:
		f := strings.Fields(r.line)
		if r.err != nil || len(f) != 2 || f[0] != word {
			tb.Fatalf("pid %d: want %q line, got %q (%v)", p.pid(), word, r.line, r.err)
		}
		n, err := strconv.Atoi(f[1])
		if err != nil {
			tb.Fatal(err)
		}
		return n
	case <-time.After(timeout):
		// The cleanup kills the tree, which ends the reading goroutine.
		tb.Fatalf("pid %d: no %q line within %v", p.pid(), word, timeout)
		return 0
	}
}

// waitFor polls cond until it reports true, failing tb after timeout with
// cond's last description.
func waitFor(tb testing.TB, timeout time.Duration, cond func() (bool, string)) {
	tb.Helper()
	var what string
	if !testkit.Poll(timeout, func() bool {
		var ok bool
		ok, what = cond()
		return ok
	}) {
		tb.Fatalf("after %v: %s", timeout, what)
	}
}
