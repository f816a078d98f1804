package limits

import (
	"math"
	"strings"
	"testing"
)

func FuzzParseCPUMax(f *testing.F) {
	for _, s := range []string{"max 100000", "50000 100000", "max", "200000", "", "0 0", "-1 -1", "9223372036854775807 1", "1 9223372036854775807"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		cpus, limited, err := parseCPUMax(s)
		if err != nil && (cpus != 0 || limited) {
			t.Fatalf("parseCPUMax(%q) = %v, %v with error %v", s, cpus, limited, err)
		}
		if limited && !(cpus > 0 && !math.IsInf(cpus, 0)) {
			t.Fatalf("parseCPUMax(%q) = %v, limited", s, cpus)
		}
	})
}

func FuzzParseCgroupFile(f *testing.F) {
	for _, s := range []string{
		"12:cpu,cpuacct:/ecs/t/c\n0::/ecs/t/c\n",
		"0::/\n",
		"1:name=systemd:/a:b:c\n",
		"x::\n:::\n",
		"4:memory:/../..\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		lines := parseCgroupFile(data)
		for _, l := range lines {
			if !strings.HasPrefix(l.path, "/") || l.id < 0 || (l.id == 0) != (len(l.controllers) == 0) {
				t.Fatalf("bad entry %+v from %q", l, data)
			}
		}
		// The result must also be safe to feed to the rest of the walk.
		mounts := []mountInfo{{root: "/", mountPoint: "/sys/fs/cgroup", fsType: "cgroup2"}}
		if h, ok := locate(lines, mounts, "cpu"); ok {
			if lv := h.levels(); lv[len(lv)-1] != h.mountPoint {
				t.Fatalf("levels %q do not end at %q", lv, h.mountPoint)
			}
		}
	})
}

func FuzzParseMountinfo(f *testing.F) {
	for _, s := range []string{
		"26 22 0:24 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid shared:12 - cgroup cgroup rw,cpu,cpuacct\n",
		"30 24 0:26 /a\\040b /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n",
		"1 2 3 4 5 6 - - - -\n",
		"1 0 0:1 /../.. /x\\ rw - cgroup2 none rw\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		mounts := parseMountinfo(data)
		for _, m := range mounts {
			if !strings.HasPrefix(m.mountPoint, "/") || !strings.HasPrefix(m.root, "/") {
				t.Fatalf("bad mount %+v from %q", m, data)
			}
		}
		lines := []cgroupLine{{id: 0, path: "/a/b"}, {id: 3, controllers: []string{"cpu"}, path: "/a/b"}}
		if h, ok := locate(lines, mounts, "cpu"); ok {
			if lv := h.levels(); lv[len(lv)-1] != h.mountPoint {
				t.Fatalf("levels %q do not end at %q", lv, h.mountPoint)
			}
		}
	})
}

func FuzzParseECSTask(f *testing.F) {
	for _, s := range []string{
		`{"Limits":{"CPU":0.5,"Memory":1024}}`,
		`{"Limits":{"CPU":2}}`,
		`{"Limits":null}`,
		`{"Limits":{"CPU":"2","Memory":-1}}`,
		`{"Limits":{"Memory":1e300}}`,
		`[]`,
		``,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		l, err := parseECSTask(data)
		if err != nil && l != (ecsLimits{}) {
			t.Fatalf("parseECSTask(%q) = %+v with error %v", data, l, err)
		}
		if l.cpu < 0 || math.IsNaN(l.cpu) || math.IsInf(l.cpu, 0) || l.memoryBytes < 0 {
			t.Fatalf("parseECSTask(%q) = %+v", data, l)
		}
	})
}
