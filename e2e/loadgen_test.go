package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"
)

// load is a bounded HTTP load generator for tests: conns clients, each on
// its own connection, sending POSTs back to back. POST, because Go's client
// silently retries a failed idempotent request on a reused connection, which
// would hide exactly the failures these tests count.
type load struct {
	t    *testing.T
	stop chan struct{}
	wg   sync.WaitGroup

	mu        sync.Mutex
	ok        int
	failed    int
	errs      []string
	pids      map[int]int // pid → responses
	latencies []time.Duration
	marks     []int        // indexes into latencies where phases change
	closes    []closeEvent // responses that said Connection: close

	body postBody
}

// closeEvent is a response that ended its keep-alive connection.
type closeEvent struct {
	pid int
	at  time.Time
}

// postBody is what each POST carries.
type postBody struct{ contentType, data string }

var (
	// textBody is the default.
	textBody = postBody{"text/plain", "x"}
	// jsonBody passes every framework's body parsing and CSRF checks
	// (SvelteKit refuses text/plain POSTs without an Origin header).
	jsonBody = postBody{"application/json", "{}"}
)

// reply is what testdata/apps/http.js answers.
type reply struct {
	Worker string `json:"worker"`
	PID    int    `json:"pid"`
}

// startLoad starts conns clients against url, with keep-alive connections or
// a new connection per request. It stops by itself after five minutes at
// most (beyond the longest wait for a reload), or when the test ends.
func startLoad(t *testing.T, url string, conns int, keepAlive bool) *load {
	return startLoadBody(t, url, conns, keepAlive, textBody)
}

// startLoadBody is startLoad with POSTs carrying body.
func startLoadBody(t *testing.T, url string, conns int, keepAlive bool, body postBody) *load {
	l := &load{t: t, stop: make(chan struct{}), pids: map[int]int{}, body: body}
	deadline := time.Now().Add(5 * time.Minute)
	for i := 0; i < conns; i++ {
		tr := &http.Transport{
			DisableKeepAlives: !keepAlive,
			MaxConnsPerHost:   1,
			DialContext:       (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
		}
		client := &http.Client{Transport: tr, Timeout: 10 * time.Second}
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			defer tr.CloseIdleConnections()
			for time.Now().Before(deadline) {
				select {
				case <-l.stop:
					return
				default:
				}
				l.one(client, url)
			}
		}()
	}
	t.Cleanup(l.finish)
	return l
}

func (l *load) one(client *http.Client, url string) {
	t0 := time.Now()
	resp, err := client.Post(url, l.body.contentType, strings.NewReader(l.body.data))
	if err != nil {
		l.fail(err.Error())
		return
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || resp.StatusCode != 200 {
		l.fail(fmt.Sprintf("status %d, err %v", resp.StatusCode, err))
		return
	}
	var r reply
	json.Unmarshal(body, &r)
	l.mu.Lock()
	l.ok++
	l.pids[r.PID]++
	l.latencies = append(l.latencies, time.Since(t0))
	if resp.Close {
		l.closes = append(l.closes, closeEvent{r.PID, time.Now()})
	}
	l.mu.Unlock()
}

func (l *load) fail(msg string) {
	l.mu.Lock()
	l.failed++
	if len(l.errs) < 10 {
		l.errs = append(l.errs, msg)
	}
	l.mu.Unlock()
}

// mark starts a new latency phase (before / during / after a reload).
func (l *load) mark() {
	l.mu.Lock()
	l.marks = append(l.marks, len(l.latencies))
	l.mu.Unlock()
}

// waitRequests waits until n more requests have succeeded.
func (l *load) waitRequests(n int) {
	l.mu.Lock()
	target := l.ok + n
	l.mu.Unlock()
	waitFor(l.t, 30*time.Second, fmt.Sprintf("%d more requests", n), func() bool {
		l.mu.Lock()
		defer l.mu.Unlock()
		return l.ok >= target
	})
}

// reach sends requests on fresh connections until n workers not in old have
// answered (counting what the load already got), or max were sent; they
// count as the load's own. The load's keep-alive connections can all sit on
// one reuseport slot's socket (the kernel hashes each connection to one), so
// that the other slot's worker never answers them; a fresh connection lands
// on a given one of 2 slots with probability 1/2, so 200 of them all miss
// it with probability 2^-200.
func (l *load) reach(url string, old map[int]bool, n, max int) {
	tr := &http.Transport{DisableKeepAlives: true}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	for i := 0; i < max; i++ {
		l.mu.Lock()
		reached := countNew(l.pids, old) >= n
		l.mu.Unlock()
		if reached {
			return
		}
		l.one(client, url)
	}
}

// finish stops the clients and waits for them.
func (l *load) finish() {
	select {
	case <-l.stop:
	default:
		close(l.stop)
	}
	l.wg.Wait()
}

// result stops the load and returns its counts.
func (l *load) result() (ok, failed int, errs []string, pids map[int]int) {
	l.finish()
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.ok, l.failed, l.errs, l.pids
}

// p99s returns the 99th-percentile latency of each phase between marks.
func (l *load) p99s() []time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	bounds := append(append([]int{0}, l.marks...), len(l.latencies))
	var out []time.Duration
	for i := 0; i+1 < len(bounds); i++ {
		phase := append([]time.Duration(nil), l.latencies[bounds[i]:bounds[i+1]]...)
		if len(phase) == 0 {
			out = append(out, 0)
			continue
		}
		sort.Slice(phase, func(a, b int) bool { return phase[a] < phase[b] })
		out = append(out, phase[len(phase)*99/100])
	}
	return out
}

// readyPids is the set of workers that logs show ready.
func readyPids(logs []map[string]any) map[int]bool {
	pids := map[int]bool{}
	for _, l := range linesWith(logs, "worker ready") {
		pids[num(l, "pid")] = true
	}
	return pids
}

// countNew counts the pids that answered and are not in old.
func countNew(answered map[int]int, old map[int]bool) int {
	n := 0
	for pid := range answered {
		if !old[pid] {
			n++
		}
	}
	return n
}

// freePort returns a TCP port that was free a moment ago.
func freePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// httpClientNoKeepAlive opens a new connection per request, so requests
// spread over workers accepting from one socket.
var httpClientNoKeepAlive = http.Client{
	Timeout:   5 * time.Second,
	Transport: &http.Transport{DisableKeepAlives: true},
}
