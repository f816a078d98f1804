// Plain http server with no signal handler of its own: GET /slow?ms=N answers
// after N ms (&flush=1 sends the headers first, &block=1 busy-waits instead,
// &until=FILE answers sooner once FILE exists),
// GET /env shows the environment the app and its children see, GET
// /timeouts?ms=N the keep-alive timeouts in force N ms later.
const fs = require('fs');
const http = require('http');
const { execFileSync } = require('child_process');
const v8 = require('v8');

const server = http.createServer((req, res) => {
  const url = new URL(req.url, 'http://x');
  res.setHeader('Content-Type', 'application/json');
  const reply = (body) => res.end(JSON.stringify(body));
  if (url.pathname === '/env') {
    return reply({
      env: process.env,
      childEnv: execFileSync('env', { encoding: 'utf8' }),
      heapLimit: v8.getHeapStatistics().heap_size_limit,
    });
  }
  const ms = Number(url.searchParams.get('ms') || 0);
  if (url.pathname === '/timeouts') {
    // After ms: the keep-alive timeouts in force then (during a drain).
    console.log('slow-start');
    return setTimeout(
      () => reply({ keepAliveTimeout: server.keepAliveTimeout, keepAliveTimeoutBuffer: server.keepAliveTimeoutBuffer }),
      ms,
    );
  }
  if (url.pathname === '/slow') {
    console.log(`slow-start pid ${process.pid}`);
    if (url.searchParams.get('flush')) res.flushHeaders();
    if (url.searchParams.get('block')) {
      const end = Date.now() + ms;
      while (Date.now() < end);
      return reply({ blocked: ms });
    }
    const until = url.searchParams.get('until');
    const end = Date.now() + ms;
    const poll = () => (Date.now() >= end || (until && fs.existsSync(until)) ? reply({ slept: ms }) : setTimeout(poll, 20));
    return until ? poll() : setTimeout(() => reply({ slept: ms }), ms);
  }
  reply({ worker: process.env.CLUSTERINIT_WORKER, pid: process.pid, port, uid: process.getuid() });
});

// As Next.js standalone does; behind an ALB this is often 65 s.
if (process.env.KEEP_ALIVE_TIMEOUT) server.keepAliveTimeout = Number(process.env.KEEP_ALIVE_TIMEOUT);
// Node 22.20/24.6+: the margin Node adds to keepAliveTimeout before closing.
if (process.env.KEEP_ALIVE_TIMEOUT_BUFFER) server.keepAliveTimeoutBuffer = Number(process.env.KEEP_ALIVE_TIMEOUT_BUFFER);

// Like most real apps, something besides the server keeps it running (a
// pool, a metrics timer): stopping it takes more than closing the server.
setInterval(() => {}, 60000);

// The port server.address() reports once listening.
let port;
server.listen(process.env.PORT || 3000, process.env.HOSTNAME, () => {
  port = server.address().port;
});
