package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// TestFrameworkReload: a rolling reload under keep-alive load loses no
// request, answers a request in flight in a draining worker, and runs the
// app's hook in every drained worker. Fastify's and hapi's own close, which
// answers 503 to (Fastify's return503OnClosing) or ends the socket of (hapi's
// cleanStop) a request arriving on a kept-alive connection, loses nothing
// because the preload hands those connections to the successor before the
// app's handler runs.
func TestFrameworkReload(t *testing.T) {
	needLong(t)
	for _, line := range frameworkLines {
		bin := nodeLine(t, line)
		for _, fw := range frameworks {
			t.Run(fw.name+"/node"+line, func(t *testing.T) { reloadFramework(t, fw, bin) })
		}
	}
}

// slowAnswer is the outcome of a slow request sent before a reload.
type slowAnswer struct {
	r   reply
	err error
	// drainingFirst: the worker that answered had been told to drain
	// before the answer arrived.
	drainingFirst bool
}

// reloadFramework runs a rolling reload of two workers of fw under
// keep-alive load, with a slow request in flight, then stops.
func reloadFramework(t *testing.T, fw framework, bin string) {
	p, url, before, hooks := startFramework(t, fw, bin)
	l := startLoadBody(t, url+"/", 8, true, jsonBody)
	l.waitRequests(200)
	// Answered once released, when its worker drains (releaseWhenDraining).
	release := filepath.Join(t.TempDir(), "release")
	slow := make(chan slowAnswer, 1)
	go func() {
		client := http.Client{Timeout: 150 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
		var a slowAnswer
		a.r, a.err = getWhoami(&client, url+"/slow?ms=120000&until="+release)
		for _, d := range p.logsWith("draining worker") {
			if num(d, "pid") == a.r.PID {
				a.drainingFirst = true
			}
		}
		slow <- a
	}()
	slowPID := loggedPID(t, p, "slow request in pid")
	l.mark()
	p.signal(syscall.SIGHUP)
	releaseWhenDraining(t, p, slowPID, release)
	p.waitLog("rolling reload done", 1, 120*time.Second)
	l.mark()
	l.waitRequests(200)
	ok, failed, errs, served := l.result()
	if failed != 0 {
		t.Errorf("%d of %d requests failed during the reload: %v", failed, ok+failed, errs)
	}
	var a slowAnswer
	select {
	case a = <-slow:
	case <-time.After(150 * time.Second):
		t.Fatal("the slow request sent before the reload got no answer")
	}
	switch {
	case a.err != nil:
		t.Errorf("the request in flight during the reload failed: %v", a.err)
	case before[a.r.PID] == "":
		t.Errorf("the slow request was answered by pid %d, not an old worker %v", a.r.PID, before)
	case !a.drainingFirst:
		t.Errorf("the slow request's worker %d answered before its drain began: not in flight during the drain", a.r.PID)
	}

	// Every old worker drained for the reload, exited by itself, and ran
	// the app's hook.
	drained := map[int]bool{}
	for _, d := range p.logsWith("draining worker") {
		if d["reason"] == "reload" {
			drained[num(d, "pid")] = true
		}
	}
	for pid := range before {
		if !drained[pid] {
			t.Errorf("old worker %d was not drained for the reload", pid)
		}
	}
	waitExits(t, p, before)
	ran := hooksRan(t, hooks, fw.hook, before)

	after := map[int]string{}
	for _, l := range p.logsWith("worker ready") {
		if pid := num(l, "pid"); before[pid] == "" {
			after[pid] = fmt.Sprint(num(l, "slot"))
		}
	}
	if len(after) != 2 {
		t.Fatalf("replacement workers (pid → slot) %v, want one per slot", after)
	}
	everyAppWorkerAnswers(t, url+"/", after)
	stopAppCleanly(t, p)
	t.Logf("%s on node %s: reload under keep-alive load: %d requests, %d failed, per pid %v; "+
		"request in flight answered by draining pid %d: %v; hook %q ran in %d/%d drained workers",
		fw.name, filepath.Base(filepath.Dir(bin)), ok, failed, served, a.r.PID, a.err == nil && a.drainingFirst,
		fw.hook, ran, len(before))
}

// getWhoami sends one GET with client and decodes the answer.
func getWhoami(client *http.Client, url string) (reply, error) {
	var r reply
	resp, err := client.Get(url)
	if err != nil {
		return r, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return r, fmt.Errorf("GET %s: status %d", url, resp.StatusCode)
	}
	return r, json.NewDecoder(resp.Body).Decode(&r)
}

// hooksRan counts the workers in pids whose shutdown hook wrote its line to
// the file, failing the test for each that did not.
func hooksRan(t *testing.T, file, hook string, pids map[int]string) int {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	ran := 0
	for pid := range pids {
		if bytes.Contains([]byte("\n"+string(b)), []byte(fmt.Sprintf("\n%d %s", pid, hook))) {
			ran++
		} else {
			t.Errorf("worker %d exited without running the app's %s hook (%s: %q)", pid, hook, file, b)
		}
	}
	return ran
}
