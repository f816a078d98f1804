package limits

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// These tests run Detect for real: they create a v1 cgroup with a limit, start
// a copy of the test binary inside it and check what that child detects. The
// CI machines run cgroup v1 as root, so being unable to do this is a failure,
// not a skip.

const (
	helperEnv       = "CLUSTERINIT_LIMITS_HELPER_CGROUP_PROCS" // cgroup.procs file the helper joins
	helperOutPrefix = "HELPER-RESULT "
)

type helperResult struct {
	Limits      Limits
	Warning     string
	MemoryUsage int64
	UsageError  string
}

// TestHelperDetect is the child side: it is a no-op in a normal run.
func TestHelperDetect(t *testing.T) {
	procs := os.Getenv(helperEnv)
	if procs == "" {
		return
	}
	// Join the test cgroup before doing anything else, so that the memory
	// charged from here on lands in it.
	if err := os.WriteFile(procs, []byte(strconv.Itoa(os.Getpid())), 0); err != nil {
		t.Fatalf("join cgroup: %v", err)
	}
	// Touch some fresh memory so that the usage charged to the new memory
	// cgroup is clearly above zero (v1 does not move old charges along).
	ballast := make([]byte, 8<<20)
	for i := range ballast {
		ballast[i] = byte(i)
	}
	var r helperResult
	l, err := Detector{}.Detect(context.Background())
	r.Limits = l
	if err != nil {
		r.Warning = err.Error()
	}
	r.MemoryUsage, err = Detector{}.MemoryUsage()
	if err != nil {
		r.UsageError = err.Error()
	}
	out, err := json.Marshal(r)
	if err != nil {
		t.Fatalf("encode result: %v", err)
	}
	fmt.Printf("%s%s\n", helperOutPrefix, out)
	_ = ballast[len(ballast)-1]
}

// newTestCgroup creates a child of this process's own cgroup in the v1
// hierarchy that holds controller, and removes it when the test ends. A
// child of our own cgroup (rather than of the hierarchy root) keeps the
// helper inside whatever limits and accounting the test runner is under.
func newTestCgroup(t *testing.T, controller string) (dir string) {
	t.Helper()
	lines, mounts, err := Detector{}.readProcCgroups()
	if err != nil {
		t.Fatalf("this test needs cgroup v1 with a writable %s controller (CI runs as root on cgroup v1): %v", controller, err)
	}
	h, ok := locate(lines, mounts, controller)
	if !ok || h.version != 1 {
		t.Fatalf("this test needs cgroup v1 with a writable %s controller (CI runs as root on cgroup v1); found %+v (found=%v)", controller, h, ok)
	}
	dir = filepath.Join(h.dir, fmt.Sprintf("clusterinit-test-%d-%x", os.Getpid(), rand.Uint32()))
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatalf("this test needs a writable cgroup v1 %s hierarchy (CI runs as root; uid here %d): %v", controller, os.Getuid(), err)
	}
	t.Cleanup(func() {
		// The helper has been waited for, so the cgroup is empty; rmdir
		// can still race the kernel's release of the exiting task briefly.
		var err error
		for range 50 {
			if err = os.Remove(dir); err == nil || errors.Is(err, os.ErrNotExist) {
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
		t.Errorf("remove test cgroup: %v", err)
	})
	return dir
}

func writeCgroupFile(t *testing.T, dir, name, value string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(dir, name), []byte(value), 0); err != nil {
		t.Fatalf("set %s: %v", name, err)
	}
}

// runHelper runs TestHelperDetect in a child process that joins the cgroup dir.
func runHelper(t *testing.T, dir string) helperResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestHelperDetect$", "-test.count=1")
	var env []string
	for _, kv := range os.Environ() {
		// The helper must see the machine, not an ECS endpoint.
		if !strings.HasPrefix(kv, ecsMetadataEnv+"=") {
			env = append(env, kv)
		}
	}
	cmd.Env = append(env, helperEnv+"="+filepath.Join(dir, "cgroup.procs"))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("helper: %v\nstdout:\n%s\nstderr:\n%s", err, out, stderr.Bytes())
	}
	for line := range strings.Lines(string(out)) {
		if rest, ok := strings.CutPrefix(line, helperOutPrefix); ok {
			var r helperResult
			if err := json.Unmarshal([]byte(rest), &r); err != nil {
				t.Fatalf("decode helper result %q: %v", rest, err)
			}
			t.Logf("helper detected %+v", r)
			return r
		}
	}
	t.Fatalf("helper printed no result:\n%s", out)
	return helperResult{}
}

func TestRealCgroupCPU(t *testing.T) {
	dir := newTestCgroup(t, "cpu")
	writeCgroupFile(t, dir, "cpu.cfs_period_us", "100000")
	writeCgroupFile(t, dir, "cpu.cfs_quota_us", "50000")

	r := runHelper(t, dir)
	if r.Limits.CPU != 0.5 {
		t.Errorf("CPU = %v, want 0.5", r.Limits.CPU)
	}
	if want := "cgroup v1 " + dir; r.Limits.CPUSource != want {
		t.Errorf("CPUSource = %q, want %q", r.Limits.CPUSource, want)
	}
	if got := r.Limits.Workers(); got != 1 {
		t.Errorf("Workers() = %d, want 1", got)
	}
	if r.Limits.Affinity < 1 {
		t.Errorf("Affinity = %d, want ≥ 1", r.Limits.Affinity)
	}
}

func TestRealCgroupMemory(t *testing.T) {
	dir := newTestCgroup(t, "memory")
	writeCgroupFile(t, dir, "memory.limit_in_bytes", "268435456")

	r := runHelper(t, dir)
	if r.Limits.MemoryBytes != 268435456 {
		t.Errorf("MemoryBytes = %d, want 268435456", r.Limits.MemoryBytes)
	}
	if want := "cgroup v1 " + dir; r.Limits.MemorySource != want {
		t.Errorf("MemorySource = %q, want %q", r.Limits.MemorySource, want)
	}
	if r.UsageError != "" || r.MemoryUsage <= 0 {
		t.Errorf("MemoryUsage() = %d, %q; want > 0", r.MemoryUsage, r.UsageError)
	}
	if r.MemoryUsage > 268435456 {
		t.Errorf("MemoryUsage() = %d, above the 256 MiB limit", r.MemoryUsage)
	}
}
