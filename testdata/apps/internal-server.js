// A public server on PORT and two servers of the app's own, as an admin
// endpoint or a local backend would be: one on listen(0), one on
// INTERNAL_PORT. GET /proxy?ms=N on the public server waits N ms, then asks
// the listen(0) backend and answers with what it said; GET /ports shows the
// internal ports. With OWN_HANDLER=1 the app stops itself on SIGTERM: it
// closes its public server, and the internal ones once that has closed.
const http = require('http');

const backend = http.createServer((req, res) => res.end(`backend pid=${process.pid}`));
const admin = http.createServer((req, res) => res.end(`admin pid=${process.pid}`));

const get = (port, path) =>
  new Promise((resolve, reject) => {
    http
      .get({ host: '127.0.0.1', port, path, agent: false }, (res) => {
        let body = '';
        res.on('data', (c) => (body += c));
        res.on('end', () => resolve(body));
      })
      .on('error', reject);
  });

const server = http.createServer((req, res) => {
  const url = new URL(req.url, 'http://x');
  if (url.pathname === '/ports') {
    return res.end(JSON.stringify({ backend: backend.address().port, admin: admin.address().port }));
  }
  if (url.pathname === '/proxy') {
    console.log('proxy-start');
    return setTimeout(() => {
      get(backend.address().port, '/').then(
        (body) => res.end(`proxied: ${body}`),
        (err) => {
          res.statusCode = 502;
          res.end(`backend: ${err.code || err.message}`);
        },
      );
    }, Number(url.searchParams.get('ms') || 0));
  }
  res.end(JSON.stringify({ worker: process.env.CLUSTERINIT_WORKER, pid: process.pid }));
});

backend.listen(0, '127.0.0.1', () => {
  admin.listen(Number(process.env.INTERNAL_PORT || 0), '127.0.0.1', () => {
    server.listen(process.env.PORT || 3000);
  });
});

if (process.env.OWN_HANDLER === '1') {
  process.on('SIGTERM', () => {
    server.close(() => {
      backend.close();
      admin.close();
    });
  });
}
