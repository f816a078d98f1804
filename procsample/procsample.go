package procsample

import (
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/prometheus/procfs"
)

// Usage of one worker's process tree (the worker and every descendant) at one
// sample.
type Usage struct {
	// RSSBytes is the sum of the resident sets (stat's rss pages × page
	// size) over the live tree. Pages shared by several processes of the
	// tree count once per process.
	RSSBytes int64
	// CPUSeconds is the sum of utime+stime over the live tree, plus the
	// cutime+cstime of every live process of the tree: the CPU of
	// descendants that have exited and been waited for, which the kernel
	// moves into their parent's cutime/cstime when it reaps them. Without
	// that term the CPU of a short-lived child would disappear from the
	// total when it exits. CPU of descendants that were re-parented away
	// (orphans adopted by the subreaper) is not counted, so the total can go
	// down between samples.
	CPUSeconds float64
	// Procs is the number of processes in the tree, the root and unreaped
	// zombies included.
	Procs int
}

// Sampler reads per-tree usage from one procfs mount. It is safe for
// concurrent use; concurrent Sample calls run one after the other.
type Sampler struct {
	fs       procfs.FS
	pageSize int64

	mu    sync.Mutex
	procs []procInfo // rows of the last pass, reused
	tree  tree       // scratch of aggregate, reused
}

// New returns a Sampler reading the procfs mounted at procRoot; "" means
// /proc. The pids later given to Sample must be pids of that procfs's pid
// namespace.
func New(procRoot string) (*Sampler, error) {
	if procRoot == "" {
		procRoot = procfs.DefaultMountPoint
	}
	fs, err := procfs.NewFS(procRoot)
	if err != nil {
		return nil, fmt.Errorf("procsample: open %s: %w", procRoot, err)
	}
	return &Sampler{fs: fs, pageSize: int64(os.Getpagesize())}, nil
}

// Sample reads /proc once (one listing, then one stat per process) and returns
// the usage of each root pid's tree: the root and every process whose chain of
// parents leads to it at the moment of the pass. Descendants that were
// re-parented away, such as orphans adopted by clusterinit as subreaper, are
// no longer part of any worker's tree.
//
// Roots missing from /proc are absent from the map. A process that vanishes
// during the pass, or whose stat cannot be read or parsed for any other
// reason, is skipped silently: it is left out of every tree, and if it was a
// root, that root is absent. The only error is failing to list /proc at all.
// With no roots, /proc is not read.
func (s *Sampler) Sample(roots []int) (map[int]Usage, error) {
	if len(roots) == 0 {
		return map[int]Usage{}, nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()

	all, err := s.fs.AllProcs()
	if err != nil {
		return nil, fmt.Errorf("procsample: list processes: %w", err)
	}
	s.procs = s.procs[:0]
	for _, p := range all {
		st, err := p.Stat()
		if err != nil {
			// Gone between the listing and the read (ENOENT, ESRCH, or an
			// empty read that does not parse), or otherwise unreadable: a
			// process that cannot be read cannot be charged to anyone.
			continue
		}
		s.procs = append(s.procs, procInfo{
			pid:        p.PID,
			ppid:       st.PPID,
			rssBytes:   int64(st.RSS) * s.pageSize,
			ticks:      int64(st.UTime) + int64(st.STime),
			childTicks: int64(st.CUTime) + int64(st.CSTime),
		})
	}
	return aggregate(s.procs, roots, &s.tree), nil
}

// CPURatio computes the CPU use as a fraction of one core between two samples
// of the same worker taken elapsed apart: 1 is one core busy all the time, 2
// two cores. A non-positive elapsed, or a total that went down (a descendant
// re-parented away between the samples), gives 0.
//
// The kernel counts CPU time in ticks of 10 ms, so over short intervals the
// ratio is coarse: over a 5 s SAMPLE_EVERY it is exact to ±0.002 cores per
// process in the tree.
func CPURatio(prev, cur Usage, elapsed time.Duration) float64 {
	if elapsed <= 0 {
		return 0
	}
	d := cur.CPUSeconds - prev.CPUSeconds
	if d <= 0 {
		return 0
	}
	return d / elapsed.Seconds()
}
