// clusterinit's Node preload. The supervisor passes this text to every
// worker in NODE_CLUSTERINIT_PRELOAD, and NODE_OPTIONS="--import data:…"
// loads a small bootstrap (preload.go) that compiles it as the body of a
// function of createRequire, preloadURL (the bootstrap's own URL, as it
// appears in NODE_OPTIONS) and CLUSTERINIT_OPTIONS, and calls it: no file on
// disk is needed.
//
// It lets an unmodified server use the sockets clusterinit bound, reports
// readiness and event-loop health over the IPC channel, and drains on the
// stop signal. Whatever happens in here must never break the app: every entry
// point is wrapped so that a failure leaves the app as it would be without us.

'use strict';

/* global createRequire, preloadURL, CLUSTERINIT_OPTIONS */

// Built-in modules come through process.getBuiltinModule (20.16+, 22.3+), or
// require on older 20s, and process is the global, not through `import`: an
// ESM import of a built-in builds its namespace from every export, which runs
// every lazy getter: node:http's WebSocket loads undici, node:process's
// stdin/stdout/report load streams, readline and more. That made each
// worker's boot cost about 60 ms more CPU on Node 22+ (docs/benchmarks.md,
// "The reload's p99, step by step"), and a reload's new worker boots on CPUs
// that are already serving.
const builtin =
  typeof process.getBuiltinModule === 'function'
    ? (id) => process.getBuiltinModule(id)
    : createRequire('/clusterinit-preload.js');
const net = builtin('node:net');
const http = builtin('node:http');
const { monitorEventLoopDelay, performance, PerformanceObserver } = builtin('node:perf_hooks');
const { constants: osConstants } = builtin('node:os');

const options =
  typeof CLUSTERINIT_OPTIONS === 'object' && CLUSTERINIT_OPTIONS !== null ? CLUSTERINIT_OPTIONS : {};

// Messages whose cmd starts with NODE_ arrive as 'internalMessage', which app
// code never listens to, and listening for them does not hold the event loop
// open (a 'message' listener would).
const CMD_OUT = 'NODE_CLUSTERINIT';
const CMD_PING = 'NODE_CLUSTERINIT_PING';
const CMD_DRAIN = 'NODE_CLUSTERINIT_DRAIN';
const CMD_METRICS = 'NODE_CLUSTERINIT_METRICS';

// During a drain, the keep-alive timeout Node arms after a response is cut to
// this, and its extra margin (server.keepAliveTimeoutBuffer, configurable
// since 22.20/24.6, a fixed second before) to at most DRAIN_KEEPALIVE_BUFFER_MS:
// a connection whose keep-alive response was already under way when the drain
// began then ends soon, not after the app's possibly long keepAliveTimeout.
const DRAIN_KEEPALIVE_MS = 500;
const DRAIN_KEEPALIVE_BUFFER_MS = 1000;

// No idle keep-alive connection of a drained server is closed before it has
// been idle this long since its last response or since the drain began,
// whoever asks (the drain, the app's server.close(), closeIdleConnections(),
// closeAllConnections(), a socket.destroy() when a response finishes): a busy
// client (a load balancer) may be writing its next request on it right then,
// and closing it would lose that request. Within the grace such a request is
// answered with Connection: close; what is still idle after it is closed.
const DRAIN_IDLE_GRACE_MS = 1000;

// How often, during a drain, idle connections past the grace are closed.
const DRAIN_SWEEP_MS = 250;

// A handover's turns end this long (at most a quarter of the window) before
// the window does, when the stop signal comes: the last connection's next
// response, which says Connection: close, then goes out before the app's
// own handler runs, which may answer 503 to it (Fastify's
// return503OnClosing) or end its socket (hapi's cleanStop).
const HANDOVER_TAIL_MS = 500;

// A drain started by the supervisor's IPC line, in an app with its own
// handler for the stop signal, keeps the event loop alive until that signal
// (sent right after the line) has reached the app's handler, at most this
// long: otherwise a worker with nothing left open would exit before the
// app's shutdown code ever ran.
const SIGNAL_WAIT_MS = 5000;

// The histogram records whole timer intervals; the delay is what exceeds one.
const ELD_RESOLUTION_MS = 10;

const kWatched = Symbol('clusterinit.watched');
const kHandedPort = Symbol('clusterinit.handedPort');
const kClosedByPreload = Symbol('clusterinit.closedByPreload');
const kCloseEmitted = Symbol('clusterinit.closeEmitted');
const kDrained = Symbol('clusterinit.drained'); // a server the drain stopped
const kHTTP = Symbol('clusterinit.http'); // a plain http server: its connections get the drain's grace
// A socket's idle state, kept only from the drain on (nothing per request or
// per connection before it): the end of its last response during the drain,
// its bytesRead then, whether a response of it is ending, its handover turn.
const kIdleSince = Symbol('clusterinit.idleSince');
const kBytesAtIdle = Symbol('clusterinit.bytesAtIdle');
const kInRequest = Symbol('clusterinit.inRequest');
const kRank = Symbol('clusterinit.rank'); // 1…n
const kSocket = Symbol('clusterinit.socket'); // an ending response's socket

function noop() {}

// Everything the preload tracks lives in this one state object.
const state = {
  handedByPort: new Map(), // port -> fd, for the sockets clusterinit handed over
  handedByFd: new Map(), // fd -> port
  spentFds: new Set(), // handed fds already given to a listen(): a closed server closes its fd
  reportedAny: false, // with no handed sockets, only the first 'listening' is reported
  servers: new Set(), // every server the preload saw listening and not yet closed
  draining: false,
  drainStartedAt: 0, // Date.now() when the drain began
  handover: null, // {start, end, n, ranked}: the drain's handover window, over n connections
  exitWhenClosed: false,
  exiting: false,
  appSignal: null, // () => whether the app has a listener of its own for the stop signal
  appHandles: null, // () => whether the app stops itself (that listener, or STOP_MESSAGE's)
  closingAll: false, // inside closeAllConnections() of a drained server
  drainAll: false, // no server used a handed socket: the drain stops every server
  signalSeen: false, // the stop signal has reached JavaScript
  signalWait: null, // the timer holding the event loop open until then
  sweep: null, // the drain's interval closing connections idle past the grace
  eld: null, // the event-loop delay histogram
  elu: null, // performance.eventLoopUtilization() at the previous pong
  gcMs: 0, // time spent in GC since start, from 'gc' performance entries
  requests: 0, // HTTP requests the worker's servers answered (response headers written)
  promRegistries: null, // the app's prom-client default registries, once found
  netClose: null, // net.Server.prototype.close before the preload patched it
  closeIdle: null, // http.Server.prototype.closeIdleConnections, unpatched
};

// This runs in the main thread only: Node runs NODE_OPTIONS' --import there
// alone, and the bootstrap takes the preload's text out of process.env before
// the app runs, so a worker thread that imports the bootstrap anyway (its
// environment a copy of process.env, or process.env itself) finds none. So
// worker_threads is not loaded to ask, nor is v8 before the first heartbeat:
// 2-3 ms less CPU per boot (docs/benchmarks.md, "Where a reload's tail
// comes from").
install();

// Each step stands alone: one that fails leaves the others working.
function install() {
  for (const step of [
    cleanEnv,
    patchListen,
    patchClose,
    patchDestroy,
    patchResponse,
    installStopSignal,
    installIPC,
    installRuntime,
  ]) {
    try {
      step();
    } catch {
      // That feature is off; the app runs as it would without it.
    }
  }
}

// The worker's own children must not inherit the preload or sockets meant for
// the worker, so both are taken out of process.env, which is what
// child_process uses by default.
function cleanEnv() {
  const env = process.env;
  const self = preloadURL;
  const current = env.NODE_OPTIONS;
  if (typeof current === 'string' && self.startsWith('data:')) {
    // NodeOptions appends exactly " --import <url>" (or only "--import <url>"
    // when the user had none), so cutting that token and the one separating
    // space gives back the user's own value byte for byte.
    const token = '--import ' + self;
    let rest = null;
    if (current === token) {
      rest = '';
    } else {
      const i = current.lastIndexOf(' ' + token);
      if (i >= 0) rest = current.slice(0, i) + current.slice(i + 1 + token.length);
    }
    // clusterinit's --max-old-space-size (HEAP_SIZE) sits right before the
    // token; the user had none of their own, or it would not be there.
    if (rest !== null && options.heapFlag) rest = rest.replace(/(^| )--max-old-space-size=\d+$/, '');
    if (rest !== null) {
      if (rest.trim() === '') delete env.NODE_OPTIONS;
      else env.NODE_OPTIONS = rest;
    }
  }

  const count = parseInt(env.LISTEN_FDS, 10);
  const names = typeof env.LISTEN_FDNAMES === 'string' ? env.LISTEN_FDNAMES.split(':') : [];
  // LISTEN_PID guards against variables inherited by a process they were not
  // meant for (systemd's rule): only the worker clusterinit spawned uses them.
  const forUs = String(env.LISTEN_PID).trim() === String(process.pid);
  delete env.LISTEN_FDS;
  delete env.LISTEN_FDNAMES;
  delete env.LISTEN_PID;
  if (!forUs || !(count > 0)) return;
  for (let i = 0; i < count; i++) {
    const m = /^port([0-9]{1,5})$/.exec(names[i] || '');
    if (!m) continue;
    const port = Number(m[1]);
    const fd = 3 + i;
    if (port < 1 || port > 65535 || state.handedByPort.has(port)) continue;
    state.handedByPort.set(port, fd);
    state.handedByFd.set(fd, port);
  }
}

function handedMode() {
  return state.handedByPort.size > 0;
}

// ---- listen ----------------------------------------------------------------

function patchListen() {
  const original = net.Server.prototype.listen;
  if (typeof original !== 'function') return;
  net.Server.prototype.listen = function listen(...args) {
    let use = args;
    try {
      use = redirect(this, args) || args;
    } catch {
      use = args;
    }
    if (use === args) return original.apply(this, use);
    // Errors of the real listen are the app's own and reach it unchanged;
    // one the supervisor can name the fix for is reported first.
    try {
      return original.apply(this, use);
    } catch (err) {
      reportDenied(err);
      throw err;
    }
  };
}

// Node's permission model (25+: --permission without --allow-net) refuses
// listen({fd}) with ERR_ACCESS_DENIED. The app would die of it at every
// start; the supervisor stops and says which flag is missing instead.
function reportDenied(err) {
  try {
    if (err && err.code === 'ERR_ACCESS_DENIED') send({ cmd: CMD_OUT, event: 'denied', permission: 'net' });
  } catch {
    // The app's own error still reaches it.
  }
}

// The port a listen() call asks for, following net.Server's own argument
// rules, or undefined for the forms that name no TCP port (a path, a handle,
// an fd, or none at all).
function requestedPort(args) {
  const a0 = args[0];
  let port;
  if (a0 !== null && typeof a0 === 'object') {
    if (a0._handle || a0.handle || a0.fd !== undefined) return undefined;
    port = a0.port;
  } else if (typeof a0 === 'number' || typeof a0 === 'string') {
    port = a0;
  } else {
    return undefined;
  }
  if (typeof port === 'string') {
    // A string that is not a number is a pipe path, as in net.Server.
    if (port.trim() === '') return undefined;
    port = Number(port);
  }
  if (typeof port !== 'number' || !Number.isInteger(port) || port < 1 || port > 65535) return undefined;
  return port;
}

function redirect(server, args) {
  watch(server);
  server[kHandedPort] = undefined;
  const a0 = args[0];

  // An app that already speaks the socket-activation protocol listens on
  // the fd itself; that still counts as listening on a handed socket.
  if (a0 !== null && typeof a0 === 'object' && typeof a0.fd === 'number' && state.handedByFd.has(a0.fd)) {
    server[kHandedPort] = state.handedByFd.get(a0.fd);
    state.spentFds.add(a0.fd);
    return undefined;
  }

  const port = requestedPort(args);
  if (port === undefined || !state.handedByPort.has(port)) return undefined;
  const fd = state.handedByPort.get(port);
  // A server that closes closes its fd too, so each handed socket serves
  // only the first listen() asking for its port; later ones pass through.
  if (state.spentFds.has(fd)) return undefined;
  state.spentFds.add(fd);
  server[kHandedPort] = port;

  // The host is dropped on purpose: the socket is already bound (Next.js
  // would otherwise bind only to the container's HOSTNAME).
  const opts = { fd };
  let backlog;
  if (a0 !== null && typeof a0 === 'object') {
    if (a0.signal) opts.signal = a0.signal;
    if (typeof a0.backlog === 'number') backlog = a0.backlog;
  }
  if (backlog === undefined) {
    if (typeof args[1] === 'number') backlog = args[1];
    else if (typeof args[2] === 'number') backlog = args[2];
  }
  const out = [opts];
  if (backlog !== undefined) out.push(backlog);
  const cb = args[args.length - 1];
  if (typeof cb === 'function') out.push(cb);
  return out;
}

// Registers the preload's own listeners once per server, before the real
// listen adds the app's callback. Nothing is added per connection or per
// request: a 'connection' or 'request' listener of the preload's, and what
// it kept per socket, cost a new connection 17% more CPU in the worker
// (docs/benchmarks.md, "The preload's cost per request"). Plain http servers
// get the drain's grace on idle keep-alive connections (https is left
// alone: its connections list holds the TLS sockets).
function watch(server) {
  if (!server || server[kWatched] || typeof server.on !== 'function') return;
  server[kWatched] = true;
  server.on('listening', onListening);
  server.on('close', onClose);
  if (http.Server && server instanceof http.Server && typeof server.closeIdleConnections === 'function') {
    server[kHTTP] = true;
  } else {
    // Other servers that emit 'request': http2's compatibility API, whose
    // responses are not http.ServerResponse; https's are, and count there.
    server.on('request', countRequest);
  }
}

// A request of a server whose responses patchResponse does not count.
function countRequest(req, res) {
  if (!(http.ServerResponse && res instanceof http.ServerResponse)) state.requests++;
}

function onListening() {
  try {
    const server = this;
    server[kCloseEmitted] = false;
    server[kClosedByPreload] = false;
    state.servers.add(server);
    if (state.draining) {
      // A server that starts on a handed socket during a drain would keep
      // the worker alive; one of the app's own is the app's.
      if (state.drainAll || server[kHandedPort] !== undefined) setImmediate(() => closeServer(server));
      return;
    }
    if (handedMode()) {
      if (server[kHandedPort] !== undefined) sendListening(server[kHandedPort]);
    } else if (!state.reportedAny) {
      state.reportedAny = true;
      const a = server.address();
      sendListening(a !== null && typeof a === 'object' ? a.port : null);
    }
  } catch {
    // Readiness then falls back to the supervisor's timeout or 'ready'.
  }
}

function onClose() {
  try {
    this[kCloseEmitted] = true;
    state.servers.delete(this);
    maybeExit();
  } catch {
    // Nothing to undo.
  }
}

// Every socket's destroy() goes through this during a drain: for a
// connection of a drained http server it keeps an idle keep-alive
// connection open until it has been idle for the grace. Node's
// closeIdleConnections(), closeAllConnections() and http.Server.close() all
// end a connection through destroy(), and so do apps and frameworks that
// destroy sockets as their responses finish. Outside a drain it costs one
// test per destroyed socket.
function patchDestroy() {
  const proto = net.Socket && net.Socket.prototype;
  if (!proto || typeof proto.destroy !== 'function') return;
  const destroy = proto.destroy;
  proto.destroy = function (err) {
    if (state.draining) {
      let keep = false;
      try {
        keep = err == null && keepOpen(this);
      } catch {
        keep = false;
      }
      // The drain's sweep ends it once it has been idle for the grace.
      if (keep) return this;
    }
    return destroy.apply(this, arguments);
  };
}

// Whether a destroy() of socket (without an error) must wait: during a
// drain, on a drained server, for a connection that is idle between
// requests and has not been so for the grace since its last response or the
// drain's start, whichever came later. A connection either side already
// ended goes.
function keepOpen(socket) {
  const server = socket.server; // net.Server sets it on every connection it accepts
  if (!server || !server[kHTTP] || !server[kDrained]) return false;
  if (socket.destroyed || socket.readableEnded || socket.writableEnded) return false;
  // A response still being written: the app's to abort, except through
  // closeAllConnections().
  const res = socket._httpMessage;
  if (res && !res.writableEnded) return state.closingAll;
  const now = Date.now();
  // Its response just ended (the app destroys in its own 'finish' listener).
  if (socket[kInRequest]) return true;
  if (socket.bytesRead !== socket[kBytesAtIdle]) {
    // The start of a next request arrived; or, for a connection with no
    // response ended since the drain began, it may have: nothing was kept
    // of it before, so its grace starts now.
    socket[kBytesAtIdle] = socket.bytesRead;
    socket[kIdleSince] = now;
    return true;
  }
  return now - Math.max(socket[kIdleSince], state.drainStartedAt, dueAt(socket)) < DRAIN_IDLE_GRACE_MS;
}

function sendListening(port) {
  send({ cmd: CMD_OUT, event: 'listening', port });
}

// process.send without a callback emits 'error' on process when the channel
// is gone, which would crash an app with no 'error' listener.
function send(msg) {
  try {
    if (typeof process.send === 'function' && process.connected) process.send(msg, noop);
  } catch {
    // The supervisor is gone or the channel is closing; nothing to report to.
  }
}

// ---- drain -----------------------------------------------------------------

// The preload may close a server before the app's own shutdown code closes
// it again (Next.js does so in its SIGTERM handler). net.Server would answer
// that second close(cb) with ERR_SERVER_NOT_RUNNING; for the app it is the
// first, so its callback waits for 'close' like any other.
function patchClose() {
  const original = net.Server.prototype.close;
  if (typeof original !== 'function') return;
  state.netClose = original;
  net.Server.prototype.close = function close(cb) {
    let handled = false;
    try {
      if (this[kClosedByPreload] && !this._handle) {
        // Already closed by the drain, whose timer closes idle connections
        // after a grace: closing them here would race busy clients again.
        handled = true;
        if (typeof cb === 'function') {
          if (this[kCloseEmitted]) process.nextTick(cb);
          else this.once('close', () => cb());
        }
      }
    } catch {
      handled = false;
    }
    if (handled) return this;
    return original.apply(this, arguments);
  };
  // http.Server's own close() also calls closeIdleConnections(); during a
  // drain each connection's destroy() keeps the young idle ones (see
  // patchDestroy), so it needs no patch here.
  const proto = http.Server && http.Server.prototype;
  if (!proto) return;
  if (typeof proto.closeIdleConnections === 'function') state.closeIdle = proto.closeIdleConnections;
  // closeAllConnections() on a drained server lets the responses under way
  // finish too: they carry Connection: close, so their connections end
  // right after them, and the idle ones after the grace. (The app's deadline
  // for a hung request is the supervisor's DRAIN_TIMEOUT.)
  const closeAll = proto.closeAllConnections;
  if (typeof closeAll !== 'function') return;
  proto.closeAllConnections = function closeAllConnections() {
    let drained = false;
    try {
      drained = Boolean(state.draining && this[kDrained]);
    } catch {
      drained = false;
    }
    if (!drained) return closeAll.apply(this, arguments);
    state.closingAll = true;
    try {
      return closeAll.apply(this, arguments);
    } finally {
      state.closingAll = false;
    }
  };
}

// Every response goes through writeHead once (all header paths, implicit
// ones too; writeHeader, an alias until Node 25, is gone in 26) and ends
// with end(). Outside a drain both only count and pass through.
//
// writeHead counts the request as answered (MAX_REQUESTS, /status). During
// a drain, every response of a drained server whose headers are written
// after the drain began, including responses to requests already in
// flight, says Connection: close (in a handover, once its connection's turn
// has come), so that keep-alive clients (load balancers) stop reusing the
// connection instead of racing its close.
//
// end() during a drain notes when the response is over: its connection is
// idle from then on, for the grace (keepOpen).
function patchResponse() {
  const proto = http.ServerResponse && http.ServerResponse.prototype;
  if (!proto || typeof proto.writeHead !== 'function' || typeof proto.end !== 'function') return;
  const original = proto.writeHead;
  const writeHead = function writeHead() {
    if (!this._header) state.requests++;
    let args = arguments;
    if (state.draining) {
      try {
        if (onDrainedServer(this) && dueAt(this.socket, true) <= Date.now()) args = closeConnection(this, arguments);
      } catch {
        args = arguments;
      }
    }
    return original.apply(this, args);
  };
  proto.writeHead = writeHead;
  if (proto.writeHeader === original) proto.writeHeader = writeHead;
  const originalEnd = proto.end;
  proto.end = function end() {
    if (state.draining) {
      try {
        noteEnding(this);
      } catch {
        // The connection then gets its grace when it is first found idle.
      }
    }
    return originalEnd.apply(this, arguments);
  };
}

function onDrainedServer(res) {
  const socket = res.socket;
  if (!socket) return false;
  const server = socket.server;
  return Boolean(server && server[kDrained]);
}

// A response of a drained http server is ending: its connection is not idle
// until the response's 'close' (which follows 'finish', or an abort).
function noteEnding(res) {
  const socket = res.socket;
  if (!socket || res[kSocket] || !socket.server || !socket.server[kHTTP] || !socket.server[kDrained]) return;
  socket[kInRequest] = true;
  res[kSocket] = socket;
  res.once('close', onResponseClose);
}

function onResponseClose() {
  const socket = this[kSocket];
  if (!socket) return;
  socket[kInRequest] = false;
  socket[kIdleSince] = Date.now();
  socket[kBytesAtIdle] = socket.bytesRead;
}

function isConnectionName(name) {
  return typeof name === 'string' && name.length === 10 && name.toLowerCase() === 'connection';
}

// Makes res close its connection. Without an explicit Connection header,
// shouldKeepAlive=false has Node write "Connection: close" itself; an
// explicit one (set earlier or passed to writeHead) is overridden.
function closeConnection(res, args) {
  if (res._header || res.headersSent) return args;
  res.shouldKeepAlive = false;
  if (typeof res.hasHeader === 'function' && res.hasHeader('connection')) res.setHeader('Connection', 'close');
  const i = typeof args[1] === 'string' ? 2 : 1;
  const headers = args[i];
  if (headers === null || typeof headers !== 'object') return args;
  let replaced;
  if (Array.isArray(headers)) {
    if (headers.length > 0 && Array.isArray(headers[0])) {
      if (headers.some((e) => Array.isArray(e) && isConnectionName(e[0]))) {
        replaced = headers.map((e) => (Array.isArray(e) && isConnectionName(e[0]) ? [e[0], 'close'] : e));
      }
    } else {
      for (let n = 0; n + 1 < headers.length; n += 2) {
        if (!isConnectionName(headers[n])) continue;
        if (!replaced) replaced = headers.slice();
        replaced[n + 1] = 'close';
      }
    }
  } else if (Object.keys(headers).some(isConnectionName)) {
    replaced = {};
    for (const k of Object.keys(headers)) replaced[k] = isConnectionName(k) ? 'close' : headers[k];
  }
  if (!replaced) return args;
  const out = Array.prototype.slice.call(args);
  out[i] = replaced;
  return out;
}

// The drain stops the servers on the handed sockets; the app's other servers
// (an admin port, a listen(0) backend its routes call) are its own and stay
// up until it closes them or exits. An app that uses no handed socket at all
// (LISTEN=none, or its own port) has every server drained.
function startDrain(handoverMs) {
  if (state.draining) {
    // A second drain (a stop during a handover, the stop signal at its
    // end) cuts what is left of the handover short.
    endHandover(handoverMs);
    return;
  }
  state.draining = true;
  state.drainStartedAt = Date.now();
  const servers = [...state.servers];
  state.drainAll = !servers.some((s) => s[kHandedPort] !== undefined);
  for (const server of servers) if (state.drainAll || server[kHandedPort] !== undefined) closeServer(server);
  if (handoverMs > 0) startHandover(handoverMs);
}

// A handover (a reload or recycle whose successor is ready) spreads the
// drained servers' keep-alive connections over the window, less its tail:
// the k-th of n carries on as before until start + spread * k / n, and its
// first response after that says Connection: close. The successor, still
// cold, so takes them a few at a time. A connection's turn k is given when
// its first response in the handover is written (nothing lists connections
// before the drain), so busy connections take the turns in the order they
// answer; idle ones close a grace after the drain began, in-flight requests
// finish as in any drain.
function startHandover(ms) {
  let n = 0;
  for (const server of state.servers) {
    // net.Server's own count of its open connections.
    if (server[kDrained] && server[kHTTP] && server._connections > 0) n += server._connections;
  }
  if (n === 0) return;
  const spread = ms - Math.min(ms / 4, HANDOVER_TAIL_MS);
  state.handover = { start: state.drainStartedAt, end: state.drainStartedAt + spread, n, ranked: 0 };
}

// endHandover shortens the handover to end at most ms from now (0: now).
function endHandover(ms) {
  const h = state.handover;
  if (!h) return;
  const end = Date.now() + (ms > 0 ? ms : 0);
  if (end < h.end) h.end = Math.max(end, h.start);
}

// dueAt is when socket's turn in the handover comes (0 without one); with
// give, a connection of a drained http server that has no turn yet gets the
// next one.
function dueAt(socket, give) {
  const h = state.handover;
  if (!h || !socket) return 0;
  let rank = socket[kRank];
  if (!rank) {
    if (!give || !socket.server || !socket.server[kHTTP]) return 0;
    rank = socket[kRank] = Math.min(++h.ranked, h.n);
  }
  return h.start + Math.round(((h.end - h.start) * rank) / h.n);
}

function closeServer(server) {
  server[kDrained] = true;
  try {
    if (server[kHTTP]) {
      const t = server.keepAliveTimeout;
      if (typeof t === 'number' && (t <= 0 || t > DRAIN_KEEPALIVE_MS)) server.keepAliveTimeout = DRAIN_KEEPALIVE_MS;
      const b = server.keepAliveTimeoutBuffer;
      if (typeof b === 'number' && b > DRAIN_KEEPALIVE_BUFFER_MS) server.keepAliveTimeoutBuffer = DRAIN_KEEPALIVE_BUFFER_MS;
    }
  } catch {
    // Keep the app's timeouts.
  }
  try {
    if (server.listening) {
      server[kClosedByPreload] = true;
      // net.Server's close, not http.Server's, which would also ask every
      // idle connection to close (the grace would keep the young ones).
      if (state.netClose) state.netClose.call(server);
      else server.close();
    }
  } catch {
    // Stopping to accept failed; the supervisor's deadline still applies.
  }
  if (server[kHTTP] && state.closeIdle && !state.sweep) {
    try {
      // Unref'd: the server's open connections are what keep the process
      // alive, not this timer.
      state.sweep = setInterval(sweep, DRAIN_SWEEP_MS);
      state.sweep.unref();
    } catch {
      // Idle connections then end at their keep-alive timeout.
    }
  }
}

// Closes the connections of drained servers that have been idle for the
// grace: Node's closeIdleConnections() picks the idle ones, each one's
// destroy() keeps those still within it.
function sweep() {
  for (const server of state.servers) {
    try {
      if (server[kDrained] && server[kHTTP] && server._connections !== 0) state.closeIdle.call(server);
    } catch {
      // The next sweep tries again.
    }
  }
}

function maybeExit() {
  if (!state.draining || !state.exitWhenClosed || state.exiting) return;
  for (const server of state.servers) if (server[kDrained]) return;
  state.exiting = true;
  process.exitCode = 0;
  // The app may hold timers or other handles that would keep it running
  // after its servers are gone; setImmediate lets the app's own 'close'
  // callbacks run first.
  setImmediate(() => process.exit(0));
}

// ---- stop signal -----------------------------------------------------------

function installStopSignal() {
  const sig = typeof options.stopSignal === 'string' ? options.stopSignal : 'SIGTERM';
  if (!osConstants.signals || osConstants.signals[sig] === undefined) return;

  // The listeners the app added, judged when the signal arrives, because the
  // app installs its handlers after the preload ran. This uses the unpatched
  // listeners(), which still shows the preload's own.
  const listeners = process.listeners;
  const appSignal = () => listeners.call(process, sig).some((l) => l !== onStopSignal);
  state.appSignal = appSignal;
  // With STOP_MESSAGE the app's 'message' listener is a stop handler too
  // (PM2's shutdown_with_message): the app exits when it is done.
  state.appHandles = () => appSignal() || (options.stopMessage === true && process.listenerCount('message') > 0);

  function onStopSignal() {
    try {
      state.signalSeen = true;
      if (state.signalWait) {
        // The app's own listeners run right after this one, in this emit.
        clearTimeout(state.signalWait);
        state.signalWait = null;
      }
      const appHandles = state.appHandles();
      if (!appHandles && !state.draining && state.servers.size === 0) {
        // Nothing to drain and nobody else listening: behave exactly as if
        // the preload had no handler, which is to die of the signal.
        process.removeListener(sig, onStopSignal);
        if (process.listenerCount(sig) === 0) process.kill(process.pid, sig);
        return;
      }
      startDrain(0);
      if (!appHandles) state.exitWhenClosed = true;
      maybeExit();
    } catch {
      // A failed drain leaves the process to the supervisor's deadline.
    }
  }

  try {
    process.on(sig, onStopSignal);
  } catch {
    return; // SIGKILL or SIGSTOP cannot be handled.
  }

  // Code that asks "is anyone else listening for this signal?" before
  // re-raising it (signal-exit does, and many CLIs and test runners use it)
  // must not count the preload, or it would wait for a handler that never
  // ends the process. Only listeners() hides it: Node itself uses
  // listenerCount() to decide when to stop watching a signal, and
  // rawListeners() to save and restore SIGINT listeners (vm breakOnSigint).
  hideListener('listeners', sig, onStopSignal);
}

function hideListener(method, sig, fn) {
  const original = process[method];
  if (typeof original !== 'function') return;
  Object.defineProperty(process, method, {
    configurable: true,
    enumerable: false,
    writable: true,
    value: function (event) {
      const list = original.apply(this, arguments);
      if (event !== sig || this !== process || !Array.isArray(list)) return list;
      try {
        return list.filter((l) => l !== fn);
      } catch {
        return list;
      }
    },
  });
}

// ---- IPC: heartbeat and drain ----------------------------------------------

function installIPC() {
  if (typeof process.send !== 'function') return;
  try {
    const h = monitorEventLoopDelay({ resolution: ELD_RESOLUTION_MS });
    h.enable();
    state.eld = h;
  } catch {
    state.eld = null;
  }
  process.on('internalMessage', onInternalMessage);
}

function onInternalMessage(msg) {
  try {
    if (msg === null || typeof msg !== 'object') return;
    if (msg.cmd === CMD_PING) {
      send({ cmd: CMD_OUT, event: 'pong', seq: typeof msg.seq === 'number' ? msg.seq : null, eld: readELD(), ...readRuntime() });
    } else if (msg.cmd === CMD_METRICS) {
      answerMetrics(msg.seq);
    } else if (msg.cmd === CMD_DRAIN) {
      const handoverMs = typeof msg.handover_ms === 'number' && msg.handover_ms > 0 ? msg.handover_ms : 0;
      startDrain(handoverMs);
      if (!(state.appHandles && state.appHandles())) {
        state.exitWhenClosed = true;
      } else if (state.appSignal && state.appSignal() && !state.signalSeen && !state.signalWait) {
        // The supervisor sends the stop signal right after this line, but
        // it may reach JavaScript later: until then the app's handler has
        // not run, and an event loop with nothing left (the servers just
        // closed) would end the worker without it.
        state.signalWait = setTimeout(() => {
          state.signalWait = null;
        }, SIGNAL_WAIT_MS + handoverMs);
      }
      maybeExit();
    }
  } catch {
    // A malformed message must not hurt the app.
  }
}

// The p99 event-loop delay in seconds since the previous read.
function readELD() {
  const h = state.eld;
  if (!h) return 0;
  let v = 0;
  try {
    if (h.count > 0) v = (h.percentile(99) - ELD_RESOLUTION_MS * 1e6) / 1e9;
    h.reset();
  } catch {
    v = 0;
  }
  return v > 0 ? Math.round(v * 1e6) / 1e6 : 0;
}

// ---- runtime figures and the app's metrics ---------------------------------

// The figures the heartbeat carries besides the event-loop delay. All of them
// are read when a ping comes (every SAMPLE_EVERY), none per request: the GC
// observer runs once per collection.
function installRuntime() {
  state.elu = performance.eventLoopUtilization();
  const gc = new PerformanceObserver((list) => {
    for (const e of list.getEntries()) state.gcMs += e.duration;
  });
  gc.observe({ entryTypes: ['gc'] });
}

// Event-loop utilization since the previous pong, V8's heap, and GC time.
function readRuntime() {
  const out = { elu: 0, heap_used: 0, heap_limit: 0, gc: 0, requests: state.requests };
  try {
    const now = performance.eventLoopUtilization();
    if (state.elu) out.elu = performance.eventLoopUtilization(now, state.elu).utilization;
    state.elu = now;
  } catch {
    // Leave 0.
  }
  try {
    const h = builtin('node:v8').getHeapStatistics();
    out.heap_used = h.used_heap_size;
    out.heap_limit = h.heap_size_limit;
  } catch {
    // Leave 0.
  }
  out.gc = state.gcMs / 1000;
  return out;
}

// The app's prom-client is whichever copy it loaded: prom-client is a
// CommonJS package, and an ESM import of it goes through the CommonJS loader
// too, so every loaded copy is in require.cache. Its default registry is what
// register.metrics() serves. Nothing is looked for until clusterinit asks.
const PROM_CLIENT_ENTRY = /[\\/]node_modules[\\/]prom-client[\\/]index\.js$/;

function promRegistries() {
  if (state.promRegistries) return state.promRegistries;
  const found = [];
  const cache = createRequire(process.cwd() + '/').cache;
  for (const file of Object.keys(cache)) {
    if (!PROM_CLIENT_ENTRY.test(file)) continue;
    const reg = cache[file] && cache[file].exports && cache[file].exports.register;
    if (reg && typeof reg.getMetricsAsJSON === 'function' && !found.includes(reg)) found.push(reg);
  }
  // An app may load prom-client late: keep looking until it has.
  if (found.length > 0) state.promRegistries = found;
  return found;
}

// Answers clusterinit's metrics request with every found registry's
// getMetricsAsJSON(), as a cluster worker answers AggregatorRegistry; an app
// without prom-client answers at once with none.
function answerMetrics(seq) {
  seq = typeof seq === 'number' ? seq : null;
  let regs;
  try {
    regs = promRegistries();
  } catch {
    regs = [];
  }
  Promise.all(regs.map((r) => r.getMetricsAsJSON()))
    .then((lists) => send({ cmd: CMD_OUT, event: 'metrics', seq, metrics: lists.flat() }))
    .catch((err) => send({ cmd: CMD_OUT, event: 'metrics', seq, metrics: [], error: String(err && err.message) }));
}
