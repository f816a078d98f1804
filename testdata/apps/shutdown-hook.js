// A plain node:http app with its own SIGTERM handler, the way apps close
// database pools and flush queues on shutdown. SHUTDOWN picks what the
// handler does to the server, as real frameworks do:
//
//   close       server.close() (the default)
//   close-idle  closeIdleConnections() at once and after every response,
//               then server.close() (SvelteKit's adapter-node)
//   close-all   server.close() and closeAllConnections() at once
//               (forceCloseConnections in Fastify and NestJS)
//   destroy     server.close(), and destroy each socket as its response
//               finishes (polka-style shutdown helpers)
//   503         server.close(), and answer 503 with Connection: close to
//               every request that arrives after it (Fastify's
//               return503OnClosing)
//
// The handler prints "hook ran pid=N", waits HOOK_MS (an async flush), prints
// "hook done pid=N" and exits 0 once its server has closed too. Nothing else
// keeps the event loop alive: the handler runs only if the worker waits for
// it. POST or GET / answers {"worker","pid"} (with RESPONSE_MS, its headers
// at once and the body that much later); /slow?ms=N answers after N ms.
const http = require('http');

const mode = process.env.SHUTDOWN || 'close';
const hookMs = Number(process.env.HOOK_MS || 50);
const responseMs = Number(process.env.RESPONSE_MS || 0);
let stopping = false;

const server = http.createServer((req, res) => {
  req.resume();
  const url = new URL(req.url, 'http://x');
  if (mode === '503' && stopping) {
    res.writeHead(503, { Connection: 'close', 'Content-Type': 'text/plain' });
    return res.end('closing\n');
  }
  // Checked as each response finishes: a response begun before the stop and
  // finished after it counts too.
  if (mode === 'destroy') res.on('finish', () => stopping && req.socket.destroy());
  if (mode === 'close-idle') res.on('finish', () => stopping && server.closeIdleConnections());
  const reply = () => {
    if (!res.headersSent) res.setHeader('Content-Type', 'application/json');
    res.end(JSON.stringify({ worker: process.env.CLUSTERINIT_WORKER, pid: process.pid }));
  };
  const ms = Number(url.searchParams.get('ms') || 0);
  if (url.pathname === '/slow') {
    console.log('slow-start');
    return setTimeout(reply, ms);
  }
  if (responseMs > 0) {
    // Headers (keep-alive) first, the body later: a response under way
    // when the stop begins ends after it.
    res.setHeader('Content-Type', 'application/json');
    res.flushHeaders();
    return setTimeout(reply, responseMs);
  }
  reply();
});
if (process.env.KEEP_ALIVE_TIMEOUT) server.keepAliveTimeout = Number(process.env.KEEP_ALIVE_TIMEOUT);

process.on('SIGTERM', () => {
  if (stopping) return;
  stopping = true;
  console.log(`hook ran pid=${process.pid}`);
  let flushed = false;
  let closed = false;
  const done = () => {
    if (!flushed || !closed) return;
    console.log(`hook done pid=${process.pid}`);
    process.exit(0);
  };
  setTimeout(() => {
    flushed = true;
    done();
  }, hookMs);
  if (mode === 'close-idle') server.closeIdleConnections();
  server.close(() => {
    closed = true;
    done();
  });
  if (mode === 'close-all') server.closeAllConnections();
});

server.listen(process.env.PORT || 3000, process.env.HOSTNAME);
