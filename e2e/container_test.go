package e2e

// clusterinit as PID 1 of real containers (dockerd, containerd and runc, on
// cgroup v1 here), in the test image of harness_docker_test.go: what an
// operator sees with docker's own limits, signals and health checks. They
// are long tests: each starts containers, and the first builds the image
// (and may start a dockerd).

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/clusterinit/clusterinit/internal/testkit"
)

// containerFleet runs clusterinit over app in a container with the docker
// options opts and env (CLUSTERINIT_… and the app's), and waits until
// workers are ready.
func containerFleet(t *testing.T, workers int, opts []string, app string, env ...string) *container {
	t.Helper()
	for _, kv := range env {
		opts = append(opts, "-e", kv)
	}
	c := runContainer(t, opts, "--", "node", app)
	c.waitReady(workers, 30*time.Second)
	return c
}

// waitReady waits until n workers are ready, failing at once if the
// container exits first.
func (c *container) waitReady(n int, timeout time.Duration) {
	c.t.Helper()
	if !testkit.PollEvery(timeout, 100*time.Millisecond, func() bool {
		if len(linesWith(c.logs(), "worker ready")) >= n {
			return true
		}
		if c.inspect("{{.State.Running}}") != "true" {
			c.t.Fatalf("container exited (status %s) before %d workers were ready", c.inspect("{{.State.ExitCode}}"), n)
		}
		return false
	}) {
		c.t.Fatalf("timed out after %v waiting for %d workers ready", timeout, n)
	}
}

// workerOf is the slot that testdata/apps/http.js or hog.js says answered.
func workerOf(body string) string {
	var r struct {
		Worker string `json:"worker"`
	}
	json.Unmarshal([]byte(body), &r)
	return r.Worker
}

// --cpus sets a CFS quota on the container's own cgroup: WORKERS=auto rounds
// it up (1.5 → 2 workers, both serving; 0.5 → 1), and the start line names
// the quota it found.
func TestContainerCPUs(t *testing.T) {
	needLong(t)
	c := containerFleet(t, 2, []string{"--cpus=1.5"}, "http.js")
	start := c.waitLog("starting", 1, time.Second)[0]
	if num(start, "workers") != 2 || start["cpu_limit"] != 1.5 {
		t.Errorf("--cpus=1.5: start line says workers=%v cpu_limit=%v, want 2 and 1.5", start["workers"], start["cpu_limit"])
	}
	if src, _ := start["cpu_source"].(string); !strings.HasPrefix(src, "cgroup") {
		t.Errorf("--cpus=1.5: cpu_source %q, want the container's cgroup", src)
	}
	if got := answeringWorkers(t, c.url("/"), 2, 10*time.Second, workerOf); len(got) != 2 {
		t.Errorf("answering workers %v, want 2", got)
	}

	out, err := dockerCLI(c.host, "run", "--rm", "--label", dockerLabel, "--cpus=0.5", testImage(t), "config")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out+"\n", "\n# workers: 1\n") {
		t.Errorf("--cpus=0.5: config says\n%s\nwant 1 worker", out)
	}
}

// docker stop sends SIGTERM to PID 1 (clusterinit): a request in flight is
// answered, and the container exits 0 well before docker's SIGKILL.
func TestContainerStopAnswersInFlight(t *testing.T) {
	needLong(t)
	c := containerFleet(t, 2, nil, "http.js")
	slow := slowRequest(c.url(""), 2*time.Second)
	waitFor(t, 5*time.Second, "the slow request in a worker", func() bool {
		return strings.Contains(c.stdout.String(), "slow-start")
	})
	t0 := time.Now()
	if _, err := c.docker("stop", "--time", "20", c.id); err != nil {
		t.Fatal(err)
	}
	took := time.Since(t0)
	if got := <-slow; got != "200" {
		t.Errorf("request in flight during docker stop: %s, want 200", got)
	}
	if code := c.wait(5 * time.Second); code != 0 {
		t.Errorf("exit status %d after docker stop, want 0", code)
	}
	if oom := c.inspect("{{.State.OOMKilled}}"); oom != "false" {
		t.Errorf("OOMKilled %s", oom)
	}
	t.Logf("docker stop with a 2 s request in flight: %v", took.Round(time.Millisecond))
	if took > 10*time.Second {
		t.Errorf("docker stop took %v: the drain should end with the request (~2 s)", took)
	}
}

// docker kill -s HUP reaches clusterinit as PID 1: a rolling reload under
// load, with no failed request and every worker replaced.
func TestContainerHUPReloads(t *testing.T) {
	needLong(t)
	c := containerFleet(t, 2, nil, "http.js", "KEEP_ALIVE_TIMEOUT=65000")
	before := readyPids(c.logs())
	l := startLoad(t, c.url("/"), 8, true)
	l.waitRequests(300)
	if _, err := c.docker("kill", "--signal", "HUP", c.id); err != nil {
		t.Fatal(err)
	}
	c.waitLog("rolling reload done", 1, 60*time.Second)
	l.waitRequests(300)
	// The keep-alive connections move to the new workers over the handover;
	// fresh connections reach them at once.
	l.reach(c.url("/"), before, 2, 200)
	ok, failed, errs, pids := l.result()
	t.Logf("docker kill -s HUP under load: %d requests, %d failed", ok, failed)
	if failed != 0 {
		t.Errorf("%d of %d requests failed during the reload: %v", failed, ok+failed, errs)
	}
	if newServed := countNew(pids, before); newServed != 2 {
		t.Errorf("%d new workers answered after the reload, want 2 (pids %v, old %v)", newServed, pids, before)
	}
}

// A read-only root filesystem and an unprivileged user (nobody) are enough:
// the preload needs no file, and clusterinit binds port 3000 as that user.
func TestContainerReadOnlyNobody(t *testing.T) {
	needLong(t)
	c := containerFleet(t, 2, []string{"--read-only", "--user", "65534:65534"}, "http.js")
	got := answeringWorkers(t, c.url("/"), 2, 10*time.Second, func(body string) string {
		var r struct {
			Worker string `json:"worker"`
			UID    int    `json:"uid"`
		}
		json.Unmarshal([]byte(body), &r)
		if r.UID != 65534 {
			t.Errorf("worker %s runs as uid %d, want 65534", r.Worker, r.UID)
		}
		return r.Worker
	})
	if len(got) != 2 {
		t.Errorf("answering workers %v, want 2", got)
	}
	if code, body, err := fetch("GET", c.health()+"/readyz"); err != nil || code != 200 {
		t.Errorf("/readyz: %d %q %v", code, body, err)
	}
	if _, err := c.docker("stop", c.id); err != nil {
		t.Fatal(err)
	}
	if code := c.wait(5 * time.Second); code != 0 {
		t.Errorf("exit status %d, want 0", code)
	}
}

// The image's HEALTHCHECK is exec form, ["CMD","/clusterinit","health"], so
// it runs in an image without a shell: docker reports the container healthy
// once workers are ready, and not before. A docker CLI --health-cmd string
// runs through /bin/sh, which this image lacks: never healthy.
func TestContainerHealthcheck(t *testing.T) {
	needLong(t)
	c := runContainer(t, []string{"-e", "CLUSTERINIT_READY=message"}, "--", "node", "http.js")
	if got := c.inspect("{{json .Config.Healthcheck.Test}}"); got != `["CMD","/clusterinit","health"]` {
		t.Errorf("image healthcheck %s, want the exec form", got)
	}
	// http.js never sends 'ready': with READY=message no worker gets ready,
	// so the health check must fail.
	waitFor(t, 20*time.Second, "2 health checks before any worker is ready", func() bool {
		return len(c.healthChecks()) >= 2
	})
	for _, h := range c.healthChecks() {
		if h.ExitCode != 1 {
			t.Errorf("a health check with no ready worker: exit %d (%q), want 1", h.ExitCode, h.Output)
		}
	}
	if s := c.inspect("{{.State.Health.Status}}"); s == "healthy" {
		t.Errorf("healthy with no ready worker")
	}

	ready := containerFleet(t, 2, nil, "http.js")
	t0 := time.Now()
	waitFor(t, 20*time.Second, "docker's health status healthy", func() bool {
		return ready.inspect("{{.State.Health.Status}}") == "healthy"
	})
	checks := ready.healthChecks()
	last := checks[len(checks)-1]
	t.Logf("healthy %v after the workers were ready; last check: exit %d: %s", time.Since(t0).Round(time.Millisecond), last.ExitCode, strings.TrimSpace(last.Output))

	shell := runContainer(t, []string{"--health-cmd", "/clusterinit health", "--health-interval", "1s", "--health-retries", "1"}, "--", "node", "http.js")
	shell.waitReady(2, 30*time.Second)
	waitFor(t, 20*time.Second, "the shell-form health check to fail", func() bool {
		return shell.inspect("{{.State.Health.Status}}") == "unhealthy"
	})
	out := shell.healthChecks()[0].Output
	t.Logf("--health-cmd '/clusterinit health' in an image without /bin/sh: unhealthy: %s", strings.TrimSpace(out))
	if !strings.Contains(out, "/bin/sh") {
		t.Errorf("shell-form health check output %q: want docker's failure to run /bin/sh", out)
	}
	if got := shell.inspect("{{json .Config.Healthcheck.Test}}"); got != `["CMD-SHELL","/clusterinit health"]` {
		t.Errorf("--health-cmd gives %s, want CMD-SHELL", got)
	}
}

// healthChecks is docker's record of the container's last health checks,
// oldest first.
func (c *container) healthChecks() []healthCheck {
	c.t.Helper()
	var h []healthCheck
	if err := json.Unmarshal([]byte(c.inspect("{{json .State.Health.Log}}")), &h); err != nil {
		c.t.Fatal(err)
	}
	return h
}

type healthCheck struct {
	ExitCode int
	Output   string
}

// cgroupParent makes a task cgroup as ECS does, /clusterinit-e2e-…/task1,
// with a CPU quota of cpus and a memory limit of memBytes, for docker run
// --cgroup-parent (the cgroupfs driver takes the path as it is). Docker
// creates the container's cgroups below it in every hierarchy, and runc
// makes the missing parents there: all of them are removed at the end,
// after the containers (cleanups run last-registered first).
func cgroupParent(t *testing.T, cpus float64, memBytes int64) string {
	t.Helper()
	parent := "/" + uniqueName("clusterinit-e2e-ecs") + "/task1"
	t.Cleanup(func() {
		dirs, _ := filepath.Glob("/sys/fs/cgroup/*" + parent)
		for _, d := range dirs {
			for _, dir := range []string{d, filepath.Dir(d)} {
				var err error
				testkit.Poll(2*time.Second, func() bool {
					err = os.Remove(dir)
					return err == nil || errors.Is(err, os.ErrNotExist)
				})
				if err != nil && !errors.Is(err, os.ErrNotExist) {
					t.Errorf("remove cgroup %s: %v", dir, err)
				}
			}
		}
	})
	for _, ctrl := range []string{"cpu", "memory"} {
		dir := filepath.Join("/sys/fs/cgroup", ctrl, parent)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			need(t, "a writable cgroup v1 "+ctrl+" hierarchy (tests run as root)", err)
		}
	}
	cpu := filepath.Join("/sys/fs/cgroup/cpu", parent)
	mustWrite(t, filepath.Join(cpu, "cpu.cfs_period_us"), "100000")
	mustWrite(t, filepath.Join(cpu, "cpu.cfs_quota_us"), fmt.Sprint(int(cpus*100000)))
	mustWrite(t, filepath.Join("/sys/fs/cgroup/memory", parent, "memory.limit_in_bytes"), fmt.Sprint(memBytes))
	return parent
}

// ECS puts the task's limits on the task's cgroup, the parent of the
// container's (emulated with --cgroup-parent): from inside, the memory limit
// is found through memory.stat's hierarchical_memory_limit, while the CPU
// quota cannot be seen, and config, the start line, /status and /metrics say
// so with the remedy.
func TestContainerParentCgroupLimits(t *testing.T) {
	needLong(t)
	const mem = 1 << 30
	parent := cgroupParent(t, 1, mem)
	opts := []string{"--cgroup-parent=" + parent}

	out, err := dockerCLI(needDocker(t), append(append([]string{"run", "--rm", "--label", dockerLabel}, opts...), testImage(t), "config")...)
	if err != nil {
		t.Fatal(err)
	}
	cfg := configNotes(out)
	wantDetected := fmt.Sprintf("cpu=0 (none) memory=%d (cgroup v1 /sys/fs/cgroup/memory/memory.stat hierarchical_memory_limit)", mem)
	if !strings.HasPrefix(cfg["detected"], wantDetected) {
		t.Errorf("config in --cgroup-parent=%s: detected %q, want it to start with %q", parent, cfg["detected"], wantDetected)
	}
	for _, want := range []string{"no CPU limit visible", "ECS_CONTAINER_METADATA_URI_V4", "CLUSTERINIT_WORKERS"} {
		if !strings.Contains(cfg["note"], want) {
			t.Errorf("config: note %q does not say %q", cfg["note"], want)
		}
	}
	t.Logf("config in a container of a 1-CPU 1-GiB task cgroup:\n# detected: %s\n# note: %s\n# workers: %s", cfg["detected"], cfg["note"], cfg["workers"])

	c := containerFleet(t, 2, opts, "http.js")
	l := c.waitLog("starting", 1, time.Second)[0]
	if num(l, "memory_limit") != mem || !strings.Contains(fmt.Sprint(l["memory_source"]), "hierarchical_memory_limit") ||
		l["cpu_source"] != "none" || !strings.Contains(fmt.Sprint(l["cpu_note"]), "CLUSTERINIT_WORKERS") {
		t.Errorf("start line %v: want memory_limit %d from hierarchical_memory_limit, cpu_source none and the note", l, mem)
	}
	waitMetrics(t, c.health(), 5*time.Second,
		want{name: "clusterinit_memory_limit_bytes", value: mem},
		want{name: "clusterinit_cpu_limit", value: 0})
}
