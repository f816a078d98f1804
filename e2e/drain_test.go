package e2e

import (
	"fmt"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// An app's own stop handler runs in every drained worker, whichever of the
// drain line and the stop signal the worker reads first: 9 rolling reloads
// and the final stop of 2 workers drain 20, each running its hook, which
// decides when the worker exits. The app holds nothing open but its server,
// so a worker that did not wait for the signal would end with an empty
// event loop before its handler ran.
func TestOwnStopHandlerRunsInEveryDrain(t *testing.T) {
	p, _ := nodeFleet(t, 2, "shutdown-hook.js", "HOOK_MS=100")
	p.reloads(9)
	p.signal(syscall.SIGTERM)
	if code := p.wait(30 * time.Second); code != 0 {
		t.Errorf("exit code %d", code)
	}
	if n := checkHooksRan(t, p, "hook ran", "hook done"); n != 20 {
		t.Errorf("%d workers drained, want 20", n)
	}
}

// However the app's own SIGTERM handler closes its server, rolling reloads
// under keep-alive load lose no request, a request in flight is answered,
// and every drained worker ran its hook to the end.
func TestReloadUnderLoadWhateverTheAppCloses(t *testing.T) {
	needLong(t)
	for _, mode := range []string{"close", "close-idle", "close-all", "destroy"} {
		t.Run(mode, func(t *testing.T) {
			reloadUnderLoad(t, "shutdown-hook.js", 3, "SHUTDOWN="+mode, "KEEP_ALIVE_TIMEOUT=65000")
		})
		// Responses under way when the stop begins (headers sent, keep-alive)
		// finish during it.
		t.Run(mode+"/slow-responses", func(t *testing.T) {
			reloadUnderLoad(t, "shutdown-hook.js", 3, "SHUTDOWN="+mode, "KEEP_ALIVE_TIMEOUT=65000", "RESPONSE_MS=3")
		})
	}
}

// reloadUnderLoad runs app (testdata/apps) with 2 workers under keep-alive
// load through reloads rolling reloads and a stop, with a request in flight
// at the first reload, and checks that nothing failed and that every drained
// worker ran the app's hook ("hook ran pid=N", "hook done pid=N").
func reloadUnderLoad(t *testing.T, app string, reloads int, env ...string) {
	p, url := nodeFleet(t, 2, app, env...)
	l := startLoad(t, url+"/", 8, true)
	l.waitRequests(200)
	slow := slowRequest(url, 2*time.Second)
	waitFor(t, 5*time.Second, "the slow request in a worker", func() bool {
		return strings.Contains(p.stdout.String(), "slow-start")
	})
	p.reloads(reloads)
	l.waitRequests(200)
	if got := <-slow; got != "200" {
		t.Errorf("request in flight during the reload: %s, want 200", got)
	}
	ok, failed, errs, _ := l.result()
	t.Logf("%d reloads: %d requests, %d failed", reloads, ok, failed)
	if failed != 0 {
		t.Errorf("%d of %d requests failed: %v", failed, ok+failed, errs)
	}
	p.signal(syscall.SIGTERM)
	if code := p.wait(30 * time.Second); code != 0 {
		t.Errorf("exit code %d", code)
	}
	if n, want := checkHooksRan(t, p, "hook ran", "hook done"), 2*reloads+2; n != want {
		t.Errorf("%d workers drained, want %d", n, want)
	}
}

// nodeMajor is the major version of the node on PATH.
func nodeMajor(t *testing.T) int {
	t.Helper()
	out, err := exec.Command("node", "--version").Output()
	need(t, "node", err)
	v, _, _ := strings.Cut(strings.TrimPrefix(strings.TrimSpace(string(out)), "v"), ".")
	major, err := strconv.Atoi(v)
	if err != nil {
		t.Fatalf("node --version: %q", out)
	}
	return major
}

// A worker run under Node's permission model without --allow-net may not
// listen on its handed socket (Node 25+: listen({fd}) throws
// ERR_ACCESS_DENIED): clusterinit stops at the first one with one line
// naming the fix and exits 1, rather than crash-looping to
// MAX_FAILED_STARTS. On older lines the model does not cover the network
// and the worker serves. With --allow-net it serves on every line.
func TestPermissionModelWithoutAllowNet(t *testing.T) {
	major := nodeMajor(t)
	flag := "--permission"
	if major < 22 {
		flag = "--experimental-permission"
	}
	run := func(extra ...string) *proc {
		port := freePort(t)
		env := testEnv("CLUSTERINIT_WORKERS=2", fmt.Sprintf("CLUSTERINIT_LISTEN=:%d", port), fmt.Sprintf("PORT=%d", port),
			"CLUSTERINIT_LOG_LEVEL=info")
		args := append([]string{"--", "node", flag, "--allow-fs-read=*", "--allow-child-process"}, extra...)
		return start(t, false, env, append(args, "testdata/apps/http.js")...)
	}
	if major >= 25 {
		p := run()
		if code := p.wait(20 * time.Second); code != 1 {
			t.Errorf("exit code %d, want 1", code)
		}
		named := 0
		for _, l := range p.logs() {
			if msg, _ := l["msg"].(string); strings.Contains(msg, "add --allow-net") && l["level"] == "ERROR" {
				named++
			}
		}
		if named != 1 {
			t.Errorf("%d error lines name --allow-net, want exactly 1", named)
		}
		if n := len(p.logsWith("worker started")); n > 2 {
			t.Errorf("%d workers started: a crash loop", n)
		}
	} else {
		p := run()
		p.waitLog("worker ready", 2, 20*time.Second)
		p.signal(syscall.SIGTERM)
		if code := p.wait(20 * time.Second); code != 0 {
			t.Errorf("node %d under %s: exit code %d, want 0", major, flag, code)
		}
	}
	if major >= 25 {
		p := run("--allow-net")
		p.waitLog("worker ready", 2, 20*time.Second)
		p.signal(syscall.SIGTERM)
		if code := p.wait(20 * time.Second); code != 0 {
			t.Errorf("with --allow-net: exit code %d, want 0", code)
		}
	}
}
