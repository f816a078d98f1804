package preload

import (
	"bytes"
	"encoding/json"
	"errors"
	"strconv"
	"strings"
	"time"
)

// The worker protocol. A worker is started with its listening sockets as fds
// 3, 4, … and its end of a Node IPC socketpair on the fd after them
// (NODE_CHANNEL_FD, json serialization: one JSON value per line). Commands
// start with "NODE_" so that Node hands them to the preload as
// 'internalMessage' events, never to the app's 'message' handlers.
const (
	// CmdWorker is the cmd of every message the preload sends:
	// {"cmd":"NODE_CLUSTERINIT","event":"listening","port":3000} once a server
	// listens on a handed socket (with no handed sockets: on the first
	// 'listening' of any server), and
	// {"cmd":"NODE_CLUSTERINIT","event":"pong","seq":N,"eld":0.0123,
	// "elu":0.42,"heap_used":…,"heap_limit":…,"gc":1.5,"requests":N} in reply
	// to a ping,
	// and {"cmd":"NODE_CLUSTERINIT","event":"metrics","seq":N,"metrics":[…]}
	// (the app's prom-client getMetricsAsJSON(), [] without prom-client) in
	// reply to a metrics request, and
	// {"cmd":"NODE_CLUSTERINIT","event":"denied","permission":"net"} when
	// Node's permission model (--permission without --allow-net, Node 25+)
	// refused listening on a handed socket.
	CmdWorker = "NODE_CLUSTERINIT"
	// CmdPing asks for a pong: {"cmd":"NODE_CLUSTERINIT_PING","seq":N}. Only a
	// free event loop can answer.
	CmdPing = "NODE_CLUSTERINIT_PING"
	// CmdDrain starts the same drain as the stop signal:
	// {"cmd":"NODE_CLUSTERINIT_DRAIN"}, or {…,"handover_ms":N} to hand the
	// worker's keep-alive connections over gradually (DrainLine).
	CmdDrain = "NODE_CLUSTERINIT_DRAIN"
	// CmdMetrics asks for the app's prom-client metrics:
	// {"cmd":"NODE_CLUSTERINIT_METRICS","seq":N}.
	CmdMetrics = "NODE_CLUSTERINIT_METRICS"
	// CmdHandle is Node's own message for process.send(msg, handle); the
	// supervisor takes no handles and answers CmdHandleNack, which makes
	// Node give up on it and send the worker's next messages.
	CmdHandle     = "NODE_HANDLE"
	CmdHandleNack = "NODE_HANDLE_NACK"

	EventListening = "listening"
	EventPong      = "pong"
	EventMetrics   = "metrics"
	EventDenied    = "denied"

	// Ready is the app's own readiness message: process.send('ready') or
	// process.send({type: 'ready'}).
	Ready = "ready"
	// Shutdown is PM2's stop message, sent with STOP_MESSAGE:
	// process.on('message', m => m === 'shutdown' && …).
	Shutdown = "shutdown"
)

// Kind is what a line from a worker means to the supervisor.
type Kind int

const (
	KindIgnored   Kind = iota // valid JSON that means nothing to the supervisor
	KindReady                 // the app said it is ready
	KindListening             // the preload saw a handed socket listening
	KindPong                  // the preload answered a ping
	KindHandle                // the worker tried to send a handle
	KindMetrics               // the preload answered a metrics request
	KindDenied                // Node's permission model denied the worker a handed socket
)

// Message is one parsed line from a worker.
type Message struct {
	Kind Kind
	// Port is the port of the handed socket that started listening (0 for a
	// unix socket or when no sockets were handed). Listening only.
	Port int
	// Seq echoes the request's seq. Pong and metrics.
	Seq uint64
	// Pong only: ELD is the p99 event-loop delay in seconds and ELU the
	// event-loop utilization (0…1), both since the previous pong; the V8
	// heap's used size and limit (heap_size_limit: old space and the young
	// generation) in bytes; GCSeconds the time spent in garbage collection
	// since the worker started; Requests the HTTP requests its servers
	// have answered (written a response's headers for) since it started.
	ELD       float64
	ELU       float64
	HeapUsed  int64
	HeapLimit int64
	GCSeconds float64
	Requests  uint64
	// Metrics is the app's prom-client getMetricsAsJSON() list, undecoded.
	// Metrics only.
	Metrics json.RawMessage
	// Permission is the permission that was missing ("net"). Denied only.
	Permission string
}

// Parse interprets one line from a worker. Lines that are valid JSON but
// mean nothing to the supervisor (an app's own messages, or a known message
// with a field of the wrong type) are KindIgnored; invalid JSON is an error.
func Parse(line []byte) (Message, error) {
	line = bytes.TrimSpace(line)
	if len(line) == 0 {
		return Message{}, errors.New("empty line")
	}
	if line[0] == '"' {
		var s string
		if err := json.Unmarshal(line, &s); err != nil {
			return Message{}, err
		}
		if s == Ready {
			return Message{Kind: KindReady}, nil
		}
		return Message{}, nil
	}
	if line[0] != '{' {
		if !json.Valid(line) {
			return Message{}, errors.New("invalid JSON")
		}
		return Message{}, nil
	}
	var m struct {
		Type  any     `json:"type"`
		Cmd   any     `json:"cmd"`
		Event string  `json:"event"`
		Port  any     `json:"port"` // a port number, or null: never a reason to drop the message
		Seq   uint64  `json:"seq"`
		ELD   float64 `json:"eld"`
		ELU   float64 `json:"elu"`
		Heap  float64 `json:"heap_used"`
		Limit float64 `json:"heap_limit"`
		GC    float64 `json:"gc"`
		Reqs  float64 `json:"requests"`
		// Metrics stays raw: only the health server, which merges it, needs
		// its contents.
		Metrics    json.RawMessage `json:"metrics"`
		Permission string          `json:"permission"`
	}
	if err := json.Unmarshal(line, &m); err != nil {
		// Valid JSON of the wrong shape (say "seq":"x") is not worth an error.
		if json.Valid(line) {
			return Message{}, nil
		}
		return Message{}, err
	}
	switch {
	case m.Type == Ready:
		return Message{Kind: KindReady}, nil
	case m.Cmd == CmdHandle:
		return Message{Kind: KindHandle}, nil
	case m.Cmd == CmdWorker && m.Event == EventListening:
		port, _ := m.Port.(float64)
		return Message{Kind: KindListening, Port: int(port)}, nil
	case m.Cmd == CmdWorker && m.Event == EventPong:
		return Message{Kind: KindPong, Seq: m.Seq, ELD: m.ELD, ELU: m.ELU,
			HeapUsed: int64(m.Heap), HeapLimit: int64(m.Limit), GCSeconds: m.GC, Requests: uint64(max(m.Reqs, 0))}, nil
	case m.Cmd == CmdWorker && m.Event == EventDenied:
		return Message{Kind: KindDenied, Permission: m.Permission}, nil
	case m.Cmd == CmdWorker && m.Event == EventMetrics:
		if len(m.Metrics) == 0 || m.Metrics[0] != '[' {
			m.Metrics = json.RawMessage("[]")
		}
		return Message{Kind: KindMetrics, Seq: m.Seq, Metrics: m.Metrics}, nil
	}
	return Message{}, nil
}

// Lines the supervisor writes. Each is one complete JSON value and a newline:
// Node parses every line with JSON.parse and no try/catch, so a blank or
// partial line would crash the worker.

// PingLine asks the worker for a pong carrying seq.
func PingLine(seq uint64) []byte {
	return []byte(`{"cmd":"` + CmdPing + `","seq":` + strconv.FormatUint(seq, 10) + "}\n")
}

// MetricsLine asks the worker for its app's metrics, answered with seq.
func MetricsLine(seq uint64) []byte {
	return []byte(`{"cmd":"` + CmdMetrics + `","seq":` + strconv.FormatUint(seq, 10) + "}\n")
}

// DrainLine asks the worker to drain. With a handover, its keep-alive
// connections are closed one by one over that time, not at once; a second
// line with a shorter one (0: now) hurries a handover under way.
func DrainLine(handover time.Duration) []byte {
	if handover <= 0 {
		return []byte(`{"cmd":"` + CmdDrain + `"}` + "\n")
	}
	return []byte(`{"cmd":"` + CmdDrain + `","handover_ms":` + strconv.FormatInt(handover.Milliseconds(), 10) + "}\n")
}

// ShutdownLine is the STOP_MESSAGE.
func ShutdownLine() []byte { return []byte(`"` + Shutdown + `"` + "\n") }

// HandleNackLine refuses a handle.
func HandleNackLine() []byte { return []byte(`{"cmd":"` + CmdHandleNack + `"}` + "\n") }

// FirstSocketFd is the fd of a worker's first handed listening socket.
const FirstSocketFd = 3

// IPCFd is the fd of a worker's IPC channel: the one after its sockets.
func IPCFd(sockets int) int { return FirstSocketFd + sockets }

// BaseEnv is the environment every worker starts from: environ less anything
// that would mislead the worker (a socket-activation or IPC hand-over meant
// for the supervisor itself, and NODE_UNIQUE_ID, with which a child believes
// it is a cluster worker and waits for a primary on every listen) and less
// the variables named in drop, with NODE_OPTIONS set to nodeOptions and the
// preload's source (SourceEnv) added, unless nodeOptions is "".
func BaseEnv(environ []string, nodeOptions string, drop ...string) []string {
	drop = append([]string{"LISTEN_FDS", "LISTEN_FDNAMES", "LISTEN_PID",
		"NODE_CHANNEL_FD", "NODE_CHANNEL_SERIALIZATION_MODE", "NODE_UNIQUE_ID"}, drop...)
	if nodeOptions != "" {
		drop = append(drop, "NODE_OPTIONS", SourceVar)
	}
	env := WithoutEnv(environ, drop...)
	if nodeOptions != "" {
		env = append(env, "NODE_OPTIONS="+nodeOptions, SourceEnv())
	}
	return env
}

// WorkerEnv is what the worker in slot adds to BaseEnv, given the names of
// the sockets handed to it as fds 3, …: CLUSTERINIT_WORKER and
// NODE_APP_INSTANCE (the slot), the IPC channel (NODE_CHANNEL_FD on
// IPCFd, json serialization) and, with sockets, LISTEN_FDS and
// LISTEN_FDNAMES. LISTEN_PID must be the worker's own pid, so it is set in
// the worker itself (the supervisor's exec shim) just before the command
// runs.
func WorkerEnv(slot int, socketNames []string) []string {
	env := []string{
		"CLUSTERINIT_WORKER=" + strconv.Itoa(slot),
		"NODE_APP_INSTANCE=" + strconv.Itoa(slot),
		"NODE_CHANNEL_FD=" + strconv.Itoa(IPCFd(len(socketNames))),
		"NODE_CHANNEL_SERIALIZATION_MODE=json",
	}
	if len(socketNames) > 0 {
		env = append(env,
			"LISTEN_FDS="+strconv.Itoa(len(socketNames)),
			"LISTEN_FDNAMES="+strings.Join(socketNames, ":"))
	}
	return env
}

// WithoutEnv returns env without any entry for the given keys.
func WithoutEnv(env []string, keys ...string) []string {
	out := make([]string, 0, len(env))
outer:
	for _, kv := range env {
		k, _, _ := strings.Cut(kv, "=")
		for _, drop := range keys {
			if k == drop {
				continue outer
			}
		}
		out = append(out, kv)
	}
	return out
}
