// Package footprint keeps clusterinit's own resident memory small.
//
// Model: most of clusterinit's resident memory is not its heap (about 2 MiB)
// but the pages of its own executable that the kernel has mapped in: about
// 8 MiB of a static Go binary, most of them touched once while starting
// (the runtime's checks of its function table, configuration, limits
// detection, binding, the first forks) and never again. Once the fleet is
// up, Release asks the kernel to reclaim them (madvise MADV_PAGEOUT on the
// executable's read-only mappings): clean file pages are simply dropped,
// from the process and, when nothing else maps them, from the page cache
// the container's memory cgroup is charged for. A page needed again later
// is faulted back in from the page cache or the image, at the cost of a
// page fault; what the supervisor's loop keeps using comes back and stays.
//
// Invariants: only read-only mappings of clusterinit's own executable are
// touched (never the heap, stacks, or anything writable), so the worst a
// failure can do is leave the memory as it was; kernels before 5.4 (no
// MADV_PAGEOUT) answer EINVAL, reported and otherwise harmless.
package footprint
