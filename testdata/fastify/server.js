// A Fastify 5 app as Fastify's docs write one for a container: listen on
// 0.0.0.0, close the instance on SIGTERM, clean up in an onClose hook.
// Nothing in it knows about clusterinit. SHUTDOWN_LOG (set by the tests)
// names a file the onClose hook appends "<pid> onClose" to.
const fs = require('node:fs');
const { setTimeout: sleep } = require('node:timers/promises');
const Fastify = require('fastify');

const app = Fastify({ logger: false });

// Waits ms (default 1000), or less: until the file named by until exists
// (the tests create it once this worker is draining).
async function slowWait(ms, until) {
  const end = Date.now() + (Number(ms) || 1000);
  while (Date.now() < end && !(until && fs.existsSync(until))) await sleep(20);
}

const whoami = async () => ({ worker: process.env.CLUSTERINIT_WORKER, pid: process.pid });
app.get('/', whoami);
app.post('/', whoami);
// A slow answer, for a request in flight during a drain.
app.get('/slow', async (req) => {
  console.log(`slow request in pid ${process.pid}`);
  await slowWait(req.query.ms, req.query.until);
  return whoami();
});

app.addHook('onClose', async () => {
  if (process.env.SHUTDOWN_LOG) fs.appendFileSync(process.env.SHUTDOWN_LOG, `${process.pid} onClose\n`);
});

process.on('SIGTERM', () => {
  app.close();
});

app.listen({ port: Number(process.env.PORT) || 3000, host: process.env.HOST || '0.0.0.0' }).then((address) => {
  console.log(`fastify listening on ${address}, pid ${process.pid}`);
});
