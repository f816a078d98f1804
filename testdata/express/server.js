// An ordinary Express app, written the way one usually is: nothing in it
// knows about clusterinit. Under clusterinit, app.listen(PORT) is redirected
// by the preload to the socket the supervisor bound.
const express = require('express');

const app = express();

function whoami(req, res) {
  res.json({ worker: process.env.CLUSTERINIT_WORKER, pid: process.pid });
}

app.get('/', whoami);
app.post('/', whoami);

const port = Number(process.env.PORT) || 3000;
app.listen(port, () => {
  console.log(`express listening on ${port}, pid ${process.pid}`);
});
