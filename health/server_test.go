package health

import (
	"encoding/json"
	"errors"
	"io"
	"maps"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/clusterinit/clusterinit/limits"
	"github.com/clusterinit/clusterinit/supervisor"
)

// fakeFleet stands in for the supervisor.
type fakeFleet struct {
	snap      atomic.Pointer[supervisor.Snapshot]
	reloads   atomic.Int32
	reloadErr error
	// block, when set, makes Reload wait until it is closed, like a loop
	// that does not answer.
	block chan struct{}
	// scrape, when set, is what AppMetrics returns.
	scrape *supervisor.Scrape
	// aliveErr is what Alive returns: a loop that does not answer.
	aliveErr error
}

func (f *fakeFleet) Alive(time.Duration) error { return f.aliveErr }

func (f *fakeFleet) Snapshot() *supervisor.Snapshot { return f.snap.Load() }

func (f *fakeFleet) AppMetrics() (*supervisor.Scrape, error) {
	if f.scrape == nil {
		return nil, errors.New("no scrape")
	}
	return f.scrape, nil
}

func (f *fakeFleet) Reload() error {
	f.reloads.Add(1)
	if f.block != nil {
		<-f.block
	}
	return f.reloadErr
}

func newFleet(snap *supervisor.Snapshot) *fakeFleet {
	f := &fakeFleet{}
	f.snap.Store(snap)
	return f
}

var t0 = time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)

// twoReady is a healthy two-slot fleet in the middle of a reload: slot 1
// has its old worker (ready) and its replacement (starting).
func twoReady() *supervisor.Snapshot {
	return &supervisor.Snapshot{
		Time:      t0.Add(time.Minute),
		Desired:   2,
		Ready:     2,
		Listeners: []string{"[::]:3000"},
		Workers: []supervisor.WorkerStatus{
			{Slot: 1, Pid: 101, State: "ready", StartedAt: t0, Restarts: 1, RSSBytes: 100 << 20, CPURatio: 0.5, CPUSeconds: 12.5, EventLoopDelaySec: 0.002},
			{Slot: 0, Pid: 100, State: "ready", StartedAt: t0, RSSBytes: 90 << 20, CPURatio: 0.25, CPUSeconds: 7, EventLoopDelaySec: 0.001},
			{Slot: 1, Pid: 205, State: "starting", StartedAt: t0.Add(30 * time.Second), RSSBytes: 40 << 20, CPUSeconds: 0.75, EventLoopDelaySec: 0.004},
		},
		Starts:   4,
		Exits:    map[supervisor.ExitReason]uint64{supervisor.ExitCrash: 1},
		Recycles: map[supervisor.RecycleReason]uint64{supervisor.RecycleRSS: 2, supervisor.RecycleReload: 1},
		Reloads:  map[supervisor.ReloadResult]uint64{supervisor.ReloadSuccess: 3},
		Orphans:  5,
		Limits: limits.Limits{CPU: 1.5, CPUSource: "ecs-metadata", MemoryBytes: 1 << 30,
			MemorySource: "cgroup v1 /sys/fs/cgroup/memory/memory.stat hierarchical_memory_limit", Affinity: 2},
	}
}

func serve(t *testing.T, o Options) *Server {
	t.Helper()
	if o.Addr == "" {
		o.Addr = "127.0.0.1:0"
	}
	s, err := Serve(o)
	if err != nil {
		t.Fatalf("Serve: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

type answer struct {
	code   int
	body   string
	header http.Header
}

func do(t *testing.T, method, url string) answer {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: read body: %v", method, url, err)
	}
	return answer{resp.StatusCode, string(body), resp.Header}
}

func TestHealthz(t *testing.T) {
	f := newFleet(twoReady())
	s := serve(t, Options{Fleet: f})
	a := do(t, "GET", "http://"+s.Addr()+"/healthz")
	if a.code != 200 || a.body != "ok\n" {
		t.Errorf("GET /healthz = %d %q, want 200 ok", a.code, a.body)
	}
	if got := a.header.Get("Cache-Control"); got != "no-store" {
		t.Errorf("Cache-Control = %q, want no-store", got)
	}
	if a := do(t, "HEAD", "http://"+s.Addr()+"/healthz"); a.code != 200 {
		t.Errorf("HEAD /healthz = %d, want 200", a.code)
	}

	// A loop that does not answer: the snapshot still looks fine.
	f.aliveErr = errors.New("the supervisor loop did not answer within 2s")
	if a := do(t, "GET", "http://"+s.Addr()+"/healthz"); a.code != 503 || a.body != f.aliveErr.Error()+"\n" {
		t.Errorf("GET /healthz with a stuck loop = %d %q, want 503 and the reason", a.code, a.body)
	}
	f.aliveErr = nil

	f.snap.Store(nil)
	if a := do(t, "GET", "http://"+s.Addr()+"/healthz"); a.code != 503 {
		t.Errorf("GET /healthz before the first snapshot = %d, want 503", a.code)
	}
}

func TestReadyz(t *testing.T) {
	stopping := twoReady()
	stopping.Stopping, stopping.StopReason = true, "SIGTERM"
	oneReady := twoReady()
	oneReady.Ready = 1
	for _, tc := range []struct {
		name     string
		snap     *supervisor.Snapshot
		minReady int
		code     int
		body     string
	}{
		{"all ready", twoReady(), 1, 200, "ready: 2 of 2 workers ready\n"},
		{"exactly min", twoReady(), 2, 200, "ready: 2 of 2 workers ready\n"},
		{"below min", oneReady, 2, 503, "not ready: 1 of 2 workers ready, need 2\n"},
		{"stopping", stopping, 1, 503, "not ready: stopping (SIGTERM)\n"},
		{"no snapshot", nil, 1, 503, "not ready: the supervisor has not started\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := serve(t, Options{Fleet: newFleet(tc.snap), MinReady: tc.minReady})
			a := do(t, "GET", "http://"+s.Addr()+"/readyz")
			if a.code != tc.code || a.body != tc.body {
				t.Errorf("GET /readyz = %d %q, want %d %q", a.code, a.body, tc.code, tc.body)
			}
		})
	}
}

func TestStatus(t *testing.T) {
	type cfg struct {
		Workers string `json:"workers"`
		Listen  string `json:"listen"`
	}
	snap := twoReady()
	f := newFleet(snap)
	s := serve(t, Options{Fleet: f, Version: "1.2.3", MinReady: 1, Config: cfg{"auto", ":3000"}})
	a := do(t, "GET", "http://"+s.Addr()+"/status")
	if a.code != 200 {
		t.Fatalf("GET /status = %d %q", a.code, a.body)
	}
	if ct := a.header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type = %q", ct)
	}
	var doc struct {
		Version   string                    `json:"version"`
		Stopping  bool                      `json:"stopping"`
		Desired   int                       `json:"desired"`
		Ready     int                       `json:"ready"`
		MinReady  int                       `json:"min_ready"`
		Listeners []string                  `json:"listeners"`
		Limits    map[string]any            `json:"limits"`
		Config    cfg                       `json:"config"`
		Workers   []supervisor.WorkerStatus `json:"workers"`
		Counters  struct {
			Starts        uint64            `json:"starts"`
			Exits         map[string]uint64 `json:"exits"`
			Recycles      map[string]uint64 `json:"recycles"`
			Reloads       map[string]uint64 `json:"reloads"`
			OrphansReaped uint64            `json:"orphans_reaped"`
		} `json:"counters"`
	}
	var raw map[string]json.RawMessage
	if err := json.Unmarshal([]byte(a.body), &raw); err != nil {
		t.Fatalf("decode /status: %v\n%s", err, a.body)
	}
	for _, k := range []string{"version", "stopping", "desired", "ready", "listeners", "config", "workers", "counters"} {
		if _, ok := raw[k]; !ok {
			t.Errorf("/status has no %q", k)
		}
	}
	if err := json.Unmarshal([]byte(a.body), &doc); err != nil {
		t.Fatalf("decode /status: %v", err)
	}
	if l := doc.Limits; l["cpu"] != 1.5 || l["cpu_source"] != "ecs-metadata" || l["memory_bytes"] != float64(1<<30) ||
		l["memory_source"] != snap.Limits.MemorySource || l["affinity"] != 2.0 || l["cpu_note"] != nil {
		t.Errorf("/status limits = %v, want those of %+v", l, snap.Limits)
	}
	if doc.Version != "1.2.3" || doc.Stopping || doc.Desired != 2 || doc.Ready != 2 || doc.MinReady != 1 {
		t.Errorf("/status head = %+v", doc)
	}
	if len(doc.Listeners) != 1 || doc.Listeners[0] != "[::]:3000" {
		t.Errorf("listeners = %q", doc.Listeners)
	}
	if doc.Config != (cfg{"auto", ":3000"}) {
		t.Errorf("config = %+v", doc.Config)
	}
	var pids []int
	for _, w := range doc.Workers {
		pids = append(pids, w.Pid)
	}
	if want := []int{100, 101, 205}; !slices.Equal(pids, want) {
		t.Errorf("workers in order %v, want %v (slot, then age)", pids, want)
	}
	if w := doc.Workers[1]; w.Slot != 1 || w.State != "ready" || !w.StartedAt.Equal(t0) || w.Restarts != 1 ||
		w.RSSBytes != 100<<20 || w.CPURatio != 0.5 || w.EventLoopDelaySec != 0.002 {
		t.Errorf("worker 101 = %+v", w)
	}
	c := doc.Counters
	if c.Starts != 4 || c.OrphansReaped != 5 {
		t.Errorf("counters = %+v", c)
	}
	wantExits := map[string]uint64{"crash": 1, "oom": 0, "stopped": 0, "killed": 0}
	wantRecycles := map[string]uint64{"rss": 2, "cpu": 0, "age": 0, "requests": 0, "hang": 0, "reload": 1, "scale": 0}
	wantReloads := map[string]uint64{"success": 3, "failure": 0}
	if !maps.Equal(c.Exits, wantExits) || !maps.Equal(c.Recycles, wantRecycles) || !maps.Equal(c.Reloads, wantReloads) {
		t.Errorf("counters = %+v", c)
	}

	// The snapshot is shared with every other reader: rendering must not
	// have reordered or filled it.
	if snap.Workers[0].Pid != 101 || len(snap.Exits) != 1 {
		t.Errorf("rendering /status changed the snapshot: %+v", snap)
	}
}

func TestStatusEmptyFleet(t *testing.T) {
	s := serve(t, Options{Fleet: newFleet(&supervisor.Snapshot{})})
	a := do(t, "GET", "http://"+s.Addr()+"/status")
	if a.code != 200 {
		t.Fatalf("GET /status = %d", a.code)
	}
	// No limit found: zeros, and the note saying what to set.
	for _, want := range []string{`"listeners": []`, `"workers": []`, `"config": null`, `"cpu": 0`, `"memory_bytes": 0`, `"cpu_note": "no CPU limit visible`} {
		if !strings.Contains(a.body, want) {
			t.Errorf("/status of an empty fleet lacks %s:\n%s", want, a.body)
		}
	}
	s.Close()

	f := newFleet(nil)
	s = serve(t, Options{Fleet: f})
	if a := do(t, "GET", "http://"+s.Addr()+"/status"); a.code != 503 {
		t.Errorf("GET /status before the first snapshot = %d, want 503", a.code)
	}
}

func TestServeBadConfig(t *testing.T) {
	_, err := Serve(Options{Addr: "127.0.0.1:0", Fleet: newFleet(nil), Config: func() {}})
	if err == nil {
		t.Fatal("Serve with a config that JSON cannot encode: no error")
	}
	if _, err := Serve(Options{Addr: "127.0.0.1:0"}); err == nil {
		t.Fatal("Serve without a fleet: no error")
	}
}

func TestServeAddressInUse(t *testing.T) {
	s := serve(t, Options{Fleet: newFleet(twoReady())})
	_, err := Serve(Options{Addr: s.Addr(), Fleet: newFleet(twoReady())})
	if err == nil || !strings.Contains(err.Error(), "address already in use") {
		t.Fatalf("Serve on a busy port: err = %v, want address already in use", err)
	}
}

func TestUnknownPathsAndMethods(t *testing.T) {
	s := serve(t, Options{Fleet: newFleet(twoReady())})
	base := "http://" + s.Addr()
	for _, path := range []string{"/", "/nope", "/healthz/", "/metrics/x", "/status.json"} {
		if a := do(t, "GET", base+path); a.code != 404 {
			t.Errorf("GET %s = %d, want 404", path, a.code)
		}
	}
	for _, tc := range []struct{ method, path string }{
		{"GET", "/reload"}, {"PUT", "/reload"}, {"POST", "/healthz"}, {"DELETE", "/metrics"}, {"POST", "/status"},
	} {
		if a := do(t, tc.method, base+tc.path); a.code != 405 {
			t.Errorf("%s %s = %d, want 405", tc.method, tc.path, a.code)
		}
	}
}

func TestReload(t *testing.T) {
	f := newFleet(twoReady())
	s := serve(t, Options{Fleet: f})
	a := do(t, "POST", "http://"+s.Addr()+"/reload")
	if a.code != 202 || a.body != "reload started\n" {
		t.Errorf("POST /reload = %d %q, want 202", a.code, a.body)
	}
	if n := f.reloads.Load(); n != 1 {
		t.Errorf("Reload called %d times, want 1", n)
	}
	if a := do(t, "GET", "http://"+s.Addr()+"/reload"); a.code != 405 {
		t.Errorf("GET /reload = %d, want 405", a.code)
	}
	if n := f.reloads.Load(); n != 1 {
		t.Errorf("after GET /reload, Reload called %d times, want 1", n)
	}

	f.reloadErr = errors.New("clusterinit is stopping")
	s2 := serve(t, Options{Fleet: f})
	a = do(t, "POST", "http://"+s2.Addr()+"/reload")
	if a.code != 503 || a.body != "reload not started: clusterinit is stopping\n" {
		t.Errorf("POST /reload while refused = %d %q, want 503 with the error", a.code, a.body)
	}
}

func TestReloadFromElsewhereForbidden(t *testing.T) {
	f := newFleet(twoReady())
	s := serve(t, Options{Fleet: f})
	for _, peer := range []string{"10.0.0.7:40000", "[2001:db8::1]:40000", "192.0.2.1:1"} {
		rec := httptest.NewRecorder()
		req := httptest.NewRequest("POST", "/reload", nil)
		req.RemoteAddr = peer
		// A header claiming loopback must change nothing.
		req.Header.Set("X-Forwarded-For", "127.0.0.1")
		s.http.Handler.ServeHTTP(rec, req)
		if rec.Code != 403 {
			t.Errorf("POST /reload from %s = %d, want 403", peer, rec.Code)
		}
	}
	if n := f.reloads.Load(); n != 0 {
		t.Errorf("Reload called %d times from non-loopback peers", n)
	}
}

func TestFromLoopback(t *testing.T) {
	for remote, want := range map[string]bool{
		"127.0.0.1:5000":        true,
		"127.9.9.9:5000":        true,
		"[::1]:5000":            true,
		"[::ffff:127.0.0.1]:80": true,
		"10.0.0.1:5000":         false,
		"[fe80::1%eth0]:80":     false,
		"[::]:80":               false,
		"localhost:80":          false, // RemoteAddr is always numeric; a name is not trusted
		"":                      false,
		"garbage":               false,
	} {
		if got := fromLoopback(remote); got != want {
			t.Errorf("fromLoopback(%q) = %v, want %v", remote, got, want)
		}
	}
}

// A loop that never answers must cost a bounded wait and one goroutine, not
// a hung request per call.
func TestReloadBounded(t *testing.T) {
	f := newFleet(twoReady())
	f.block = make(chan struct{})
	s := serve(t, Options{Fleet: f, reloadWait: 100 * time.Millisecond})
	start := time.Now()
	a := do(t, "POST", "http://"+s.Addr()+"/reload")
	if a.code != 503 || !strings.Contains(a.body, "did not answer within 100ms") {
		t.Errorf("POST /reload to a stuck loop = %d %q, want 503", a.code, a.body)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("POST /reload to a stuck loop took %v", d)
	}
	// The first call is still blocked inside Reload: a second request is
	// refused at once instead of starting another.
	a = do(t, "POST", "http://"+s.Addr()+"/reload")
	if a.code != 503 || !strings.Contains(a.body, "still waiting") {
		t.Errorf("second POST /reload = %d %q, want 503 still waiting", a.code, a.body)
	}
	if n := f.reloads.Load(); n != 1 {
		t.Errorf("Reload called %d times, want 1", n)
	}
	// Once the loop answers, requests go through again.
	close(f.block)
	deadline := time.Now().Add(2 * time.Second)
	for {
		a = do(t, "POST", "http://"+s.Addr()+"/reload")
		if a.code == 202 || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if a.code != 202 {
		t.Errorf("POST /reload after the loop recovered = %d %q", a.code, a.body)
	}
}

// Idle keep-alive connections, connections that never send a byte and
// half-sent requests must all be cut by Close, which returns at once.
func TestCloseWithIdleConnections(t *testing.T) {
	s := serve(t, Options{Fleet: newFleet(twoReady())})
	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for i := range 50 {
		c, err := net.Dial("tcp", s.Addr())
		if err != nil {
			t.Fatalf("dial %d: %v", i, err)
		}
		conns = append(conns, c)
		switch i % 3 {
		case 0: // one full request, then idle on keep-alive
			if _, err := io.WriteString(c, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
				t.Fatal(err)
			}
			c.SetReadDeadline(time.Now().Add(5 * time.Second))
			buf := make([]byte, 4096)
			n, err := c.Read(buf)
			if err != nil || !strings.Contains(string(buf[:n]), "200 OK") {
				t.Fatalf("keep-alive request %d: %q %v", i, buf[:n], err)
			}
		case 1: // half a request
			io.WriteString(c, "GET /metrics HTTP/1.1\r\nHost: x\r\n")
		case 2: // nothing at all
		}
	}
	start := time.Now()
	if err := s.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("Close took %v with 50 open connections", d)
	}
	// Every connection is closed from the server's side.
	var wg sync.WaitGroup
	for i, c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.SetReadDeadline(time.Now().Add(3 * time.Second))
			_, err := io.Copy(io.Discard, c)
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				t.Errorf("connection %d still open after Close", i)
			}
		}()
	}
	wg.Wait()
	if _, err := net.DialTimeout("tcp", s.Addr(), time.Second); err == nil {
		t.Error("the listener still accepts after Close")
	}
}

func TestConnectionCap(t *testing.T) {
	s := serve(t, Options{Fleet: newFleet(twoReady()), maxConns: 3})
	var held []net.Conn
	defer func() {
		for _, c := range held {
			c.Close()
		}
	}()
	for range 3 {
		c, err := net.Dial("tcp", s.Addr())
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, c)
		// A full request makes sure the server has accepted it.
		io.WriteString(c, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := c.Read(make([]byte, 512)); err != nil {
			t.Fatal(err)
		}
	}
	// The fourth is closed at once rather than queued.
	c, err := net.Dial("tcp", s.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	io.WriteString(c, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
	c.SetReadDeadline(time.Now().Add(3 * time.Second))
	if n, err := c.Read(make([]byte, 512)); err == nil || isTimeout(err) {
		t.Errorf("connection over the cap: read %d bytes, err %v; want it closed", n, err)
	}
	// A freed slot is reused.
	held[0].Close()
	deadline := time.Now().Add(3 * time.Second)
	for {
		client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
		resp, err := client.Get("http://" + s.Addr() + "/healthz")
		if err == nil {
			resp.Body.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no connection accepted after one was freed: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
