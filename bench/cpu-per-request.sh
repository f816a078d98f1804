#!/usr/bin/env bash
# cpu-per-request.sh BINARY... : the worker CPU (user+system, µs) that one
# request costs under each clusterinit binary given, and under the last one
# with SHIM=false (no preload: the app listens on fd 3 itself), one worker,
# wrk -t1 -c20 on loopback; per mode (a new connection per request, then
# keep-alive) ROUNDS rounds of DURATION, interleaved, with their median.
# CPU time per request is steadier than req/s on a shared 2-CPU machine: it
# does not move with what wrk or a neighbour gets of the CPUs.
#
#   ROUNDS=7 DURATION=3s bench/cpu-per-request.sh /tmp/clusterinit-before bin/clusterinit
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 1 ] || { echo "usage: $0 BINARY..." >&2; exit 2; }
rounds=${ROUNDS:-7}
duration=${DURATION:-3s}
port=${PORT_UNDER_TEST:-3222}
url=http://127.0.0.1:$port/

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

# one LABEL BINARY CONNCLOSE ENV... prints "LABEL µs-per-request".
one() {
  local label=$1 bin=$2 cc=$3
  shift 3
  local hdr=()
  [ "$cc" = 1 ] && hdr=(-H 'Connection: close')
  env "$@" PORT="$port" CLUSTERINIT_WORKERS=1 CLUSTERINIT_LISTEN="127.0.0.1:$port" \
    CLUSTERINIT_HEALTH_ADDR=off "$bin" -- node bench/app.js >/dev/null 2>&1 &
  local sup=$!
  local ok=
  for _ in $(seq 200); do
    curl -s -o /dev/null "$url" && { ok=1; break; }
    sleep 0.05
  done
  [ -n "$ok" ] || { echo "$label: no answer on $url" >&2; kill -TERM "$sup"; exit 1; }
  local worker
  worker=$(pgrep -P "$sup" | head -1)
  wrk -t1 -c20 -d1s "${hdr[@]}" "$url" >/dev/null # warm-up
  local c0 c1 n
  c0=$(cpu_ticks "$worker")
  n=$(wrk -t1 -c20 -d"$duration" "${hdr[@]}" "$url" | awk '/requests in/ {print $1}')
  c1=$(cpu_ticks "$worker")
  kill -TERM "$sup"
  wait "$sup" 2>/dev/null || true
  awk -v l="$label" -v c="$((c1 - c0))" -v n="$n" -v hz="$(getconf CLK_TCK)" \
    'BEGIN {printf "%s %.2f\n", l, c * 1e6 / hz / n}'
}

median() { sort -n | awk '{v[NR] = $1} END {print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2}'; }

for cc in 1 0; do
  [ "$cc" = 1 ] && echo "new connection per request, worker CPU µs per request:" || echo "keep-alive, worker CPU µs per request:"
  results=$(
    for _ in $(seq "$rounds"); do
      i=0
      for bin in "$@"; do
        i=$((i + 1))
        one "$i:$bin" "$bin" "$cc"
      done
      one "none:$bin,SHIM=false" "$bin" "$cc" CLUSTERINIT_SHIM=false BENCH_LISTEN_FD=3
    done
  )
  echo "$results" | awk '{print $1}' | sort -u | while read -r label; do
    vals=$(echo "$results" | awk -v l="$label" '$1 == l {print $NF}')
    printf '  %-50s median %6s  (%s)\n' "${label#*:}" "$(echo "$vals" | median)" "$(echo "$vals" | sort -n | tr '\n' ' ')"
  done
done
