// The benchmark's app: testdata/apps/http.js unchanged, plus what the
// harness needs to see inside each process, none of which touches the
// request path beyond one counter increment:
//   - BENCH_READY_FILE: "<pid>\n" is appended once the server listens, so the
//     harness knows every worker's pid and when all of them are ready;
//   - BENCH_COUNT_FILE: on SIGUSR2, "<pid> <requests since last dump>\n" is
//     appended and the counter is reset (requests per worker, for balance);
//   - GET /cpu?n=N: a CPU-heavy handler (N rounds of a hash-like loop);
//   - GET /skew: a skewed workload, every 33rd request of a process busy
//     for about 50 ms of JavaScript, the others for about 1 ms;
//   - BENCH_LISTEN_FD=3: listen on that inherited fd instead of the port,
//     as a systemd-style server does, for clusterinit without its preload
//     (SHIM=false), where nothing redirects the app's listen(PORT).
const fs = require('fs');
const http = require('http');

let count = 0;
const origCreateServer = http.createServer;
http.createServer = function createServer(...args) {
  const i = args.findIndex((a) => typeof a === 'function');
  if (i >= 0) {
    const handler = args[i];
    args[i] = function benchHandler(req, res) {
      count++;
      if (req.url === '/skew') {
        const ms = count % 33 === 0 ? 50 : 1;
        const end = process.hrtime.bigint() + BigInt(ms) * 1000000n;
        while (process.hrtime.bigint() < end);
        res.setHeader('Content-Type', 'application/json');
        return res.end(JSON.stringify({ pid: process.pid, ms }));
      }
      if (req.url.startsWith('/cpu')) {
        const n = Number(new URL(req.url, 'http://x').searchParams.get('n') || 20000);
        let h = 0;
        for (let k = 0; k < n; k++) h = (Math.imul(h ^ k, 16777619) + 0x9e3779b9) | 0;
        res.setHeader('Content-Type', 'application/json');
        return res.end(JSON.stringify({ pid: process.pid, h }));
      }
      return handler.call(this, req, res);
    };
  }
  const server = origCreateServer.apply(this, args);
  if (process.env.BENCH_LISTEN_FD) {
    const fd = Number(process.env.BENCH_LISTEN_FD);
    const listen = server.listen;
    server.listen = function listenOnFd(...a) {
      const cb = a.find((x) => typeof x === 'function');
      return listen.call(this, { fd }, cb);
    };
  }
  if (process.env.BENCH_READY_FILE) {
    server.once('listening', () => fs.appendFileSync(process.env.BENCH_READY_FILE, `${process.pid}\n`));
  }
  return server;
};

if (process.env.BENCH_COUNT_FILE) {
  process.on('SIGUSR2', () => {
    fs.appendFileSync(process.env.BENCH_COUNT_FILE, `${process.pid} ${count}\n`);
    count = 0;
  });
}

// BENCH_APP_MAIN: another app to run under the same hooks (the Next.js
// standalone server for the real-app scenario).
require(process.env.BENCH_APP_MAIN || '../testdata/apps/http.js');
