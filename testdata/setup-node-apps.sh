#!/usr/bin/env bash
# Installs and builds the real Node apps that the end-to-end tests run under
# clusterinit (apps_test.go):
#
#   testdata/express   npm ci
#   testdata/promclient npm ci (prom-client 15 for the /metrics/app tests;
#                      promclient/v13 and v14: the older lines)
#   testdata/nextjs    npm ci, next build (output: 'standalone'), then the
#                      static assets copied into .next/standalone as Next's
#                      docs say for standalone deployments
#
# and the framework apps of frameworks_test.go, each built as its docs say
# for production:
#
#   testdata/fastify, testdata/koa, testdata/hapi   npm ci
#   testdata/nestjs      npm ci, npm run build (tsc) -> dist/main.js
#   testdata/sveltekit   npm ci, npm run build (vite, adapter-node) -> build/
#
# Idempotent: each step records a hash of its inputs (and of the Node version
# and platform) and is skipped while they are unchanged. Everything comes from
# the npm registry through npm ci (Next's SWC compiler is the optional
# dependency @next/swc-linux-x64-gnu); telemetry is off. Exits non-zero on any
# failure. The tests run it themselves when an app is not built yet.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
cd "$here"

export NEXT_TELEMETRY_DISABLED=1
export npm_config_audit=false npm_config_fund=false npm_config_update_notifier=false
export npm_config_loglevel=warn

# One run at a time (CI and a test binary may both call this).
exec 9>"$here/.setup-node-apps.lock"
flock 9

t_all=$(date +%s%N)

ms_since() { echo $((($(date +%s%N) - $1) / 1000000)); }

# hash_of FILE... prints one hash over the files' paths and contents, the
# Node version and the platform.
hash_of() {
  {
    node --version
    uname -sm
    for f in "$@"; do
      printf '%s\n' "$f"
      sha256sum <"$f"
    done
  } | sha256sum | cut -d' ' -f1
}

# install DIR: npm ci unless node_modules matches package.json and the lock.
install() {
  local dir=$1 stamp="$1/node_modules/.clusterinit-setup.stamp" want t0
  want=$(hash_of "$dir/package.json" "$dir/package-lock.json")
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    echo "setup-node-apps: $dir: node_modules up to date"
    return
  fi
  t0=$(date +%s%N)
  echo "setup-node-apps: $dir: npm ci"
  (cd "$dir" && npm ci --no-audit --no-fund)
  echo "$want" >"$stamp"
  echo "setup-node-apps: $dir: npm ci took $(ms_since "$t0") ms"
}

# build_next DIR: next build into DIR/.next/standalone unless its sources are
# unchanged since the last build.
build_next() {
  local dir=$1 stamp="$1/.next/standalone/.clusterinit-build.stamp" want t0 sources
  # Every input of the build: the app's sources, its config and its
  # dependencies (whose hash is the install stamp).
  mapfile -t sources < <(cd "$dir" && find app public next.config.js package.json package-lock.json \
    -type f 2>/dev/null | LC_ALL=C sort | sed "s|^|$dir/|")
  # The build writes absolute paths into the standalone server: a moved
  # checkout rebuilds.
  want=$(printf '%s\n' "$here" "$(hash_of "${sources[@]}" "$dir/node_modules/.clusterinit-setup.stamp")" | sha256sum | cut -d' ' -f1)
  if [ -f "$dir/.next/standalone/server.js" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    echo "setup-node-apps: $dir: standalone build up to date"
    return
  fi
  t0=$(date +%s%N)
  echo "setup-node-apps: $dir: next build"
  rm -rf "$dir/.next"
  (cd "$dir" && ./node_modules/.bin/next build)
  if [ ! -f "$dir/.next/standalone/server.js" ]; then
    echo "setup-node-apps: $dir: next build wrote no .next/standalone/server.js" >&2
    exit 1
  fi
  # The standalone server serves /_next/static and public/ from its own
  # directory, but next build leaves them out for a CDN: copy them in.
  cp -R "$dir/.next/static" "$dir/.next/standalone/.next/static"
  if [ -d "$dir/public" ]; then
    cp -R "$dir/public" "$dir/.next/standalone/public"
  fi
  echo "$want" >"$stamp"
  echo "setup-node-apps: $dir: next build took $(ms_since "$t0") ms"
}

# build_app DIR OUTPUT SOURCE...: npm run build in DIR unless OUTPUT (a file
# the build writes) exists and the sources and dependencies are unchanged
# since the last build.
build_app() {
  local dir=$1 out=$2 stamp want t0 sources
  shift 2
  stamp="$dir/$(dirname "$out")/.clusterinit-build.stamp"
  mapfile -t sources < <(cd "$dir" && find "$@" package.json package-lock.json \
    -type f 2>/dev/null | LC_ALL=C sort | sed "s|^|$dir/|")
  want=$(hash_of "${sources[@]}" "$dir/node_modules/.clusterinit-setup.stamp")
  if [ -f "$dir/$out" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    echo "setup-node-apps: $dir: build up to date"
    return
  fi
  t0=$(date +%s%N)
  echo "setup-node-apps: $dir: npm run build"
  (cd "$dir" && npm run --silent build)
  if [ ! -f "$dir/$out" ]; then
    echo "setup-node-apps: $dir: npm run build wrote no $out" >&2
    exit 1
  fi
  echo "$want" >"$stamp"
  echo "setup-node-apps: $dir: npm run build took $(ms_since "$t0") ms"
}

# With arguments, only those apps' dependencies (a package's tests that need
# one app call it so).
if [ $# -gt 0 ]; then
  for app in "$@"; do install "$app"; done
  exit 0
fi

install express
install nextjs
build_next nextjs
install promclient
install promclient/v13
install promclient/v14

# ---- the framework apps (frameworks_test.go) ----
install fastify
install koa
install hapi
install nestjs
build_app nestjs dist/main.js src tsconfig.json tsconfig.build.json
# SvelteKit 3 and Vite 8 build on Node >= 22.17 only: under an older node,
# build with Node 26 from npm (fetch-node.sh). The built server is plain
# JavaScript; the tests run it on each Node line they cover.
(
  if ! node -e 'const [a, b] = process.versions.node.split(".").map(Number); process.exit(a > 22 || (a === 22 && b >= 17) ? 0 : 1)'; then
    PATH="$(bash "$here/fetch-node.sh" 26):$PATH"
    echo "setup-node-apps: sveltekit: node $(node --version) from npm for the build"
  fi
  install sveltekit
  build_app sveltekit build/index.js src vite.config.js
)

echo "setup-node-apps: done in $(ms_since "$t_all") ms"
