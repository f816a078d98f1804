// A hapi app as hapi's docs write one: Hapi.server({port, host}), start(),
// and server.stop() on SIGTERM, with cleanup in an onPostStop extension.
// Nothing in it knows about clusterinit. SHUTDOWN_LOG (set by the tests)
// names a file the extension appends "<pid> onPostStop" to.
const fs = require('node:fs');
const { setTimeout: sleep } = require('node:timers/promises');
const Hapi = require('@hapi/hapi');

// Waits ms (default 1000), or less: until the file named by until exists
// (the tests create it once this worker is draining).
async function slowWait(ms, until) {
  const end = Date.now() + (Number(ms) || 1000);
  while (Date.now() < end && !(until && fs.existsSync(until))) await sleep(20);
}

const whoami = () => ({ worker: process.env.CLUSTERINIT_WORKER, pid: process.pid });

async function main() {
  const server = Hapi.server({ port: Number(process.env.PORT) || 3000, host: process.env.HOST || '0.0.0.0' });
  server.route({ method: ['GET', 'POST'], path: '/', handler: whoami });
  // A slow answer, for a request in flight during a drain.
  server.route({
    method: 'GET',
    path: '/slow',
    handler: async (req) => {
      console.log(`slow request in pid ${process.pid}`);
      await slowWait(req.query.ms, req.query.until);
      return whoami();
    },
  });
  server.ext('onPostStop', () => {
    if (process.env.SHUTDOWN_LOG) fs.appendFileSync(process.env.SHUTDOWN_LOG, `${process.pid} onPostStop\n`);
  });
  process.on('SIGTERM', () => {
    server.stop({ timeout: 10000 });
  });
  await server.start();
  console.log(`hapi listening on ${server.info.uri}, pid ${process.pid}`);
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
