package footprint

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Released is what one Release did.
type Released struct {
	Mappings       int   // read-only mappings of the executable advised
	FileRSSBefore  int64 // RssFile of the process before, in bytes
	FileRSSAfter   int64 // and after
	ResidentBefore int64 // VmRSS before, in bytes
	ResidentAfter  int64 // and after
}

// Release asks the kernel to reclaim the resident pages of the running
// executable's read-only mappings.
func Release() (Released, error) {
	var r Released
	exe, err := os.Readlink("/proc/self/exe")
	if err != nil {
		return r, fmt.Errorf("read /proc/self/exe: %w", err)
	}
	maps, err := os.ReadFile("/proc/self/maps")
	if err != nil {
		return r, fmt.Errorf("read /proc/self/maps: %w", err)
	}
	ranges, err := readOnlyMappings(maps, exe)
	if err != nil {
		return r, err
	}
	if len(ranges) == 0 {
		return r, fmt.Errorf("find the mappings of %s in /proc/self/maps: none is read-only", exe)
	}
	r.ResidentBefore, r.FileRSSBefore, _ = residentSizes()
	for _, m := range ranges {
		// The raw call: the range is this process's mapping of a file, not
		// Go memory, so it never becomes a slice.
		if _, _, errno := unix.Syscall(unix.SYS_MADVISE, m.lo, m.hi-m.lo, unix.MADV_PAGEOUT); errno != 0 {
			return r, fmt.Errorf("madvise MADV_PAGEOUT %x-%x of %s: %w", m.lo, m.hi, exe, errno)
		}
		r.Mappings++
	}
	r.ResidentAfter, r.FileRSSAfter, _ = residentSizes()
	return r, nil
}

// mapping is one address range of /proc/self/maps.
type mapping struct{ lo, hi uintptr }

// readOnlyMappings returns the ranges of path's mappings that are not
// writable, from the text of /proc/self/maps.
func readOnlyMappings(maps []byte, path string) ([]mapping, error) {
	var out []mapping
	sc := bufio.NewScanner(bytes.NewReader(maps))
	for sc.Scan() {
		// address perms offset dev inode pathname (which may hold spaces)
		f := strings.SplitN(sc.Text(), " ", 6)
		if len(f) < 6 || strings.TrimLeft(f[5], " ") != path {
			continue
		}
		if len(f[1]) < 2 || f[1][1] != '-' {
			continue // writable: never touched
		}
		lo, hi, ok := strings.Cut(f[0], "-")
		if !ok {
			return nil, fmt.Errorf("parse /proc/self/maps line %q: no address range", sc.Text())
		}
		l, err1 := strconv.ParseUint(lo, 16, 64)
		h, err2 := strconv.ParseUint(hi, 16, 64)
		if err1 != nil || err2 != nil || h <= l {
			return nil, fmt.Errorf("parse /proc/self/maps line %q: bad address range", sc.Text())
		}
		out = append(out, mapping{uintptr(l), uintptr(h)})
	}
	return out, sc.Err()
}

// residentSizes reads VmRSS and RssFile of the process, in bytes.
func residentSizes() (resident, file int64, err error) {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0, 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		if err != nil {
			continue
		}
		switch k {
		case "VmRSS":
			resident = kb << 10
		case "RssFile":
			file = kb << 10
		}
	}
	return resident, file, nil
}
