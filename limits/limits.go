package limits

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"runtime"

	"golang.org/x/sys/unix"
)

const (
	// ecsMetadataEnv is set by the ECS agent (EC2 and Fargate ≥ 1.4.0) in
	// every container.
	ecsMetadataEnv = "ECS_CONTAINER_METADATA_URI_V4"

	sourceNone = "none"
	sourceECS  = "ecs-metadata"
)

// Limits is what this task may use.
type Limits struct {
	CPU          float64 // vCPUs allowed (quota/period, or ECS Limits.CPU); 0 = no limit found
	CPUSource    string  // e.g. "ecs-metadata", "cgroup v1 /sys/fs/cgroup/cpu/foo", "cgroup v2 /sys/fs/cgroup/a/b", "none"
	MemoryBytes  int64   // memory limit in bytes; 0 = none found
	MemorySource string  // like CPUSource
	Affinity     int     // CPUs in the sched_getaffinity mask of this process (≥1)
}

// Workers is SPEC's WORKERS=auto: the CPU limit rounded up, capped by the
// affinity mask, at least 1; the affinity mask alone when there is no CPU
// limit. An Affinity below 1 counts as 1.
func (l Limits) Workers() int {
	aff := max(l.Affinity, 1)
	if !(l.CPU > 0) { // also catches NaN
		return aff
	}
	// Compare as floats first so that a huge limit cannot overflow int.
	if l.CPU >= float64(aff) {
		return aff
	}
	return max(int(math.Ceil(l.CPU)), 1)
}

// CPUNote says why WORKERS=auto found no CPU limit and what to do about it,
// or "" when it found one. From inside a container only the container's own
// cgroup can be seen, and ECS (like docker --cgroup-parent) puts the task's
// quota on a parent; unlike memory, cgroup v1 has no file that shows a
// parent's CPU quota.
func (l Limits) CPUNote() string {
	if l.CPU > 0 {
		return ""
	}
	return fmt.Sprintf("no CPU limit visible (a quota on a parent cgroup, as ECS sets the task's, cannot be seen from inside a container): "+
		"WORKERS=auto starts one worker per CPU this process may run on (%d); on ECS the task metadata endpoint (%s, which the ECS agent sets) gives the task's limit, elsewhere set CLUSTERINIT_WORKERS",
		max(l.Affinity, 1), ecsMetadataEnv)
}

// Detector finds Limits. The zero value inspects the real system.
type Detector struct {
	// Root is the filesystem root under which /proc/self/cgroup,
	// /proc/self/mountinfo and the cgroup mounts are read; "" or "/" means
	// the real root. Tests point it at a fixture tree.
	Root string
	// Environ looks up ECS_CONTAINER_METADATA_URI_V4; os.Getenv if nil.
	Environ func(string) string
	// Client fetches the ECS task metadata; if nil, a client with a 2s
	// timeout that ignores proxy settings is used.
	Client *http.Client
}

// Detect returns the limits of this task. It never fails: when a source is
// unusable (metadata endpoint down, garbage in a cgroup file, ...) it falls
// back to the next one and reports what went wrong in the returned error,
// which is a warning for the caller to log alongside the usable Limits.
func (d Detector) Detect(ctx context.Context) (Limits, error) {
	l := Limits{CPUSource: sourceNone, MemorySource: sourceNone}
	var warns []error

	aff, err := affinity()
	if err != nil {
		warns = append(warns, err)
	}
	l.Affinity = aff

	if uri := d.getenv(ecsMetadataEnv); uri != "" {
		t, err := d.ecsTask(ctx, uri)
		if err != nil {
			warns = append(warns, fmt.Errorf("use ECS task metadata, falling back to cgroups: %w", err))
		}
		if t.cpu > 0 {
			l.CPU, l.CPUSource = t.cpu, sourceECS
		}
		if t.memoryBytes > 0 {
			l.MemoryBytes, l.MemorySource = t.memoryBytes, sourceECS
		}
	}
	if l.CPU > 0 && l.MemoryBytes > 0 {
		return l, errors.Join(warns...)
	}

	lines, mounts, err := d.readProcCgroups()
	if err != nil {
		warns = append(warns, fmt.Errorf("detect cgroup limits: %w", err))
		return l, errors.Join(warns...)
	}
	if l.CPU == 0 {
		if h, ok := locate(lines, mounts, "cpu"); ok {
			cpus, dir, err := d.cpuLimit(h)
			if err != nil {
				warns = append(warns, err)
			}
			if cpus > 0 {
				l.CPU, l.CPUSource = cpus, h.source(dir)
			}
		} else {
			warns = append(warns, errors.New("detect cgroup CPU limit: no mounted cgroup hierarchy holds the cpu controller"))
		}
	}
	if l.MemoryBytes == 0 {
		if h, ok := locate(lines, mounts, "memory"); ok {
			mem, _, source, err := d.memoryLimit(h)
			if err != nil {
				warns = append(warns, err)
			}
			if mem > 0 {
				l.MemoryBytes, l.MemorySource = mem, source
			}
		} else {
			warns = append(warns, errors.New("detect cgroup memory limit: no mounted cgroup hierarchy holds the memory controller"))
		}
	}
	return l, errors.Join(warns...)
}

func (d Detector) getenv(key string) string {
	if d.Environ != nil {
		return d.Environ(key)
	}
	return os.Getenv(key)
}

// abs turns a path as seen from Root into one this process can open.
func (d Detector) abs(p string) string {
	root := d.Root
	if root == "" {
		root = "/"
	}
	return filepath.Join(root, filepath.FromSlash(p))
}

// affinity counts the CPUs this process may run on. It falls back to
// runtime.NumCPU, which handles masks larger than unix.CPUSet, on error.
func affinity() (int, error) {
	var set unix.CPUSet
	if err := unix.SchedGetaffinity(0, &set); err != nil {
		return max(runtime.NumCPU(), 1), fmt.Errorf("get CPU affinity: %w", err)
	}
	return max(set.Count(), 1), nil
}
