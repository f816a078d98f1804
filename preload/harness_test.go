package preload

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
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

// waitTimeout bounds every wait of the harness.
const waitTimeout = 10 * time.Second

// workerSpec describes one worker started the way the supervisor starts it.
type workerSpec struct {
	// args follow "node" on the command line (a script path, or -e code).
	args []string
	// handed are the listening sockets handed over as fds 3, 4, … and named
	// port<P> in LISTEN_FDNAMES. With none, LISTEN_* is not set at all.
	handed []*net.TCPListener
	// ports, when set, are the names given to the handed sockets in place
	// of their own ports (one per handed socket).
	ports []int
	// listenPID, when set, is LISTEN_PID instead of node's own pid.
	listenPID string
	// env is added to the environment (after the harness's own cleaning).
	env []string
	// opts are baked into the preload.
	opts Options
	// nodeOptions is the user's own NODE_OPTIONS, kept ahead of the preload.
	nodeOptions string
	// heapMiB, when set, is added as the supervisor adds HEAP_SIZE.
	heapMiB int64
}

// worker is a running node process with the preload, seen from the
// supervisor's side: its IPC messages, its output and its exit.
type worker struct {
	t   *testing.T
	cmd *exec.Cmd
	ipc net.Conn

	// mu guards everything below.
	mu     sync.Mutex
	stdout bytes.Buffer
	stderr bytes.Buffer
	// msgs are the lines read from the IPC channel, in order.
	msgs    []ipcLine
	ipcErr  error
	ipcDone bool
	exited  bool
	state   *os.ProcessState
	waitErr error
	// changed is closed (and replaced) whenever anything above changes.
	changed chan struct{}

	done chan struct{} // closed once the process has been waited for
}

// notify wakes up the waiters; w.mu must be held.
func (w *worker) notify() {
	close(w.changed)
	w.changed = make(chan struct{})
}

// lockedBuffer appends a process's output to one of the worker's buffers
// under w.mu.
type lockedBuffer struct {
	w   *worker
	buf *bytes.Buffer
}

func (b lockedBuffer) Write(p []byte) (int, error) {
	b.w.mu.Lock()
	defer b.w.mu.Unlock()
	n, err := b.buf.Write(p)
	b.w.notify()
	return n, err
}

// ipcLine is one line the worker wrote on its IPC channel: the JSON value
// and what it means to the supervisor.
type ipcLine struct {
	value any
	Message
}

// startWorker starts node as the supervisor would: the handed sockets as fds
// 3…, the IPC socketpair end next, LISTEN_* naming the sockets and
// LISTEN_PID equal to node's own pid, and the preload in NODE_OPTIONS.
func startWorker(t *testing.T, spec workerSpec) *worker {
	t.Helper()
	node, err := exec.LookPath("node")
	if err != nil {
		t.Fatalf("node is required for these tests: %v", err)
	}
	if spec.ports != nil && len(spec.ports) != len(spec.handed) {
		t.Fatalf("workerSpec: %d ports for %d handed sockets", len(spec.ports), len(spec.handed))
	}

	var extra []*os.File
	defer func() {
		for _, f := range extra {
			f.Close()
		}
	}()
	var names []string
	for i, l := range spec.handed {
		f, err := l.File()
		if err != nil {
			t.Fatalf("handed socket %d: %v", i, err)
		}
		extra = append(extra, f)
		port := l.Addr().(*net.TCPAddr).Port
		if spec.ports != nil {
			port = spec.ports[i]
		}
		names = append(names, "port"+strconv.Itoa(port))
	}

	pair, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatalf("socketpair: %v", err)
	}
	parentEnd := os.NewFile(uintptr(pair[0]), "ipc-parent")
	childEnd := os.NewFile(uintptr(pair[1]), "ipc-child")
	extra = append(extra, childEnd)
	ipc, err := net.FileConn(parentEnd)
	parentEnd.Close()
	if err != nil {
		t.Fatalf("ipc socket: %v", err)
	}
	// The test's own environment may carry what the apps read.
	nodeOptions := NodeOptions(spec.nodeOptions, spec.opts)
	if spec.heapMiB > 0 {
		nodeOptions = WithHeapSize(nodeOptions, spec.heapMiB)
	}
	env := BaseEnv(os.Environ(), nodeOptions,
		"CLUSTERINIT_WORKER", "NODE_APP_INSTANCE", "PORT", "PORTS", "HOSTNAME", "KEEP_ALIVE_TIMEOUT")
	env = append(env, WorkerEnv(0, names)...)
	// The shell execs node, so its pid is node's: LISTEN_PID=$$ names node.
	script := `LISTEN_PID=$$; export LISTEN_PID; exec "$@"`
	if spec.listenPID != "" {
		env = append(env, "LISTEN_PID="+spec.listenPID)
		script = `exec "$@"`
	}
	env = append(env, spec.env...)

	w := &worker{t: t, ipc: ipc, changed: make(chan struct{}), done: make(chan struct{})}
	cmd := exec.Command("/bin/sh", append([]string{"-c", script, "sh", node}, spec.args...)...)
	cmd.Env = env
	cmd.ExtraFiles = extra
	cmd.Stdout = lockedBuffer{w, &w.stdout}
	cmd.Stderr = lockedBuffer{w, &w.stderr}
	// Grandchildren holding the output pipes must not block Wait.
	cmd.WaitDelay = 2 * time.Second
	w.cmd = cmd
	if err := cmd.Start(); err != nil {
		ipc.Close()
		t.Fatalf("start node: %v", err)
	}

	go w.readIPC()
	go func() {
		err := cmd.Wait()
		w.mu.Lock()
		w.exited = true
		w.state = cmd.ProcessState
		w.waitErr = err
		w.notify()
		w.mu.Unlock()
		close(w.done)
	}()

	t.Cleanup(func() {
		select {
		case <-w.done:
		default:
			cmd.Process.Kill()
			select {
			case <-w.done:
			case <-time.After(waitTimeout):
				t.Errorf("node (pid %d) did not exit after SIGKILL", w.pid())
			}
		}
		w.ipc.Close()
		if t.Failed() {
			w.mu.Lock()
			t.Logf("worker stdout:\n%s\nworker stderr:\n%s\nipc messages: %v", w.stdout.String(), w.stderr.String(), w.msgs)
			w.mu.Unlock()
		}
	})
	return w
}

// readIPC reads the lines the worker sends into w.msgs, each decoded and
// parsed as the supervisor parses it, until the channel closes.
func (w *worker) readIPC() {
	r := bufio.NewReader(w.ipc)
	for {
		line, err := r.ReadBytes('\n')
		var l ipcLine
		if err == nil {
			if err = json.Unmarshal(line, &l.value); err == nil {
				l.Message, err = Parse(line)
			}
		}
		w.mu.Lock()
		if err != nil {
			if err != io.EOF {
				w.ipcErr = err
			}
			w.ipcDone = true
			w.notify()
			w.mu.Unlock()
			return
		}
		w.msgs = append(w.msgs, l)
		w.notify()
		w.mu.Unlock()
	}
}

// waitUntil waits until cond (called with w.mu held) is true, failing the
// test after waitTimeout or once the worker has exited and closed its
// channel without cond becoming true.
func (w *worker) waitUntil(desc string, cond func() bool) {
	w.t.Helper()
	timer := time.NewTimer(waitTimeout)
	defer timer.Stop()
	for {
		w.mu.Lock()
		if cond() {
			w.mu.Unlock()
			return
		}
		if w.exited && w.ipcDone {
			w.mu.Unlock()
			w.t.Fatalf("waiting for %s: the worker ended (%v) without it", desc, w.exitDesc())
		}
		changed := w.changed
		w.mu.Unlock()
		select {
		case <-changed:
		case <-timer.C:
			w.t.Fatalf("waiting for %s: timed out after %v", desc, waitTimeout)
		}
	}
}

// exitDesc describes how the worker ended; w.mu must be held.
func (w *worker) exitDesc() string {
	if w.state == nil {
		return "still running"
	}
	if w.ipcErr != nil {
		return fmt.Sprintf("%v, ipc error: %v", w.state, w.ipcErr)
	}
	return w.state.String()
}

// waitLine waits for a line from the worker matching match and returns
// its index in w.msgs and the line.
func (w *worker) waitLine(desc string, match func(ipcLine) bool) (int, ipcLine) {
	w.t.Helper()
	idx, msg := -1, ipcLine{}
	w.waitUntil(desc, func() bool {
		for i, m := range w.msgs {
			if match(m) {
				idx, msg = i, m
				return true
			}
		}
		return false
	})
	return idx, msg
}

// waitMsg waits for a JSON value from the worker matching match and returns
// its index in w.msgs and the value.
func (w *worker) waitMsg(desc string, match func(any) bool) (int, any) {
	w.t.Helper()
	i, l := w.waitLine(desc, func(l ipcLine) bool { return match(l.value) })
	return i, l.value
}

// waitEvent waits for a message of kind, as the supervisor parses it, that
// also matches match (any, when match is nil).
func (w *worker) waitEvent(kind Kind, match func(Message) bool) Message {
	w.t.Helper()
	_, l := w.waitLine(fmt.Sprintf("a message of kind %d", kind), func(l ipcLine) bool {
		return l.Kind == kind && (match == nil || match(l.Message))
	})
	return l.Message
}

// listeningPort waits for the preload's first listening report and returns
// its port (0 when it carries none).
func (w *worker) listeningPort() int {
	w.t.Helper()
	return w.waitEvent(KindListening, nil).Port
}

// waitStdoutCount waits until substr appears at least n times on stdout.
func (w *worker) waitStdoutCount(substr string, n int) {
	w.t.Helper()
	w.waitUntil(fmt.Sprintf("%d× %q on stdout", n, substr), func() bool {
		return strings.Count(w.stdout.String(), substr) >= n
	})
}

// pid is node's pid (the shell exec'd it).
func (w *worker) pid() int {
	return w.cmd.Process.Pid
}

// signal sends sig to node.
func (w *worker) signal(sig syscall.Signal) {
	w.t.Helper()
	if err := w.cmd.Process.Signal(sig); err != nil {
		w.t.Fatalf("signal %v: %v", sig, err)
	}
}

// send writes one line to the worker's IPC channel.
func (w *worker) send(line []byte) {
	w.t.Helper()
	w.ipc.SetWriteDeadline(time.Now().Add(waitTimeout))
	if _, err := w.ipc.Write(line); err != nil {
		w.t.Fatalf("ipc write %q: %v", line, err)
	}
}

// waitExit waits for node to end and returns its exit code, or -1 and the
// signal that killed it.
func (w *worker) waitExit() (int, syscall.Signal) {
	w.t.Helper()
	select {
	case <-w.done:
	case <-time.After(waitTimeout):
		w.t.Fatalf("the worker did not exit within %v", waitTimeout)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	ws, ok := w.state.Sys().(syscall.WaitStatus)
	if !ok {
		w.t.Fatalf("unexpected process state %v", w.state)
	}
	if ws.Signaled() {
		return -1, ws.Signal()
	}
	return ws.ExitStatus(), 0
}

// handedListener binds a socket for the supervisor to hand over and returns
// it with its port.
func handedListener(t *testing.T) (*net.TCPListener, int) {
	t.Helper()
	l, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l, l.Addr().(*net.TCPAddr).Port
}

// appPath is the absolute path of a test app in testdata/apps.
func appPath(t *testing.T, name string) string {
	t.Helper()
	p, err := filepath.Abs(filepath.Join("..", "testdata", "apps", name))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(p); err != nil {
		t.Fatal(err)
	}
	return p
}

// get makes one request on a fresh connection and returns the status and
// body.
func get(t *testing.T, port int, path string) (int, string) {
	t.Helper()
	tr := &http.Transport{DisableKeepAlives: true}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: waitTimeout}
	resp, err := client.Get("http://127.0.0.1:" + strconv.Itoa(port) + path)
	if err != nil {
		t.Fatalf("GET %s on port %d: %v", path, port, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s on port %d: reading the body: %v", path, port, err)
	}
	return resp.StatusCode, string(body)
}

// httpConn is a raw HTTP/1.1 client connection, for tests that control
// exactly when requests go out and responses are read.
type httpConn struct {
	t    *testing.T
	conn net.Conn
	r    *bufio.Reader
}

func dial(t *testing.T, port int) *httpConn {
	t.Helper()
	conn, err := net.DialTimeout("tcp", "127.0.0.1:"+strconv.Itoa(port), waitTimeout)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	conn.SetDeadline(time.Now().Add(waitTimeout))
	return &httpConn{t: t, conn: conn, r: bufio.NewReader(conn)}
}

// send writes a keep-alive GET for path.
func (c *httpConn) send(path string) {
	c.t.Helper()
	c.conn.SetDeadline(time.Now().Add(waitTimeout))
	if _, err := io.WriteString(c.conn, "GET "+path+" HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"); err != nil {
		c.t.Fatalf("send %s: %v", path, err)
	}
}

// head reads the next response's status line and headers.
func (c *httpConn) head() *http.Response {
	c.t.Helper()
	c.conn.SetDeadline(time.Now().Add(waitTimeout))
	resp, err := http.ReadResponse(c.r, nil)
	if err != nil {
		c.t.Fatalf("reading a response: %v", err)
	}
	return resp
}

// body reads the rest of resp.
func (c *httpConn) body(resp *http.Response) string {
	c.t.Helper()
	c.conn.SetDeadline(time.Now().Add(waitTimeout))
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		c.t.Fatalf("reading a response body: %v", err)
	}
	return string(b)
}
