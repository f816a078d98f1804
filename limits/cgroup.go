package limits

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"slices"
	"strconv"
	"strings"
)

const (
	procSelfCgroup    = "/proc/self/cgroup"
	procSelfMountinfo = "/proc/self/mountinfo"

	// defaultCPUPeriod is the kernel's period when cpu.max names only a quota.
	defaultCPUPeriod = 100000

	// unlimitedBytes: v1 reports "no memory limit" as the largest page-aligned
	// int64 (9223372036854771712 with 4 KiB pages, less with larger pages), so
	// anything this big is treated as no limit rather than compared exactly.
	unlimitedBytes = 1 << 62

	// pathMax is Linux's PATH_MAX. Longer cgroup paths cannot be opened, and
	// bounding them keeps the level-by-level walk cheap on garbage input.
	pathMax = 4096
)

// cgroupLine is one line of /proc/self/cgroup:
// "hierarchy-ID:controller-list:cgroup-path".
type cgroupLine struct {
	id          int      // 0 for the v2 (unified) hierarchy
	controllers []string // v1 controllers (or "name=..."); empty for v2
	path        string   // absolute, as the kernel wrote it
}

// parseCgroupFile parses /proc/self/cgroup, skipping lines it cannot make
// sense of.
func parseCgroupFile(data []byte) []cgroupLine {
	var out []cgroupLine
	for line := range strings.Lines(string(data)) {
		line = strings.TrimRight(line, "\r\n")
		idText, rest, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		ctrls, p, ok := strings.Cut(rest, ":") // the path itself may contain ':'
		if !ok || !strings.HasPrefix(p, "/") || len(p) > pathMax {
			continue
		}
		id, err := strconv.Atoi(idText)
		if err != nil || id < 0 || (id == 0) != (ctrls == "") {
			continue
		}
		var cs []string
		if ctrls != "" {
			cs = strings.Split(ctrls, ",")
		}
		out = append(out, cgroupLine{id: id, controllers: cs, path: p})
	}
	return out
}

// mountInfo is the part of a /proc/self/mountinfo line needed to find
// cgroup hierarchies.
type mountInfo struct {
	root       string // the directory of the filesystem shown at mountPoint; raw, may contain ".."
	mountPoint string // cleaned, absolute
	fsType     string
	superOpts  []string
}

// parseMountinfo parses /proc/self/mountinfo (proc(5)), skipping malformed
// lines:
//
//	36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue
func parseMountinfo(data []byte) []mountInfo {
	var out []mountInfo
	for line := range strings.Lines(string(data)) {
		fields := strings.Fields(line)
		// Six fixed fields, optional tags, "-", then type, source, options.
		if len(fields) < 10 {
			continue
		}
		sep := slices.Index(fields[6:], "-")
		if sep < 0 {
			continue
		}
		sep += 6
		if len(fields) < sep+4 {
			continue
		}
		root, mp := unescapeMount(fields[3]), unescapeMount(fields[4])
		if !strings.HasPrefix(root, "/") || !strings.HasPrefix(mp, "/") || len(root) > pathMax || len(mp) > pathMax {
			continue
		}
		out = append(out, mountInfo{
			root:       root,
			mountPoint: path.Clean(mp),
			fsType:     fields[sep+1],
			superOpts:  strings.Split(fields[sep+3], ","),
		})
	}
	return out
}

// unescapeMount undoes the kernel's octal escaping of space, tab, newline
// and backslash (\040 etc.) in mountinfo paths.
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) && isOctal(s[i+1]) && isOctal(s[i+2]) && isOctal(s[i+3]) && s[i+1] <= '3' {
			b.WriteByte((s[i+1]-'0')<<6 | (s[i+2]-'0')<<3 | (s[i+3] - '0'))
			i += 3
			continue
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func isOctal(c byte) bool { return c >= '0' && c <= '7' }

// hierarchy says where one controller's cgroups can be read, with all paths
// as seen from Detector.Root.
type hierarchy struct {
	version    int    // 1 or 2
	mountPoint string // top of what can be read
	dir        string // this process's cgroup directory, at or below mountPoint
}

// levels lists the directories from the process's cgroup up to the mount
// point, leaf first.
func (h hierarchy) levels() []string {
	var out []string
	for p := h.dir; ; p = path.Dir(p) {
		out = append(out, p)
		if p == h.mountPoint || p == "/" || p == "." {
			return out
		}
	}
}

func (h hierarchy) source(dir string) string {
	return fmt.Sprintf("cgroup v%d %s", h.version, dir)
}

// locate finds the hierarchy that holds controller for this process. A v1
// hierarchy that has the controller wins: on hybrid hosts the unified
// hierarchy then has no say over it.
func locate(lines []cgroupLine, mounts []mountInfo, controller string) (hierarchy, bool) {
	for _, l := range lines {
		if l.id == 0 || !slices.Contains(l.controllers, controller) {
			continue
		}
		h, ok := pickMount(mounts, l.path, func(m mountInfo) bool {
			return m.fsType == "cgroup" && slices.Contains(m.superOpts, controller)
		})
		if ok {
			h.version = 1
			return h, true
		}
	}
	for _, l := range lines {
		if l.id != 0 {
			continue
		}
		h, ok := pickMount(mounts, l.path, func(m mountInfo) bool { return m.fsType == "cgroup2" })
		if ok {
			h.version = 2
			return h, true
		}
	}
	return hierarchy{}, false
}

// pickMount chooses among the mounts of one hierarchy the one that shows the
// most specific ancestor of cgPath. Inside a container the mount's root is
// often the container's own cgroup, so cgPath is made relative to it. When
// no mount shows an ancestor (cgroup namespaces, bind mounts of a subtree),
// the mount point itself is the closest level that can be read.
func pickMount(mounts []mountInfo, cgPath string, match func(mountInfo) bool) (hierarchy, bool) {
	var best hierarchy
	bestLen, found := -1, false
	for _, m := range mounts {
		if !match(m) {
			continue
		}
		rel, under := relativeTo(cgPath, m.root)
		switch {
		case under && len(m.root) > bestLen:
			dir := path.Join(m.mountPoint, rel)
			if len(dir) > pathMax {
				dir = m.mountPoint
			}
			best = hierarchy{mountPoint: m.mountPoint, dir: dir}
			bestLen, found = len(m.root), true
		case !found:
			best = hierarchy{mountPoint: m.mountPoint, dir: m.mountPoint}
			found = true
		}
	}
	return best, found
}

// relativeTo returns p relative to root (as an absolute-looking path) and
// whether p lies at or below root. A path with ".." lies outside this
// process's cgroup namespace (the kernel writes it that way), so it cannot
// be placed relative to anything.
func relativeTo(p, root string) (string, bool) {
	if hasDotDot(p) || hasDotDot(root) {
		return "", false
	}
	p, root = path.Clean(p), path.Clean(root)
	switch {
	case root == "/":
		return p, true
	case p == root:
		return "/", true
	case strings.HasPrefix(p, root+"/"):
		return p[len(root):], true
	}
	return "", false
}

// hasDotDot reports whether p has a ".." element.
func hasDotDot(p string) bool {
	return p == ".." || strings.HasPrefix(p, "../") || strings.HasSuffix(p, "/..") || strings.Contains(p, "/../")
}

// readProcCgroups reads and parses /proc/self/cgroup and /proc/self/mountinfo.
func (d Detector) readProcCgroups() ([]cgroupLine, []mountInfo, error) {
	cgFile := d.abs(procSelfCgroup)
	data, err := os.ReadFile(cgFile)
	if err != nil {
		return nil, nil, fmt.Errorf("read %s: %w", cgFile, err)
	}
	lines := parseCgroupFile(data)
	if len(lines) == 0 {
		return nil, nil, fmt.Errorf("parse %s: no cgroup entries", cgFile)
	}
	miFile := d.abs(procSelfMountinfo)
	data, err = os.ReadFile(miFile)
	if err != nil {
		return nil, nil, fmt.Errorf("read %s: %w", miFile, err)
	}
	mounts := parseMountinfo(data)
	if len(mounts) == 0 {
		return nil, nil, fmt.Errorf("parse %s: no mounts", miFile)
	}
	return lines, mounts, nil
}

// readValue returns the trimmed content of the file p (as seen from Root).
// ok is false when it does not exist, which is normal: the root cgroup and
// levels without the controller enabled have no limit files.
func (d Detector) readValue(p string) (s string, ok bool, err error) {
	file := d.abs(p)
	data, err := os.ReadFile(file)
	if errors.Is(err, fs.ErrNotExist) {
		return "", false, nil
	}
	if err != nil {
		return "", false, fmt.Errorf("read %s: %w", file, err)
	}
	return strings.TrimSpace(string(data)), true, nil
}

func (d Detector) readInt(p string) (n int64, ok bool, err error) {
	s, ok, err := d.readValue(p)
	if !ok || err != nil {
		return 0, false, err
	}
	n, err = strconv.ParseInt(s, 10, 64)
	if err != nil {
		return 0, false, fmt.Errorf("parse %s: %w", d.abs(p), err)
	}
	return n, true, nil
}

// cpuLimit walks from the process's cgroup to the mount point and returns
// the smallest CPU limit found and the directory that sets it (0, "" if none).
// Unreadable levels are reported and skipped: a parent may still have a limit.
func (d Detector) cpuLimit(h hierarchy) (cpus float64, dir string, warn error) {
	var warns []error
	for _, lv := range h.levels() {
		c, ok, err := d.cpuAt(h.version, lv)
		if err != nil {
			warns = append(warns, err)
			continue
		}
		if ok && (cpus == 0 || c < cpus) {
			cpus, dir = c, lv
		}
	}
	return cpus, dir, errors.Join(warns...)
}

func (d Detector) cpuAt(version int, dir string) (float64, bool, error) {
	if version == 2 {
		p := path.Join(dir, "cpu.max")
		s, ok, err := d.readValue(p)
		if !ok || err != nil {
			return 0, false, err
		}
		cpus, limited, err := parseCPUMax(s)
		if err != nil {
			return 0, false, fmt.Errorf("parse %s: %w", d.abs(p), err)
		}
		return cpus, limited, nil
	}
	quota, ok, err := d.readInt(path.Join(dir, "cpu.cfs_quota_us"))
	if !ok || err != nil || quota <= 0 { // -1: no quota at this level
		return 0, false, err
	}
	pp := path.Join(dir, "cpu.cfs_period_us")
	period, ok, err := d.readInt(pp)
	if !ok || err != nil {
		return 0, false, err
	}
	if period <= 0 {
		return 0, false, fmt.Errorf("parse %s: period %d is not positive", d.abs(pp), period)
	}
	return float64(quota) / float64(period), true, nil
}

// parseCPUMax parses a v2 cpu.max value, "$MAX $PERIOD" where $MAX is "max"
// or a quota in µs. limited is false for "max".
func parseCPUMax(s string) (cpus float64, limited bool, err error) {
	fields := strings.Fields(s)
	if len(fields) < 1 || len(fields) > 2 {
		return 0, false, fmt.Errorf("parse cpu.max %q: want \"max|QUOTA [PERIOD]\"", s)
	}
	period := int64(defaultCPUPeriod)
	if len(fields) == 2 {
		period, err = strconv.ParseInt(fields[1], 10, 64)
		if err != nil {
			return 0, false, fmt.Errorf("parse cpu.max period: %w", err)
		}
		if period <= 0 {
			return 0, false, fmt.Errorf("parse cpu.max period: %d is not positive", period)
		}
	}
	if fields[0] == "max" {
		return 0, false, nil
	}
	quota, err := strconv.ParseInt(fields[0], 10, 64)
	if err != nil {
		return 0, false, fmt.Errorf("parse cpu.max quota: %w", err)
	}
	if quota <= 0 {
		return 0, false, fmt.Errorf("parse cpu.max quota: %d is not positive", quota)
	}
	return float64(quota) / float64(period), true, nil
}

// memoryLimit walks like cpuLimit and returns the smallest memory limit, the
// directory whose usage goes with it (0, "" if none) and how to name where
// it came from.
//
// On v1 the leaf's memory.stat also has hierarchical_memory_limit, the
// smallest limit on the whole path up to the hierarchy's root. Inside a
// container the mount ends at the container's own cgroup, so this is the only
// way to see a limit set on a parent (ECS's task, docker --cgroup-parent).
// Its usage is then read from the leaf, the nearest level that can be seen.
func (d Detector) memoryLimit(h hierarchy) (bytes int64, dir, source string, warn error) {
	var warns []error
	for _, lv := range h.levels() {
		b, ok, err := d.memoryAt(h.version, lv)
		if err != nil {
			warns = append(warns, err)
			continue
		}
		if ok && (bytes == 0 || b < bytes) {
			bytes, dir = b, lv
		}
	}
	if dir != "" {
		source = h.source(dir)
	}
	if h.version == 1 {
		statFile := path.Join(h.dir, "memory.stat")
		b, ok, err := d.statInt(statFile, "hierarchical_memory_limit")
		if err != nil {
			warns = append(warns, err)
		}
		if ok && b > 0 && b < unlimitedBytes && (bytes == 0 || b < bytes) {
			bytes, dir = b, h.dir
			source = fmt.Sprintf("cgroup v1 %s hierarchical_memory_limit", statFile)
		}
	}
	return bytes, dir, source, errors.Join(warns...)
}

func (d Detector) memoryAt(version int, dir string) (int64, bool, error) {
	p := path.Join(dir, "memory.limit_in_bytes")
	if version == 2 {
		p = path.Join(dir, "memory.max")
	}
	s, ok, err := d.readValue(p)
	if !ok || err != nil {
		return 0, false, err
	}
	if version == 2 && s == "max" {
		return 0, false, nil
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return 0, false, fmt.Errorf("parse %s: %w", d.abs(p), err)
	}
	if n <= 0 || n >= unlimitedBytes {
		return 0, false, nil
	}
	return n, true, nil
}

// MemoryUsage returns the memory in use by the cgroup that holds the memory
// limit (the process's own cgroup when no level has one), so that the caller
// can compute headroom = limit - usage. Like the kernel's OOM accounting as
// shown by docker stats and the kubelet, inactive page cache is left out
// because it is reclaimed before anything is killed: v1
// memory.usage_in_bytes minus total_inactive_file, v2 memory.current minus
// inactive_file. It returns 0 and an error when the usage cannot be read.
func (d Detector) MemoryUsage() (int64, error) {
	lines, mounts, err := d.readProcCgroups()
	if err != nil {
		return 0, fmt.Errorf("read memory usage: %w", err)
	}
	h, ok := locate(lines, mounts, "memory")
	if !ok {
		return 0, errors.New("read memory usage: no mounted cgroup hierarchy holds the memory controller")
	}
	// Problems with the limit files were already reported by Detect; here
	// they only mean the usage is taken from the process's own cgroup.
	_, dir, _, _ := d.memoryLimit(h)
	if dir == "" {
		dir = h.dir
	}
	usageFile, statKey := "memory.usage_in_bytes", "total_inactive_file"
	if h.version == 2 {
		usageFile, statKey = "memory.current", "inactive_file"
	}
	up := path.Join(dir, usageFile)
	usage, ok, err := d.readInt(up)
	if err != nil {
		return 0, fmt.Errorf("read memory usage: %w", err)
	}
	if !ok {
		return 0, fmt.Errorf("read memory usage: %s: %w", d.abs(up), fs.ErrNotExist)
	}
	// Without a readable memory.stat the raw usage is still a safe
	// (pessimistic) figure for headroom.
	inactive := d.statValue(path.Join(dir, "memory.stat"), statKey)
	return max(usage-max(inactive, 0), 0), nil
}

// statValue returns key's value from a "key value" per line file such as
// memory.stat, or 0 when it is missing or unreadable.
func (d Detector) statValue(p, key string) int64 {
	n, _, _ := d.statInt(p, key)
	return n
}

// statInt returns key's value from a "key value" per line file (memory.stat,
// memory.events, memory.oom_control). ok is false when the file or the key
// is missing; a value that is not a number is an error naming the file.
func (d Detector) statInt(p, key string) (n int64, ok bool, err error) {
	s, found, err := d.readValue(p)
	if !found || err != nil {
		return 0, false, err
	}
	v, found := statField(s, key)
	if !found {
		return 0, false, nil
	}
	n, err = strconv.ParseInt(v, 10, 64)
	if err != nil {
		return 0, false, fmt.Errorf("parse %s %s: %w", d.abs(p), key, err)
	}
	return n, true, nil
}

// statField finds key in "key value" lines and returns its value's text.
func statField(s, key string) (string, bool) {
	for line := range strings.Lines(s) {
		k, v, ok := strings.Cut(strings.TrimSpace(line), " ")
		if ok && k == key {
			return strings.TrimSpace(v), true
		}
	}
	return "", false
}

// OOMKills returns how many processes the kernel's OOM killer has killed in
// this process's memory cgroup (v1 memory.oom_control, v2 memory.events,
// "oom_kill"; Linux 4.13 and later). Workers share clusterinit's cgroup, so
// a rise between two readings around a worker's SIGKILL names the OOM killer
// as its sender.
func (d Detector) OOMKills() (int64, error) {
	lines, mounts, err := d.readProcCgroups()
	if err != nil {
		return 0, fmt.Errorf("read OOM kill count: %w", err)
	}
	h, ok := locate(lines, mounts, "memory")
	if !ok {
		return 0, errors.New("read OOM kill count: no mounted cgroup hierarchy holds the memory controller")
	}
	file := path.Join(h.dir, "memory.oom_control")
	if h.version == 2 {
		file = path.Join(h.dir, "memory.events")
	}
	n, ok, err := d.statInt(file, "oom_kill")
	if err != nil {
		return 0, fmt.Errorf("read OOM kill count: %w", err)
	}
	if !ok {
		return 0, fmt.Errorf("read OOM kill count: %s has no oom_kill counter (Linux 4.13 or later has one)", d.abs(file))
	}
	return n, nil
}
