// Sends a handle to its parent before reporting ready: Node queues every
// later process.send until the parent acknowledges (or refuses) the handle.
const net = require('net');
const http = require('http');
const server = http.createServer((req, res) => res.end(JSON.stringify({ worker: process.env.CLUSTERINIT_WORKER, pid: process.pid })));
server.listen(process.env.PORT, () => {
  const spare = net.createServer();
  spare.listen(0, '127.0.0.1', () => {
    process.send('here is a handle', spare, () => {});
    process.send('ready');
  });
});
