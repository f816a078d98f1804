// The chaos test's worker (chaos_test.go): a plain http server like
// testdata/apps/http.js, with no signal handler of its own, plus endpoints
// that make the worker misbehave the ways a real app can. Every answer is
// JSON carrying the worker's pid (as clusterinit sees it) and slot.
//
//   GET /daemon      fork a daemon (detached, own session, no stdio) that
//                    outlives this worker by 2 s, then exit 0 at once
//   GET /disconnect  close the IPC channel to clusterinit and keep serving
//   GET /group       start a child in a process group of its own (a worker
//                    cannot leave its group; its children can), which holds
//                    the worker's stdout and stderr for CHAOS_CHILD_MS
//   GET /child       start a child in the worker's own group for CHAOS_CHILD_MS
//   GET /fill        write 1 MiB and a bit to stdout without a newline; the
//                    write blocks the event loop until clusterinit has read it
//   GET /ipcgarbage  write malformed, blank and oversized lines straight to
//                    the IPC socket, past Node's own framing
//   anything else    {worker, pid}
const http = require('http');
const fs = require('fs');
const { spawn } = require('child_process');

const childMs = Number(process.env.CHAOS_CHILD_MS || 3000);
const sleepArgs = ['-e', `setTimeout(() => {}, ${childMs})`];

// writeAll writes b to fd, which libuv may have made non-blocking.
function writeAll(fd, b) {
  let off = 0;
  while (off < b.length) {
    try {
      off += fs.writeSync(fd, b, off, b.length - off);
    } catch (err) {
      if (err.code !== 'EAGAIN') throw err;
    }
  }
}

const garbage = [
  'not json at all\n',
  '\n',
  '{"type":\n',
  '[1,2,3]\n',
  '"' + 'x'.repeat(17 << 20) + '"\n', // over clusterinit's 16 MiB line limit
  '{"cmd":"NODE_CLUSTERINIT","event":"pong","seq":"x"}\n',
  '\u0000\u0001\u00ff}{\n',
];

const server = http.createServer((req, res) => {
  const url = new URL(req.url, 'http://x');
  res.setHeader('Content-Type', 'application/json');
  const reply = (body, then) =>
    res.end(JSON.stringify({ worker: process.env.CLUSTERINIT_WORKER, pid: process.pid, ...body }), then);
  switch (url.pathname) {
    case '/daemon': {
      const d = spawn(process.execPath, ['-e', 'setTimeout(() => {}, 2000)'], { detached: true, stdio: 'ignore' });
      d.unref();
      // conns: the other connections this worker holds, whose requests in
      // flight are lost when it exits.
      return server.getConnections((err, n) =>
        reply({ daemon: d.pid, conns: err ? -1 : n - 1 }, () => process.exit(0)));
    }
    case '/disconnect': {
      const was = Boolean(process.connected);
      if (was) process.disconnect();
      return reply({ disconnected: was });
    }
    case '/group': {
      const c = spawn(process.execPath, sleepArgs, { detached: true, stdio: ['ignore', 'inherit', 'inherit'] });
      c.unref();
      return reply({ child: c.pid });
    }
    case '/child': {
      const c = spawn(process.execPath, sleepArgs, { stdio: 'ignore' });
      c.unref();
      return reply({ child: c.pid });
    }
    case '/fill': {
      const n = (1 << 20) + 1000;
      writeAll(1, Buffer.alloc(n, 'f'));
      return reply({ filled: n });
    }
    case '/ipcgarbage': {
      const fd = process.channel && process.connected ? process.channel.fd : -1;
      if (!(fd >= 0)) return reply({ garbage: false });
      for (const line of garbage) writeAll(fd, Buffer.from(line, 'latin1'));
      return reply({ garbage: true });
    }
  }
  reply({});
});

// Something besides the server keeps it running, as in most real apps.
setInterval(() => {}, 60000);

server.listen(process.env.PORT || 3000);
