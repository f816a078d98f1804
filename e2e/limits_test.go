package e2e

import (
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/clusterinit/clusterinit/internal/testkit"
)

// The limits a container can see, shown with real cgroups (v1, as on these
// machines and in CI, as root). A container's view is made the way runc
// makes it: in a new mount namespace, the container's own cgroup directory
// is bind-mounted over the hierarchy's mount point, so the walk up the
// cgroup path ends at the container's own cgroup, and a limit on its parent
// (ECS's task, docker --cgroup-parent) is out of sight.

// v1Cgroup creates a cgroup named name below parent ("" for this test's own
// cgroup) in the v1 hierarchy of controller, and removes it when the test
// ends (children first: cleanups run last-registered first).
func v1Cgroup(t *testing.T, controller, parent, name string) string {
	t.Helper()
	if parent == "" {
		mount, err := filepath.EvalSymlinks(filepath.Join("/sys/fs/cgroup", controller))
		if err == nil {
			_, err = os.Stat(filepath.Join(mount, "cgroup.procs"))
		}
		need(t, "a cgroup v1 "+controller+" hierarchy at /sys/fs/cgroup/"+controller+" (CI runs as root on cgroup v1)", err)
		parent = filepath.Join(mount, ownCgroup(t, controller))
	}
	dir := filepath.Join(parent, name)
	if err := os.Mkdir(dir, 0o755); err != nil {
		need(t, "a writable cgroup v1 "+controller+" hierarchy (tests run as root)", err)
	}
	t.Cleanup(func() {
		// Every process of the test has exited, but the kernel may still be
		// releasing the last one.
		var err error
		if !testkit.Poll(2*time.Second, func() bool {
			err = os.Remove(dir)
			return err == nil || errors.Is(err, os.ErrNotExist)
		}) {
			t.Errorf("remove cgroup %s: %v", dir, err)
		}
	})
	return dir
}

// ownCgroup is this process's cgroup path in the v1 hierarchy of controller.
func ownCgroup(t *testing.T, controller string) string {
	t.Helper()
	b, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.SplitN(line, ":", 3)
		if len(f) == 3 && f[0] != "0" && strings.Contains(","+f[1]+",", ","+controller+",") {
			return f[2]
		}
	}
	t.Fatalf("no v1 %s controller in /proc/self/cgroup:\n%s", controller, b)
	return ""
}

func uniqueName(prefix string) string {
	return fmt.Sprintf("%s-%d-%x", prefix, os.Getpid(), rand.Uint32())
}

// taskCgroups makes a "task" cgroup with cpus and memBytes as limits (0:
// none) and an unlimited "container" cgroup in it, for both controllers.
func taskCgroups(t *testing.T, cpus float64, memBytes int64) (cpuCtr, memCtr string) {
	t.Helper()
	name := uniqueName("clusterinit-task")
	cpuTask := v1Cgroup(t, "cpu", "", name)
	memTask := v1Cgroup(t, "memory", "", name)
	if cpus > 0 {
		mustWrite(t, filepath.Join(cpuTask, "cpu.cfs_period_us"), "100000")
		mustWrite(t, filepath.Join(cpuTask, "cpu.cfs_quota_us"), fmt.Sprint(int(cpus*100000)))
	}
	if memBytes > 0 {
		mustWrite(t, filepath.Join(memTask, "memory.limit_in_bytes"), fmt.Sprint(memBytes))
	}
	return v1Cgroup(t, "cpu", cpuTask, "ctr"), v1Cgroup(t, "memory", memTask, "ctr")
}

// inCgroups is a wrapper that moves itself into the given cgroups and then
// execs its arguments.
func inCgroups(dirs ...string) []string {
	var script strings.Builder
	for _, d := range dirs {
		fmt.Fprintf(&script, "echo $$ > %s/cgroup.procs && ", d)
	}
	script.WriteString(`exec "$@"`)
	return []string{"sh", "-c", script.String(), "sh"}
}

// asContainer is a wrapper that joins the container cgroups cpuCtr and
// memCtr and shows them as the whole hierarchy, as runc does (without a
// cgroup namespace, as docker on cgroup v1 runs), then execs its arguments.
func asContainer(t *testing.T, cpuCtr, memCtr string) []string {
	t.Helper()
	_, err := os.Stat("/usr/bin/unshare")
	need(t, "unshare (util-linux)", err)
	cpuMount, _ := filepath.EvalSymlinks("/sys/fs/cgroup/cpu")
	script := fmt.Sprintf(`echo $$ > %[1]s/cgroup.procs && echo $$ > %[2]s/cgroup.procs && `+
		`mount --bind %[1]s %[3]s && mount --bind %[2]s /sys/fs/cgroup/memory && exec "$@"`, cpuCtr, memCtr, cpuMount)
	return []string{"unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh"}
}

// configLines runs `clusterinit config` under wrap and returns its "# key:"
// lines by key.
func configLines(t *testing.T, env []string, wrap []string) map[string]string {
	t.Helper()
	code, out, stderr := runCmd(t, env, append(wrap, binary, "config")...)
	if code != 0 {
		t.Fatalf("config: exit %d: %s", code, stderr)
	}
	return configNotes(out)
}

// configNotes returns the "# key: value" lines of config's output by key.
func configNotes(out string) map[string]string {
	lines := map[string]string{}
	for _, l := range strings.Split(out, "\n") {
		if k, v, ok := strings.Cut(strings.TrimPrefix(l, "# "), ": "); ok && strings.HasPrefix(l, "# ") {
			lines[k] = v
		}
	}
	return lines
}

// Inside a container whose task cgroup has 1 CPU and 512 MiB: the memory
// limit is found through memory.stat's hierarchical_memory_limit, the CPU
// quota cannot be seen and config, the start line and /status say so, with
// the remedy. On the host, the same cgroups give both limits by the walk.
func TestLimitsSeenFromInsideAContainer(t *testing.T) {
	if n := affinityCPUs(t); n < 2 {
		t.Fatalf("this test needs ≥ 2 CPUs to tell a quota from the affinity mask, have %d", n)
	}
	const mem = 512 << 20
	cpuCtr, memCtr := taskCgroups(t, 1, mem)

	host := configLines(t, testEnv(), inCgroups(cpuCtr, memCtr))
	if host["workers"] != "1" || !strings.Contains(host["detected"], fmt.Sprintf("memory=%d (cgroup v1 ", mem)) || host["note"] != "" {
		t.Errorf("from the host: %v; want 1 worker, memory %d from the task cgroup, no note", host, mem)
	}

	ctr := configLines(t, testEnv(), asContainer(t, cpuCtr, memCtr))
	wantDetected := fmt.Sprintf("cpu=0 (none) memory=%d (cgroup v1 /sys/fs/cgroup/memory/memory.stat hierarchical_memory_limit)", mem)
	if !strings.HasPrefix(ctr["detected"], wantDetected) {
		t.Errorf("inside the container: detected %q, want it to start with %q", ctr["detected"], wantDetected)
	}
	for _, want := range []string{"no CPU limit visible", "ECS_CONTAINER_METADATA_URI_V4", "CLUSTERINIT_WORKERS"} {
		if !strings.Contains(ctr["note"], want) {
			t.Errorf("inside the container: note %q does not say %q", ctr["note"], want)
		}
	}
	if ctr["workers"] != fmt.Sprint(affinityCPUs(t)) {
		t.Errorf("inside the container: %s workers, want %d (the affinity mask: the quota is out of sight)", ctr["workers"], affinityCPUs(t))
	}
	// A fixed count needs no remedy.
	if fixed := configLines(t, testEnv("CLUSTERINIT_WORKERS=1"), asContainer(t, cpuCtr, memCtr)); fixed["note"] != "" {
		t.Errorf("WORKERS=1 inside the container: note %q, want none", fixed["note"])
	}

	// The start line and /status of the running fleet.
	addr := freeAddr(t)
	env, args := helper("serve")
	p := startArgv(t, false, testEnv(append(env, "CLUSTERINIT_LISTEN=none", "CLUSTERINIT_SHIM=false",
		"CLUSTERINIT_HEALTH_ADDR="+addr)...), append(asContainer(t, cpuCtr, memCtr), append([]string{binary}, args...)...)...)
	p.waitUp(affinityCPUs(t))
	l := p.waitLog("starting", 1, 5*time.Second)[0]
	if num(l, "memory_limit") != mem || !strings.Contains(fmt.Sprint(l["memory_source"]), "hierarchical_memory_limit") ||
		l["cpu_source"] != "none" || !strings.Contains(fmt.Sprint(l["cpu_note"]), "no CPU limit visible") {
		t.Errorf("start line %v: want memory_limit %d from hierarchical_memory_limit, cpu_source none and the note", l, mem)
	}
	waitHealthUp(t, "http://"+addr)
	code, body, err := fetch("GET", "http://"+addr+"/status")
	if err != nil || code != 200 {
		t.Fatalf("GET /status: %d %v", code, err)
	}
	var doc struct {
		Limits struct {
			CPU          float64 `json:"cpu"`
			MemoryBytes  int64   `json:"memory_bytes"`
			MemorySource string  `json:"memory_source"`
			CPUNote      string  `json:"cpu_note"`
		} `json:"limits"`
	}
	if err := json.Unmarshal([]byte(body), &doc); err != nil {
		t.Fatalf("decode /status: %v", err)
	}
	if doc.Limits.MemoryBytes != mem || doc.Limits.CPU != 0 || !strings.Contains(doc.Limits.MemorySource, "hierarchical_memory_limit") {
		t.Errorf("/status limits = %+v", doc.Limits)
	}
	fams, err := scrape("http://" + addr)
	if err != nil {
		t.Fatal(err)
	}
	if v, _ := sample(fams, "clusterinit_memory_limit_bytes"); v != mem {
		t.Errorf("clusterinit_memory_limit_bytes = %v, want %d", v, mem)
	}
	if v, ok := sample(fams, "clusterinit_cpu_limit"); !ok || v != 0 {
		t.Errorf("clusterinit_cpu_limit = %v (%v), want 0", v, ok)
	}
}
