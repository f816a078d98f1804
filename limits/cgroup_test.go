package limits

import (
	"slices"
	"strings"
	"testing"
)

func TestParseCPUMax(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in      string
		cpus    float64
		limited bool
		wantErr bool
	}{
		{"max 100000", 0, false, false},
		{"max", 0, false, false},
		{"50000 100000", 0.5, true, false},
		{"150000 100000\n", 1.5, true, false},
		{"200000", 2, true, false},
		{"", 0, false, true},
		{"max 0", 0, false, true},
		{"1 2 3", 0, false, true},
		{"-1 100000", 0, false, true},
		{"abc 100000", 0, false, true},
		{"50000 xyz", 0, false, true},
	}
	for _, tt := range tests {
		cpus, limited, err := parseCPUMax(tt.in)
		if cpus != tt.cpus || limited != tt.limited || (err != nil) != tt.wantErr {
			t.Errorf("parseCPUMax(%q) = %v, %v, %v; want %v, %v, error %v", tt.in, cpus, limited, err, tt.cpus, tt.limited, tt.wantErr)
		}
	}
}

func TestParseCgroupFile(t *testing.T) {
	t.Parallel()
	in := "12:cpu,cpuacct:/ecs/t/c\n0::/a:b\r\nbad\n1:name=systemd:/x\n3::/v1-without-controllers\n0:cpu:/v2-with-controllers\n-1:cpu:/neg\n4:memory:rel\n"
	got := parseCgroupFile([]byte(in))
	want := []cgroupLine{
		{id: 12, controllers: []string{"cpu", "cpuacct"}, path: "/ecs/t/c"},
		{id: 0, path: "/a:b"},
		{id: 1, controllers: []string{"name=systemd"}, path: "/x"},
	}
	if !slices.EqualFunc(got, want, func(a, b cgroupLine) bool {
		return a.id == b.id && slices.Equal(a.controllers, b.controllers) && a.path == b.path
	}) {
		t.Errorf("parseCgroupFile = %+v, want %+v", got, want)
	}
}

func TestParseMountinfo(t *testing.T) {
	t.Parallel()
	in := `26 22 0:24 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid shared:12 master:3 - cgroup cgroup rw,cpu,cpuacct
30 24 0:26 /my\040root /sys/fs/cgroup/with\040space rw - cgroup2 cgroup2 rw,nsdelegate
31 24 0:27 / relative rw - tmpfs tmpfs rw
short line
32 24 0:28 / /no/separator rw a b c d
`
	got := parseMountinfo([]byte(in))
	if len(got) != 2 {
		t.Fatalf("parseMountinfo: %d mounts, want 2: %+v", len(got), got)
	}
	if m := got[0]; m.root != "/" || m.mountPoint != "/sys/fs/cgroup/cpu,cpuacct" || m.fsType != "cgroup" || !slices.Equal(m.superOpts, []string{"rw", "cpu", "cpuacct"}) {
		t.Errorf("first mount = %+v", m)
	}
	if m := got[1]; m.root != "/my root" || m.mountPoint != "/sys/fs/cgroup/with space" || m.fsType != "cgroup2" {
		t.Errorf("second mount = %+v", m)
	}
}

func TestUnescapeMount(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		`/plain`:          `/plain`,
		`/a\040b`:         `/a b`,
		`/tab\011x`:       "/tab\tx",
		`/back\134slash`:  `/back\slash`,
		`/trailing\04`:    `/trailing\04`,
		`/not\999octal`:   `/not\999octal`,
		`/too\777big`:     `/too\777big`,
		`\`:               `\`,
		`/nl\012\040both`: "/nl\n both",
	} {
		if got := unescapeMount(in); got != want {
			t.Errorf("unescapeMount(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestRelativeTo(t *testing.T) {
	t.Parallel()
	tests := []struct {
		p, root string
		rel     string
		under   bool
	}{
		{"/a/b", "/", "/a/b", true},
		{"/a/b", "/a", "/b", true},
		{"/a/b", "/a/b", "/", true},
		{"/a/b", "/a/b/", "/", true},
		{"/ab", "/a", "", false},
		{"/", "/docker/x", "", false},
		{"/", "/../../kubepods/x", "", false},
		{"/../x", "/", "", false},
	}
	for _, tt := range tests {
		rel, under := relativeTo(tt.p, tt.root)
		if rel != tt.rel || under != tt.under {
			t.Errorf("relativeTo(%q, %q) = %q, %v; want %q, %v", tt.p, tt.root, rel, under, tt.rel, tt.under)
		}
	}
}

func TestLocate(t *testing.T) {
	t.Parallel()
	lines := parseCgroupFile([]byte("4:cpu,cpuacct:/docker/c1/sub\n0::/docker/c1/sub\n"))
	mounts := parseMountinfo([]byte(
		"1 0 0:1 /other /mnt/other rw - cgroup cgroup rw,cpu,cpuacct\n" +
			"2 0 0:1 /docker/c1 /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu,cpuacct\n" +
			"3 0 0:2 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw\n"))
	h, ok := locate(lines, mounts, "cpu")
	if !ok || h.version != 1 || h.mountPoint != "/sys/fs/cgroup/cpu" || h.dir != "/sys/fs/cgroup/cpu/sub" {
		t.Errorf("locate cpu = %+v, %v", h, ok)
	}
	if got, want := h.levels(), []string{"/sys/fs/cgroup/cpu/sub", "/sys/fs/cgroup/cpu"}; !slices.Equal(got, want) {
		t.Errorf("levels = %q, want %q", got, want)
	}
	// memory is not in any v1 hierarchy here, so the unified one is used.
	h, ok = locate(lines, mounts, "memory")
	if !ok || h.version != 2 || h.dir != "/sys/fs/cgroup/unified/docker/c1/sub" {
		t.Errorf("locate memory = %+v, %v", h, ok)
	}
	if _, ok := locate(lines, mounts[:2], "memory"); ok {
		t.Errorf("locate memory without a v2 mount succeeded")
	}
}

// TestHugeInputsStayBounded guards against the walk going quadratic on
// garbage: paths beyond PATH_MAX are dropped or cut back to the mount point,
// so even megabyte-sized proc files are handled in milliseconds.
func TestHugeInputsStayBounded(t *testing.T) {
	t.Parallel()
	deep := "/" + strings.Repeat("a/", 500000)
	lines := parseCgroupFile([]byte("0::" + deep + "\n0::/" + strings.Repeat("b/", 2047) + "c\n"))
	if len(lines) != 1 {
		t.Fatalf("parseCgroupFile kept %d lines, want only the one within PATH_MAX", len(lines))
	}
	mi := strings.Repeat("1 2 0:1 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n", 20000) +
		"3 2 0:1 / " + deep + " rw - cgroup2 cgroup2 rw\n"
	mounts := parseMountinfo([]byte(mi))
	if len(mounts) != 20000 {
		t.Fatalf("parseMountinfo kept %d mounts, want 20000", len(mounts))
	}
	h, ok := locate(lines, mounts, "cpu")
	if !ok {
		t.Fatal("locate failed")
	}
	// /sys/fs/cgroup plus a 4095-byte path is over PATH_MAX: only the mount point is read.
	if h.dir != "/sys/fs/cgroup" {
		t.Errorf("dir = %.40q..., want the mount point", h.dir)
	}
	if n := len(h.levels()); n > pathMax/2+1 {
		t.Errorf("levels = %d", n)
	}
}
