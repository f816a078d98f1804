package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestNonNodeWorkerUsesListenFDs(t *testing.T) {
	port := freePort(t)
	env, args := helper("listenfds")
	p := start(t, false, testEnv(append(env, "CLUSTERINIT_WORKERS=2", fmt.Sprintf("CLUSTERINIT_LISTEN=127.0.0.1:%d", port),
		"CLUSTERINIT_SHIM=false")...), args...)
	p.waitLog("worker ready", 2, 10*time.Second)
	seen := map[string]bool{}
	waitFor(t, 10*time.Second, "both workers answering on the handed socket", func() bool {
		var r struct {
			Worker string `json:"worker"`
			FDName string `json:"fdname"`
		}
		if err := json.Unmarshal([]byte(httpGetClose(fmt.Sprintf("http://127.0.0.1:%d/", port))), &r); err == nil {
			seen[r.Worker] = true
			if r.FDName != fmt.Sprintf("port%d", port) {
				t.Errorf("LISTEN_FDNAMES %q", r.FDName)
			}
		}
		return seen["0"] && seen["1"]
	})
	p.signal(syscall.SIGTERM)
	if code := p.wait(10 * time.Second); code != 0 {
		t.Errorf("exit code %d", code)
	}
	if len(p.logsWith("worker exited unexpectedly")) != 0 {
		t.Errorf("a worker rejected its LISTEN_PID")
	}
}

func TestMalformedIPCIsDroppedNotFatal(t *testing.T) {
	env, args := helper("ipcgarbage")
	p := start(t, false, fleetEnv(1, append(env, "CLUSTERINIT_READY=message")...), args...)
	// "ready" came after the garbage: clusterinit survived it and kept reading.
	p.waitLog("worker ready", 1, 10*time.Second)
	if n := len(p.logsWith("dropped malformed ipc message")); n < 2 {
		t.Errorf("%d malformed lines logged, want ≥ 2", n)
	}
	if n := len(p.logsWith("dropped oversized ipc message")); n != 1 {
		t.Errorf("%d oversized lines logged, want 1", n)
	}
	p.signal(syscall.SIGTERM)
	if code := p.wait(10 * time.Second); code != 0 {
		t.Errorf("exit code %d", code)
	}
}

// Workers run as nobody while clusterinit, as root, bound the privileged
// port for them.
func TestUserNobodyOnPort80(t *testing.T) {
	if os.Getuid() != 0 {
		t.Fatal("this test needs root (CI runs as root)")
	}
	env := testEnv("CLUSTERINIT_WORKERS=2", "CLUSTERINIT_LISTEN=127.0.0.1:80", "PORT=80", "CLUSTERINIT_USER=nobody")
	p := start(t, false, env, "--", "node", "testdata/apps/http.js")
	p.waitLog("worker ready", 2, 20*time.Second)
	body := httpGetClose("http://127.0.0.1:80/")
	var r struct{ UID int }
	if err := json.Unmarshal([]byte(body), &r); err != nil || r.UID != 65534 {
		t.Errorf("worker answered %q, want uid 65534 (nobody)", body)
	}
	p.signal(syscall.SIGTERM)
	if code := p.wait(20 * time.Second); code != 0 {
		t.Errorf("exit code %d", code)
	}
}

func TestSIGTERMDuringReloadStopsCleanly(t *testing.T) {
	p, url := nodeFleet(t, 2, "http.js")
	l := startLoad(t, url+"/", 4, true)
	l.waitRequests(100)
	p.signal(syscall.SIGHUP)
	p.waitLog("rolling reload started", 1, 5*time.Second)
	p.signal(syscall.SIGTERM)
	if code := p.wait(30 * time.Second); code != 0 {
		t.Errorf("exit code %d, want 0", code)
	}
	l.finish()
	if started, exited := len(p.logsWith("worker started")), len(p.exits()); started != exited {
		t.Errorf("%d workers started, %d exits reported", started, exited)
	}
}

// httpGetClose GETs url on a new connection; "" on any error.
func httpGetClose(url string) string {
	cmdOut := make(chan string, 1)
	go func() {
		resp, err := (&httpClientNoKeepAlive).Get(url)
		if err != nil {
			cmdOut <- ""
			return
		}
		defer resp.Body.Close()
		var b strings.Builder
		buf := make([]byte, 4096)
		for {
			n, err := resp.Body.Read(buf)
			b.Write(buf[:n])
			if err != nil {
				break
			}
		}
		cmdOut <- b.String()
	}()
	return <-cmdOut
}
