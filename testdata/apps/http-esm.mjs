// The ESM twin of http.js's main route.
import http from 'node:http';

const server = http.createServer((req, res) => {
  res.setHeader('Content-Type', 'application/json');
  res.end(JSON.stringify({ worker: process.env.CLUSTERINIT_WORKER, pid: process.pid, port }));
});

// The port server.address() reports once listening.
let port;
server.listen(process.env.PORT || 3000, process.env.HOSTNAME, () => {
  port = server.address().port;
});
