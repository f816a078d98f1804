// The app behind app.js and app.mjs, given their prom-client.
'use strict';
module.exports = function serve(client, http, process) {
  const slot = Number(process.env.CLUSTERINIT_WORKER || 0);
  const requests = new client.Counter({ name: 'app_requests_total', help: 'Requests answered.', labelNames: ['route'] });
  const highest = new client.Gauge({ name: 'app_highest_slot', help: 'The highest slot serving.', aggregator: 'max' });
  const workers = new client.Gauge({ name: 'app_workers', help: 'Workers that export metrics.' });
  const latency = new client.Histogram({ name: 'app_latency_seconds', help: 'Made-up latency.', buckets: [0.01, 0.1, 1] });
  highest.set(slot);
  workers.set(1);
  const series = Number(process.env.SERIES || 0);
  if (series > 0) {
    const wide = new client.Counter({ name: 'app_wide_total', help: 'Many series.', labelNames: ['key'] });
    for (let i = 0; i < series; i++) wide.inc({ key: `series-with-a-longish-label-value-${i}` }, i);
  }
  let n = 0;
  http
    .createServer(async (req, res) => {
      const url = new URL(req.url, 'http://x');
      if (url.pathname === '/metrics') {
        res.setHeader('Content-Type', client.register.contentType);
        return res.end(await client.register.metrics());
      }
      if (url.pathname === '/block') {
        const until = Date.now() + Number(url.searchParams.get('ms') || 1000);
        while (Date.now() < until);
      }
      requests.inc({ route: url.pathname });
      latency.observe([0.005, 0.05, 0.5][n++ % 3]);
      res.end(JSON.stringify({ slot, pid: process.pid }));
    })
    .listen(process.env.PORT || 3000);
};
