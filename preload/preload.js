// clusterinit's Node preload. The supervisor loads it into every worker with
// NODE_OPTIONS="--import data:text/javascript;base64,…" (so it needs no file
// on disk) and prepends `const CLUSTERINIT_OPTIONS = {…};` to this source.
//
// It lets an unmodified server use the sockets clusterinit bound, reports
// readiness and event-loop health over the IPC channel, and drains on the
// stop signal. Whatever happens in here must never break the app: every entry
// point is wrapped so that a failure leaves the app as it would be without us.

import process from 'node:process';
import net from 'node:net';
import http from 'node:http';
import { isMainThread } from 'node:worker_threads';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { constants as osConstants } from 'node:os';

/* global CLUSTERINIT_OPTIONS */
const options =
  typeof CLUSTERINIT_OPTIONS === 'object' && CLUSTERINIT_OPTIONS !== null ? CLUSTERINIT_OPTIONS : {};

// Messages whose cmd starts with NODE_ arrive as 'internalMessage', which app
// code never listens to, and listening for them does not hold the event loop
// open (a 'message' listener would).
const CMD_OUT = 'NODE_CLUSTERINIT';
const CMD_PING = 'NODE_CLUSTERINIT_PING';
const CMD_DRAIN = 'NODE_CLUSTERINIT_DRAIN';

// During a drain, a connection whose response was already under way when the
// drain began told its client "keep-alive"; it gets this long (plus Node's own
// one-second margin) to send one more request, which is then answered with
// Connection: close, before the server closes it, instead of the app's
// possibly long keepAliveTimeout.
const DRAIN_KEEPALIVE_MS = 500;

// Idle keep-alive connections are not closed the moment the drain begins: a
// busy client (a load balancer) may be writing its next request on one right
// then, and closing it would lose that request. Within this grace every busy
// connection carries one more request, is answered with Connection: close
// and closed by the server; what is still idle after it is closed.
const DRAIN_IDLE_GRACE_MS = 1000;

// The histogram records whole timer intervals; the delay is what exceeds one.
const ELD_RESOLUTION_MS = 10;

const kWatched = Symbol('clusterinit.watched');
const kHandedPort = Symbol('clusterinit.handedPort');
const kClosedByPreload = Symbol('clusterinit.closedByPreload');
const kCloseEmitted = Symbol('clusterinit.closeEmitted');

function noop() {}

// Everything the preload tracks lives in this one state object.
const state = {
  handedByPort: new Map(), // port -> fd, for the sockets clusterinit handed over
  handedByFd: new Map(), // fd -> port
  spentFds: new Set(), // handed fds already given to a listen(): a closed server closes its fd
  reportedAny: false, // with no handed sockets, only the first 'listening' is reported
  servers: new Set(), // every server the preload saw listening and not yet closed
  draining: false,
  exitWhenClosed: false,
  exiting: false,
  appListeners: null, // () => how many stop-signal listeners the app has
  eld: null, // the event-loop delay histogram
  netClose: null, // net.Server.prototype.close before the preload patched it
};

// Worker threads share the process with the main thread, which does all of
// this once.
if (isMainThread) install();

// Each step stands alone: one that fails leaves the others working.
function install() {
  for (const step of [cleanEnv, patchListen, patchClose, patchWriteHead, installStopSignal, installIPC]) {
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
  const self = import.meta.url;
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
    // Errors of the real listen are the app's own and reach it unchanged.
    return original.apply(this, use);
  };
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
// listen adds the app's callback.
function watch(server) {
  if (!server || server[kWatched] || typeof server.on !== 'function') return;
  server[kWatched] = true;
  server.on('listening', onListening);
  server.on('close', onClose);
}

function onListening() {
  try {
    const server = this;
    server[kCloseEmitted] = false;
    server[kClosedByPreload] = false;
    state.servers.add(server);
    if (state.draining) {
      // A server that starts during a drain would keep the worker alive.
      setImmediate(() => closeServer(server));
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
  // http.Server's own close first closes every idle
  // keep-alive connection at once, then calls net.Server's. After the drain
  // has closed the server, go straight to the patched close above, so that
  // an app's shutdown handler (Next.js) does not reset a connection a client
  // is sending its next request on; the drain's timer closes idle ones.
  // (https is left alone: loading it here would cost every worker's startup
  // the TLS stack, and servers behind a load balancer speak plain HTTP.)
  const proto = http.Server && http.Server.prototype;
  if (!proto || typeof proto.close !== 'function' || proto.close === net.Server.prototype.close) return;
  const httpClose = proto.close;
  proto.close = function close() {
    let drained = false;
    try {
      drained = Boolean(this[kClosedByPreload] && !this._handle);
    } catch {
      drained = false;
    }
    if (drained) return net.Server.prototype.close.apply(this, arguments);
    return httpClose.apply(this, arguments);
  };
}

// Every response whose headers are written after the drain began, including
// responses to requests already in flight, says Connection: close, so that
// keep-alive clients (load balancers) stop reusing the connection instead of
// racing its close. All header paths, implicit ones too, go through
// writeHead.
function patchWriteHead() {
  const proto = http.ServerResponse && http.ServerResponse.prototype;
  if (!proto || typeof proto.writeHead !== 'function') return;
  const original = proto.writeHead;
  const writeHead = function writeHead() {
    let args = arguments;
    if (state.draining) {
      try {
        args = closeConnection(this, arguments);
      } catch {
        args = arguments;
      }
    }
    return original.apply(this, args);
  };
  proto.writeHead = writeHead;
  if (proto.writeHeader === original) proto.writeHeader = writeHead;
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

function startDrain() {
  if (state.draining) return;
  state.draining = true;
  for (const server of state.servers) closeServer(server);
}

function closeServer(server) {
  try {
    if (typeof server.closeIdleConnections === 'function') {
      const t = server.keepAliveTimeout;
      if (typeof t === 'number' && (t <= 0 || t > DRAIN_KEEPALIVE_MS)) server.keepAliveTimeout = DRAIN_KEEPALIVE_MS;
    }
  } catch {
    // Keep the app's timeout.
  }
  try {
    if (server.listening) {
      server[kClosedByPreload] = true;
      // net.Server's close, not http.Server's: since Node 19 the latter also
      // closes every idle keep-alive connection at once, including those a
      // busy client is writing its next request on right now.
      if (state.netClose) state.netClose.call(server);
      else server.close();
    }
  } catch {
    // Stopping to accept failed; the supervisor's deadline still applies.
  }
  try {
    if (typeof server.closeIdleConnections === 'function') {
      // Repeated, because a connection that was busy at the first pass and
      // answered with keep-alive becomes idle later. Unref'd: the server's
      // open connections are what keep the process alive, not this timer.
      const timer = setInterval(() => {
        try {
          if (!server.listening && state.servers.has(server)) server.closeIdleConnections();
          else if (!state.servers.has(server)) clearInterval(timer);
        } catch {
          clearInterval(timer);
        }
      }, DRAIN_IDLE_GRACE_MS);
      timer.unref();
    }
  } catch {
    // Idle connections then end at their keep-alive timeout.
  }
}

function maybeExit() {
  if (!state.draining || !state.exitWhenClosed || state.exiting || state.servers.size > 0) return;
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
  const appListeners = () => listeners.call(process, sig).filter((l) => l !== onStopSignal).length;

  function onStopSignal() {
    try {
      const appHandles = appListeners() > 0;
      if (!appHandles && !state.draining && state.servers.size === 0) {
        // Nothing to drain and nobody else listening: behave exactly as if
        // the preload had no handler, which is to die of the signal.
        process.removeListener(sig, onStopSignal);
        if (process.listenerCount(sig) === 0) process.kill(process.pid, sig);
        return;
      }
      startDrain();
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

  state.appListeners = appListeners;
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
      send({ cmd: CMD_OUT, event: 'pong', seq: typeof msg.seq === 'number' ? msg.seq : null, eld: readELD() });
    } else if (msg.cmd === CMD_DRAIN) {
      startDrain();
      if (!(state.appListeners && state.appListeners() > 0)) state.exitWhenClosed = true;
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
