// A plain Express app. Nothing in it knows about clusterinit: under
// clusterinit the preload hands app.listen(PORT) the socket that clusterinit
// bound, reports the worker ready once it listens, and drains it on SIGTERM
// (in-flight requests finish, keep-alive clients are told Connection: close).
const express = require('express');

const app = express();

app.get('/', (req, res) => {
  // CLUSTERINIT_WORKER (and NODE_APP_INSTANCE, as under PM2) is the worker's
  // slot, 0…N-1, kept by the worker that replaces it.
  res.json({ hello: 'world', worker: process.env.CLUSTERINIT_WORKER, pid: process.pid });
});

const port = Number(process.env.PORT) || 3000;
app.listen(port, () => {
  console.log(`express listening on :${port}, pid ${process.pid}`);
});
