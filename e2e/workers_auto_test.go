package e2e

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// affinityCPUs is what WORKERS=auto gives with no limit anywhere.
func affinityCPUs(t *testing.T) int {
	var set unix.CPUSet
	if err := unix.SchedGetaffinity(0, &set); err != nil {
		t.Fatal(err)
	}
	return set.Count()
}

// autoWorkers runs `clusterinit config` and returns the worker count it
// reports.
func autoWorkers(t *testing.T, env []string, wrap ...string) string {
	t.Helper()
	args := append(wrap, binary, "config")
	code, out, stderr := runCmd(t, env, args...)
	if code != 0 {
		t.Fatalf("config: exit %d: %s", code, stderr)
	}
	for _, l := range strings.Split(out, "\n") {
		if w, ok := strings.CutPrefix(l, "# workers: "); ok {
			return w
		}
	}
	t.Fatalf("no worker count in %q", out)
	return ""
}

func runCmd(t *testing.T, env []string, args ...string) (int, string, string) {
	t.Helper()
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Env = env
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.Run()
	return cmd.ProcessState.ExitCode(), stdout.String(), stderr.String()
}

// A CPU quota of half a core on a real cgroup (v1 here) gives one worker
// even though the process may run on every CPU.
func TestWorkersAutoUnderRealCPUQuota(t *testing.T) {
	if n := affinityCPUs(t); n < 2 {
		t.Fatalf("this test needs ≥ 2 CPUs to tell a quota from the affinity mask, have %d", n)
	}
	base := "/sys/fs/cgroup/cpu"
	if _, err := os.Stat(filepath.Join(base, "cpu.cfs_quota_us")); err != nil {
		base = "/sys/fs/cgroup" // cgroup v2
	}
	dir := filepath.Join(base, fmt.Sprintf("clusterinit-e2e-%d", os.Getpid()))
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatalf("create cgroup (tests run as root on a writable cgroup fs): %v", err)
	}
	t.Cleanup(func() { os.Remove(dir) })
	if base == "/sys/fs/cgroup/cpu" {
		mustWrite(t, filepath.Join(dir, "cpu.cfs_period_us"), "100000")
		mustWrite(t, filepath.Join(dir, "cpu.cfs_quota_us"), "50000")
	} else {
		mustWrite(t, filepath.Join(dir, "cpu.max"), "50000 100000")
	}
	// The shell moves itself into the cgroup, then becomes clusterinit.
	got := autoWorkers(t, testEnv(), "sh", "-c", fmt.Sprintf(`echo $$ > %s/cgroup.procs && exec "$@"`, dir), "sh")
	if got != "1" {
		t.Errorf("WORKERS=auto under a 0.5 CPU quota: %s workers, want 1", got)
	}
	if got := autoWorkers(t, testEnv()); got != fmt.Sprint(affinityCPUs(t)) {
		t.Errorf("WORKERS=auto without a quota: %s workers, want %d (the affinity mask)", got, affinityCPUs(t))
	}
}

// ECS puts the task's CPU limit on the task's cgroup, not the container's;
// the task metadata endpoint is the first source.
func TestWorkersAutoFromECSMetadata(t *testing.T) {
	if n := affinityCPUs(t); n < 2 {
		t.Fatalf("this test needs ≥ 2 CPUs, have %d", n)
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/v4/task" {
			http.NotFound(w, r)
			return
		}
		fmt.Fprint(w, `{"Cluster":"c","TaskARN":"arn","Limits":{"CPU":0.5,"Memory":1024}}`)
	}))
	defer srv.Close()
	env := testEnv("ECS_CONTAINER_METADATA_URI_V4=" + srv.URL + "/v4")
	if got := autoWorkers(t, env); got != "1" {
		t.Errorf("ECS Limits.CPU 0.5: %s workers, want 1", got)
	}
	// And the fleet really starts that many.
	helperEnv, args := helper("serve")
	p := start(t, false, append(env, append(helperEnv, "CLUSTERINIT_LISTEN=none", "CLUSTERINIT_SHIM=false")...), args...)
	p.waitUp(1)
	l := p.waitLog("starting", 1, 5*time.Second)
	if num(l[0], "workers") != 1 {
		t.Errorf("started %v workers, want 1", l[0]["workers"])
	}
	p.signal(syscall.SIGTERM)
	if code := p.wait(10 * time.Second); code != 0 {
		t.Errorf("exit code %d", code)
	}
}

func mustWrite(t *testing.T, path, value string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(value), 0o644); err != nil {
		t.Fatalf("write %s: %v", path, err)
	}
}
