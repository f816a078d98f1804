package e2e

import (
	"bufio"
	"encoding/json"
	"fmt"
	"math/rand"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/clusterinit/clusterinit/internal/testkit"
)

// TestChaosUnderLoad runs 4 Node workers under clusterinit as PID 1 with 8
// keep-alive clients sending requests back to back, while an injector, for
// CHAOS_SECONDS (60 by default), picks at random every 100–300 ms one of:
// SIGKILL a worker (alone or with its process group), SIGKILL a worker's
// child or an adopted orphan, SIGSTOP a worker for 2 s, or ask a worker
// (testdata/chaos/app.js) to fork a daemon and exit, close its IPC channel,
// start a child in a process group of its own, start a child in its group,
// fill its output pipe, or write garbage to its IPC socket. CHAOS_SEED
// replays the injector's choices (the timing of the fleet still varies).
//
// Afterwards clusterinit must be healthy with 4 ready workers, no zombie,
// its fd and goroutine counts back to their baseline, every worker exit
// attributed to the worker that was started, and no more failed requests
// than the connections the killed workers held when they died.
func TestChaosUnderLoad(t *testing.T) {
	needLong(t)
	secs := 60
	if s := os.Getenv("CHAOS_SECONDS"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			t.Fatalf("CHAOS_SECONDS=%q: want a whole number of seconds", s)
		}
		secs = n
	}
	seed := time.Now().UnixNano()
	if s := os.Getenv("CHAOS_SEED"); s != "" {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			t.Fatalf("CHAOS_SEED=%q: want an integer", s)
		}
		seed = n
	}
	t.Logf("chaos for %d s, seed %d (CHAOS_SEED=%d replays the injector's choices)", secs, seed, seed)

	port, hport := freePort(t), freePort(t)
	health := fmt.Sprintf("http://127.0.0.1:%d", hport)
	app := fmt.Sprintf("http://127.0.0.1:%d", port)
	env := testEnv(
		"CLUSTERINIT_WORKERS=4",
		fmt.Sprintf("CLUSTERINIT_LISTEN=:%d", port),
		fmt.Sprintf("PORT=%d", port),
		fmt.Sprintf("CLUSTERINIT_HEALTH_ADDR=127.0.0.1:%d", hport),
		"CLUSTERINIT_RESTART_DELAY=10ms",
		"CLUSTERINIT_MIN_UPTIME=100ms",
		"CLUSTERINIT_MAX_FAILED_STARTS=1000",
		"CLUSTERINIT_WORKER_LOG_PREFIX=true",
	)
	p := start(t, true, env, "--", "node", filepath.Join("testdata", "chaos", "app.js"))
	cpid := p.pid()
	p.waitLog("worker ready", 4, 30*time.Second)
	waitMetric(t, health, `clusterinit_workers{state="ready"}`, 4, 10*time.Second)

	// Baseline: the same figures twice in a row, each read during a scrape
	// on a fresh connection (so each includes exactly that connection).
	var base resources
	waitFor(t, 10*time.Second, "a steady baseline of fds and goroutines", func() bool {
		a, err := readResources(health)
		if err != nil {
			return false
		}
		b, err := readResources(health)
		if err != nil || a.fds != b.fds || a.goroutines != b.goroutines {
			return false
		}
		base = b
		return true
	})
	t.Logf("baseline: %d fds, %d goroutines, RSS %.1f MiB", base.fds, base.goroutines, mib(vmRSS(cpid)))

	c := &chaos{
		rng: rand.New(rand.NewSource(seed)), cpid: cpid, appPort: port, health: health, app: app,
		counts: map[string]int{}, killed: map[int]bool{}, daemonExited: map[int]bool{}, disconnected: map[int]bool{},
	}

	// The load generator stops by itself after a minute, so the load runs
	// in segments of at most 30 s, one after the other (never more than 8
	// connections at once: the bound below relies on it).
	var lr loadResult
	l := startLoad(t, app+"/", 8, true)
	l.waitRequests(200)
	chaosEnd := time.Now().Add(time.Duration(secs) * time.Second)
	injected := make(chan struct{})
	go func() {
		defer close(injected)
		c.run(chaosEnd)
	}()
	for {
		segEnd := time.Now().Add(30 * time.Second)
		if segEnd.After(chaosEnd) {
			segEnd = chaosEnd
		}
		select {
		case <-injected:
		case <-time.After(time.Until(segEnd)):
		}
		lr.add(l)
		if !time.Now().Before(chaosEnd) {
			break
		}
		l = startLoad(t, app+"/", 8, true)
	}
	<-injected
	c.holds.Wait() // the last SIGSTOPped worker has had its SIGCONT

	// Recovery.
	waitMetric(t, health, `clusterinit_workers{state="ready"}`, 4, 45*time.Second)
	if code, body := httpStatus(health + "/healthz"); code != 200 {
		t.Errorf("/healthz after the chaos: %d %s", code, body)
	}
	// Children the workers started live CHAOS_CHILD_MS (3 s), daemons 2 s
	// after their worker's exit: wait until clusterinit has no child but
	// its workers, then for any zombie to be reaped.
	waitFor(t, 10*time.Second, "the orphans to exit", func() bool {
		ws, err := c.workers()
		return err == nil && len(ws) == 4 && len(childrenOf(cpid)) == 4
	})
	var zombies []int
	if !testkit.Poll(5*time.Second, func() bool { zombies = zombiesOf(cpid); return len(zombies) == 0 }) {
		t.Errorf("zombies under clusterinit 5 s after the chaos: %v", zombies)
	}

	// Resources: each worker costs clusterinit the same fds and goroutines
	// as at the baseline, except that a live worker that closed its IPC
	// channel has one goroutine fewer (its channel's reader has returned;
	// the writer and the socket stay until the worker exits).
	var after resources
	var quiet int
	settled := testkit.Poll(10*time.Second, func() bool {
		ws, err1 := c.workers()
		r, err2 := readResources(health)
		if err1 != nil || err2 != nil {
			return false
		}
		quiet = 0
		for _, w := range ws {
			if c.disconnected[w.ns] {
				quiet++
			}
		}
		after = r
		return r.fds == base.fds && r.goroutines == base.goroutines-quiet
	})
	t.Logf("after: %d fds (baseline %d), %d goroutines (baseline %d, %d live workers without IPC), RSS %.1f MiB",
		after.fds, base.fds, after.goroutines, base.goroutines, quiet, mib(vmRSS(cpid)))
	if !settled {
		t.Errorf("clusterinit's fds/goroutines did not return to the baseline: %d/%d, want %d/%d",
			after.fds, after.goroutines, base.fds, base.goroutines-quiet)
	}

	// Requests: every failure must have been in flight on a worker that
	// died (SIGKILLed, or exited after forking its daemon). Each death can
	// fail at most the requests on the connections that worker held: the
	// injector counted them at the moment of death (budget), and there are
	// never more than 8.
	deaths := c.counts["kill worker"] + c.counts["kill worker group"] + c.counts["daemon and exit"]
	t.Logf("load: %d requests answered, %d failed; %d worker deaths holding %d connections in all (bound 8×%d = %d)",
		lr.ok, lr.failed, deaths, c.budget, deaths, 8*deaths)
	t.Logf("injected: %s", c.summary())
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("what the injector did:\n%s", strings.Join(c.journal, "\n"))
		}
	})
	if lr.failed > 8*deaths {
		t.Errorf("%d failed requests, more than 8 connections × %d worker deaths", lr.failed, deaths)
	}
	if lr.failed > c.budget+deaths {
		// One connection per death of slack: one the worker accepted
		// between the count and its death.
		t.Errorf("%d failed requests, more than the %d connections the dead workers held (+1 per death)", lr.failed, c.budget)
	}
	// The first failures of each segment, by kind: all must be dropped
	// connections (no error status, no timeout on a hung worker).
	kinds := map[string]int{}
	for _, e := range lr.errs {
		kind := "other"
		for _, k := range []string{"EOF", "connection reset", "broken pipe", "server closed idle connection"} {
			if strings.Contains(e, k) {
				kind = k
				break
			}
		}
		kinds[kind]++
		if kind == "other" {
			t.Errorf("a failure that is not a dropped connection: %s", e)
		}
	}
	t.Logf("failures sampled (the first 10 of each load segment), by kind: %v", kinds)
	// The fleet that is back serves: every answer, each on a new
	// connection, comes from one of the current workers.
	ws, err := c.workers()
	if err != nil {
		t.Fatal(err)
	}
	current := map[int]bool{}
	for _, w := range ws {
		current[w.ns] = true
	}
	served := map[int]int{}
	for i := 0; i < 40; i++ {
		var r struct {
			Pid int `json:"pid"`
		}
		if err := getJSON(app+"/", &r); err != nil {
			t.Errorf("request %d after the chaos: %v", i, err)
			continue
		}
		if !current[r.Pid] {
			t.Errorf("request %d after the chaos answered by pid %d, not a current worker %v", i, r.Pid, current)
		}
		served[r.Pid]++
	}
	t.Logf("after the chaos, 40 requests on new connections answered by workers %v", served)

	// Attribution, from clusterinit's own log and counters.
	m, err := relMetrics(health)
	if err != nil {
		t.Fatal(err)
	}
	counted := int(relSum(m, "clusterinit_worker_exits_total"))
	orphans := int(m["clusterinit_orphans_reaped_total"])
	t.Logf("clusterinit: %d worker starts, %d exits, %d orphans reaped, %d malformed and %d oversized IPC lines dropped",
		int(m["clusterinit_worker_starts_total"]), counted, orphans,
		len(p.logsWith("dropped malformed ipc message")), len(p.logsWith("dropped oversized ipc message")))
	if orphans < c.counts["daemon and exit"] {
		t.Errorf("%d orphans reaped, fewer than the %d daemons forked", orphans, c.counts["daemon and exit"])
	}
	if c.counts["ipc garbage"] > 0 && len(p.logsWith("dropped malformed ipc message")) == 0 {
		t.Errorf("IPC garbage was written but clusterinit logged no malformed line")
	}

	// The first MiB of every fill went through clusterinit to its stdout
	// while it ran, as one prefixed line at most 1 MiB long; the last 1000
	// bytes wait in clusterinit for a newline or the end of the pipe.
	out := p.stdout.String()
	if got, want := strings.Count(out, "f"), c.counts["fill pipe 1 MiB"]<<20; got < want {
		t.Errorf("%d bytes of the fills reached clusterinit's stdout, want at least %d", got, want)
	}
	for _, line := range strings.Split(out, "\n") {
		if len(line) > len("[worker 0] ")+(1<<20) {
			t.Errorf("a line of %d bytes on clusterinit's stdout, longer than its 1 MiB limit", len(line))
			break
		}
	}

	p.signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(5 * time.Second):
		// Every worker drains in milliseconds here: record any that
		// does not, before DRAIN_TIMEOUT kills it.
		for _, k := range childrenOf(cpid) {
			t.Errorf("still running 5 s after SIGTERM: %s", procDiagnosis(k, port))
		}
	}
	if code := p.wait(30 * time.Second); code != 0 {
		t.Errorf("exit code %d after the chaos, want 0", code)
	}
	// Unasked, a worker died of SIGKILL or exited 0 after forking its
	// daemon; at the end, each drained and exited 0.
	led := attributeExits(p, func(l map[string]any) string {
		st := l["status"]
		switch l["reason"] {
		case "crash":
			if st == "signal SIGKILL" || st == "exit code 0" {
				return ""
			}
		case "stopped":
			if st == "exit code 0" || st == "signal SIGTERM" {
				return ""
			}
		}
		return fmt.Sprintf("%v (%v): not a status the chaos explains", st, l["reason"])
	})
	reportLedger(t, led, counted+4) // the 4 stopped at the end exited after the counter was read

	for ns := range c.killed {
		e, ok := led.lastExit[ns]
		switch {
		case !ok:
			t.Errorf("SIGKILLed worker pid %d: no exit logged", ns)
		case led.reused[ns]:
			// Started twice: which incarnation was killed is ambiguous.
		case e["status"] != "signal SIGKILL" && !c.daemonExited[ns]:
			t.Errorf("SIGKILLed worker pid %d: exit logged as %v (%v)", ns, e["status"], e["reason"])
		}
	}
	for ns := range c.daemonExited {
		if e := led.lastExit[ns]; !led.reused[ns] && !c.killed[ns] && (e["status"] != "exit code 0" || e["reason"] != "crash") {
			t.Errorf("worker pid %d exited 0 after forking its daemon: logged as %v", ns, e)
		}
	}
}

// chaos is the fault injector.
type chaos struct {
	rng     *rand.Rand
	cpid    int // clusterinit's pid, as the test sees it
	appPort int
	health  string
	app     string
	holding atomic.Bool    // a worker is SIGSTOPped
	holds   sync.WaitGroup // the SIGSTOP hold under way

	began   time.Time
	jmu     sync.Mutex
	journal []string // what was done when, logged if the test fails

	mu           sync.Mutex
	counts       map[string]int
	budget       int          // connections held by workers at their deaths
	killed       map[int]bool // workers SIGKILLed (clusterinit's pids)
	daemonExited map[int]bool // workers that forked a daemon and exited
	disconnected map[int]bool // workers that closed their IPC channel
}

// chaosWorker is one worker under both pids.
type chaosWorker struct {
	ns, host, slot int
}

var chaosActions = []struct {
	name   string
	weight int
}{
	{"kill", 4}, {"kill child", 2}, {"stop", 1}, {"daemon", 2}, {"disconnect", 1},
	{"group", 2}, {"child", 2}, {"fill", 1}, {"ipcgarbage", 2},
}

// note adds a line to the journal.
func (c *chaos) note(format string, args ...any) {
	c.jmu.Lock()
	defer c.jmu.Unlock()
	c.journal = append(c.journal, fmt.Sprintf("%6.3fs ", time.Since(c.began).Seconds())+fmt.Sprintf(format, args...))
}

func (c *chaos) count(what string) {
	c.mu.Lock()
	c.counts[what]++
	c.mu.Unlock()
}

func (c *chaos) summary() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var keys []string
	for k := range c.counts {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for i, k := range keys {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "%s %d", k, c.counts[k])
	}
	return b.String()
}

// run injects faults until end.
func (c *chaos) run(end time.Time) {
	c.began = time.Now()
	total := 0
	for _, a := range chaosActions {
		total += a.weight
	}
	for time.Now().Before(end) {
		time.Sleep(time.Duration(100+c.rng.Intn(200)) * time.Millisecond)
		n := c.rng.Intn(total)
		var action string
		for _, a := range chaosActions {
			if n < a.weight {
				action = a.name
				break
			}
			n -= a.weight
		}
		// Drawn before the fleet is looked at, so that a seed replays
		// the same sequence of choices.
		pick, group := c.rng.Int(), c.rng.Intn(2) == 0
		c.inject(action, pick, group)
	}
}

func (c *chaos) inject(action string, pick int, group bool) {
	switch action {
	case "kill":
		ws, err := c.workers()
		if err != nil || len(ws) == 0 {
			c.count("kill: no worker")
			return
		}
		w := ws[pick%len(ws)]
		held := heldConnections(w.host, c.appPort)
		target, what := w.host, "kill worker"
		if group {
			target, what = -w.host, "kill worker group"
		}
		if syscall.Kill(target, syscall.SIGKILL) != nil {
			c.count("kill: already gone")
			return
		}
		c.note("%s: pid %d (host %d), %d connections", what, w.ns, w.host, held)
		c.mu.Lock()
		c.counts[what]++
		c.budget += held
		c.killed[w.ns] = true
		c.mu.Unlock()
	case "kill child":
		// A worker's child, or an orphan clusterinit adopted.
		ws, err := c.workers()
		if err != nil {
			return
		}
		isWorker := map[int]bool{}
		var kids []int
		for _, w := range ws {
			isWorker[w.host] = true
			kids = append(kids, childrenOf(w.host)...)
		}
		for _, k := range childrenOf(c.cpid) {
			if !isWorker[k] {
				kids = append(kids, k)
			}
		}
		if len(kids) == 0 {
			c.count("kill child: none")
			return
		}
		if k := kids[pick%len(kids)]; syscall.Kill(k, syscall.SIGKILL) == nil {
			c.count("kill child")
			c.note("kill child: pid %d (host %d)", nsPid(k), k)
		}
	case "stop":
		if !c.holding.CompareAndSwap(false, true) {
			c.count("stop: one already stopped")
			return
		}
		ws, err := c.workers()
		if err != nil || len(ws) == 0 {
			c.holding.Store(false)
			return
		}
		w := ws[pick%len(ws)]
		if syscall.Kill(w.host, syscall.SIGSTOP) != nil {
			c.holding.Store(false)
			return
		}
		c.count("sigstop 2s")
		c.note("SIGSTOP: pid %d (host %d)", w.ns, w.host)
		c.holds.Add(1)
		go func() {
			defer c.holds.Done()
			defer c.holding.Store(false)
			time.Sleep(2 * time.Second)
			c.note("SIGCONT: pid %d (host %d): %v", w.ns, w.host, syscall.Kill(w.host, syscall.SIGCONT))
		}()
	default:
		var r struct {
			Pid          int   `json:"pid"`
			Conns        int   `json:"conns"`
			Disconnected *bool `json:"disconnected"`
			Garbage      *bool `json:"garbage"`
		}
		t0 := time.Now()
		if err := getJSON(c.app+"/"+action, &r); err != nil {
			// Sent to a worker that was killed meanwhile.
			c.count(action + ": no answer")
			c.note("/%s: %v", action, err)
			return
		}
		c.note("/%s: answered by pid %d in %v", action, r.Pid, time.Since(t0).Round(time.Millisecond))
		c.mu.Lock()
		defer c.mu.Unlock()
		switch action {
		case "daemon":
			c.counts["daemon and exit"]++
			c.daemonExited[r.Pid] = true
			c.budget += max(r.Conns, 0)
		case "disconnect":
			if r.Disconnected != nil && *r.Disconnected {
				c.counts["close ipc"]++
				c.disconnected[r.Pid] = true
			} else {
				c.counts["close ipc: already closed"]++
			}
		case "ipcgarbage":
			if r.Garbage != nil && *r.Garbage {
				c.counts["ipc garbage"]++
			} else {
				c.counts["ipc garbage: no channel"]++
			}
		case "group":
			c.counts["child in own group"]++
		case "child":
			c.counts["child in group"]++
		case "fill":
			c.counts["fill pipe 1 MiB"]++
		}
	}
}

// workers lists clusterinit's workers (from /status) with their pids as the
// test sees them (clusterinit runs in its own PID namespace).
func (c *chaos) workers() ([]chaosWorker, error) {
	var st struct {
		Workers []struct {
			Slot int `json:"slot"`
			Pid  int `json:"pid"`
		} `json:"workers"`
	}
	if err := getJSON(c.health+"/status", &st); err != nil {
		return nil, err
	}
	host := map[int]int{}
	for _, k := range childrenOf(c.cpid) {
		host[nsPid(k)] = k
	}
	var ws []chaosWorker
	for _, w := range st.Workers {
		if h, ok := host[w.Pid]; ok {
			ws = append(ws, chaosWorker{ns: w.Pid, host: h, slot: w.Slot})
		}
	}
	return ws, nil
}

// loadResult adds up the load's segments.
type loadResult struct {
	ok, failed int
	errs       []string
	pids       map[int]int
}

func (r *loadResult) add(l *load) {
	ok, failed, errs, pids := l.result()
	r.ok += ok
	r.failed += failed
	r.errs = append(r.errs, errs...)
	if r.pids == nil {
		r.pids = map[int]int{}
	}
	for pid, n := range pids {
		r.pids[pid] += n
	}
}

// ---- shared with soak_test.go ----

// relClient opens a new connection per request, so that clusterinit's
// health server holds no idle connection (an fd and goroutines) between two
// readings.
var relClient = &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}

func getJSON(url string, v any) error {
	resp, err := relClient.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		return fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return json.NewDecoder(resp.Body).Decode(v)
}

func httpStatus(url string) (int, string) {
	resp, err := relClient.Get(url)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	var b strings.Builder
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		b.WriteString(sc.Text())
	}
	return resp.StatusCode, b.String()
}

// relMetrics reads clusterinit's /metrics as series → value, the series
// spelled as in the text format: clusterinit_workers{state="ready"}.
func relMetrics(health string) (map[string]float64, error) {
	resp, err := relClient.Get(health + "/metrics")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		return nil, fmt.Errorf("GET /metrics: %s", resp.Status)
	}
	m := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			return nil, fmt.Errorf("metrics line %q: %v", line, err)
		}
		m[line[:i]] = v
	}
	return m, sc.Err()
}

// relSum adds every series of one metric.
func relSum(m map[string]float64, name string) float64 {
	var sum float64
	for k, v := range m {
		if k == name || strings.HasPrefix(k, name+"{") {
			sum += v
		}
	}
	return sum
}

// waitMetric waits until a series has the value want.
func waitMetric(t *testing.T, health, series string, want float64, timeout time.Duration) {
	t.Helper()
	var got float64
	var err error
	if !testkit.Poll(timeout, func() bool {
		var m map[string]float64
		if m, err = relMetrics(health); err == nil {
			got = m[series]
		}
		return err == nil && got == want
	}) {
		t.Fatalf("%s is %v after %v, want %v (err %v)", series, got, timeout, want, err)
	}
}

// resources is what clusterinit reports of itself.
type resources struct {
	fds, goroutines int
	live            int // workers of any state, in the same snapshot
	procFds         int // fds in /proc/pid/fd, read between scrapes (soak only)
}

func readResources(health string) (resources, error) {
	m, err := relMetrics(health)
	if err != nil {
		return resources{}, err
	}
	fds, ok1 := m["process_open_fds"]
	g, ok2 := m["go_goroutines"]
	if !ok1 || !ok2 {
		return resources{}, fmt.Errorf("process_open_fds or go_goroutines missing from /metrics")
	}
	return resources{fds: int(fds), goroutines: int(g), live: int(relSum(m, "clusterinit_workers"))}, nil
}

// procStatus returns one field of /proc/pid/status, "" if unreadable.
func procStatus(pid int, field string) string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return ""
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

// vmRSS is pid's resident memory in bytes (VmRSS), 0 if unreadable.
func vmRSS(pid int) int64 {
	f := strings.Fields(procStatus(pid, "VmRSS")) // "1234 kB"
	if len(f) == 0 {
		return 0
	}
	kb, _ := strconv.ParseInt(f[0], 10, 64)
	return kb << 10
}

func mib(b int64) float64 { return float64(b) / (1 << 20) }

// fdCount counts pid's open file descriptors.
func fdCount(pid int) int {
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		return -1
	}
	return len(ents)
}

// nsPid is a process's pid in its own (innermost) PID namespace.
func nsPid(pid int) int {
	f := strings.Fields(procStatus(pid, "NSpid"))
	if len(f) == 0 {
		return 0
	}
	n, _ := strconv.Atoi(f[len(f)-1])
	return n
}

// childrenOf lists pid's children, forked by any of its threads.
func childrenOf(pid int) []int {
	var kids []int
	tasks, _ := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	for _, task := range tasks {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/children", pid, task.Name()))
		if err != nil {
			continue
		}
		for _, f := range strings.Fields(string(b)) {
			if k, err := strconv.Atoi(f); err == nil {
				kids = append(kids, k)
			}
		}
	}
	return kids
}

// heldConnections counts the established TCP connections to port that pid
// holds open: the requests that can be in flight on it.
func heldConnections(pid, port int) int {
	inodes := map[string]bool{}
	fds, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	for _, fd := range fds {
		link, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pid, fd.Name()))
		if ino, ok := strings.CutPrefix(link, "socket:["); ok && err == nil {
			inodes[strings.TrimSuffix(ino, "]")] = true
		}
	}
	n := 0
	for _, file := range []string{"tcp", "tcp6"} {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/net/%s", pid, file))
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(b), "\n")[1:] {
			// sl local rem st tx:rx tr:when retrnsmt uid timeout inode
			f := strings.Fields(line)
			if len(f) < 10 || f[3] != "01" || !inodes[f[9]] {
				continue
			}
			if i := strings.LastIndexByte(f[1], ':'); i >= 0 {
				if p, err := strconv.ParseInt(f[1][i+1:], 16, 32); err == nil && int(p) == port {
					n++
				}
			}
		}
	}
	return n
}

// procDiagnosis describes a worker that should have exited: its pid in its
// namespace, its signal state, its threads' states (and where each sleeps),
// the connections to port it holds, and its listening socket's flags.
func procDiagnosis(pid, port int) string {
	var b strings.Builder
	fmt.Fprintf(&b, "pid %d (host %d):", nsPid(pid), pid)
	for _, f := range []string{"State", "SigQ", "SigPnd", "ShdPnd", "SigBlk", "SigIgn", "SigCgt", "Threads"} {
		fmt.Fprintf(&b, " %s=%s", f, procStatus(pid, f))
	}
	tasks, _ := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	for _, task := range tasks {
		stat, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/stat", pid, task.Name()))
		wchan, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/wchan", pid, task.Name()))
		st := string(stat)
		if i := strings.LastIndexByte(st, ')'); i >= 0 && i+3 < len(st) {
			st = st[i+2 : i+3]
		}
		comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/comm", pid, task.Name()))
		fmt.Fprintf(&b, " [%s %s %s %s]", task.Name(), strings.TrimSpace(string(comm)), st, wchan)
	}
	fmt.Fprintf(&b, " connections=%d", heldConnections(pid, port))
	// fd 3 is the listening socket; O_NONBLOCK is 04000 in its flags.
	info, _ := os.ReadFile(fmt.Sprintf("/proc/%d/fdinfo/3", pid))
	for _, line := range strings.Split(string(info), "\n") {
		if v, ok := strings.CutPrefix(line, "flags:"); ok {
			fmt.Fprintf(&b, " listener-flags=%s", strings.TrimSpace(v))
		}
	}
	return b.String()
}

// ledger is what clusterinit's log says about worker lifetimes.
type ledger struct {
	starts, exits int
	reasons       map[string]int         // exits by reason
	statuses      map[string]int         // exits by status
	lastExit      map[int]map[string]any // pid → its last exit line
	reused        map[int]bool           // pids started more than once
	startedBefore map[int]bool           // pids started at some point
	live          map[int]int            // started and not exited: pid → slot
	liveStarts    map[int]map[string]any // the "worker started" line of each live worker
	drainedAfter  map[int]time.Duration  // live workers asked to drain: how long after their start
	problems      []string               // misattributions
}

// attributeExits reads the log in order: every exit ("worker exited…",
// "worker killed…") must be of a pid that was started and has not exited
// since, in the same slot. A pid may be reused by a later worker once the
// earlier one exited. check, if not nil, judges each exit line's status
// ("" when right); a worker that had been asked to drain has its line's
// "drained_after_start" set to the time from its start to that request.
func attributeExits(p *proc, check func(map[string]any) string) *ledger {
	l := &ledger{
		reasons: map[string]int{}, statuses: map[string]int{}, lastExit: map[int]map[string]any{},
		reused: map[int]bool{}, live: map[int]int{}, liveStarts: map[int]map[string]any{},
		startedBefore: map[int]bool{}, drainedAfter: map[int]time.Duration{},
	}
	for _, line := range p.logs() {
		msg, _ := line["msg"].(string)
		pid, slot := num(line, "pid"), num(line, "slot")
		switch {
		case msg == "worker started":
			l.starts++
			if s, ok := l.live[pid]; ok {
				l.problems = append(l.problems, fmt.Sprintf("pid %d started in slot %d while the worker of slot %d with that pid had not exited", pid, slot, s))
			}
			if l.startedBefore[pid] {
				l.reused[pid] = true
			}
			l.startedBefore[pid] = true
			delete(l.drainedAfter, pid)
			l.live[pid] = slot
			l.liveStarts[pid] = line
		case msg == "draining worker":
			// How long after its start: the check may want it.
			if st, ok := l.liveStarts[pid]; ok {
				l.drainedAfter[pid] = logTime(line).Sub(logTime(st))
			}
		case isExitLine(line):
			l.exits++
			s, ok := l.live[pid]
			switch {
			case !ok:
				l.problems = append(l.problems, fmt.Sprintf("exit of pid %d (slot %d, %v) with no worker of that pid running", pid, slot, line["status"]))
			case s != slot:
				l.problems = append(l.problems, fmt.Sprintf("exit of pid %d attributed to slot %d, started in slot %d", pid, slot, s))
			}
			if d, ok := l.drainedAfter[pid]; ok {
				line["drained_after_start"] = d
				delete(l.drainedAfter, pid)
			}
			if check != nil {
				if prob := check(line); prob != "" {
					l.problems = append(l.problems, fmt.Sprintf("exit of pid %d in slot %d: %s", pid, slot, prob))
				}
			}
			delete(l.live, pid)
			delete(l.liveStarts, pid)
			l.lastExit[pid] = line
			l.reasons[fmt.Sprint(line["reason"])]++
			l.statuses[fmt.Sprint(line["status"])]++
		}
	}
	return l
}

// logTime is a log line's time.
func logTime(l map[string]any) time.Time {
	s, _ := l["time"].(string)
	t, _ := time.Parse(time.RFC3339Nano, s)
	return t
}
