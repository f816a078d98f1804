package health

import (
	"errors"
	"net"
	"strings"
	"testing"

	"github.com/clusterinit/clusterinit/config"
)

// closedAddr is a loopback address where nothing listens.
func closedAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

func TestProbe(t *testing.T) {
	stopping := twoReady()
	stopping.Stopping, stopping.StopReason = true, "SIGTERM"
	ready := serve(t, Options{Fleet: newFleet(twoReady()), MinReady: 2})
	notReady := serve(t, Options{Fleet: newFleet(stopping)})
	for _, tc := range []struct {
		name           string
		addr           config.Addr
		code           int
		stdout, stderr string // substrings; "" wants nothing written
	}{
		{"ready", config.Addr{HostPort: ready.Addr()}, 0, "ready: 2 of 2 workers ready\n", ""},
		{"503", config.Addr{HostPort: notReady.Addr()}, 1, "not ready: stopping (SIGTERM)\n", ""},
		{"closed port", config.Addr{HostPort: closedAddr(t)}, 1, "", "connection refused"},
		{"off", config.Addr{Off: true}, 1, "", "health server is off (CLUSTERINIT_HEALTH_ADDR=off)\n"},
		{"port 0", config.Addr{HostPort: "127.0.0.1:0"}, 1, "", "port 0"},
		// A wildcard host is probed on loopback.
		{"empty host", config.Addr{HostPort: ":" + port(t, ready.Addr())}, 0, "ready: 2 of 2 workers ready\n", ""},
		{"0.0.0.0", config.Addr{HostPort: "0.0.0.0:" + port(t, ready.Addr())}, 0, "ready: 2 of 2 workers ready\n", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var stdout, stderr strings.Builder
			code := Probe(tc.addr, &stdout, &stderr)
			check(t, code, stdout.String(), stderr.String(), tc.code, tc.stdout, tc.stderr)
		})
	}
}

func TestRequestReload(t *testing.T) {
	ok := newFleet(twoReady())
	refused := newFleet(twoReady())
	refused.reloadErr = errors.New("clusterinit is stopping")
	okSrv := serve(t, Options{Fleet: ok})
	refusedSrv := serve(t, Options{Fleet: refused})
	for _, tc := range []struct {
		name           string
		addr           config.Addr
		code           int
		stdout, stderr string
	}{
		{"accepted", config.Addr{HostPort: okSrv.Addr()}, 0, "reload started\n", ""},
		{"503", config.Addr{HostPort: refusedSrv.Addr()}, 1, "reload not started: clusterinit is stopping\n", ""},
		{"closed port", config.Addr{HostPort: closedAddr(t)}, 1, "", "connection refused"},
		{"off", config.Addr{Off: true}, 1, "", "health server is off (CLUSTERINIT_HEALTH_ADDR=off)\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var stdout, stderr strings.Builder
			code := RequestReload(tc.addr, &stdout, &stderr)
			check(t, code, stdout.String(), stderr.String(), tc.code, tc.stdout, tc.stderr)
		})
	}
	if n := ok.reloads.Load(); n != 1 {
		t.Errorf("Reload called %d times, want 1", n)
	}
}

// Something other than the health server on the port gives exit 1 and says
// so, rather than printing whatever page it sent.
func TestProbeUnexpectedAnswer(t *testing.T) {
	s := serve(t, Options{Fleet: newFleet(twoReady())})
	var stdout, stderr strings.Builder
	// /reload answers GET with 405, like a foreign server would.
	code := ask(config.Addr{HostPort: s.Addr()}, "GET", "/reload", probeTimeout, "test", &stdout, &stderr, 200)
	check(t, code, stdout.String(), stderr.String(), 1, "unexpected answer from http://"+s.Addr()+"/reload: 405 Method Not Allowed", "")
}

func check(t *testing.T, code int, stdout, stderr string, wantCode int, wantStdout, wantStderr string) {
	t.Helper()
	if code != wantCode {
		t.Errorf("exit %d, want %d (stdout %q, stderr %q)", code, wantCode, stdout, stderr)
	}
	for _, c := range []struct{ name, got, want string }{{"stdout", stdout, wantStdout}, {"stderr", stderr, wantStderr}} {
		switch {
		case c.want == "" && c.got != "":
			t.Errorf("%s = %q, want nothing", c.name, c.got)
		case !strings.Contains(c.got, c.want):
			t.Errorf("%s = %q, want %q in it", c.name, c.got, c.want)
		case strings.Count(c.got, "\n") > 1:
			t.Errorf("%s = %q, want one line", c.name, c.got)
		}
	}
}

func port(t *testing.T, hostPort string) string {
	t.Helper()
	_, p, err := net.SplitHostPort(hostPort)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestDialAddr(t *testing.T) {
	for in, want := range map[string]string{
		":9558":            "127.0.0.1:9558",
		"0.0.0.0:9558":     "127.0.0.1:9558",
		"[::]:9558":        "[::1]:9558",
		"127.0.0.1:9558":   "127.0.0.1:9558",
		"[::1]:9558":       "[::1]:9558",
		"10.1.2.3:80":      "10.1.2.3:80",
		"localhost:9558":   "localhost:9558",
		"[fe80::1%lo]:123": "[fe80::1%lo]:123",
	} {
		got, err := dialAddr(in)
		if err != nil || got != want {
			t.Errorf("dialAddr(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, in := range []string{"127.0.0.1:0", "nonsense", ""} {
		if got, err := dialAddr(in); err == nil {
			t.Errorf("dialAddr(%q) = %q, want an error", in, got)
		}
	}
}

func TestFirstLine(t *testing.T) {
	for in, want := range map[string]string{
		"ready: 2 of 2 workers ready\n": "ready: 2 of 2 workers ready",
		"a\nb\n":                        "a",
		"\x1b[31mred\x1b[0m\r\n":        "[31mred[0m",
		"":                              "",
		"bad \xff byte":                 "bad \uFFFD byte",
	} {
		if got := firstLine([]byte(in)); got != want {
			t.Errorf("firstLine(%q) = %q, want %q", in, got, want)
		}
	}
}
