// Standalone output: `next build` writes .next/standalone/server.js, a
// self-contained server with the node_modules it needs, which is what a
// Docker image ships and what clusterinit runs as `node server.js`.
/** @type {import('next').NextConfig} */
module.exports = {
  output: 'standalone',
  // The standalone tree is traced from this directory, not from the
  // repository root (which holds other lockfiles).
  outputFileTracingRoot: __dirname,
  // Nothing but the app itself: no image optimisation (sharp) at runtime.
  images: { unoptimized: true },
  poweredByHeader: false,
};
