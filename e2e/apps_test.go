package e2e

// End-to-end tests on real, unmodified apps: an Express app and a Next.js
// standalone server, installed from the npm registry and built by
// testdata/setup-node-apps.sh, each run as `clusterinit -- node <app>`.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

const setupScript = "testdata/setup-node-apps.sh"

var (
	nodeAppsOnce sync.Once
	nodeAppsErr  error
	nodeAppsLog  string
)

// nodeApps makes sure the real apps are installed and built, running the
// setup script once per test binary. The script is idempotent and returns in
// a fraction of a second when nothing changed; on a fresh machine it runs
// npm ci and next build (about a minute). A failure fails the test: these
// tests are never skipped.
func nodeApps(t *testing.T) {
	t.Helper()
	nodeAppsOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
		defer cancel()
		var out bytes.Buffer
		cmd := exec.CommandContext(ctx, "bash", setupScript)
		cmd.Env = append(os.Environ(), "NEXT_TELEMETRY_DISABLED=1")
		cmd.WaitDelay = 10 * time.Second // npm may outlive a killed bash
		cmd.Stdout, cmd.Stderr = &out, &out
		t0 := time.Now()
		err := cmd.Run()
		nodeAppsLog = fmt.Sprintf("%s (%v):\n%s", setupScript, time.Since(t0).Round(time.Millisecond), headTail(out.String(), 40, 30))
		if err != nil {
			nodeAppsErr = fmt.Errorf("%s failed: %v", setupScript, err)
			return
		}
		var summary []string
		for _, line := range strings.Split(out.String(), "\n") {
			if strings.HasPrefix(line, "setup-node-apps: ") {
				summary = append(summary, line)
			}
		}
		t.Logf("%s took %v:\n%s", setupScript, time.Since(t0).Round(time.Millisecond), strings.Join(summary, "\n"))
	})
	if nodeAppsErr != nil {
		t.Fatalf("%v\nthe real test apps are not installed and built: run `bash %s` (needs node, npm and the npm registry)\n%s",
			nodeAppsErr, setupScript, nodeAppsLog)
	}
	for _, f := range append([]string{expressApp(t), nextApp(t)}, frameworkEntries(t)...) {
		if _, err := os.Stat(f); err != nil {
			t.Fatalf("%v: run `bash %s`\n%s", err, setupScript, nodeAppsLog)
		}
	}
}

// headTail keeps the first and last lines of s (npm prints its error first,
// then pages of usage).
func headTail(s string, head, tail int) string {
	ls := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(ls) <= head+tail {
		return strings.Join(ls, "\n")
	}
	return strings.Join(ls[:head], "\n") + fmt.Sprintf("\n[… %d lines …]\n", len(ls)-head-tail) + strings.Join(ls[len(ls)-tail:], "\n")
}

func expressApp(t *testing.T) string {
	return repoFile(t, "testdata", "express", "server.js")
}

// nextApp is the standalone server. It changes to its own directory itself
// (process.chdir(__dirname)), so it runs from any working directory.
func nextApp(t *testing.T) string {
	return repoFile(t, "testdata", "nextjs", ".next", "standalone", "server.js")
}

func repoFile(t *testing.T, elem ...string) string {
	p, err := filepath.Abs(filepath.Join(elem...))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// realAppFleet runs clusterinit with two workers of a real app on a free port.
// HOSTNAME does not resolve: the app asks for listen(PORT, HOSTNAME) and
// only the preload's redirect to the handed socket lets it start at all.
func realAppFleet(t *testing.T, app string, extra ...string) (*proc, string, map[int]string) {
	t.Helper()
	return realAppFleetArgv(t, []string{"node", app}, extra...)
}

// realAppFleetArgv is realAppFleet for any worker command line.
func realAppFleetArgv(t *testing.T, argv []string, extra ...string) (*proc, string, map[int]string) {
	t.Helper()
	nodeApps(t)
	port := freePort(t)
	env := testEnv(append([]string{
		"CLUSTERINIT_WORKERS=2",
		fmt.Sprintf("CLUSTERINIT_LISTEN=:%d", port),
		fmt.Sprintf("PORT=%d", port),
		"HOSTNAME=does-not-resolve.invalid",
		"CLUSTERINIT_LOG_LEVEL=info",
		"NEXT_TELEMETRY_DISABLED=1",
	}, extra...)...)
	p := start(t, false, env, append([]string{"--"}, argv...)...)
	ready := p.waitLog("worker ready", 2, 90*time.Second)
	pids := map[int]string{} // pid → slot
	for _, l := range ready {
		pids[num(l, "pid")] = fmt.Sprint(num(l, "slot"))
	}
	return p, fmt.Sprintf("http://127.0.0.1:%d", port), pids
}

// realAppWhoami sends one request on a new connection and decodes the answer.
func realAppWhoami(method, url string) (reply, error) {
	var r reply
	var body io.Reader
	if method == http.MethodPost {
		body = strings.NewReader(jsonBody.data)
	}
	req, err := http.NewRequest(method, url, body)
	if err != nil {
		return r, err
	}
	if method == http.MethodPost {
		req.Header.Set("Content-Type", jsonBody.contentType)
	}
	resp, err := httpClientNoKeepAlive.Do(req)
	if err != nil {
		return r, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return r, err
	}
	if resp.StatusCode != http.StatusOK {
		return r, fmt.Errorf("%s %s: status %d: %.200s", method, url, resp.StatusCode, b)
	}
	if err := json.Unmarshal(b, &r); err != nil {
		return r, fmt.Errorf("%s %s: %v in %.200q", method, url, err, b)
	}
	return r, nil
}

// everyAppWorkerAnswers sends GETs and POSTs, each on a new connection, until
// every worker in pids (pid → slot) has answered both, failing the test
// after a bounded number of requests.
func everyAppWorkerAnswers(t *testing.T, url string, pids map[int]string) {
	t.Helper()
	type key struct {
		pid    int
		method string
	}
	seen := map[key]bool{}
	const maxRequests = 400
	for i := 0; i < maxRequests && len(seen) < 2*len(pids); i++ {
		method := http.MethodGet
		if i%2 == 1 {
			method = http.MethodPost
		}
		r, err := realAppWhoami(method, url)
		if err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		slot, ok := pids[r.PID]
		if !ok {
			t.Fatalf("answer from pid %d, not a ready worker (%v)", r.PID, pids)
		}
		if r.Worker != slot {
			t.Fatalf("pid %d says it is worker %q, clusterinit started it in slot %s", r.PID, r.Worker, slot)
		}
		seen[key{r.PID, method}] = true
	}
	if len(seen) < 2*len(pids) {
		t.Fatalf("after %d requests on new connections, answered (pid, method): %v; want GET and POST from every worker %v",
			maxRequests, seen, pids)
	}
}

// stopAppCleanly sends SIGTERM and wants exit 0 with every worker exiting by
// itself (Next.js exits 143 on SIGTERM, which counts as clean).
func stopAppCleanly(t *testing.T, p *proc) {
	t.Helper()
	p.signal(syscall.SIGTERM)
	if code := p.wait(40 * time.Second); code != 0 {
		t.Errorf("exit code %d, want 0", code)
	}
	for _, l := range p.logs() {
		if isExitLine(l) {
			if l["msg"] != "worker exited" || l["reason"] != "stopped" {
				t.Errorf("worker did not stop cleanly: %v", l)
			}
		}
	}
}

func TestExpressFleet(t *testing.T) {
	p, url, pids := realAppFleet(t, expressApp(t))
	everyAppWorkerAnswers(t, url+"/", pids)
	stopAppCleanly(t, p)
}

// chunkSrc finds the first script of the page's own bundle.
var chunkSrc = regexp.MustCompile(`src="(/_next/static/[^"]+\.js)"`)

// pidInPage reads the pid the server-rendered page printed (React may put a
// comment between the text and the value).
var pidInPage = regexp.MustCompile(`pid (?:<!-- -->)?([0-9]+)`)

func TestNextStandaloneFleet(t *testing.T) {
	p, url, pids := realAppFleet(t, nextApp(t))
	everyAppWorkerAnswers(t, url+"/api/whoami", pids)

	// The server-rendered page, rendered by one of the workers, and one of
	// its static chunks (copied into the standalone tree by the setup).
	resp, err := httpClientNoKeepAlive.Get(url + "/")
	if err != nil {
		t.Fatal(err)
	}
	page, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("GET /: status %d", resp.StatusCode)
	}
	m := pidInPage.FindSubmatch(page)
	if m == nil {
		t.Fatalf("GET /: no pid in the page: %.500s", page)
	}
	var pid int
	fmt.Sscan(string(m[1]), &pid)
	if _, ok := pids[pid]; !ok {
		t.Errorf("page rendered by pid %d, not a worker (%v)", pid, pids)
	}
	src := chunkSrc.FindSubmatch(page)
	if src == nil {
		t.Fatalf("GET /: no /_next/static script in the page: %.500s", page)
	}
	resp, err = httpClientNoKeepAlive.Get(url + string(src[1]))
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Errorf("GET %s: status %d, want 200 (static assets missing from the standalone tree?)", src[1], resp.StatusCode)
	}

	stopAppCleanly(t, p)
}

func TestNextStandaloneReloadUnderLoad(t *testing.T) {
	p, url, before := realAppFleet(t, nextApp(t))
	l := startLoad(t, url+"/api/whoami", 8, true)
	l.waitRequests(200)
	l.mark()
	p.signal(syscall.SIGHUP)
	p.waitLog("rolling reload done", 1, 120*time.Second)
	// The old workers hand their keep-alive connections over for 2 s before
	// their stop: once both have exited, the load is on the new ones.
	p.waitLog("worker exited", 2, 60*time.Second)
	l.mark()
	l.waitRequests(200)
	p99 := l.p99s()
	ok, failed, errs, served := l.result()
	t.Logf("%d requests, %d failed, p99 before %v during %v after %v, per pid %v", ok, failed, p99[0], p99[1], p99[2], served)
	if failed != 0 {
		t.Errorf("%d of %d requests failed during the reload: %v", failed, ok+failed, errs)
	}

	// The replacements: ready after the reload began, one per slot.
	after := map[int]string{}
	for _, l := range p.logsWith("worker ready") {
		if pid := num(l, "pid"); before[pid] == "" {
			after[pid] = fmt.Sprint(num(l, "slot"))
		}
	}
	slots := map[string]int{}
	for _, slot := range after {
		slots[slot]++
	}
	if len(after) != 2 || slots["0"] != 1 || slots["1"] != 1 {
		t.Fatalf("replacement workers (pid → slot) %v, want one per slot", after)
	}
	newUnderLoad := 0
	for pid := range after {
		if served[pid] > 0 {
			newUnderLoad++
		}
	}
	if newUnderLoad == 0 {
		t.Errorf("no replacement worker answered the load after the reload (pids %v, answers %v)", after, served)
	}
	// Keep-alive load may sit on one worker; new connections reach both.
	everyAppWorkerAnswers(t, url+"/api/whoami", after)

	drained := p.logsWith("draining worker")
	if len(drained) != 2 {
		t.Errorf("want both old workers drained for the reload, got %v", drained)
	}
	for _, d := range drained {
		if d["reason"] != "reload" || before[num(d, "pid")] == "" {
			t.Errorf("drain not of an old worker for the reload: %v", d)
		}
	}
	stopAppCleanly(t, p)
}
