// The hand-written cluster primary that /metrics/app replaces: Node's cluster
// module forks WORKERS workers of metrics-common.js, and the primary serves
// prom-client's AggregatorRegistry.clusterMetrics() on METRICS_PORT. The
// scrape benchmark (e2e BenchmarkAppMetricsScrape) runs it beside
// clusterinit. Prints "ready" once every worker listens.
'use strict';
const cluster = require('node:cluster');
const http = require('node:http');
const client = require('prom-client');

if (cluster.isPrimary) {
  const registry = new client.AggregatorRegistry();
  const n = Number(process.env.WORKERS || 2);
  let listening = 0;
  for (let i = 0; i < n; i++) cluster.fork({ CLUSTERINIT_WORKER: String(i) });
  cluster.on('listening', () => {
    if (++listening === n) console.log('ready');
  });
  http
    .createServer(async (req, res) => {
      try {
        const text = await registry.clusterMetrics();
        res.setHeader('Content-Type', registry.contentType);
        res.end(text);
      } catch (err) {
        res.statusCode = 500;
        res.end(String(err));
      }
    })
    .listen(Number(process.env.METRICS_PORT), '127.0.0.1');
  process.on('SIGTERM', () => {
    for (const w of Object.values(cluster.workers)) w.kill();
    process.exit(0);
  });
} else {
  // A worker answers the primary's requests once an AggregatorRegistry
  // exists in it too (prom-client adds its listener in the constructor).
  new client.AggregatorRegistry(); // eslint-disable-line no-new
  require('./metrics-common.js')(client, http, process);
}
