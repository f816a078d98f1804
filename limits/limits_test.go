package limits

import (
	"context"
	"math"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func fixture(name string) string { return filepath.Join("testdata", "cgroup", name) }

// noEnv keeps the real environment's ECS variable out of fixture tests.
func noEnv(string) string { return "" }

func TestWorkers(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		l    Limits
		want int
	}{
		{"no limit uses affinity", Limits{Affinity: 8}, 8},
		{"fraction rounds up", Limits{CPU: 1.5, Affinity: 8}, 2},
		{"quarter vCPU", Limits{CPU: 0.25, Affinity: 8}, 1},
		{"exact", Limits{CPU: 2, Affinity: 8}, 2},
		{"capped by affinity", Limits{CPU: 2, Affinity: 1}, 1},
		{"capped by affinity, fraction", Limits{CPU: 3.5, Affinity: 3}, 3},
		{"huge limit", Limits{CPU: 1e300, Affinity: 4}, 4},
		{"infinite", Limits{CPU: math.Inf(1), Affinity: 4}, 4},
		{"NaN", Limits{CPU: math.NaN(), Affinity: 4}, 4},
		{"negative", Limits{CPU: -1, Affinity: 4}, 4},
		{"zero affinity counts as one", Limits{CPU: 4}, 1},
		{"zero value", Limits{}, 1},
	}
	for _, tt := range tests {
		if got := tt.l.Workers(); got != tt.want {
			t.Errorf("%s: %+v.Workers() = %d, want %d", tt.name, tt.l, got, tt.want)
		}
	}
}

// ecsTaskDir is the task cgroup in the v1-ecs-parent fixture.
const ecsTaskDir = "/ecs/3fd3a5e1c2a64e6c9b5f2d1c7a8e9f01"

func TestDetectFixtures(t *testing.T) {
	t.Parallel()
	tests := []struct {
		fixture   string
		cpu       float64
		cpuSource string
		workers   int // with Affinity forced to 8
		mem       int64
		memSource string
		warn      string // substring of the warning; "" = no warning
	}{
		{
			fixture:   "v1-ecs-parent",
			cpu:       1.5,
			cpuSource: "cgroup v1 /sys/fs/cgroup/cpu,cpuacct" + ecsTaskDir,
			workers:   2,
			mem:       1 << 30,
			memSource: "cgroup v1 /sys/fs/cgroup/memory" + ecsTaskDir,
		},
		{
			fixture:   "v1-container-root",
			cpu:       2,
			cpuSource: "cgroup v1 /sys/fs/cgroup/cpu,cpuacct",
			workers:   2,
			mem:       512 << 20,
			memSource: "cgroup v1 /sys/fs/cgroup/memory",
		},
		{
			fixture:   "v2-nested",
			cpu:       2.5,
			cpuSource: "cgroup v2 /sys/fs/cgroup/a/b",
			workers:   3,
			mem:       512 << 20,
			memSource: "cgroup v2 /sys/fs/cgroup/a",
		},
		{
			fixture:   "v2-unlimited",
			cpuSource: "none",
			workers:   8,
			memSource: "none",
		},
		{
			// Inside a container started with --cgroup-parent=/ecs/task1
			// (as ECS does): the mount ends at the container's own cgroup,
			// whose limit file says "unlimited"; memory.stat's
			// hierarchical_memory_limit still shows the task's 1 GiB. No
			// file shows the parent's CPU quota.
			fixture:   "v1-container-parent-limit",
			cpuSource: "none",
			workers:   8,
			mem:       1 << 30,
			memSource: "cgroup v1 /sys/fs/cgroup/memory/memory.stat hierarchical_memory_limit",
		},
		{
			// cgroup v2 with a cgroup namespace: the container's cgroup is
			// "/", and nothing shows a parent's limits.
			fixture:   "v2-container-namespace",
			cpuSource: "none",
			workers:   8,
			memSource: "none",
		},
		{
			fixture:   "v2-outside-root",
			cpu:       2,
			cpuSource: "cgroup v2 /sys/fs/cgroup",
			workers:   2,
			mem:       256 << 20,
			memSource: "cgroup v2 /sys/fs/cgroup",
		},
		{
			// The unified hierarchy's cpu.max (3 CPUs) must be ignored: v1 has cpu.
			fixture:   "hybrid",
			cpu:       1,
			cpuSource: "cgroup v1 /sys/fs/cgroup/cpu,cpuacct/app",
			workers:   1,
			mem:       384 << 20,
			memSource: "cgroup v2 /sys/fs/cgroup/unified/app",
		},
		{
			fixture:   "missing-proc",
			cpuSource: "none",
			workers:   8,
			memSource: "none",
			warn:      "proc/self/cgroup",
		},
		{
			// Garbage at the leaf and its parent is skipped; the mount point's
			// valid quota still counts.
			fixture:   "garbage",
			cpu:       3,
			cpuSource: "cgroup v1 /sys/fs/cgroup/cpu",
			workers:   3,
			memSource: "none",
			warn:      "sys/fs/cgroup/cpu/svc/job/cpu.cfs_quota_us",
		},
		{
			fixture:   "garbage-proc",
			cpuSource: "none",
			workers:   8,
			memSource: "none",
			warn:      "parse ",
		},
		{
			fixture:   "does-not-exist",
			cpuSource: "none",
			workers:   8,
			memSource: "none",
			warn:      "no such file",
		},
	}
	for _, tt := range tests {
		t.Run(tt.fixture, func(t *testing.T) {
			t.Parallel()
			d := Detector{Root: fixture(tt.fixture), Environ: noEnv}
			l, err := d.Detect(context.Background())
			switch {
			case tt.warn == "" && err != nil:
				t.Errorf("unexpected warning: %v", err)
			case tt.warn != "" && err == nil:
				t.Errorf("no warning, want one containing %q", tt.warn)
			case tt.warn != "" && !strings.Contains(err.Error(), tt.warn):
				t.Errorf("warning %q does not contain %q", err, tt.warn)
			}
			if err != nil {
				t.Logf("warning: %v", err)
			}
			if l.CPU != tt.cpu || l.CPUSource != tt.cpuSource {
				t.Errorf("CPU = %v from %q, want %v from %q", l.CPU, l.CPUSource, tt.cpu, tt.cpuSource)
			}
			if l.MemoryBytes != tt.mem || l.MemorySource != tt.memSource {
				t.Errorf("memory = %d from %q, want %d from %q", l.MemoryBytes, l.MemorySource, tt.mem, tt.memSource)
			}
			if l.Affinity < 1 {
				t.Errorf("Affinity = %d, want ≥ 1", l.Affinity)
			}
			l.Affinity = 8
			if got := l.Workers(); got != tt.workers {
				t.Errorf("Workers() with Affinity 8 = %d, want %d", got, tt.workers)
			}
		})
	}
}

func TestMemoryUsageFixtures(t *testing.T) {
	t.Parallel()
	tests := []struct {
		fixture string
		want    int64
		wantErr bool
	}{
		// Read from the task cgroup that holds the limit, not the container's:
		// 200 MiB used minus 10 MiB total_inactive_file.
		{"v1-ecs-parent", 200<<20 - 10<<20, false},
		// 100 MiB memory.current minus 4 MiB inactive_file at /a.
		{"v2-nested", 100<<20 - 4<<20, false},
		// The container's own usage, the nearest to the parent's limit that
		// can be seen: 150 MiB minus 5 MiB total_inactive_file.
		{"v1-container-parent-limit", 150<<20 - 5<<20, false},
		{"v2-unlimited", 0, true}, // no memory.current anywhere
		{"missing-proc", 0, true},
		{"garbage-proc", 0, true},
	}
	for _, tt := range tests {
		d := Detector{Root: fixture(tt.fixture)}
		got, err := d.MemoryUsage()
		if (err != nil) != tt.wantErr || got != tt.want {
			t.Errorf("%s: MemoryUsage() = %d, %v; want %d, error %v", tt.fixture, got, err, tt.want, tt.wantErr)
		}
	}
}

// ecsServer serves a task metadata document (or a status) under /v4/abc.
func ecsServer(t *testing.T, status int, body string) string {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/v4/abc/task" {
			http.NotFound(w, r)
			return
		}
		if status != http.StatusOK {
			http.Error(w, "boom", status)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(body))
	}))
	t.Cleanup(srv.Close)
	return srv.URL + "/v4/abc"
}

func TestDetectECS(t *testing.T) {
	t.Parallel()
	parentCPU := "cgroup v1 /sys/fs/cgroup/cpu,cpuacct" + ecsTaskDir
	parentMem := "cgroup v1 /sys/fs/cgroup/memory" + ecsTaskDir
	tests := []struct {
		name      string
		status    int
		body      string
		cpu       float64
		cpuSource string
		mem       int64
		memSource string
		warn      bool
	}{
		{
			name: "both fields", status: 200,
			body: `{"Cluster":"default","Limits":{"CPU":2,"Memory":1024},"Containers":[{"Limits":{"CPU":512,"Memory":1024}}]}`,
			cpu:  2, cpuSource: "ecs-metadata", mem: 1 << 30, memSource: "ecs-metadata",
		},
		{
			name: "quarter vCPU", status: 200,
			body: `{"Limits":{"CPU":0.25,"Memory":512}}`,
			cpu:  0.25, cpuSource: "ecs-metadata", mem: 512 << 20, memSource: "ecs-metadata",
		},
		{
			name: "server error falls back", status: 500,
			cpu: 1.5, cpuSource: parentCPU, mem: 1 << 30, memSource: parentMem, warn: true,
		},
		{
			name: "CPU absent", status: 200,
			body: `{"Limits":{"Memory":2048}}`,
			cpu:  1.5, cpuSource: parentCPU, mem: 2 << 30, memSource: "ecs-metadata",
		},
		{
			name: "Limits absent", status: 200,
			body: `{"Cluster":"default"}`,
			cpu:  1.5, cpuSource: parentCPU, mem: 1 << 30, memSource: parentMem,
		},
		{
			name: "garbage JSON", status: 200,
			body: `{"Limits":`,
			cpu:  1.5, cpuSource: parentCPU, mem: 1 << 30, memSource: parentMem, warn: true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			uri := ecsServer(t, tt.status, tt.body)
			d := Detector{
				Root: fixture("v1-ecs-parent"),
				Environ: func(k string) string {
					if k == "ECS_CONTAINER_METADATA_URI_V4" {
						return uri
					}
					return ""
				},
			}
			l, err := d.Detect(context.Background())
			if (err != nil) != tt.warn {
				t.Errorf("warning = %v, want one: %v", err, tt.warn)
			}
			if err != nil && !strings.Contains(err.Error(), "metadata") {
				t.Errorf("warning %q does not mention the metadata", err)
			}
			if l.CPU != tt.cpu || l.CPUSource != tt.cpuSource {
				t.Errorf("CPU = %v from %q, want %v from %q", l.CPU, l.CPUSource, tt.cpu, tt.cpuSource)
			}
			if l.MemoryBytes != tt.mem || l.MemorySource != tt.memSource {
				t.Errorf("memory = %d from %q, want %d from %q", l.MemoryBytes, l.MemorySource, tt.mem, tt.memSource)
			}
		})
	}
}

// TestDetectECSWorkers checks the SPEC's examples end to end: ECS CPU 2 gives
// 2 workers unless the affinity mask is smaller, CPU 0.25 gives 1.
func TestDetectECSWorkers(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		body     string
		affinity int
		want     int
	}{
		{`{"Limits":{"CPU":2}}`, 8, 2},
		{`{"Limits":{"CPU":2}}`, 1, 1},
		{`{"Limits":{"CPU":0.25}}`, 8, 1},
	} {
		uri := ecsServer(t, 200, tt.body)
		d := Detector{Root: fixture("v1-ecs-parent"), Environ: func(string) string { return uri }}
		l, err := d.Detect(context.Background())
		if err != nil {
			t.Fatalf("Detect: %v", err)
		}
		l.Affinity = tt.affinity
		if got := l.Workers(); got != tt.want {
			t.Errorf("%s with affinity %d: Workers() = %d, want %d", tt.body, tt.affinity, got, tt.want)
		}
	}
}

func TestDetectECSUnusable(t *testing.T) {
	t.Parallel()
	hang := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		<-r.Context().Done()
	}))
	t.Cleanup(hang.Close)
	for _, tt := range []struct {
		name   string
		uri    string
		client *http.Client
	}{
		{"not a URL", "::not a url", nil},
		{"no scheme", "169.254.170.2/v4/abc", nil},
		{"refused", "http://127.0.0.1:1/v4", nil},
		{"timeout", hang.URL + "/v4", &http.Client{Timeout: 100 * time.Millisecond}},
	} {
		d := Detector{Root: fixture("v2-nested"), Environ: func(string) string { return tt.uri }, Client: tt.client}
		l, err := d.Detect(context.Background())
		if err == nil {
			t.Errorf("%s: no warning", tt.name)
		} else {
			t.Logf("%s: warning: %v", tt.name, err)
		}
		if l.CPU != 2.5 || l.MemoryBytes != 512<<20 {
			t.Errorf("%s: got %+v, want the v2-nested cgroup limits", tt.name, l)
		}
	}
}

func TestOOMKillsFixtures(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		fixture string
		want    int64
		wantErr string
	}{
		{"v1-container-parent-limit", 2, ""},            // memory.oom_control
		{"v2-container-namespace", 1, ""},               // memory.events
		{"v1-ecs-parent", 0, "has no oom_kill counter"}, // no file: an old kernel
		{"missing-proc", 0, "proc/self/cgroup"},
	} {
		got, err := Detector{Root: fixture(tt.fixture)}.OOMKills()
		if got != tt.want || (err == nil) != (tt.wantErr == "") || (err != nil && !strings.Contains(err.Error(), tt.wantErr)) {
			t.Errorf("%s: OOMKills() = %d, %v; want %d, error containing %q", tt.fixture, got, err, tt.want, tt.wantErr)
		}
	}
}

func TestCPUNote(t *testing.T) {
	t.Parallel()
	if n := (Limits{CPU: 1.5, Affinity: 4}).CPUNote(); n != "" {
		t.Errorf("CPUNote with a limit = %q, want empty", n)
	}
	n := Limits{Affinity: 4}.CPUNote()
	for _, want := range []string{"no CPU limit visible", "(4)", "ECS_CONTAINER_METADATA_URI_V4", "CLUSTERINIT_WORKERS"} {
		if !strings.Contains(n, want) {
			t.Errorf("CPUNote = %q, want it to contain %q", n, want)
		}
	}
}
