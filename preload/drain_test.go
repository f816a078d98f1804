package preload

import (
	"encoding/json"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// startApp runs a testdata app on one handed socket.
func startApp(t *testing.T, app string, extra ...string) (*worker, int) {
	t.Helper()
	l, port := handedListener(t)
	w := startWorker(t, workerSpec{
		args:   []string{appPath(t, app)},
		handed: []*net.TCPListener{l},
		env:    append([]string{"PORT=" + strconv.Itoa(port)}, extra...),
	})
	w.listeningPort()
	return w, port
}

// Only the servers on handed sockets are drained: the app's own servers (a
// listen(0) backend its public route calls, an admin port) keep accepting
// while a public request is still in flight, whether the app has a stop
// handler of its own or not.
func TestDrainLeavesTheAppsOwnServers(t *testing.T) {
	for _, own := range []string{"0", "1"} {
		t.Run("own-handler="+own, func(t *testing.T) {
			t.Parallel()
			w, port := startApp(t, "internal-server.js", "OWN_HANDLER="+own)
			status, body := get(t, port, "/ports")
			var ports struct{ Backend, Admin int }
			if err := json.Unmarshal([]byte(body), &ports); status != 200 || err != nil {
				t.Fatalf("GET /ports = %d %q (%v)", status, body, err)
			}
			// The public request asks the backend only after the drain began.
			c := dial(t, port)
			c.send("/proxy?ms=600")
			w.waitStdoutCount("proxy-start", 1)
			w.signal(syscall.SIGTERM)

			if status, body := get(t, ports.Admin, "/"); status != 200 || !strings.HasPrefix(body, "admin") {
				t.Errorf("the app's admin server during the drain: %d %q", status, body)
			}
			resp := c.head()
			if body := c.body(resp); resp.StatusCode != 200 || !strings.HasPrefix(body, "proxied: backend") {
				t.Errorf("public request in flight, calling the app's backend during the drain: %d %q", resp.StatusCode, body)
			}
			if !resp.Close {
				t.Errorf("the drained server's response lacks Connection: close")
			}
			if code, sig := w.waitExit(); code != 0 {
				t.Fatalf("exit %d (signal %v), want 0", code, sig)
			}
		})
	}
}

// However the app's own SIGTERM handler closes its server, a keep-alive
// connection idle when the drain begins is not cut at once: a request sent
// on it within the grace is answered, with Connection: close; one that
// stays idle is closed after the grace.
func TestDrainKeepsYoungIdleConnections(t *testing.T) {
	for _, mode := range []string{"close", "close-idle", "close-all", "destroy"} {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			w, port := startApp(t, "shutdown-hook.js", "SHUTDOWN="+mode, "KEEP_ALIVE_TIMEOUT=65000", "HOOK_MS=10")
			busy, idle := dial(t, port), dial(t, port)
			for _, c := range []*httpConn{busy, idle} {
				c.send("/")
				if resp := c.head(); c.body(resp) == "" || resp.Close {
					t.Fatalf("before the drain: a keep-alive answer, got close=%v", resp.Close)
				}
			}
			w.signal(syscall.SIGTERM)
			w.waitStdoutCount("hook ran", 1)
			t0 := time.Now()
			time.Sleep(300 * time.Millisecond) // a client's next request, a moment into the drain
			busy.send("/")
			resp := busy.head()
			if body := busy.body(resp); resp.StatusCode != 200 || !strings.Contains(body, "pid") {
				t.Fatalf("request on a connection idle at the drain's start: %d %q", resp.StatusCode, body)
			}
			if !resp.Close {
				t.Errorf("its response lacks Connection: close")
			}
			if n, err := idle.r.Read(make([]byte, 1)); err != io.EOF {
				t.Fatalf("want the idle connection closed, got %d bytes, %v", n, err)
			}
			if d := time.Since(t0); d < 600*time.Millisecond {
				t.Errorf("the idle connection was closed %v after the hook ran, before the grace", d)
			}
			if code, sig := w.waitExit(); code != 0 {
				t.Fatalf("exit %d (signal %v), want the app's own 0", code, sig)
			}
			w.waitStdoutCount("hook done", 1)
		})
	}
}

// During a drain the keep-alive timeout and its buffer (Node
// 22.20/24.6+'s keepAliveTimeoutBuffer; on older lines an inert property)
// are clamped, so a connection whose keep-alive response was under way ends
// soon, whatever the app set.
func TestDrainClampsKeepAliveTimeouts(t *testing.T) {
	w, port := startHTTP(t, "KEEP_ALIVE_TIMEOUT=65000", "KEEP_ALIVE_TIMEOUT_BUFFER=30000")
	c := dial(t, port)
	c.send("/timeouts?ms=400")
	w.waitStdoutCount("slow-start", 1)
	w.signal(syscall.SIGTERM)
	resp := c.head()
	var got struct{ KeepAliveTimeout, KeepAliveTimeoutBuffer float64 }
	if body := c.body(resp); json.Unmarshal([]byte(body), &got) != nil {
		t.Fatalf("GET /timeouts: %q", body)
	}
	if got.KeepAliveTimeout != 500 || got.KeepAliveTimeoutBuffer != 1000 {
		t.Errorf("during the drain keepAliveTimeout=%v keepAliveTimeoutBuffer=%v, want 500 and 1000", got.KeepAliveTimeout, got.KeepAliveTimeoutBuffer)
	}
	if code, sig := w.waitExit(); code != 0 {
		t.Fatalf("exit %d (signal %v), want 0", code, sig)
	}
}

// A handover hands every keep-alive connection over before the stop signal
// that ends it: each connection's turn comes within the window, so its
// response with Connection: close goes out before the app's own handler
// runs, even one that answers 503 to whatever arrives after it (Fastify's
// return503OnClosing). The turns are spread: the connections do not all
// end at once.
func TestHandoverEndsBeforeTheStopSignal(t *testing.T) {
	const conns = 4
	const window = time.Second
	w, port := startApp(t, "shutdown-hook.js", "SHUTDOWN=503", "KEEP_ALIVE_TIMEOUT=65000", "HOOK_MS=10")
	cs := make([]*httpConn, conns)
	for i := range cs {
		cs[i] = dial(t, port)
		cs[i].send("/")
		if resp := cs[i].head(); cs[i].body(resp) == "" || resp.Close {
			t.Fatalf("before the handover: want a keep-alive answer, got close=%v", resp.Close)
		}
	}
	type outcome struct {
		status int
		at     time.Duration // since the drain line
		n      int           // responses on the connection during the handover
	}
	results := make(chan outcome, conns)
	t0 := time.Now()
	w.send(DrainLine(window))
	for _, c := range cs {
		// Requests back to back, as a load balancer sends them, until the
		// connection's Connection: close or a 503. Not httpConn's send and
		// head: they end the test with Fatalf, which a goroutine may not.
		go func() {
			var o outcome
			for {
				if _, err := io.WriteString(c.conn, "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"); err != nil {
					o.status = -1
					break
				}
				resp, err := http.ReadResponse(c.r, nil)
				if err != nil {
					o.status = -1
					break
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				o.n++
				if resp.StatusCode != 200 || resp.Close {
					o.status = resp.StatusCode
					break
				}
			}
			o.at = time.Since(t0)
			results <- o
		}()
	}
	// The supervisor's stop signal, at the end of the window.
	time.Sleep(time.Until(t0.Add(window)))
	w.signal(syscall.SIGTERM)
	var first, last time.Duration
	for i := range conns {
		o := <-results
		if o.status != 200 {
			t.Errorf("a connection ended with status %d after %d answers at %v (-1: an error), want 200 with Connection: close", o.status, o.n, o.at)
		}
		if o.at >= window {
			t.Errorf("a connection was handed over %v after the drain line, at or after the stop signal (%v)", o.at, window)
		}
		if i == 0 || o.at < first {
			first = o.at
		}
		last = max(last, o.at)
	}
	if last-first < window/4 {
		t.Errorf("the %d connections ended between %v and %v: not spread over the window", conns, first, last)
	}
	if code, sig := w.waitExit(); code != 0 {
		t.Fatalf("exit %d (signal %v), want the app's own 0", code, sig)
	}
}
