package main

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// clockTicks is USER_HZ, the unit of utime and stime in /proc/<pid>/stat:
// 100 on every Linux architecture Go supports here.
const clockTicks = 100

// procStat is what the harness reads of one process from /proc/<pid>/stat.
type procStat struct {
	state    byte
	ppid     int
	cpu      time.Duration // utime + stime, all threads, including exited ones
	children time.Duration // cutime + cstime: children it has waited for
}

// readStat reads /proc/<pid>/stat. The command name (field 2) may contain
// spaces and parentheses, so fields are counted from the last ')'.
func readStat(pid int) (procStat, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return procStat{}, err
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 || i+2 >= len(b) {
		return procStat{}, fmt.Errorf("/proc/%d/stat: unexpected format", pid)
	}
	f := strings.Fields(string(b[i+2:]))
	// f[0] is field 3 (state); utime and stime are fields 14 and 15.
	if len(f) < 13 {
		return procStat{}, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(f))
	}
	ppid, _ := strconv.Atoi(f[1])
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	cut, _ := strconv.ParseInt(f[13], 10, 64)
	cst, _ := strconv.ParseInt(f[14], 10, 64)
	if err1 != nil || err2 != nil {
		return procStat{}, fmt.Errorf("/proc/%d/stat: bad utime/stime", pid)
	}
	return procStat{
		state:    f[0][0],
		ppid:     ppid,
		cpu:      time.Duration(ut+st) * time.Second / clockTicks,
		children: time.Duration(cut+cst) * time.Second / clockTicks,
	}, nil
}

// othersCPU is the CPU time used so far by every process that is not the
// bench, one of its descendants, or one of roots and their descendants
// (PM2's daemon, which detaches): the other work on a shared machine. It
// counts each process's own time and that of its children it has reaped, so
// short-lived processes (compilers, test binaries) are counted once reaped
// by a parent other than init.
// Kernel threads are left out: they mostly carry the benchmark's own
// loopback traffic.
func othersCPU(roots ...int) time.Duration {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return 0
	}
	stats := map[int]procStat{}
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if st, err := readStat(pid); err == nil {
			stats[pid] = st
		}
	}
	ours := map[int]bool{os.Getpid(): true}
	for _, r := range roots {
		if r > 0 {
			ours[r] = true
		}
	}
	isOurs := func(pid int) bool {
		for i := 0; i < 64 && pid > 1; i++ {
			if ours[pid] {
				return true
			}
			pid = stats[pid].ppid
		}
		return false
	}
	var t time.Duration
	for pid, st := range stats {
		if pid == 2 || st.ppid == 2 || isOurs(pid) {
			continue
		}
		t += st.cpu
		if pid != 1 { // init reaps every orphan, ours (PM2's daemon) included
			t += st.children
		}
	}
	return t
}

// alive reports whether pid exists and has not exited (a zombie has).
func alive(pid int) bool {
	st, err := readStat(pid)
	return err == nil && st.state != 'Z' && st.state != 'X'
}

// cpuOf is the CPU time used so far by pid, 0 if it is gone.
func cpuOf(pid int) time.Duration {
	st, err := readStat(pid)
	if err != nil {
		return 0
	}
	return st.cpu
}

// rssMiB is pid's resident memory (VmRSS) in MiB, 0 if it is gone.
func rssMiB(pid int) float64 {
	kb, _ := statusField(fmt.Sprintf("/proc/%d/status", pid), "VmRSS:")
	return float64(kb) / 1024
}

// rssAnonMiB is pid's anonymous resident memory (RssAnon: heap, stacks),
// without the file-backed pages of its executable and libraries.
func rssAnonMiB(pid int) float64 {
	kb, _ := statusField(fmt.Sprintf("/proc/%d/status", pid), "RssAnon:")
	return float64(kb) / 1024
}

// statusField reads one numeric field ("VmRSS:", "voluntary_ctxt_switches:")
// of a /proc status file.
func statusField(path, name string) (int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, name) {
			fs := strings.Fields(line[len(name):])
			if len(fs) == 0 {
				break
			}
			return strconv.ParseInt(fs[0], 10, 64)
		}
	}
	return 0, fmt.Errorf("%s: no %s", path, name)
}

// contextSwitches sums the voluntary and involuntary context switches of
// every thread of pid: each voluntary one is the thread going to sleep, so
// its rate while idle is the process's wakeups per second.
func contextSwitches(pid int) int64 {
	dir := fmt.Sprintf("/proc/%d/task", pid)
	ents, err := os.ReadDir(dir)
	if err != nil {
		return 0
	}
	var n int64
	for _, e := range ents {
		p := dir + "/" + e.Name() + "/status"
		v, _ := statusField(p, "voluntary_ctxt_switches:")
		nv, _ := statusField(p, "nonvoluntary_ctxt_switches:")
		n += v + nv
	}
	return n
}

// machineCPU is the busy and total jiffies of all CPUs from /proc/stat.
type machineCPU struct{ busy, total int64 }

func readMachineCPU() machineCPU {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return machineCPU{}
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	var m machineCPU
	for i, s := range f[1:] {
		v, _ := strconv.ParseInt(s, 10, 64)
		if i >= 8 { // guest time is already counted in user
			break
		}
		m.total += v
		if i != 3 && i != 4 { // idle, iowait
			m.busy += v
		}
	}
	return m
}

// coresBusy is how many CPUs were busy on average between a and b.
func coresBusy(a, b machineCPU, ncpu int) float64 {
	if b.total <= a.total {
		return 0
	}
	return float64(b.busy-a.busy) / float64(b.total-a.total) * float64(ncpu)
}

// pidsWithEnv lists the processes whose environment holds an entry
// ("KEY=value") that starts with prefix.
func pidsWithEnv(prefix string) []int {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	want := []byte(prefix)
	var pids []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", pid))
		if err != nil {
			continue
		}
		for _, entry := range bytes.Split(b, []byte{0}) {
			if bytes.HasPrefix(entry, want) {
				pids = append(pids, pid)
				break
			}
		}
	}
	return pids
}
