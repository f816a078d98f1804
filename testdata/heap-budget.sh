#!/bin/sh
# heap-budget.sh [LINE...]: the memory budget of HEAP_SIZE=auto, measured.
#
# For each Node line (default 20 22 24 26, fetched by fetch-node.sh) and each
# task memory limit (512 MiB, 1 GiB, 2 GiB) shared by 2 workers, it takes the
# --max-old-space-size that `clusterinit config` gives a worker under a real
# cgroup v1 limit, then runs one node that fills its heap until V8 gives up,
# with that flag, and prints v8's heap_size_limit and the peak RSS (GNU time's
# maximum resident set size) against the worker's share (limit / 2):
#   visible: node runs in the limited cgroup (docker --memory; Node sees it)
#   parent:  node runs in an unlimited child of it (ECS's task limit, docker
#            --cgroup-parent: Node sizes its young generation from the host)
# Needs root on cgroup v1 (as CI), Go, and /usr/bin/time. Takes ~2 minutes.
set -eu
cd "$(dirname "$0")/.."
lines=${*:-20 22 24 26}
bin=$(mktemp -d)
trap 'rm -rf "$bin"; for d in $cgs; do rmdir "$d/ctr" "$d" 2>/dev/null || true; done' EXIT
cgs=
go build -o "$bin/clusterinit" .
own=$(sed -n 's/^[0-9]*:memory:\(.*\)/\1/p' /proc/self/cgroup)
echo "line      limit  share  flag  heap_size_limit  peak RSS visible  peak RSS parent"
for l in $lines; do
  node=$(testdata/fetch-node.sh "$l")/node
  for mib in 512 1024 2048; do
    cg=/sys/fs/cgroup/memory$own/heap-budget-$$-$mib
    cgs="$cgs $cg"
    mkdir -p "$cg/ctr"
    echo $((mib << 20)) > "$cg/memory.limit_in_bytes"
    flag=$(sh -c "echo \$\$ > $cg/cgroup.procs && CLUSTERINIT_WORKERS=2 exec $bin/clusterinit config" |
      sed -n 's/^# heap size per worker: --max-old-space-size=\([0-9]*\).*/\1/p')
    run() { # cgroup → "heap_size_limit_MiB peak_rss_MiB"
      out=$(sh -c "echo \$\$ > $1/cgroup.procs && exec /usr/bin/time -f 'maxrss_kb=%M' $node --max-old-space-size=$flag testdata/apps/heapfill.js" 2>&1 || true)
      hsl=$(echo "$out" | sed -n 's/.*"heap_size_limit":\([0-9]*\).*/\1/p')
      rss=$(echo "$out" | sed -n 's/^maxrss_kb=//p')
      echo "$((hsl >> 20)) $((rss >> 10))"
    }
    set -- $(run "$cg")
    hsl=$1 vis=$2
    set -- $(run "$cg/ctr")
    ver=$($node --version)
    printf '%-9s %5s %6s %5s %12s MiB %12s MiB %12s MiB\n' "$ver" "${mib}Mi" "$((mib / 2))Mi" "$flag" "$hsl/$1" "$vis" "$2"
  done
done
