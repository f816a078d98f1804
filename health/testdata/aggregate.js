// Builds the metrics of several "workers" with the real prom-client (one
// Registry each), and merges them with prom-client's own
// AggregatorRegistry.aggregate(), as a cluster primary would. Prints one JSON
// document: {"workers": [getMetricsAsJSON() per worker], "text": the merged
// registry's metrics()}, the reference that health's merge must reproduce.
// PROM_CLIENT is the path of the prom-client package to use.
'use strict';
const client = require(process.env.PROM_CLIENT);

async function worker(i) {
  const registers = [new client.Registry()];
  const reqs = new client.Counter({ name: 'http_requests_total', help: 'Requests\nby code', labelNames: ['code', 'method'], registers });
  reqs.inc({ code: 200, method: 'GET' }, 10 + i);
  reqs.inc({ method: 'POST', code: '500' }, i); // label order differs
  if (i === 1) reqs.inc({ code: 404, method: 'GET' }); // only one worker has it
  for (const aggregator of ['max', 'min', 'average', 'first', 'omit']) {
    const g = new client.Gauge({ name: `g_${aggregator}`, help: `a gauge, ${aggregator}`, aggregator, registers });
    g.set([3.5, -1e-7, 12345678901234567890, 0.1][i % 4] * (i + 1));
  }
  const h = new client.Histogram({ name: 'latency_seconds', help: 'Latency "quoted"', labelNames: ['route'], buckets: [0.0005, 0.1, 1, 2.5], registers });
  for (let k = 0; k <= i; k++) h.observe({ route: '/a\\b' }, 0.05 * (k + 1));
  h.observe({ route: 'x"y' }, 3);
  const s = new client.Summary({ name: 'size_bytes', help: 'sizes', percentiles: [0.5, 0.9], registers });
  s.observe(100 * (i + 1));
  return registers[0].getMetricsAsJSON();
}

(async () => {
  const workers = await Promise.all([0, 1, 2].map(worker));
  // Through JSON, as the metrics travel over IPC.
  const sent = JSON.parse(JSON.stringify(workers));
  const text = await client.AggregatorRegistry.aggregate(sent).metrics();
  process.stdout.write(JSON.stringify({ workers: sent, text }));
})();
