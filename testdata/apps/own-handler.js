// Handles SIGTERM itself like Next.js: closes its server, then exits 143.
// A close callback that receives an error exits 1 instead.
const http = require('http');

const server = http.createServer((req, res) => {
  const ms = Number(new URL(req.url, 'http://x').searchParams.get('ms') || 0);
  if (ms) console.log('slow-start');
  setTimeout(() => res.end('own-handler\n'), ms);
});
server.listen(process.env.PORT || 3000, process.env.HOSTNAME);
process.on('SIGTERM', () => {
  server.close((err) => process.exit(err ? 1 : 143));
});
