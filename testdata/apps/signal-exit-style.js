// Stops like apps using the signal-exit package: its SIGTERM handler re-raises
// the signal once it sees it is the only listener, expecting to die of it.
const http = require('http');

http.createServer((req, res) => res.end('signal-exit-style\n')).listen(process.env.PORT || 3000);
function onTerm() {
  if (process.listeners('SIGTERM').length !== 1) return;
  process.removeListener('SIGTERM', onTerm);
  process.kill(process.pid, 'SIGTERM');
}
process.on('SIGTERM', onTerm);
// Something besides the server keeps the app running, as in most apps.
setInterval(() => {}, 60000);
