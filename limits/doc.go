// Package limits finds out how much CPU and memory this task may use, so
// that clusterinit can start one worker per CPU (WORKERS=auto) and decide
// whether there is memory headroom for a replacement worker during a recycle.
//
// Sources, in order of preference:
//
//  1. ECS task metadata. When ECS_CONTAINER_METADATA_URI_V4 is set, the task
//     endpoint ($ECS_CONTAINER_METADATA_URI_V4/task) is read and its
//     Limits.CPU (vCPUs, possibly fractional) and Limits.Memory (MiB) are
//     used. The container endpoint ($ECS_CONTAINER_METADATA_URI_V4) is not
//     used: its Limits.CPU is in CPU units (1024 per vCPU) and describes only
//     the container's reservation, not the task's ceiling. Each field that the
//     task endpoint leaves out falls back to the cgroups on its own. The
//     metadata is preferred because on ECS the limits sit on the task's
//     cgroup, which a container often cannot see.
//  2. cgroups, v1 and v2. The process's cgroup is found from
//     /proc/self/cgroup and /proc/self/mountinfo, and every level from it up
//     to the top of the mount is read. The smallest limit on that path wins:
//     systemd slices and ECS put the limit on a parent cgroup while the
//     process's own cgroup says "unlimited", so reading only the leaf, as
//     Go's GOMAXPROCS and automaxprocs do, misses it where the parent can be
//     seen. Inside a container it usually cannot: the runtime mounts the
//     hierarchy at the container's own cgroup. For memory, cgroup v1's
//     memory.stat has hierarchical_memory_limit, the smallest limit on the
//     whole path, which is read too; nothing like it exists for the CPU
//     quota, so Limits.CPUNote says what to set instead. On hybrid hosts a
//     controller that a v1 hierarchy has is read there, since the unified
//     hierarchy cannot enforce it.
//
// Worker count is further capped by the CPU affinity mask, because Fargate
// and other hosts may show more CPUs than the task can actually run on.
//
// Detection never fails hard: anything missing or unreadable counts as "no
// limit from that source", and what went wrong is returned as a warning for
// the caller to log.
package limits
