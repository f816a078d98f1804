// A PM2-style app: announces itself with process.send('ready') and stops
// itself on SIGINT.
const http = require('http');

const server = http.createServer((req, res) => res.end('pm2-style\n'));
server.listen(process.env.PORT || 3000, () => {
  if (process.send) process.send('ready');
});
process.on('SIGINT', () => {
  server.close(() => process.exit(0));
});
