package supervisor

import (
	"fmt"

	"github.com/clusterinit/clusterinit/config"
)

// The memory budget: how the task's memory limit is shared among workers.
//
// HEAP_SIZE=auto gives each Node worker a V8 old-space limit
// (--max-old-space-size) such that every worker at its heap limit, with its
// young generation and native memory, fits in its share of the limit
// (limit / workers): heap = heapFraction × share − heapReserve. The young
// generation comes on top of --max-old-space-size (v8's heap_size_limit is
// both) and since V8 13 (Node 24) it is sized from the memory Node sees, up
// to 192 MiB on Node 24 when no limit is visible to Node itself (a limit on a
// parent cgroup), so a plain fraction would not fit small shares. Measured
// per Node line in docs/reliability.md ("The memory budget"): the worst line
// (Node 24, limit out of Node's sight) peaks at 232 MiB of a 256 MiB share
// (heap 115 MiB) and 457 MiB of a 512 MiB share (heap 294 MiB).
const (
	heapFraction = 0.70
	heapReserve  = 64 << 20
	// minHeap is the floor for a share too small for the formula: Node
	// runs an app in 32 MiB of old space, and such a fleet is better off
	// with fewer workers, which the start line's figures show.
	minHeap = 32 << 20
	// rssFraction is MAX_RSS=auto's share: recycle a worker at 90% of its
	// share of the limit, before the kernel's OOM killer acts at 100%.
	rssFraction = 0.9
)

// HeapSizeMiB is the --max-old-space-size, in MiB, that a Node worker gets
// under h when workers share limitBytes (0: none known); 0 means Node's own
// default (HEAP_SIZE=off, or auto without a limit).
func HeapSizeMiB(h config.HeapSize, limitBytes int64, workers int) int64 {
	switch {
	case h.Off:
		return 0
	case !h.Auto:
		return int64(h.Size) >> 20
	case limitBytes <= 0:
		return 0
	}
	share := float64(limitBytes) / float64(max(workers, 1))
	return max(int64(heapFraction*share-heapReserve), minHeap) >> 20
}

// MaxRSSBytes is the effective MAX_RSS when workers share limitBytes (0:
// none known); 0 means off.
func MaxRSSBytes(m config.MemLimit, limitBytes int64, workers int) int64 {
	if !m.Auto {
		return int64(m.Size)
	}
	if limitBytes <= 0 {
		return 0
	}
	return int64(rssFraction * float64(limitBytes) / float64(max(workers, 1)))
}

// heapSizeMiB is what a worker started now gets: the size for the current
// number of slots, unless the user set --max-old-space-size or there is no
// preload (SHIM=false) to carry it.
func (s *Supervisor) heapSizeMiB() int64 {
	if s.opt.NodeOptions == "" || s.opt.UserHeapSize {
		return 0
	}
	return HeapSizeMiB(s.cfg.HeapSize, s.opt.Limits.MemoryBytes, len(s.slots))
}

// maxRSS is the MAX_RSS in force for the current number of slots.
func (s *Supervisor) maxRSS() int64 {
	return MaxRSSBytes(s.cfg.MaxRSS, s.opt.Limits.MemoryBytes, len(s.slots))
}

// DescribeHeap says, for `clusterinit config` and the start line, what heap
// limit each Node worker gets and why.
func DescribeHeap(h config.HeapSize, limitBytes int64, workers int, shim, user bool) string {
	switch {
	case !shim:
		return "Node's default (SHIM=false: HEAP_SIZE needs the preload's NODE_OPTIONS)"
	case user:
		return "yours: --max-old-space-size in NODE_OPTIONS or the command wins over HEAP_SIZE"
	case h.Off:
		return "Node's default (HEAP_SIZE=off)"
	case !h.Auto:
		return fmt.Sprintf("--max-old-space-size=%d (HEAP_SIZE=%s)", HeapSizeMiB(h, limitBytes, workers), h)
	case limitBytes <= 0:
		return "Node's default (HEAP_SIZE=auto, but no memory limit is known)"
	}
	return fmt.Sprintf("--max-old-space-size=%d (HEAP_SIZE=auto: %.0f%% of the %d MiB share of %d workers less %d MiB)",
		HeapSizeMiB(h, limitBytes, workers), heapFraction*100, limitBytes/int64(max(workers, 1))>>20, workers, heapReserve>>20)
}
