package procsample

// userHZ is the unit of the CPU times in /proc/<pid>/stat: clock ticks of
// USER_HZ, which the kernel fixes at 100 per second in its user-space ABI on
// every architecture Go supports on Linux.
const userHZ = 100

// procInfo is the part of one /proc/<pid>/stat that a sample needs.
type procInfo struct {
	pid, ppid  int
	rssBytes   int64 // resident set, bytes
	ticks      int64 // utime+stime, USER_HZ ticks
	childTicks int64 // cutime+cstime (waited-for descendants), USER_HZ ticks
}

// tree is the scratch space of aggregate, kept between samples so that a
// steady state allocates only the result map.
type tree struct {
	index map[int]int32 // pid → row
	first []int32       // row → its first child's row, -1 for none
	next  []int32       // row → its next sibling's row, -1 for none
	seen  []int32       // row → 1 + the number of the root whose walk reached it
	stack []int32
}

// aggregate sums the rows of procs over the tree of each pid in roots (the
// root and every row that reaches it through ppid links). Roots without a
// row are absent from the result. Each root is summed on its own, so a root
// that is also a descendant of another root counts in both. A row whose pid
// appears twice is taken from its last occurrence.
//
// The rows are read at slightly different instants, so a reused pid can in
// principle make the ppid links loop; every row is visited at most once per
// root, which keeps the walk finite whatever the table holds.
//
// t may be nil; passing the same *tree again reuses its memory.
func aggregate(procs []procInfo, roots []int, t *tree) map[int]Usage {
	out := make(map[int]Usage, len(roots))
	if len(roots) == 0 || len(procs) == 0 {
		return out
	}
	if t == nil {
		t = new(tree)
	}
	n := len(procs)
	if t.index == nil {
		t.index = make(map[int]int32, n)
	} else {
		clear(t.index)
	}
	t.first = fill(t.first, n, -1)
	t.next = fill(t.next, n, -1)
	t.seen = fill(t.seen, n, 0)

	for i := range procs {
		t.index[procs[i].pid] = int32(i)
	}
	for i := range procs {
		p, ok := t.index[procs[i].ppid]
		if !ok || int(p) == i || t.index[procs[i].pid] != int32(i) {
			continue // no parent in the table, a self-loop, or a superseded duplicate
		}
		t.next[i] = t.first[p]
		t.first[p] = int32(i)
	}

	for r, root := range roots {
		start, ok := t.index[root]
		if !ok {
			continue
		}
		if _, done := out[root]; done {
			continue
		}
		mark := int32(r + 1)
		var u Usage
		var ticks int64
		t.seen[start] = mark
		t.stack = append(t.stack[:0], start)
		for len(t.stack) > 0 {
			i := t.stack[len(t.stack)-1]
			t.stack = t.stack[:len(t.stack)-1]
			p := &procs[i]
			u.Procs++
			u.RSSBytes += p.rssBytes
			ticks += p.ticks + p.childTicks
			for c := t.first[i]; c >= 0; c = t.next[c] {
				if t.seen[c] != mark {
					t.seen[c] = mark
					t.stack = append(t.stack, c)
				}
			}
		}
		u.CPUSeconds = float64(ticks) / userHZ
		out[root] = u
	}
	return out
}

// fill returns s resized to n with every element set to v, reusing s's
// backing array when it is large enough.
func fill(s []int32, n int, v int32) []int32 {
	if cap(s) < n {
		s = make([]int32, n)
	}
	s = s[:n]
	for i := range s {
		s[i] = v
	}
	return s
}
