package e2e

import (
	"fmt"
	"path/filepath"
	"testing"
	"time"
)

// MAX_REQUESTS: under keep-alive load a worker is recycled once it has
// answered about that many requests (less up to 10%, reported on the next
// heartbeat), with not one request failed.
func TestMaxRequestsRecyclesWithoutFailures(t *testing.T) {
	const max = 500
	p, url := nodeFleet(t, 2, "http.js", fmt.Sprintf("CLUSTERINIT_MAX_REQUESTS=%d", max),
		"CLUSTERINIT_SAMPLE_EVERY=200ms", "CLUSTERINIT_DRAIN_TIMEOUT=5s")
	l := startLoad(t, url+"/", 4, true)
	started := time.Now()
	r := recycled(p, 1, 30*time.Second)[0]
	took := time.Since(started)
	if r["reason"] != "requests" {
		t.Fatalf("recycle %v, want reason requests", r)
	}
	limit, n := num(r, "max_requests"), num(r, "requests")
	if limit < max*9/10 || limit > max || n < limit {
		t.Errorf("recycled at %d requests with max_requests %d, want max_requests in [%d, %d] and at least that many requests",
			n, limit, max*9/10, max)
	}
	p.waitLog("worker exited", 1, 20*time.Second)
	l.waitRequests(200)
	ok, failed, errs, _ := l.result()
	t.Logf("first recycle after %v at %d requests (max_requests %d); %d requests, %d failed", took.Round(time.Millisecond), n, limit, ok, failed)
	if failed != 0 {
		t.Errorf("%d of %d requests failed: %v", failed, ok+failed, errs)
	}
	stopClean(t, p)
}

// MAX_RSS=auto under a real cgroup limit: 90% of the worker's share. A worker
// leaking 10 MB/s outside its heap is recycled before the kernel would kill
// it, with no request failed.
func TestMaxRSSAutoRecycles(t *testing.T) {
	needLong(t)
	const limit = 640 << 20 // 2 workers: 320 MiB share, MAX_RSS 288 MiB
	mem := v1Cgroup(t, "memory", "", uniqueName("clusterinit-maxrss"))
	mustWrite(t, filepath.Join(mem, "memory.limit_in_bytes"), fmt.Sprint(limit))
	port := freePort(t)
	env := testEnv("CLUSTERINIT_WORKERS=2", fmt.Sprintf("CLUSTERINIT_LISTEN=:%d", port), fmt.Sprintf("PORT=%d", port),
		"CLUSTERINIT_LOG_LEVEL=info", "CLUSTERINIT_SAMPLE_EVERY=250ms", "CLUSTERINIT_DRAIN_TIMEOUT=2s",
		"CLUSTERINIT_MAX_RSS=auto", "CLUSTERINIT_MAX_RSS_FOR=1s", "HOG=leak", "LEAK_MB=2", "HOG_SLOT=0")
	p := startArgv(t, false, env, append(inCgroups(mem), binary, "--", "node", filepath.Join("testdata", "apps", "hog.js"))...)
	p.waitLog("worker ready", 2, 20*time.Second)
	l := startLoad(t, fmt.Sprintf("http://127.0.0.1:%d/", port), 4, true)
	started := time.Now()
	r := recycled(p, 1, 60*time.Second)[0]
	if want := int(0.9 * limit / 2); r["reason"] != "rss" || num(r, "max_rss") != want || num(r, "rss_bytes") <= want {
		t.Errorf("recycle %v: want reason rss, max_rss %d and rss_bytes above it", r, want)
	}
	p.waitLog("worker exited", 1, 20*time.Second)
	l.waitRequests(100)
	ok, failed, errs, _ := l.result()
	t.Logf("recycled %v after start at rss %d (max_rss %v, path %v); %d requests, %d failed",
		time.Since(started).Round(time.Millisecond), num(r, "rss_bytes"), r["max_rss"], r["path"], ok, failed)
	if failed != 0 {
		t.Errorf("%d of %d requests failed: %v", failed, ok+failed, errs)
	}
	if n := len(p.logsWith("worker killed by the kernel's OOM killer: the task ran out of memory")); n != 0 {
		t.Errorf("%d OOM kills: MAX_RSS=auto should have acted first", n)
	}
	stopClean(t, p)
}
