// A Koa app: app.listen(PORT), and on SIGTERM the usual server.close() whose
// callback is where an app closes its pools. Nothing in it knows about
// clusterinit. SHUTDOWN_LOG (set by the tests) names a file the close
// callback appends "<pid> server.close" to.
const fs = require('node:fs');
const { setTimeout: sleep } = require('node:timers/promises');
const Koa = require('koa');

const app = new Koa();

// Waits ms (default 1000), or less: until the file named by until exists
// (the tests create it once this worker is draining).
async function slowWait(ms, until) {
  const end = Date.now() + (Number(ms) || 1000);
  while (Date.now() < end && !(until && fs.existsSync(until))) await sleep(20);
}

app.use(async (ctx) => {
  if (ctx.path === '/slow') {
    // A slow answer, for a request in flight during a drain.
    console.log(`slow request in pid ${process.pid}`);
    await slowWait(ctx.query.ms, ctx.query.until);
  } else if (ctx.path !== '/') {
    ctx.status = 404;
    return;
  }
  ctx.body = { worker: process.env.CLUSTERINIT_WORKER, pid: process.pid };
});

const port = Number(process.env.PORT) || 3000;
const server = app.listen(port, () => {
  console.log(`koa listening on ${port}, pid ${process.pid}`);
});

process.on('SIGTERM', () => {
  server.close(() => {
    if (process.env.SHUTDOWN_LOG) fs.appendFileSync(process.env.SHUTDOWN_LOG, `${process.pid} server.close\n`);
  });
});
