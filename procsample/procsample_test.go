package procsample

import (
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/procfs"
)

const mib = 1 << 20

func newSampler(tb testing.TB) *Sampler {
	tb.Helper()
	s, err := New("")
	if err != nil {
		tb.Skipf("no /proc: %v", err)
	}
	return s
}

func sample(tb testing.TB, s *Sampler, roots ...int) map[int]Usage {
	tb.Helper()
	m, err := s.Sample(roots)
	if err != nil {
		tb.Fatal(err)
	}
	return m
}

// TestShellTreeProcs: sh and its two background sleeps are one tree of 3.
func TestShellTreeProcs(t *testing.T) {
	s := newSampler(t)
	p := startShell(t, "sleep 30 & sleep 30 & wait")
	waitFor(t, 10*time.Second, func() (bool, string) {
		u, ok := sample(t, s, p.pid())[p.pid()]
		return ok && u.Procs == 3, fmt.Sprintf("tree of sh %d: %+v (present %v), want 3 procs", p.pid(), u, ok)
	})
}

// TestTreeMemory: a helper touching 50 MiB with a child touching 30 MiB is
// charged at least 80 MiB, and the child alone at least 30 MiB.
func TestTreeMemory(t *testing.T) {
	s := newSampler(t)
	p := startHelper(t, "mem", "50", "30")
	child := p.expect(t, "ready", 60*time.Second)

	m := sample(t, s, p.pid(), child)
	tree, ok := m[p.pid()]
	if !ok {
		t.Fatalf("root %d absent", p.pid())
	}
	leaf, ok := m[child]
	if !ok {
		t.Fatalf("child %d absent", child)
	}
	t.Logf("tree %+v (%.1f MiB), child %+v (%.1f MiB)", tree, float64(tree.RSSBytes)/mib, leaf, float64(leaf.RSSBytes)/mib)
	if tree.Procs != 2 || leaf.Procs != 1 {
		t.Errorf("procs: tree %d, child %d; want 2 and 1", tree.Procs, leaf.Procs)
	}
	if tree.RSSBytes < 80*mib {
		t.Errorf("tree RSS %d < 80 MiB", tree.RSSBytes)
	}
	if leaf.RSSBytes < 30*mib {
		t.Errorf("child RSS %d < 30 MiB", leaf.RSSBytes)
	}
	if tree.RSSBytes < leaf.RSSBytes+50*mib {
		t.Errorf("tree RSS %d < child's %d + 50 MiB", tree.RSSBytes, leaf.RSSBytes)
	}
}

// TestCPURisesWithBusyChild: a child burning 300 ms of CPU raises its
// parent's tree total by that much while it runs.
func TestCPURisesWithBusyChild(t *testing.T) {
	s := newSampler(t)
	p := startHelper(t, "parent-of-burn", "300", "keep")
	child := p.expect(t, "ready", 30*time.Second)
	before, ok := sample(t, s, p.pid())[p.pid()]
	if !ok {
		t.Fatalf("root %d absent", p.pid())
	}
	var last Usage
	waitFor(t, 30*time.Second, func() (bool, string) {
		last = sample(t, s, p.pid())[p.pid()]
		return last.CPUSeconds-before.CPUSeconds >= 0.28,
			fmt.Sprintf("tree CPU %.2f s, was %.2f s", last.CPUSeconds, before.CPUSeconds)
	})
	if last.Procs != 2 {
		t.Errorf("procs %d, want 2 (parent and busy child %d)", last.Procs, child)
	}
	t.Logf("tree CPU %.2f s → %.2f s", before.CPUSeconds, last.CPUSeconds)
}

// TestCPUOfReapedChildCounts: once the busy child has exited and been
// reaped, its CPU stays in the tree through the parent's cutime+cstime.
func TestCPUOfReapedChildCounts(t *testing.T) {
	s := newSampler(t)
	p := startHelper(t, "parent-of-burn", "300", "reap")
	child := p.expect(t, "ready", 30*time.Second)

	u, ok := sample(t, s, p.pid(), child)[p.pid()]
	if !ok {
		t.Fatalf("root %d absent", p.pid())
	}
	fs, err := procfs.NewDefaultFS()
	if err != nil {
		t.Fatal(err)
	}
	pr, err := fs.Proc(p.pid())
	if err != nil {
		t.Fatal(err)
	}
	st, err := pr.Stat()
	if err != nil {
		t.Fatal(err)
	}
	own := st.CPUTime()
	t.Logf("tree %+v; parent's own CPU %.2f s, cutime+cstime %d ticks", u, own, st.CUTime+st.CSTime)
	if u.Procs != 1 {
		t.Errorf("procs %d, want 1 (the child was reaped)", u.Procs)
	}
	if u.CPUSeconds-own < 0.28 {
		t.Errorf("tree CPU %.2f s minus parent's own %.2f s < 0.28 s: the reaped child's CPU is lost", u.CPUSeconds, own)
	}
}

// TestCPURatio: a process burning one core reads ≈1, a sleeping one ≈0,
// measured over the same interval.
//
// On a machine busy with other work the spinner may not get a whole core.
// The scheduler's own accounting (/proc/<pid>/task/*/schedstat: time run and
// time spent runnable but waiting for a CPU) tells the two cases apart: each
// interval's ratio must match the time the scheduler says the spinner ran,
// and must be 0.6..1.3 unless the spinner was kept waiting for a CPU, in
// which case the interval is measured again, a few times at most.
func TestCPURatio(t *testing.T) {
	s := newSampler(t)
	busy := startHelper(t, "spin")
	idle := startHelper(t, "mem", "1")
	busy.expect(t, "ready", 30*time.Second)
	idle.expect(t, "ready", 30*time.Second)

	for attempt := 1; ; attempt++ {
		t0 := time.Now()
		run0, wait0, sched := schedTimes(busy.pid())
		m0 := sample(t, s, busy.pid(), idle.pid())
		var m1 map[int]Usage
		var t1 time.Time
		// Until the spinner has used 0.5 s of CPU, or for 2 s on a machine
		// too busy to give it that.
		waitFor(t, 30*time.Second, func() (bool, string) {
			m1 = sample(t, s, busy.pid(), idle.pid())
			t1 = time.Now()
			d := m1[busy.pid()].CPUSeconds - m0[busy.pid()].CPUSeconds
			return d >= 0.5 || t1.Sub(t0) >= 2*time.Second, fmt.Sprintf("spinner used %.2f s", d)
		})
		run1, wait1, sched1 := schedTimes(busy.pid())
		sched = sched && sched1
		elapsed := t1.Sub(t0)
		rb := CPURatio(m0[busy.pid()], m1[busy.pid()], elapsed)
		ri := CPURatio(m0[idle.pid()], m1[idle.pid()], elapsed)
		ran := (run1 - run0).Seconds() / elapsed.Seconds()
		waited := (wait1 - wait0).Seconds() / elapsed.Seconds()
		t.Logf("attempt %d over %v: busy %.2f, idle %.3f; scheduler (ok %v): spinner ran %.2f, waited %.2f of the interval",
			attempt, elapsed, rb, ri, sched, ran, waited)
		if ri > 0.05 {
			t.Fatalf("idle ratio %.3f, want ≈0", ri)
		}
		if sched && math.Abs(rb-ran) > 0.15 {
			t.Fatalf("busy ratio %.2f, but the scheduler says the spinner ran %.2f of the interval", rb, ran)
		}
		switch {
		case rb > 1.3:
			t.Fatalf("busy ratio %.2f, want 0.6..1.3", rb)
		case rb >= 0.6:
			return
		case !sched || waited < 0.2:
			t.Fatalf("busy ratio %.2f, want 0.6..1.3", rb)
		case attempt == 3:
			t.Logf("machine too busy to give the spinner a core; the ratio matched the scheduler's figures every time")
			return
		}
	}
}

// schedTimes sums the time pid's threads have run and waited to run, from
// /proc/<pid>/task/*/schedstat; ok is false where the kernel does not keep
// those figures.
func schedTimes(pid int) (run, wait time.Duration, ok bool) {
	fs, err := procfs.NewDefaultFS()
	if err != nil {
		return 0, 0, false
	}
	threads, err := fs.AllThreads(pid)
	if err != nil || len(threads) == 0 {
		return 0, 0, false
	}
	for _, th := range threads {
		st, err := th.Schedstat()
		if err != nil {
			continue // a thread that just exited; Go's threads rarely do
		}
		run += time.Duration(st.RunningNanoseconds)
		wait += time.Duration(st.WaitingNanoseconds)
		ok = true
	}
	return run, wait, ok
}

func TestCPURatioEdges(t *testing.T) {
	a := Usage{CPUSeconds: 10}
	b := Usage{CPUSeconds: 12.5}
	for _, c := range []struct {
		prev, cur Usage
		elapsed   time.Duration
		want      float64
	}{
		{a, b, 5 * time.Second, 0.5},
		{a, b, time.Second, 2.5},
		{a, a, time.Second, 0},
		{b, a, time.Second, 0}, // went down: a descendant left the tree
		{a, b, 0, 0},
		{a, b, -time.Second, 0},
	} {
		if got := CPURatio(c.prev, c.cur, c.elapsed); math.Abs(got-c.want) > 1e-9 {
			t.Errorf("CPURatio(%v, %v, %v) = %v, want %v", c.prev.CPUSeconds, c.cur.CPUSeconds, c.elapsed, got, c.want)
		}
	}
}

// TestOrphanLeavesTree: a grandchild whose parent exits is re-parented
// away and no longer counts for the root; it is still there on its own.
func TestOrphanLeavesTree(t *testing.T) {
	s := newSampler(t)
	// The subshell starts sleep and exits at once; sh then becomes sleep
	// itself and prints nothing more.
	p := startShell(t, `(sleep 30 & echo "orphan $!"); exec sleep 30`)
	orphan := p.expect(t, "orphan", 10*time.Second)
	waitFor(t, 10*time.Second, func() (bool, string) {
		m := sample(t, s, p.pid(), orphan)
		root, rok := m[p.pid()]
		o, ook := m[orphan]
		return rok && ook && root.Procs == 1 && o.Procs == 1,
			fmt.Sprintf("root %+v (%v), orphan %+v (%v): want both present, 1 proc each", root, rok, o, ook)
	})
}

// TestMissingRoot: pids that cannot exist are absent, the others present.
func TestMissingRoot(t *testing.T) {
	s := newSampler(t)
	missing := []int{-1, 0}
	if b, err := os.ReadFile("/proc/sys/kernel/pid_max"); err == nil {
		if n, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil {
			missing = append(missing, n+1)
		}
	}
	self := os.Getpid()
	m := sample(t, s, append(missing, self)...)
	for _, pid := range missing {
		if u, ok := m[pid]; ok {
			t.Errorf("pid %d present: %+v", pid, u)
		}
	}
	if u, ok := m[self]; !ok || u.Procs < 1 || u.RSSBytes <= 0 {
		t.Errorf("self %d: %+v (present %v)", self, u, ok)
	}
	if len(m) != 1 {
		t.Errorf("map has %d entries, want 1: %v", len(m), m)
	}

	none, err := s.Sample(nil)
	if err != nil || none == nil || len(none) != 0 {
		t.Errorf("Sample(nil) = %v, %v; want an empty map", none, err)
	}
}

// writeStat writes a /proc/<pid>/stat line in the kernel's format.
func writeStat(t *testing.T, root string, pid, ppid, utime, stime, cutime, cstime, rssPages int) {
	t.Helper()
	dir := filepath.Join(root, strconv.Itoa(pid))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	// pid (comm) state ppid pgrp session tty tpgid flags minflt cminflt
	// majflt cmajflt utime stime cutime cstime priority nice threads
	// itrealvalue starttime vsize rss rsslim, then 28 more fields.
	line := fmt.Sprintf("%d (na me) S %d %d %d 0 -1 4194304 10 0 0 0 %d %d %d %d 20 0 1 0 100 1000000 %d 18446744073709551615",
		pid, ppid, pid, pid, utime, stime, cutime, cstime, rssPages)
	for range 28 {
		line += " 0"
	}
	if err := os.WriteFile(filepath.Join(dir, "stat"), []byte(line+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestSampleFakeProc runs the read path on a hand-made procfs: figures are
// converted and summed, and unreadable or vanished pids are skipped.
func TestSampleFakeProc(t *testing.T) {
	root := t.TempDir()
	writeStat(t, root, 1, 0, 5, 5, 100, 100, 10)
	writeStat(t, root, 10, 1, 100, 50, 30, 20, 100) // worker
	writeStat(t, root, 11, 10, 7, 3, 0, 0, 200)     // its child
	writeStat(t, root, 12, 11, 1, 1, 0, 0, 0)       // zombie grandchild
	writeStat(t, root, 20, 1, 1, 0, 0, 0, 1)        // other worker
	writeStat(t, root, 21, 14, 1, 0, 0, 0, 1)       // child of an unreadable pid
	// 13: vanished after the listing (no stat); 14: stat does not parse;
	// "self", "sys": not pids.
	for _, d := range []string{"13", "14", "self", "sys"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(root, "14", "stat"), []byte(""), 0o644); err != nil {
		t.Fatal(err)
	}

	s, err := New(root)
	if err != nil {
		t.Fatal(err)
	}
	page := int64(os.Getpagesize())
	m, err := s.Sample([]int{10, 20, 13, 14, 21, 99})
	if err != nil {
		t.Fatal(err)
	}
	want := map[int]Usage{
		10: {RSSBytes: 300 * page, CPUSeconds: float64(100+50+30+20+7+3+1+1) / 100, Procs: 3},
		20: {RSSBytes: page, CPUSeconds: 0.01, Procs: 1},
		21: {RSSBytes: page, CPUSeconds: 0.01, Procs: 1},
	}
	checkUsage(t, m, want)

	if _, err := New(filepath.Join(root, "missing")); err == nil {
		t.Error("New on a missing directory: no error")
	}
}

func checkUsage(t *testing.T, got, want map[int]Usage) {
	t.Helper()
	if len(got) != len(want) {
		t.Errorf("got %d roots %v, want %d %v", len(got), got, len(want), want)
	}
	for pid, w := range want {
		g, ok := got[pid]
		if !ok {
			t.Errorf("root %d absent, want %+v", pid, w)
			continue
		}
		if g.Procs != w.Procs || g.RSSBytes != w.RSSBytes || math.Abs(g.CPUSeconds-w.CPUSeconds) > 1e-9 {
			t.Errorf("root %d: %+v, want %+v", pid, g, w)
		}
	}
}

// TestSampleConcurrent: one Sampler shared by several goroutines (its
// scratch space is guarded).
func TestSampleConcurrent(t *testing.T) {
	s := newSampler(t)
	self := os.Getpid()
	done := make(chan error, 4)
	for range 4 {
		go func() {
			for range 5 {
				m, err := s.Sample([]int{self})
				if err == nil && m[self].Procs < 1 {
					err = fmt.Errorf("self absent: %v", m)
				}
				if err != nil {
					done <- err
					return
				}
			}
			done <- nil
		}()
	}
	for range 4 {
		if err := <-done; err != nil {
			t.Error(err)
		}
	}
}
