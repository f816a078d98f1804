package preload

import (
	"encoding/json"
	"io"
	"net"
	"net/url"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

func TestNodeOptions(t *testing.T) {
	const prefix = "--import data:text/javascript,"
	plain := NodeOptions("", Options{})
	if !strings.HasPrefix(plain, prefix) {
		t.Fatalf("NodeOptions(\"\") = %.60q…, want it to start with %q", plain, prefix)
	}
	if strings.ContainsAny(plain[len("--import "):], " \t\n\"'\\#?") {
		t.Fatal("the data URL must be a single NODE_OPTIONS token, with no fragment or query")
	}
	if len(plain) > 2048 {
		t.Errorf("the bootstrap URL is %d bytes: preload.js belongs in SourceEnv, not in NODE_OPTIONS", len(plain))
	}
	if again := NodeOptions("", Options{}); again != plain {
		t.Fatal("NodeOptions is not deterministic")
	}

	user := "--max-old-space-size=256 --require dd-trace/init"
	got := NodeOptions(user, Options{StopSignal: "SIGINT"})
	if !strings.HasPrefix(got, user+" "+prefix) {
		t.Fatalf("the user's options must come first and be kept verbatim: %.80q…", got)
	}
	js, err := url.PathUnescape(strings.TrimPrefix(got, user+" "+prefix))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(js, `{"stopSignal":"SIGINT","stopMessage":false,"heapFlag":false}`) {
		t.Fatalf("options missing from the bootstrap: %q", js)
	}
	if env := SourceEnv(); env != SourceVar+"="+source {
		t.Fatalf("SourceEnv() = %.60q…, want %s= and preload.js", env, SourceVar)
	}

	for in, want := range map[string]string{"": "SIGTERM", "term": "SIGTERM", "SIGINT": "SIGINT", " sigquit ": "SIGQUIT", "USR2": "SIGUSR2"} {
		if got := normalizeSignal(in); got != want {
			t.Errorf("normalizeSignal(%q) = %q, want %q", in, got, want)
		}
	}
}

type appResponse struct {
	Worker string `json:"worker"`
	PID    int    `json:"pid"`
	Port   int    `json:"port"`
}

// An app asking for the handed port with a host that does not even resolve
// (as Next.js does with ECS's HOSTNAME) gets the handed socket.
func TestListenRedirect(t *testing.T) {
	for _, app := range []string{"http.js", "http-esm.mjs"} {
		t.Run(app, func(t *testing.T) {
			t.Parallel()
			l, port := handedListener(t)
			w := startWorker(t, workerSpec{
				args:   []string{appPath(t, app)},
				handed: []*net.TCPListener{l},
				env:    []string{"PORT=" + strconv.Itoa(port), "HOSTNAME=does-not-resolve.invalid"},
			})
			if got := w.listeningPort(); got != port {
				t.Fatalf("listening message for port %d, want %d", got, port)
			}
			status, body := get(t, port, "/")
			if status != 200 {
				t.Fatalf("GET / = %d %s", status, body)
			}
			var r appResponse
			if err := json.Unmarshal([]byte(body), &r); err != nil {
				t.Fatalf("body %q: %v", body, err)
			}
			// server.address() must report the handed socket for apps that log it.
			if r.Worker != "0" || r.PID != w.pid() || r.Port != port {
				t.Fatalf("got %+v, want worker 0, pid %d, port %d", r, w.pid(), port)
			}
			w.mu.Lock()
			defer w.mu.Unlock()
			if w.stderr.Len() > 0 {
				t.Fatalf("the preload must print nothing, stderr:\n%s", w.stderr.String())
			}
		})
	}
}

// Every call form of listen() reaches the right handed socket, with
// LISTEN_FDNAMES naming several sockets in fd order.
func TestListenForms(t *testing.T) {
	forms := []string{"number", "string", "port-host-backlog-cb", "options"}
	var handed []*net.TCPListener
	var ports []string
	for range forms {
		l, port := handedListener(t)
		handed = append(handed, l)
		ports = append(ports, strconv.Itoa(port))
	}
	w := startWorker(t, workerSpec{
		args:   []string{appPath(t, "listen-forms.js")},
		handed: handed,
		env:    []string{"PORTS=" + strings.Join(ports, ",")},
	})
	_, m := w.waitMsg("the app's report", func(m any) bool {
		obj, ok := m.(map[string]any)
		return ok && obj["app"] == "forms"
	})
	seen := m.(map[string]any)["seen"].(map[string]any)
	for i, form := range forms {
		addr, _ := seen[form].(map[string]any)
		if addr == nil || strconv.Itoa(int(addr["port"].(float64))) != ports[i] {
			t.Errorf("form %s: callback saw address %v, want port %s", form, seen[form], ports[i])
		}
		p, _ := strconv.Atoi(ports[i])
		if status, body := get(t, p, "/"); status != 200 || body != form {
			t.Errorf("port %s: %d %q, want 200 %q", ports[i], status, body, form)
		}
	}
	for _, p := range ports {
		port, _ := strconv.Atoi(p)
		w.waitEvent(KindListening, func(m Message) bool { return m.Port == port })
	}
}

// With LISTEN=none no sockets are handed: the app binds its own and the
// first 'listening' is the readiness report.
func TestNoHandedSockets(t *testing.T) {
	w := startWorker(t, workerSpec{
		args: []string{appPath(t, "http.js")},
		env:  []string{"PORT=0"},
	})
	port := w.listeningPort()
	if port == 0 {
		t.Fatal("listening message without the bound port")
	}
	if status, body := get(t, port, "/"); status != 200 {
		t.Fatalf("GET / = %d %s", status, body)
	}
}

// A port that was not handed is left alone, and listening on it is not
// reported as readiness.
func TestOtherPortUntouched(t *testing.T) {
	l, _ := handedListener(t)
	free, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	other := free.Addr().(*net.TCPAddr).Port
	free.Close()

	w := startWorker(t, workerSpec{
		args:   []string{appPath(t, "other-port.js")},
		handed: []*net.TCPListener{l},
		env:    []string{"PORT=" + strconv.Itoa(other)},
	})
	i, m := w.waitMsg("the app's report", func(m any) bool {
		obj, ok := m.(map[string]any)
		return ok && obj["app"] == "listening"
	})
	if got := m.(map[string]any)["port"]; got != float64(other) {
		t.Fatalf("app listens on %v, want %d", got, other)
	}
	// The preload's 'listening' handler runs before the app's callback, so a
	// report would have come first.
	w.mu.Lock()
	for _, earlier := range w.msgs[:i] {
		if earlier.Kind == KindListening {
			t.Errorf("listening on a port that was not handed was reported: %v", earlier.value)
		}
	}
	w.mu.Unlock()
	if status, body := get(t, other, "/"); status != 200 || body != "other-port\n" {
		t.Fatalf("GET / = %d %q", status, body)
	}
	// Servers on other ports are drained too.
	w.signal(syscall.SIGTERM)
	if code, sig := w.waitExit(); code != 0 {
		t.Fatalf("exit %d (signal %v), want 0", code, sig)
	}
}

// LISTEN_* inherited by a process they were not meant for are ignored.
func TestWrongListenPID(t *testing.T) {
	l, port := handedListener(t)
	w := startWorker(t, workerSpec{
		args:      []string{appPath(t, "http.js")},
		handed:    []*net.TCPListener{l},
		listenPID: "1",
		env:       []string{"PORT=" + strconv.Itoa(port), "HOSTNAME=does-not-resolve.invalid"},
	})
	code, _ := w.waitExit()
	if code == 0 {
		t.Fatal("the app listened although LISTEN_PID named another process")
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	// ENOTFOUND, or EAI_AGAIN where there is no resolver at all.
	if !strings.Contains(w.stderr.String(), "getaddrinfo") {
		t.Fatalf("want the app's own listen error (host lookup), stderr:\n%s", w.stderr.String())
	}
	for _, m := range w.msgs {
		if m.Kind == KindListening {
			t.Fatalf("unexpected listening report: %v", m.value)
		}
	}
}

func startHTTP(t *testing.T, extra ...string) (*worker, int) {
	t.Helper()
	l, port := handedListener(t)
	w := startWorker(t, workerSpec{
		args:   []string{appPath(t, "http.js")},
		handed: []*net.TCPListener{l},
		env:    append([]string{"PORT=" + strconv.Itoa(port)}, extra...),
	})
	w.listeningPort()
	return w, port
}

// The stop signal drains: in-flight requests finish with Connection: close,
// a keep-alive connection's next response closes it, and an app without a
// handler of its own exits 0.
func TestDrainOnSignal(t *testing.T) {
	w, port := startHTTP(t)

	// A: a response under way (headers already sent, keep-alive) when the
	// drain begins.
	a := dial(t, port)
	a.send("/slow?ms=1500&flush=1")
	respA := a.head()
	if respA.Close {
		t.Fatal("before the drain, responses keep the connection alive")
	}
	// B: a request in flight whose headers are not sent yet.
	b := dial(t, port)
	b.send("/slow?ms=1500")
	w.waitStdoutCount("slow-start", 2)

	w.signal(syscall.SIGTERM)

	respB := b.head()
	if bodyB := b.body(respB); respB.StatusCode != 200 || !strings.Contains(bodyB, "slept") {
		t.Fatalf("in-flight request: %d %q", respB.StatusCode, bodyB)
	}
	if !respB.Close {
		t.Errorf("in-flight response lacks Connection: close: %v", respB.Header)
	}

	if bodyA := a.body(respA); !strings.Contains(bodyA, "slept") {
		t.Fatalf("streaming request: %q", bodyA)
	}
	a.send("/")
	next := a.head()
	if body := a.body(next); next.StatusCode != 200 {
		t.Fatalf("next request on the keep-alive connection: %d %q", next.StatusCode, body)
	}
	if !next.Close {
		t.Errorf("next response on the keep-alive connection lacks Connection: close: %v", next.Header)
	}

	if code, sig := w.waitExit(); code != 0 {
		t.Fatalf("exit %d (signal %v), want 0", code, sig)
	}
}

// A keep-alive connection whose response was under way when the drain began
// is closed soon after that response even if its client stays silent, not
// after the app's keepAliveTimeout (65 s here, longer than the test waits).
func TestDrainClosesKeepAliveSoon(t *testing.T) {
	w, port := startHTTP(t, "KEEP_ALIVE_TIMEOUT=65000")
	c := dial(t, port)
	c.send("/slow?ms=300&flush=1")
	resp := c.head()
	if resp.Close {
		t.Fatal("before the drain, responses keep the connection alive")
	}
	w.signal(syscall.SIGTERM)
	if body := c.body(resp); !strings.Contains(body, "slept") {
		t.Fatalf("streaming request: %q", body)
	}
	if n, err := c.r.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("want the server to close the idle connection, got %d bytes, %v", n, err)
	}
	if code, sig := w.waitExit(); code != 0 {
		t.Fatalf("exit %d (signal %v), want 0", code, sig)
	}
}

// The internal drain message drains like the stop signal; the app never
// sees it as a 'message'.
func TestDrainOnMessage(t *testing.T) {
	w, port := startHTTP(t)
	c := dial(t, port)
	c.send("/slow?ms=800")
	w.waitStdoutCount("slow-start", 1)

	w.send(DrainLine(0))

	resp := c.head()
	if body := c.body(resp); resp.StatusCode != 200 || !resp.Close {
		t.Fatalf("in-flight request: %d close=%v %q", resp.StatusCode, resp.Close, body)
	}
	if code, sig := w.waitExit(); code != 0 {
		t.Fatalf("exit %d (signal %v), want 0", code, sig)
	}
}

// An app with its own handler for the stop signal (like Next.js) decides
// when to exit and with which code; its own server.close(cb) after the
// preload's gets no error.
func TestOwnHandler(t *testing.T) {
	l, port := handedListener(t)
	w := startWorker(t, workerSpec{
		args:   []string{appPath(t, "own-handler.js")},
		handed: []*net.TCPListener{l},
		env:    []string{"PORT=" + strconv.Itoa(port), "HOSTNAME=does-not-resolve.invalid"},
	})
	w.listeningPort()
	c := dial(t, port)
	c.send("/?ms=800")
	w.waitStdoutCount("slow-start", 1)

	w.signal(syscall.SIGTERM)

	resp := c.head()
	if body := c.body(resp); resp.StatusCode != 200 || !resp.Close {
		t.Fatalf("in-flight request: %d close=%v %q", resp.StatusCode, resp.Close, body)
	}
	if code, sig := w.waitExit(); code != 143 {
		t.Fatalf("exit %d (signal %v), want the app's own 143", code, sig)
	}
}

// A PM2-style app: its process.send('ready') reaches the parent next to the
// preload's report, and with STOP_SIGNAL=SIGINT its own handler stops it.
func TestPM2Style(t *testing.T) {
	l, port := handedListener(t)
	w := startWorker(t, workerSpec{
		args:   []string{appPath(t, "pm2-style.js")},
		handed: []*net.TCPListener{l},
		env:    []string{"PORT=" + strconv.Itoa(port)},
		opts:   Options{StopSignal: "SIGINT"},
	})
	w.listeningPort()
	w.waitMsg(`"ready"`, func(m any) bool { return m == "ready" })
	if status, body := get(t, port, "/"); status != 200 || body != "pm2-style\n" {
		t.Fatalf("GET / = %d %q", status, body)
	}
	w.signal(syscall.SIGINT)
	if code, sig := w.waitExit(); code != 0 {
		t.Fatalf("exit %d (signal %v), want 0", code, sig)
	}
}

// An app stopping the way signal-exit does (re-raise the signal once it
// believes it is the only listener) must still end: the preload's listener
// is hidden from process.listeners().
func TestSignalExitStyle(t *testing.T) {
	l, port := handedListener(t)
	w := startWorker(t, workerSpec{
		args:   []string{appPath(t, "signal-exit-style.js")},
		handed: []*net.TCPListener{l},
		env:    []string{"PORT=" + strconv.Itoa(port)},
	})
	w.listeningPort()
	w.signal(syscall.SIGTERM)
	if code, sig := w.waitExit(); code != 0 {
		t.Fatalf("exit %d (signal %v), want 0 after the drain", code, sig)
	}
}

// A worker with nothing to drain and no handler of its own dies of the stop
// signal exactly as it would without the preload.
func TestNoServerDefaultSignal(t *testing.T) {
	w := startWorker(t, workerSpec{args: []string{"-e", "setInterval(() => {}, 1000)"}})
	// A pong proves the preload is installed and the app is running.
	w.send(PingLine(1))
	w.waitEvent(KindPong, nil)
	w.signal(syscall.SIGTERM)
	if code, sig := w.waitExit(); code != -1 || sig != syscall.SIGTERM {
		t.Fatalf("exit %d signal %v, want death by SIGTERM", code, sig)
	}
}

// Listening for internal messages and sampling the event loop must not keep
// a finished app alive (a 'message' listener would).
func TestIPCDoesNotHoldLoop(t *testing.T) {
	w := startWorker(t, workerSpec{args: []string{"-e", "setTimeout(() => {}, 10)"}})
	if code, sig := w.waitExit(); code != 0 {
		t.Fatalf("exit %d (signal %v), want 0", code, sig)
	}
}

// Pongs echo seq and carry the event-loop delay since the previous pong.
func TestPong(t *testing.T) {
	w, port := startHTTP(t)

	w.send(PingLine(7))
	_, first := w.waitLine("pong 7", func(l ipcLine) bool { return l.Kind == KindPong && l.Seq == 7 })
	if eld, ok := first.value.(map[string]any)["eld"].(float64); !ok || eld < 0 {
		t.Fatalf("pong without a delay: %v", first.value)
	}

	// The first sampling interval after a read is not recorded, so the
	// blocking request comes after a short non-blocking one.
	if status, _ := get(t, port, "/slow?ms=50"); status != 200 {
		t.Fatal("warm-up request failed")
	}
	if status, body := get(t, port, "/slow?ms=300&block=1"); status != 200 {
		t.Fatalf("blocking request: %d %q", status, body)
	}
	w.send(PingLine(8))
	second := w.waitEvent(KindPong, func(m Message) bool { return m.Seq == 8 })
	if second.ELD < 0.2 || second.ELD > 5 {
		t.Fatalf("after blocking the loop for 300ms the p99 delay is %v s", second.ELD)
	}
}

type envResponse struct {
	Env       map[string]string `json:"env"`
	ChildEnv  string            `json:"childEnv"`
	HeapLimit float64           `json:"heapLimit"`
}

// The worker's children see neither the preload nor the handed sockets, and
// the user's own NODE_OPTIONS survive and apply.
func TestChildEnvironment(t *testing.T) {
	cases := []struct {
		name, user string
		heapMiB    int64 // HEAP_SIZE's flag, which the children must not see either
	}{
		{"no user options", "", 0},
		{"user options", "--max-old-space-size=256", 0},
		{"heap size alone", "", 100},
		{"heap size and user options", "--no-warnings", 100},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			l, port := handedListener(t)
			w := startWorker(t, workerSpec{
				args:        []string{appPath(t, "http.js")},
				handed:      []*net.TCPListener{l},
				nodeOptions: tc.user,
				env:         []string{"PORT=" + strconv.Itoa(port)},
				opts:        Options{HeapFlag: tc.heapMiB > 0},
				heapMiB:     tc.heapMiB,
			})
			w.listeningPort()
			status, body := get(t, port, "/env")
			if status != 200 {
				t.Fatalf("GET /env = %d %q", status, body)
			}
			var r envResponse
			if err := json.Unmarshal([]byte(body), &r); err != nil {
				t.Fatal(err)
			}

			// heap_size_limit is old space plus the young generation (up to
			// 192 MiB on Node 24); Node's default on this machine is GiBs.
			if lim := int64(r.HeapLimit); tc.heapMiB > 0 && (lim < tc.heapMiB<<20 || lim > (tc.heapMiB+256)<<20) {
				t.Errorf("heap_size_limit %d MiB with --max-old-space-size=%d", lim>>20, tc.heapMiB)
			}
			child := map[string]string{}
			for _, line := range strings.Split(r.ChildEnv, "\n") {
				if k, v, ok := strings.Cut(line, "="); ok {
					child[k] = v
				}
			}
			for _, env := range []map[string]string{r.Env, child} {
				v, ok := env["NODE_OPTIONS"]
				if tc.user == "" && ok {
					t.Errorf("NODE_OPTIONS=%.60q left behind", v)
				}
				if tc.user != "" && v != tc.user {
					t.Errorf("NODE_OPTIONS=%.60q, want the user's %q", v, tc.user)
				}
				for _, k := range []string{"LISTEN_FDS", "LISTEN_FDNAMES", "LISTEN_PID", SourceVar} {
					if v, ok := env[k]; ok {
						t.Errorf("%s=%s left behind", k, v)
					}
				}
			}
			if child["CLUSTERINIT_WORKER"] != "0" {
				t.Errorf("the rest of the environment must be kept: CLUSTERINIT_WORKER=%q", child["CLUSTERINIT_WORKER"])
			}
			// heap_size_limit is the old space plus the young generation,
			// whose maximum differs by line (larger since V8 13): compare
			// with what this very node reports with and without the flag.
			if strings.Contains(tc.user, "max-old-space-size") {
				with, without := heapLimit(t, tc.user), heapLimit(t, "")
				if with == without {
					t.Fatalf("node reports the same heap limit (%.0f MB) with and without %s", with/(1<<20), tc.user)
				}
				if r.HeapLimit != with {
					t.Errorf("heap limit %.0f MB, want %.0f MB (node %s; %.0f MB without): the user's %s was not applied",
						r.HeapLimit/(1<<20), with/(1<<20), tc.user, without/(1<<20), tc.user)
				}
			}
		})
	}
}

// nodeWith is node run with args and NODE_OPTIONS=nodeOptions in place of
// the test's own (none when empty), with the preload's source beside it as
// the supervisor passes it.
func nodeWith(nodeOptions string, args ...string) *exec.Cmd {
	cmd := exec.Command("node", args...)
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "NODE_OPTIONS=") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	if nodeOptions != "" {
		cmd.Env = append(cmd.Env, "NODE_OPTIONS="+nodeOptions, SourceEnv())
	}
	return cmd
}

// heapLimit is v8's heap_size_limit of a plain node run with nodeOptions.
func heapLimit(t *testing.T, nodeOptions string) float64 {
	t.Helper()
	out, err := nodeWith(nodeOptions, "-p", "require('v8').getHeapStatistics().heap_size_limit").Output()
	if err != nil {
		t.Fatalf("node -p heap_size_limit: %v", err)
	}
	v, err := strconv.ParseFloat(strings.TrimSpace(string(out)), 64)
	if err != nil {
		t.Fatalf("node -p heap_size_limit: %q: %v", out, err)
	}
	return v
}

func TestWithHeapSize(t *testing.T) {
	token := NodeOptions("", Options{HeapFlag: true})
	if got := WithHeapSize(token, 320); got != "--max-old-space-size=320 "+token {
		t.Errorf("WithHeapSize alone = %.60q…", got)
	}
	user := NodeOptions("--require dd-trace/init", Options{HeapFlag: true})
	if got := WithHeapSize(user, 64); got != "--require dd-trace/init --max-old-space-size=64 "+token {
		t.Errorf("WithHeapSize after the user's = %.60q…", got)
	}
}

func TestUserHeapSize(t *testing.T) {
	for _, tc := range []struct {
		nodeOptions string
		argv        []string
		want        bool
	}{
		{"", []string{"node", "server.js"}, false},
		{"--max-old-space-size=512", []string{"node", "server.js"}, true},
		{"--require x --max_old_space_size=512", nil, true},
		{"", []string{"node", "--max-old-space-size=512", "server.js"}, true},
		{"", []string{"node", "--max-old-space-size", "512", "server.js"}, true},
		{"--max-semi-space-size=16", []string{"node", "--max-old-space-sizes"}, false},
	} {
		if got := UserHeapSize(tc.nodeOptions, tc.argv); got != tc.want {
			t.Errorf("UserHeapSize(%q, %q) = %v, want %v", tc.nodeOptions, tc.argv, got, tc.want)
		}
	}
}

// The preload takes its built-ins without running their lazy getters: an
// ESM import of node:http loads undici (for http.WebSocket, Node 22+), one
// of node:process loads streams, readline and the REPL's history (for
// process.stdin and friends), which cost every worker's boot about 60 ms of
// CPU. A plain node with the preload must load none of them.
func TestPreloadLoadsNoLazyModules(t *testing.T) {
	out, err := nodeWith(NodeOptions("", Options{}), "-p", "JSON.stringify(process.moduleLoadList)").Output()
	if err != nil {
		t.Fatalf("node -p moduleLoadList: %v", err)
	}
	var loaded []string
	if err := json.Unmarshal(out, &loaded); err != nil {
		t.Fatalf("moduleLoadList %.200q: %v", out, err)
	}
	if !slices.Contains(loaded, "NativeModule perf_hooks") {
		t.Fatalf("the preload did not run (no perf_hooks among %d modules)", len(loaded))
	}
	for _, m := range loaded {
		for _, lazy := range []string{"undici", "internal/readline", "internal/repl", "internal/process/report"} {
			if strings.Contains(m, lazy) {
				t.Errorf("the preload loaded %q: a built-in's lazy getter ran", m)
			}
		}
	}
}

// Outside a drain the preload adds nothing per connection or per request:
// no listener on the server, no property on a socket or a response. Each of
// those cost a worker 17% more CPU per new connection (docs/benchmarks.md,
// "The preload's cost per request"). It still counts every answered request.
func TestNothingPerConnectionOutsideADrain(t *testing.T) {
	const app = `
const http = require('http');
const bare = http.createServer(() => {}); // never listens: the preload leaves it alone
const mine = (o) => Object.getOwnPropertySymbols(o).map(String).filter((k) => k.includes('clusterinit'));
const server = http.createServer((req, res) => {
  if (req.url !== '/inspect') return res.end('ok');
  const s = req.socket;
  res.end(JSON.stringify({
    listeners: ['connection', 'request'].map((e) => server.listenerCount(e) - bare.listenerCount(e)),
    socket: mine(s).concat(Object.hasOwn(s, 'destroy') ? ['own destroy()'] : []),
    response: mine(res),
  }));
});
server.listen(Number(process.env.PORT));
`
	l, port := handedListener(t)
	w := startWorker(t, workerSpec{
		args:   []string{"-e", app},
		handed: []*net.TCPListener{l},
		env:    []string{"PORT=" + strconv.Itoa(port)},
	})
	if got := w.listeningPort(); got != port {
		t.Fatalf("listening on %d, want the handed port %d", got, port)
	}
	const plain = 5
	for range plain {
		if status, body := get(t, port, "/"); status != 200 || body != "ok" {
			t.Fatalf("GET /: %d %q", status, body)
		}
	}
	status, body := get(t, port, "/inspect")
	if status != 200 {
		t.Fatalf("GET /inspect: %d %q", status, body)
	}
	var seen struct {
		Listeners []int    `json:"listeners"`
		Socket    []string `json:"socket"`
		Response  []string `json:"response"`
	}
	if err := json.Unmarshal([]byte(body), &seen); err != nil {
		t.Fatalf("/inspect %q: %v", body, err)
	}
	if !slices.Equal(seen.Listeners, []int{0, 0}) {
		t.Errorf("the preload added %v 'connection' and 'request' listeners to the server, want none", seen.Listeners)
	}
	if len(seen.Socket) > 0 || len(seen.Response) > 0 {
		t.Errorf("the preload set %v on a connection and %v on a response outside a drain, want nothing", seen.Socket, seen.Response)
	}

	w.send(PingLine(1))
	pong := w.waitEvent(KindPong, func(m Message) bool { return m.Seq == 1 })
	if pong.Requests != plain+1 {
		t.Errorf("pong counts %d requests, want the %d answered", pong.Requests, plain+1)
	}
}

// A preload that does not compile (or throws) costs the app nothing but the
// preload's features, and says so on stderr.
func TestBrokenPreloadLeavesTheApp(t *testing.T) {
	cmd := exec.Command("node", "-e", "console.log('app ran')")
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "NODE_OPTIONS=") && !strings.HasPrefix(kv, SourceVar+"=") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, "NODE_OPTIONS="+NodeOptions("", Options{}), SourceVar+"=this is not JavaScript(")
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil || strings.TrimSpace(string(out)) != "app ran" {
		t.Fatalf("node with a broken preload: %v, stdout %q, stderr %q", err, out, stderr.String())
	}
	if !strings.Contains(stderr.String(), "clusterinit: the preload failed") {
		t.Errorf("stderr %q does not say that the preload failed", stderr.String())
	}
}

// A worker thread never runs the preload, while the main thread does. Node
// runs NODE_OPTIONS' --import in the main thread only (a worker's execArgv
// --import too), so the worker here imports the bootstrap itself, the worst
// case: it finds no source, which left process.env before the app ran. What
// shows it: net.Server.prototype.listen is the preload's wrapper in the main
// thread and Node's own in the worker.
func TestNoPreloadInWorkerThreads(t *testing.T) {
	plain, err := nodeWith("", "-p", "String(require('net').Server.prototype.listen)").Output()
	if err != nil {
		t.Fatalf("plain node: %v", err)
	}
	script := `
const { Worker } = require('node:worker_threads');
const main = String(require('net').Server.prototype.listen);
const inWorker = 'const { parentPort } = await import("node:worker_threads");' +
  'await import(process.env.BOOTSTRAP_URL);' +
  'parentPort.postMessage(String((await import("node:net")).Server.prototype.listen));';
const w = new Worker(new URL('data:text/javascript,' + encodeURIComponent(inWorker)));
w.on('message', (listen) => { console.log(JSON.stringify({ main, inWorker: listen })); w.terminate(); });
w.on('error', (err) => { console.error(err); process.exit(1); });
`
	nodeOptions := NodeOptions("", Options{})
	bootstrap, ok := strings.CutPrefix(nodeOptions, "--import ")
	if !ok || strings.Contains(bootstrap, " ") {
		t.Fatalf("NODE_OPTIONS %q: want one --import", nodeOptions)
	}
	cmd := nodeWith(nodeOptions, "-e", script)
	cmd.Env = append(cmd.Env, "BOOTSTRAP_URL="+bootstrap)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("node with the preload: %v: %s", err, out)
	}
	var got struct{ Main, InWorker string }
	if err := json.Unmarshal(out, &got); err != nil {
		t.Fatalf("output %q: %v", out, err)
	}
	want := strings.TrimSpace(string(plain))
	if got.Main == want {
		t.Errorf("the main thread's listen is Node's own: the preload did not run there")
	}
	if got.InWorker != want {
		t.Errorf("the worker thread's listen is not Node's own: the preload ran in a worker thread:\n%s", got.InWorker)
	}
}
