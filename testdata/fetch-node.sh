#!/usr/bin/env bash
# fetch-node.sh MAJOR [ARCH] prints the directory holding the official `node`
# binary of that Node.js line (latest release of MAJOR) for ARCH (x64 or
# arm64; default x64), fetching it from npm (node-linux-ARCH@MAJOR, the
# official build repackaged by the Node.js project) the first time.
#
# The cache is $NODE_CACHE, default .cache/node at the repository root
# (ignored by git). CI and the tests fetch every Node line this way: no other
# download works on these machines.
#
#   PATH="$(testdata/fetch-node.sh 26):$PATH" make test
set -euo pipefail

major=${1:?usage: fetch-node.sh MAJOR [x64|arm64]}
arch=${2:-x64}
case "$major" in *[!0-9]*) echo "fetch-node.sh: MAJOR must be a number, got '$major'" >&2; exit 2 ;; esac
case "$arch" in x64|arm64) ;; *) echo "fetch-node.sh: ARCH must be x64 or arm64, got '$arch'" >&2; exit 2 ;; esac

root="$(cd "$(dirname "$0")/.." && pwd)"
cache=${NODE_CACHE:-$root/.cache/node}
dir="$cache/linux-$arch-$major"
mkdir -p "$cache"

# One fetch at a time per line (CI and tests may both ask).
exec 9>"$cache/.linux-$arch-$major.lock"
flock 9

if [ ! -x "$dir/bin/node" ]; then
  tmp=$(mktemp -d "$cache/.fetch-XXXXXX")
  trap 'rm -rf "$tmp"' EXIT
  (cd "$tmp" && npm pack --silent "node-linux-$arch@$major" >/dev/null)
  tar -xzf "$tmp"/node-linux-*.tgz -C "$tmp"
  rm -rf "$dir"
  mv "$tmp/package" "$dir"
  echo "fetch-node.sh: node-linux-$arch@$major -> $dir ($(cat "$dir/package.json" | sed -n 's/.*"version": *"\([^"]*\)".*/\1/p' | head -1))" >&2
fi
echo "$dir/bin"
