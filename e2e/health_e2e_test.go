package e2e

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"golang.org/x/sys/unix"

	"github.com/clusterinit/clusterinit/internal/testkit"
)

// End-to-end tests of the health server: the real binary, real workers,
// real HTTP against CLUSTERINIT_HEALTH_ADDR and real signals.

// healthFleet starts clusterinit over Go helper workers with the health
// server on a free loopback port, and returns it with the server's base URL.
func healthFleet(t *testing.T, workers int, mode string, extra ...string) (*proc, string) {
	t.Helper()
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	env, args := helper(mode, extra...)
	p := start(t, false, fleetEnv(workers, append(env, "CLUSTERINIT_HEALTH_ADDR="+addr)...), args...)
	base := "http://" + addr
	waitHealthUp(t, base)
	return p, base
}

// waitHealthUp waits until the health server answers at all.
func waitHealthUp(t *testing.T, base string) {
	t.Helper()
	waitFor(t, 10*time.Second, "the health server at "+base, func() bool {
		code, _, err := fetch("GET", base+"/healthz")
		return err == nil && code == http.StatusOK
	})
}

// healthClient opens a new connection per request, so that one test's
// requests never depend on a connection the server may have closed.
var healthClient = &http.Client{
	Timeout:   3 * time.Second,
	Transport: &http.Transport{DisableKeepAlives: true, Proxy: nil},
}

// fetch makes one request and returns its status and body; unlike httpGet it
// does not fail the test, so that it can be polled.
func fetch(method, url string) (int, string, error) {
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		return 0, "", err
	}
	resp, err := healthClient.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body), err
}

// scrape GETs /metrics and parses it with Prometheus's own parser.
func scrape(base string) (map[string]*dto.MetricFamily, error) {
	code, body, err := fetch("GET", base+"/metrics")
	if err != nil {
		return nil, err
	}
	if code != http.StatusOK {
		return nil, fmt.Errorf("GET /metrics: %d %s", code, body)
	}
	return parseMetricsText(body)
}

// parseMetricsText parses a page with Prometheus's own parser, under the
// strict (legacy) name rules, which every scraper accepts.
func parseMetricsText(body string) (map[string]*dto.MetricFamily, error) {
	parser := expfmt.NewTextParser(model.LegacyValidation)
	return parser.TextToMetricFamilies(strings.NewReader(body))
}

// sample returns the value of the sample of family name whose labels are
// exactly labels (name, value pairs), and whether there is one.
func sample(fams map[string]*dto.MetricFamily, name string, labels ...string) (float64, bool) {
	f, ok := fams[name]
	if !ok {
		return 0, false
	}
	for _, m := range f.GetMetric() {
		if len(m.GetLabel())*2 != len(labels) {
			continue
		}
		match := true
		for i, l := range m.GetLabel() {
			// The parser sorts labels by name; every series here has one.
			if l.GetName() != labels[2*i] || l.GetValue() != labels[2*i+1] {
				match = false
			}
		}
		if !match {
			continue
		}
		switch f.GetType() {
		case dto.MetricType_COUNTER:
			return m.GetCounter().GetValue(), true
		case dto.MetricType_GAUGE:
			return m.GetGauge().GetValue(), true
		case dto.MetricType_UNTYPED:
			return m.GetUntyped().GetValue(), true
		}
	}
	return 0, false
}

// want is one expected sample.
type want struct {
	name   string
	labels []string
	value  float64
}

// mismatches lists the samples of fams that differ from ws.
func mismatches(fams map[string]*dto.MetricFamily, ws []want) []string {
	var out []string
	for _, w := range ws {
		got, ok := sample(fams, w.name, w.labels...)
		if !ok || got != w.value {
			out = append(out, fmt.Sprintf("%s%v = %v (present %v), want %v", w.name, w.labels, got, ok, w.value))
		}
	}
	return out
}

// waitMetrics polls /metrics until every sample of ws holds, and returns
// the last scrape.
func waitMetrics(t *testing.T, base string, timeout time.Duration, ws ...want) map[string]*dto.MetricFamily {
	t.Helper()
	var fams map[string]*dto.MetricFamily
	var last []string
	if !testkit.Poll(timeout, func() bool {
		var err error
		if fams, err = scrape(base); err != nil {
			last = []string{err.Error()}
		} else {
			last = mismatches(fams, ws)
		}
		return err == nil && len(last) == 0
	}) {
		t.Fatalf("/metrics did not reach the expected values within %v: %s", timeout, strings.Join(last, "; "))
	}
	return fams
}

func TestHealthEndpointsE2E(t *testing.T) {
	p, base := healthFleet(t, 2, "serve")
	p.waitLog("worker ready", 2, 10*time.Second)

	if code, body, err := fetch("GET", base+"/healthz"); err != nil || code != http.StatusOK {
		t.Errorf("GET /healthz = %d %q %v, want 200", code, body, err)
	}
	var ready string
	waitFor(t, 5*time.Second, "/readyz 200", func() bool {
		code, body, err := fetch("GET", base+"/readyz")
		ready = body
		return err == nil && code == http.StatusOK
	})
	if !strings.Contains(ready, "2 of 2") {
		t.Errorf("/readyz body %q does not say 2 of 2 workers are ready", ready)
	}

	code, body, err := fetch("GET", base+"/status")
	if err != nil || code != http.StatusOK {
		t.Fatalf("GET /status = %d %v", code, err)
	}
	var status struct {
		Config  map[string]string `json:"config"`
		Workers []struct {
			Slot  *int   `json:"slot"`
			Pid   int    `json:"pid"`
			State string `json:"state"`
		} `json:"workers"`
	}
	if err := json.Unmarshal([]byte(body), &status); err != nil {
		t.Fatalf("/status is not JSON: %v\n%s", err, body)
	}
	started := map[int]int{} // pid → slot, from the log
	for _, l := range p.logsWith("worker started") {
		started[num(l, "pid")] = num(l, "slot")
	}
	if len(status.Workers) != 2 {
		t.Errorf("/status has %d workers, want 2:\n%s", len(status.Workers), body)
	}
	slots := map[int]bool{}
	for _, w := range status.Workers {
		if w.Slot == nil {
			t.Errorf("worker without a slot in /status:\n%s", body)
			continue
		}
		slots[*w.Slot] = true
		if w.State != "ready" {
			t.Errorf("worker of slot %d in state %q, want ready", *w.Slot, w.State)
		}
		if s, ok := started[w.Pid]; !ok || s != *w.Slot || w.Pid <= 0 {
			t.Errorf("/status names pid %d in slot %d, the log started %v", w.Pid, *w.Slot, started)
		}
	}
	if !slots[0] || !slots[1] {
		t.Errorf("/status slots %v, want 0 and 1", slots)
	}
	if !strings.Contains(body, `"CLUSTERINIT_WORKERS": "2"`) && !strings.Contains(body, `"CLUSTERINIT_WORKERS":"2"`) ||
		status.Config["CLUSTERINIT_WORKERS"] != "2" {
		t.Errorf(`/status config lacks "CLUSTERINIT_WORKERS":"2": %v`, status.Config)
	}

	fams := waitMetrics(t, base, 5*time.Second,
		want{"clusterinit_workers", []string{"state", "ready"}, 2},
		want{"clusterinit_workers", []string{"state", "starting"}, 0},
		want{"clusterinit_workers", []string{"state", "draining"}, 0},
		want{"clusterinit_workers_desired", nil, 2},
		want{"clusterinit_worker_starts_total", nil, 2},
		want{"clusterinit_worker_exits_total", []string{"reason", "crash"}, 0},
	)
	if f, ok := fams["clusterinit_build_info"]; !ok || len(f.GetMetric()) != 1 || f.GetMetric()[0].GetGauge().GetValue() != 1 {
		t.Errorf("clusterinit_build_info missing or not 1: %v", f)
	} else if l := f.GetMetric()[0].GetLabel(); len(l) != 1 || l[0].GetName() != "version" || l[0].GetValue() == "" {
		t.Errorf("clusterinit_build_info has labels %v, want a version", l)
	}
	rss, ok := sample(fams, "process_resident_memory_bytes")
	if !ok || rss <= 0 || rss >= 64<<20 {
		t.Errorf("process_resident_memory_bytes = %v (present %v), want > 0 and < 64 MiB", rss, ok)
	}

	p.signal(syscall.SIGTERM)
	if code := p.wait(10 * time.Second); code != 0 {
		t.Errorf("exit code %d, want 0", code)
	}
}

func TestMetricsCountCrashesAndOrphans(t *testing.T) {
	t.Run("crashes", func(t *testing.T) {
		p, base := healthFleet(t, 2, "crashonce", "CITEST_DIR="+t.TempDir())
		p.waitLog("worker exited unexpectedly", 2, 10*time.Second)
		p.waitLog("worker ready", 4, 10*time.Second)
		waitMetrics(t, base, 5*time.Second,
			want{"clusterinit_worker_exits_total", []string{"reason", "crash"}, 2},
			want{"clusterinit_worker_exits_total", []string{"reason", "stopped"}, 0},
			want{"clusterinit_worker_exits_total", []string{"reason", "killed"}, 0},
			want{"clusterinit_worker_starts_total", nil, 4},
			want{"clusterinit_workers", []string{"state", "ready"}, 2},
		)
		p.signal(syscall.SIGTERM)
		if code := p.wait(10 * time.Second); code != 0 {
			t.Errorf("exit code %d, want 0", code)
		}
	})
	t.Run("orphans", func(t *testing.T) {
		p, base := healthFleet(t, 1, "daemonize", "CITEST_ORPHANS=5")
		p.waitLog("reaped orphan", 5, 10*time.Second)
		waitMetrics(t, base, 5*time.Second,
			want{"clusterinit_orphans_reaped_total", nil, 5},
			want{"clusterinit_worker_exits_total", []string{"reason", "crash"}, 0},
			want{"clusterinit_worker_starts_total", nil, 1},
		)
		p.signal(syscall.SIGTERM)
		if code := p.wait(10 * time.Second); code != 0 {
			t.Errorf("exit code %d, want 0", code)
		}
	})
}

func TestReadyzTurns503AtSIGTERMBeforeWorkersExit(t *testing.T) {
	p, base := healthFleet(t, 2, "serve", "CITEST_TERM_DELAY=2s")
	p.waitUp(2)
	waitFor(t, 5*time.Second, "/readyz 200", func() bool {
		code, _, err := fetch("GET", base+"/readyz")
		return err == nil && code == http.StatusOK
	})

	t0 := time.Now()
	p.signal(syscall.SIGTERM)
	var body string
	waitFor(t, 2*time.Second, "/readyz 503 after SIGTERM", func() bool {
		code, b, err := fetch("GET", base+"/readyz")
		body = b
		return err == nil && code == http.StatusServiceUnavailable
	})
	// Read after the answer: any exit logged before it is in the log now.
	if exited := p.exits(); len(exited) != 0 {
		t.Errorf("/readyz turned 503 only after a worker exited (%v after SIGTERM): %v", time.Since(t0), exited)
	}
	if !strings.Contains(body, "stopping") {
		t.Errorf("/readyz body %q does not say clusterinit is stopping", body)
	}
	// The process is still alive while it drains.
	if code, _, err := fetch("GET", base+"/healthz"); err != nil || code != http.StatusOK {
		t.Errorf("GET /healthz while draining = %d %v, want 200", code, err)
	}
	if code := p.wait(10 * time.Second); code != 0 {
		t.Errorf("exit code %d, want 0", code)
	}
	if n := len(p.exits()); n != 2 {
		t.Errorf("%d worker exits logged, want 2", n)
	}
}

func TestHealthCommandExitCodes(t *testing.T) {
	t.Run("ready fleet, reload, then stopped", func(t *testing.T) {
		p, base := healthFleet(t, 2, "serve")
		addr := strings.TrimPrefix(base, "http://")
		cli := testEnv("CLUSTERINIT_HEALTH_ADDR=" + addr)
		p.waitUp(2)
		waitFor(t, 5*time.Second, "/readyz 200", func() bool {
			code, _, err := fetch("GET", base+"/readyz")
			return err == nil && code == http.StatusOK
		})
		code, stdout, stderr := runCLI(t, cli, "health")
		if code != 0 || !strings.Contains(stdout, "2 of 2") {
			t.Errorf("clusterinit health against a ready fleet: exit %d, stdout %q, stderr %q; want 0 and the readiness line", code, stdout, stderr)
		}

		if n := len(p.logsWith("rolling reload started")); n != 0 {
			t.Fatalf("a reload started before it was asked for")
		}
		code, stdout, stderr = runCLI(t, cli, "reload")
		if code != 0 {
			t.Errorf("clusterinit reload: exit %d, stdout %q, stderr %q; want 0", code, stdout, stderr)
		}
		p.waitLog("rolling reload started", 1, 5*time.Second)
		p.waitLog("rolling reload done", 1, 60*time.Second)

		p.signal(syscall.SIGTERM)
		if code := p.wait(10 * time.Second); code != 0 {
			t.Errorf("exit code %d, want 0", code)
		}
		code, stdout, stderr = runCLI(t, cli, "health")
		if code != 1 || stderr == "" {
			t.Errorf("clusterinit health with nothing listening: exit %d, stdout %q, stderr %q; want 1 and an error", code, stdout, stderr)
		}
	})
	t.Run("fleet still starting", func(t *testing.T) {
		// READY=message, and the helper never sends ready.
		p, base := healthFleet(t, 1, "serve", "CLUSTERINIT_READY=message", "CLUSTERINIT_READY_TIMEOUT=60s")
		addr := strings.TrimPrefix(base, "http://")
		p.waitUp(1)
		if len(p.logsWith("worker ready")) != 0 {
			t.Fatalf("a worker that never sent ready was counted ready")
		}
		code, stdout, stderr := runCLI(t, testEnv("CLUSTERINIT_HEALTH_ADDR="+addr), "health")
		if code != 1 || !strings.Contains(stdout, "not ready") {
			t.Errorf("clusterinit health against a starting fleet: exit %d, stdout %q, stderr %q; want 1 and not ready", code, stdout, stderr)
		}
		p.signal(syscall.SIGTERM)
		if code := p.wait(10 * time.Second); code != 0 {
			t.Errorf("exit code %d, want 0", code)
		}
	})
}

// netnsPeer is a network namespace of the test's own, joined to the root
// namespace by a veth pair: the host side is hostIP, the namespace side
// peerIP.
type netnsPeer struct {
	name, hostIP, peerIP string
}

// newNetnsPeer creates the namespace and the pair, and removes both when the
// test ends.
func newNetnsPeer(t *testing.T) *netnsPeer {
	t.Helper()
	pid := os.Getpid()
	x := pid%250 + 1
	n := &netnsPeer{
		name:   fmt.Sprintf("citest-%d", pid),
		hostIP: fmt.Sprintf("10.250.%d.1", x),
		peerIP: fmt.Sprintf("10.250.%d.2", x),
	}
	host, peer := fmt.Sprintf("cih%d", pid), fmt.Sprintf("cin%d", pid)
	ip := func(args ...string) {
		t.Helper()
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	// Refuse to touch a subnet that something else on this machine uses.
	if out, err := exec.Command("ip", "-4", "-o", "addr", "show").CombinedOutput(); err != nil {
		t.Fatalf("ip addr show: %v\n%s", err, out)
	} else if strings.Contains(string(out), fmt.Sprintf(" 10.250.%d.", x)) {
		t.Fatalf("10.250.%d.0/30 is already in use on this machine:\n%s", x, out)
	}
	t.Cleanup(func() {
		// Deleting the namespace destroys the peer inside it, and with it
		// the pair; the explicit delete covers a namespace that was never
		// made.
		exec.Command("ip", "netns", "del", n.name).Run()
		exec.Command("ip", "link", "del", host).Run()
	})
	ip("netns", "add", n.name)
	ip("link", "add", host, "type", "veth", "peer", "name", peer)
	ip("link", "set", peer, "netns", n.name)
	ip("addr", "add", n.hostIP+"/30", "dev", host)
	ip("link", "set", host, "up")
	ip("netns", "exec", n.name, "ip", "addr", "add", n.peerIP+"/30", "dev", peer)
	ip("netns", "exec", n.name, "ip", "link", "set", peer, "up")
	ip("netns", "exec", n.name, "ip", "link", "set", "lo", "up")
	return n
}

// dial connects to addr from inside the namespace: a goroutine locked to its
// thread joins the namespace and makes the socket there (a socket belongs to
// the namespace it was created in). The thread is never unlocked, so it ends
// with the goroutine instead of going back to the runtime in the wrong
// namespace.
func (n *netnsPeer) dial(addr string) (net.Conn, error) {
	type result struct {
		c   net.Conn
		err error
	}
	ch := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		f, err := os.Open("/run/netns/" + n.name)
		if err != nil {
			ch <- result{nil, err}
			return
		}
		defer f.Close()
		if err := unix.Setns(int(f.Fd()), unix.CLONE_NEWNET); err != nil {
			ch <- result{nil, fmt.Errorf("join network namespace %s: %w", n.name, err)}
			return
		}
		c, err := net.DialTimeout("tcp4", addr, 5*time.Second)
		ch <- result{c, err}
	}()
	r := <-ch
	return r.c, r.err
}

// post sends POST url's path to addr from inside the namespace and returns
// the status and body.
func (n *netnsPeer) post(addr, path string) (int, string, error) {
	c, err := n.dial(addr)
	if err != nil {
		return 0, "", err
	}
	defer c.Close()
	if local := c.LocalAddr().(*net.TCPAddr).IP.String(); local != n.peerIP {
		return 0, "", fmt.Errorf("connection from %s, not from the namespace's %s", local, n.peerIP)
	}
	c.SetDeadline(time.Now().Add(10 * time.Second))
	req, err := http.NewRequest("POST", "http://"+addr+path, nil)
	if err != nil {
		return 0, "", err
	}
	req.Close = true
	if err := req.Write(c); err != nil {
		return 0, "", err
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body), err
}

func TestReloadRefusedFromNonLoopbackPeer(t *testing.T) {
	ns := newNetnsPeer(t)
	port := freePort(t)
	env, args := helper("serve")
	p := start(t, false, fleetEnv(2, append(env, fmt.Sprintf("CLUSTERINIT_HEALTH_ADDR=0.0.0.0:%d", port))...), args...)
	base := fmt.Sprintf("http://127.0.0.1:%d", port)
	waitHealthUp(t, base)
	p.waitUp(2)

	code, body, err := ns.post(fmt.Sprintf("%s:%d", ns.hostIP, port), "/reload")
	if err != nil {
		t.Fatalf("POST /reload from %s: %v", ns.peerIP, err)
	}
	if code != http.StatusForbidden {
		t.Errorf("POST /reload from %s = %d %q, want 403", ns.peerIP, code, body)
	}
	refused := p.waitLog("refused a reload request from a non-loopback peer", 1, 5*time.Second)
	if peer, _ := refused[0]["peer"].(string); !strings.HasPrefix(peer, ns.peerIP+":") {
		t.Errorf("refusal logged for peer %q, want %s", peer, ns.peerIP)
	}
	if n := len(p.logsWith("rolling reload started")); n != 0 {
		t.Errorf("a reload started after a refused request")
	}
	waitMetrics(t, base, 5*time.Second,
		want{"clusterinit_reloads_total", []string{"result", "success"}, 0},
		want{"clusterinit_reloads_total", []string{"result", "failure"}, 0},
	)

	code, body, err = fetch("POST", base+"/reload")
	if err != nil || code != http.StatusAccepted {
		t.Fatalf("POST /reload from loopback = %d %q %v, want 202", code, body, err)
	}
	p.waitLog("rolling reload started", 1, 5*time.Second)
	p.waitLog("rolling reload done", 1, 60*time.Second)
	waitMetrics(t, base, 5*time.Second, want{"clusterinit_reloads_total", []string{"result", "success"}, 1})
	if n := len(p.logsWith("rolling reload started")); n != 1 {
		t.Errorf("%d reloads started, want only the loopback one", n)
	}

	p.signal(syscall.SIGTERM)
	if code := p.wait(10 * time.Second); code != 0 {
		t.Errorf("exit code %d, want 0", code)
	}
}

// openFDs reads clusterinit's own process_open_fds.
func openFDs(base string) (float64, error) {
	fams, err := scrape(base)
	if err != nil {
		return 0, err
	}
	v, ok := sample(fams, "process_open_fds")
	if !ok {
		return 0, fmt.Errorf("no process_open_fds")
	}
	return v, nil
}

func TestSlowScraperDoesNotDelaySIGTERM(t *testing.T) {
	p, base := healthFleet(t, 2, "serve")
	addr := strings.TrimPrefix(base, "http://")
	p.waitUp(2)
	before, err := openFDs(base)
	if err != nil {
		t.Fatal(err)
	}

	var mu sync.Mutex
	var conns []net.Conn
	t.Cleanup(func() {
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})
	hold := func(c net.Conn) {
		mu.Lock()
		conns = append(conns, c)
		mu.Unlock()
	}

	// 50 scrapers that send half a request and hold.
	for i := 0; i < 50; i++ {
		c, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			t.Fatalf("connection %d: %v", i, err)
		}
		hold(c)
		if _, err := io.WriteString(c, "GET /metrics HTTP/1.1\r\nHost: "+addr+"\r\nUser-Agent: slow"); err != nil {
			t.Fatalf("connection %d: %v", i, err)
		}
	}
	// 10 that completed a keep-alive scrape and stay idle.
	for i := 0; i < 10; i++ {
		c, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			t.Fatalf("keep-alive connection %d: %v", i, err)
		}
		hold(c)
		c.SetDeadline(time.Now().Add(10 * time.Second))
		req, _ := http.NewRequest("GET", base+"/metrics", nil)
		if err := req.Write(c); err != nil {
			t.Fatalf("keep-alive connection %d: %v", i, err)
		}
		resp, err := http.ReadResponse(bufio.NewReader(c), req)
		if err != nil {
			t.Fatalf("keep-alive connection %d: %v", i, err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || resp.Close {
			t.Fatalf("keep-alive scrape %d: %d, close %v", i, resp.StatusCode, resp.Close)
		}
		c.SetDeadline(time.Time{})
	}
	// The server has accepted and holds all 60 (each is a descriptor of
	// clusterinit's), so the stop below really runs with them open.
	waitFor(t, 5*time.Second, "clusterinit holding the 60 connections", func() bool {
		n, err := openFDs(base)
		return err == nil && n >= before+60
	})

	t0 := time.Now()
	p.signal(syscall.SIGTERM)
	code := p.wait(5 * time.Second)
	if code != 0 {
		t.Errorf("exit code %d, want 0", code)
	}
	t.Logf("exited %v after SIGTERM with 60 connections held", time.Since(t0))
}
