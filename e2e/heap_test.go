package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// HEAP_SIZE under a real cgroup v1 memory limit, with real Node workers.
// V8's heap_size_limit is old space plus the young generation, whose size
// differs by Node line and by the memory Node sees, so each worker's figure
// is compared with that of a plain node given the expected flag in the same
// cgroup: they match on every line only if the worker got that flag.

// referenceHeapLimit is v8's heap_size_limit of `node <flags>` run under wrap.
func referenceHeapLimit(t *testing.T, wrap []string, flags ...string) int64 {
	t.Helper()
	args := append(append(append([]string{}, wrap...), "node"), flags...)
	args = append(args, "-p", "v8.getHeapStatistics().heap_size_limit")
	out, err := exec.Command(args[0], args[1:]...).Output()
	if err != nil {
		t.Fatalf("%v: %v", args, err)
	}
	n, err := strconv.ParseInt(strings.TrimSpace(string(out)), 10, 64)
	if err != nil {
		t.Fatalf("%v printed %q", args, out)
	}
	return n
}

type workerEnv struct {
	Env       map[string]string `json:"env"`
	ChildEnv  string            `json:"childEnv"`
	HeapLimit int64             `json:"heapLimit"`
}

// eachWorkerEnv asks /env on fresh connections until n workers (slots) have
// answered, and returns their answers by slot.
func eachWorkerEnv(t *testing.T, url string, n int) map[string]workerEnv {
	t.Helper()
	got := map[string]workerEnv{}
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	waitFor(t, 20*time.Second, fmt.Sprintf("%d workers to answer /env", n), func() bool {
		resp, err := client.Get(url + "/env")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		var e workerEnv
		if json.NewDecoder(resp.Body).Decode(&e) == nil {
			got[e.Env["CLUSTERINIT_WORKER"]] = e
		}
		return len(got) >= n
	})
	return got
}

// heapFleet runs testdata/apps/http.js with 2 workers under wrap and returns
// what each worker's /env said, one per slot, and clusterinit.
func heapFleet(t *testing.T, wrap []string, extraEnv []string, nodeArgs ...string) (*proc, map[string]workerEnv) {
	t.Helper()
	port := freePort(t)
	env := testEnv(append([]string{"CLUSTERINIT_WORKERS=2", fmt.Sprintf("CLUSTERINIT_LISTEN=:%d", port), fmt.Sprintf("PORT=%d", port), "CLUSTERINIT_LOG_LEVEL=info"}, extraEnv...)...)
	argv := append(append(append([]string{}, wrap...), binary, "--", "node"), nodeArgs...)
	p := startArgv(t, false, env, append(argv, filepath.Join("testdata", "apps", "http.js"))...)
	p.waitLog("worker ready", 2, 20*time.Second)
	return p, eachWorkerEnv(t, fmt.Sprintf("http://127.0.0.1:%d", port), 2)
}

func TestHeapSizeAutoUnderRealMemoryLimit(t *testing.T) {
	const limit = 1 << 30 // 2 workers: 512 MiB share, 70% less 64 MiB = 294 MiB
	mem := v1Cgroup(t, "memory", "", uniqueName("clusterinit-heap"))
	mustWrite(t, filepath.Join(mem, "memory.limit_in_bytes"), fmt.Sprint(limit))
	wrap := inCgroups(mem)
	out, _ := exec.Command("node", "--version").Output()
	line := strings.TrimSpace(string(out))

	t.Run("auto", func(t *testing.T) {
		p, workers := heapFleet(t, wrap, nil)
		want := referenceHeapLimit(t, wrap, "--max-old-space-size=294")
		def := referenceHeapLimit(t, wrap)
		for slot, e := range workers {
			if e.HeapLimit != want {
				t.Errorf("%s worker %s: heap_size_limit %d MiB, want %d MiB (node --max-old-space-size=294; Node's default here is %d MiB)",
					line, slot, e.HeapLimit>>20, want>>20, def>>20)
			}
			// The flag is clusterinit's, not the app's: the app's children
			// do not inherit it.
			if strings.Contains(e.Env["NODE_OPTIONS"], "max-old-space-size") || strings.Contains(e.ChildEnv, "max-old-space-size") {
				t.Errorf("worker %s: NODE_OPTIONS %q, child env has the flag: %v", slot, e.Env["NODE_OPTIONS"], strings.Contains(e.ChildEnv, "max-old-space-size"))
			}
		}
		for _, l := range p.logsWith("worker started") {
			if num(l, "heap_size_mib") != 294 {
				t.Errorf("start line %v: want heap_size_mib 294", l)
			}
		}
		if s := fmt.Sprint(p.logsWith("starting")[0]["heap_size"]); !strings.Contains(s, "--max-old-space-size=294") {
			t.Errorf("start line heap_size %q", s)
		}
		t.Logf("%s, limit 1 GiB, 2 workers: --max-old-space-size=294, heap_size_limit %d MiB (Node's default %d MiB)", line, want>>20, def>>20)
		stopClean(t, p)
	})

	// A new worker gets the size for the current count: one more slot.
	t.Run("scale up", func(t *testing.T) {
		p, _ := heapFleet(t, wrap, nil)
		p.signal(syscall.SIGTTIN)
		l := p.waitLog("worker started", 3, 20*time.Second)
		// 3 workers: 341 MiB share, 70% less 64 MiB = 174 MiB.
		if got := num(l[2], "heap_size_mib"); got != 174 {
			t.Errorf("third worker: heap_size_mib %d, want 174", got)
		}
		stopClean(t, p)
	})

	for name, tc := range map[string]struct {
		env  []string
		args []string
		flag string
	}{
		"user's NODE_OPTIONS": {env: []string{"NODE_OPTIONS=--max-old-space-size=100"}, flag: "--max-old-space-size=100"},
		"user's command line": {args: []string{"--max_old_space_size=90"}, flag: "--max_old_space_size=90"},
	} {
		t.Run(name, func(t *testing.T) {
			p, workers := heapFleet(t, wrap, tc.env, tc.args...)
			want := referenceHeapLimit(t, wrap, tc.flag)
			for slot, e := range workers {
				if e.HeapLimit != want {
					t.Errorf("worker %s: heap_size_limit %d MiB, want %d MiB (%s)", slot, e.HeapLimit>>20, want>>20, tc.flag)
				}
			}
			for _, l := range p.logsWith("worker started") {
				if _, ok := l["heap_size_mib"]; ok {
					t.Errorf("start line %v: clusterinit set a heap size over the user's", l)
				}
			}
			stopClean(t, p)
		})
	}
}

// Two workers whose V8 heaps grow without bound, sharing a real 512 MiB
// cgroup limit: with HEAP_SIZE=auto each dies of its own heap limit
// ("JavaScript heap out of memory"), and the kernel's OOM killer never kills
// anything, whether Node can see the limit or it sits on a parent cgroup
// (where Node sizes its young generation from the host).
func TestHeapLeaksDieOfTheirOwnHeapLimit(t *testing.T) {
	needLong(t)
	const limit = 512 << 20
	for _, where := range []string{"visible", "parent"} {
		t.Run(where, func(t *testing.T) {
			task := v1Cgroup(t, "memory", "", uniqueName("clusterinit-heapleak"))
			mustWrite(t, filepath.Join(task, "memory.limit_in_bytes"), fmt.Sprint(limit))
			os.WriteFile(filepath.Join(task, "memory.swappiness"), []byte("0"), 0)
			dir := task
			if where == "parent" {
				dir = v1Cgroup(t, "memory", task, "ctr")
			}
			port := freePort(t)
			env := testEnv("CLUSTERINIT_WORKERS=2", fmt.Sprintf("CLUSTERINIT_LISTEN=:%d", port), fmt.Sprintf("PORT=%d", port),
				"CLUSTERINIT_LOG_LEVEL=info", "HOG=heapleak", "LEAK_MB=4", "CLUSTERINIT_MAX_FAILED_STARTS=100")
			p := startArgv(t, false, env, append(inCgroups(dir), binary, "--", "node", filepath.Join("testdata", "apps", "hog.js"))...)
			p.waitLog("worker ready", 2, 20*time.Second)
			exits := p.waitLog("worker exited unexpectedly", 2, 90*time.Second)
			for _, l := range exits[:2] {
				if l["status"] == "signal SIGKILL" || l["reason"] != "crash" {
					t.Errorf("exit %v: want the worker's own heap-limit abort, not a SIGKILL", l)
				}
			}
			if !strings.Contains(p.stderr.String(), "JavaScript heap out of memory") {
				t.Errorf("no worker said \"JavaScript heap out of memory\"")
			}
			if n := oomKillCount(t, task); n != 0 {
				t.Errorf("the kernel's OOM killer killed %d processes in the task cgroup", n)
			}
			if n := len(p.logsWith("worker killed by the kernel's OOM killer: the task ran out of memory")); n != 0 {
				t.Errorf("%d OOM kills logged", n)
			}
			t.Logf("%s limit: %v then %v", where, exits[0]["status"], exits[1]["status"])
		})
	}
}
