// Package preload builds the NODE_OPTIONS that load clusterinit's Node preload
// (preload.js) into every worker, and names the IPC messages it exchanges
// with the supervisor.
//
// The preload travels inside NODE_OPTIONS as a base64 data: URL given to
// --import, so it needs no file on disk (read-only and distroless images
// work). It redirects listen() on a handed port to the handed fd, reports
// readiness, answers heartbeats and drains on the stop signal; see
// preload.js.
package preload

import (
	_ "embed"
	"encoding/base64"
	"encoding/json"
	"strings"
)

//go:embed preload.js
var source string

// Options are baked into the preload when NodeOptions builds it.
type Options struct {
	// StopSignal is the signal the supervisor sends to ask a worker to
	// drain, e.g. "SIGTERM" ("TERM" and lower case are accepted too).
	// Empty means SIGTERM.
	StopSignal string
}

// IPC protocol between the supervisor and the preload, over the worker's
// Node IPC channel (json serialization: one JSON value per line). Commands
// start with "NODE_" so that Node hands them to the preload as
// 'internalMessage' events, never to the app's 'message' handlers.
const (
	// CmdWorker is the cmd of every message the preload sends:
	// {"cmd":"NODE_CLUSTERINIT","event":"listening","port":3000} once a server
	// listens on a handed socket (with no handed sockets: on the first
	// 'listening' of any server), and
	// {"cmd":"NODE_CLUSTERINIT","event":"pong","seq":N,"eld":0.0123} in reply
	// to a ping.
	CmdWorker = "NODE_CLUSTERINIT"
	// CmdPing asks for a pong: {"cmd":"NODE_CLUSTERINIT_PING","seq":N}. Only a
	// free event loop can answer.
	CmdPing = "NODE_CLUSTERINIT_PING"
	// CmdDrain starts the same drain as the stop signal:
	// {"cmd":"NODE_CLUSTERINIT_DRAIN"}.
	CmdDrain = "NODE_CLUSTERINIT_DRAIN"

	EventListening = "listening"
	EventPong      = "pong"
)

// Message is a message from the preload (Cmd == CmdWorker).
type Message struct {
	Cmd   string `json:"cmd"`
	Event string `json:"event"`
	// Port is the port of the handed socket that started listening (0 for a
	// unix socket when no sockets were handed).
	Port int `json:"port"`
	// Seq echoes the ping's seq.
	Seq uint64 `json:"seq"`
	// ELD is the p99 event-loop delay in seconds since the previous pong.
	ELD float64 `json:"eld"`
}

// PingLine is the line that asks the worker for a pong carrying seq.
func PingLine(seq uint64) []byte {
	b, _ := json.Marshal(struct {
		Cmd string `json:"cmd"`
		Seq uint64 `json:"seq"`
	}{CmdPing, seq})
	return append(b, '\n')
}

// DrainLine is the line that asks the worker to drain.
func DrainLine() []byte {
	return []byte(`{"cmd":"` + CmdDrain + `"}` + "\n")
}

// NodeOptions returns the worker's NODE_OPTIONS: existing (the user's own,
// kept first and verbatim, may be "") followed by --import and the preload
// as a data: URL. The preload strips exactly that token again from the
// worker's process.env, so the worker's own children see existing unchanged.
// The result depends only on its arguments: compute it once and reuse it for
// every spawn.
func NodeOptions(existing string, o Options) string {
	token := "--import " + dataURL(o)
	if existing == "" {
		return token
	}
	return existing + " " + token
}

// dataURL is the preload module with o baked in. Base64 has no spaces,
// quotes or backslashes, so it is one NODE_OPTIONS token as is.
func dataURL(o Options) string {
	return "data:text/javascript;base64," + base64.StdEncoding.EncodeToString([]byte(module(o)))
}

// module is preload.js preceded by a declaration of its options.
func module(o Options) string {
	header, _ := json.Marshal(struct {
		StopSignal string `json:"stopSignal"`
	}{normalizeSignal(o.StopSignal)})
	return "const CLUSTERINIT_OPTIONS = " + string(header) + ";\n" + source
}

// normalizeSignal turns "term", "TERM" or "SIGTERM" into Node's name,
// "SIGTERM".
func normalizeSignal(s string) string {
	s = strings.ToUpper(strings.TrimSpace(s))
	if s == "" {
		return "SIGTERM"
	}
	if !strings.HasPrefix(s, "SIG") {
		s = "SIG" + s
	}
	return s
}
