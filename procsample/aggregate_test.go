package procsample

import (
	"testing"
)

// row builds a table row: rss in bytes, CPU in ticks.
func row(pid, ppid int, rss, ticks, childTicks int64) procInfo {
	return procInfo{pid: pid, ppid: ppid, rssBytes: rss, ticks: ticks, childTicks: childTicks}
}

// table is a synthetic process table:
//
//	1 init (subreaper)
//	├── 10 worker A ── 11 ── 12
//	│                └ 13
//	├── 20 worker B ── 21
//	├── 30 orphan, once under A, now adopted by 1
//	└── 50 ── 51 ── 52
//
// plus 40 ⇄ 41, a loop that torn reads of reused pids could produce, and
// 60, whose parent 59 is not in the table.
var table = []procInfo{
	row(1, 0, 1000, 1, 1000),
	row(12, 11, 4, 40, 0),
	row(10, 1, 1, 10, 5),
	row(11, 10, 2, 20, 7),
	row(13, 10, 8, 80, 0),
	row(20, 1, 16, 160, 0),
	row(21, 20, 32, 320, 3),
	row(30, 1, 64, 640, 0),
	row(40, 41, 128, 1, 0),
	row(41, 40, 256, 2, 0),
	row(50, 1, 1, 0, 0),
	row(51, 50, 1, 0, 0),
	row(52, 51, 1, 0, 0),
	row(60, 59, 512, 100, 100),
}

func TestAggregate(t *testing.T) {
	roots := []int{10, 20, 11, 99, 40, 60, 30, 10, 52}
	want := map[int]Usage{
		// worker A: 10, 11, 12, 13; the orphan 30 is not counted.
		10: {RSSBytes: 1 + 2 + 4 + 8, CPUSeconds: float64(10+5+20+7+40+80) / 100, Procs: 4},
		20: {RSSBytes: 16 + 32, CPUSeconds: float64(160+320+3) / 100, Procs: 2},
		// a root inside another root's tree counts on its own too.
		11: {RSSBytes: 2 + 4, CPUSeconds: float64(20+7+40) / 100, Procs: 2},
		// the loop is walked once.
		40: {RSSBytes: 128 + 256, CPUSeconds: 0.03, Procs: 2},
		60: {RSSBytes: 512, CPUSeconds: 2, Procs: 1},
		30: {RSSBytes: 64, CPUSeconds: 6.4, Procs: 1},
		52: {RSSBytes: 1, Procs: 1},
	}
	var tr tree
	// Twice with the same scratch, then with a smaller table: leftovers
	// from an earlier call must not leak into the next.
	checkUsage(t, aggregate(table, roots, &tr), want)
	checkUsage(t, aggregate(table, roots, &tr), want)
	small := []procInfo{row(10, 1, 7, 7, 0), row(13, 10, 1, 1, 1)}
	checkUsage(t, aggregate(small, []int{10, 11}, &tr), map[int]Usage{
		10: {RSSBytes: 8, CPUSeconds: 0.09, Procs: 2},
	})
	// nil scratch works too.
	checkUsage(t, aggregate(table, []int{20}, nil), map[int]Usage{20: want[20]})
}

func TestAggregateEdges(t *testing.T) {
	if m := aggregate(nil, []int{1}, nil); m == nil || len(m) != 0 {
		t.Errorf("empty table: %v", m)
	}
	if m := aggregate(table, nil, nil); m == nil || len(m) != 0 {
		t.Errorf("no roots: %v", m)
	}
	// A process that is its own parent (pid 0's row on some kernels shows
	// ppid 0) is counted once.
	self := []procInfo{row(0, 0, 1, 1, 0), row(5, 0, 1, 1, 0)}
	checkUsage(t, aggregate(self, []int{0}, nil), map[int]Usage{
		0: {RSSBytes: 2, CPUSeconds: 0.02, Procs: 2},
	})
	// A duplicated pid: the last row wins and the first is ignored, also as
	// a parent link.
	dup := []procInfo{row(7, 1, 100, 100, 0), row(8, 7, 1, 1, 0), row(7, 1, 2, 2, 0)}
	checkUsage(t, aggregate(dup, []int{7}, nil), map[int]Usage{
		7: {RSSBytes: 3, CPUSeconds: 0.03, Procs: 2},
	})
}

// A deep chain (a fork bomb's worth of nesting) is walked without recursion.
func TestAggregateDeepChain(t *testing.T) {
	const n = 100000
	procs := make([]procInfo, n)
	for i := range procs {
		procs[i] = row(i+2, i+1, 1, 1, 0)
	}
	m := aggregate(procs, []int{2, n + 1}, nil)
	checkUsage(t, m, map[int]Usage{
		2:     {RSSBytes: n, CPUSeconds: float64(n) / 100, Procs: n},
		n + 1: {RSSBytes: 1, CPUSeconds: 0.01, Procs: 1},
	})
}

// BenchmarkAggregate1000: the pure part of a sample over 1000 processes in
// 32 trees, with the scratch reused as Sampler does.
func BenchmarkAggregate1000(b *testing.B) {
	var procs []procInfo
	var roots []int
	pid := 100
	for range 32 {
		w := pid
		roots = append(roots, w)
		procs = append(procs, row(w, 1, 1, 1, 1))
		pid++
		for range 30 {
			procs = append(procs, row(pid, w, 1, 1, 0))
			pid++
		}
	}
	for len(procs) < 1000 {
		procs = append(procs, row(pid, 1, 1, 1, 0))
		pid++
	}
	var tr tree
	aggregate(procs, roots, &tr)
	b.ReportAllocs()
	for b.Loop() {
		aggregate(procs, roots, &tr)
	}
}
