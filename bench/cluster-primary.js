// A hand-written Node cluster primary, as teams write one, for the
// benchmark's "Node cluster" contenders. The scheduling policy comes from
// NODE_CLUSTER_SCHED_POLICY (rr, Node's default, or none), which Node reads
// when the cluster module loads.
//
// - BENCH_WORKERS workers of bench/app.js (default 2);
// - a worker that dies unasked is replaced;
// - SIGHUP: rolling reload, the usual way: for each old worker, fork a new
//   one, wait for its 'listening', then disconnect the old one and kill it
//   if it has not exited after BENCH_KILL_TIMEOUT ms (5000, PM2's
//   kill_timeout in the benchmark). Prints "reload done" once every old
//   worker has exited.
// - SIGTERM/SIGINT: kill the workers and exit.
'use strict';
const cluster = require('cluster');
const path = require('path');

const workers = Number(process.env.BENCH_WORKERS || 2);
const killTimeout = Number(process.env.BENCH_KILL_TIMEOUT || 5000);

cluster.setupPrimary({ exec: path.join(__dirname, 'app.js') });
for (let i = 0; i < workers; i++) cluster.fork();

cluster.on('exit', (worker, code, signal) => {
  if (!worker.exitedAfterDisconnect && !stopping) {
    console.error(`worker ${worker.process.pid} died (${signal || code}); starting another`);
    cluster.fork();
  }
});

let stopping = false;
let reloading = false;
let again = false;

function listening(worker) {
  return new Promise((resolve, reject) => {
    worker.once('listening', resolve);
    worker.once('exit', () => reject(new Error(`new worker ${worker.process.pid} exited before listening`)));
  });
}

async function rollingReload() {
  if (reloading) {
    again = true;
    return;
  }
  reloading = true;
  try {
    do {
      again = false;
      const exits = [];
      for (const old of Object.values(cluster.workers)) {
        await listening(cluster.fork());
        exits.push(new Promise((resolve) => old.once('exit', resolve)));
        const timer = setTimeout(() => old.process.kill('SIGTERM'), killTimeout);
        old.once('exit', () => clearTimeout(timer));
        old.disconnect();
      }
      await Promise.all(exits);
    } while (again);
    console.log('reload done');
  } catch (err) {
    console.error('reload failed:', err.message);
  } finally {
    reloading = false;
  }
}

process.on('SIGHUP', rollingReload);
for (const sig of ['SIGTERM', 'SIGINT']) {
  process.on(sig, () => {
    stopping = true;
    for (const w of Object.values(cluster.workers)) w.process.kill('SIGTERM');
    process.exit(0);
  });
}
