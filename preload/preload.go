// Package preload builds the NODE_OPTIONS that load clusterinit's Node preload
// (preload.js) into every worker, and defines, once, the worker protocol the
// supervisor speaks with it: the IPC lines each side writes, their parser,
// and the environment and fds a worker is started with (protocol.go).
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
	"strconv"
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
	// StopMessage is STOP_MESSAGE: the worker is also sent "shutdown", so
	// an app listening for IPC messages stops itself, as with a handler of
	// its own for the stop signal.
	StopMessage bool
	// HeapFlag: the supervisor may add --max-old-space-size=N right before
	// the --import token (WithHeapSize), and the preload removes it with its
	// own token from what the worker's children inherit. Set it only when
	// the user's NODE_OPTIONS has no such flag of its own (UserHeapSize).
	HeapFlag bool
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
		StopSignal  string `json:"stopSignal"`
		StopMessage bool   `json:"stopMessage"`
		HeapFlag    bool   `json:"heapFlag"`
	}{normalizeSignal(o.StopSignal), o.StopMessage, o.HeapFlag})
	return "const CLUSTERINIT_OPTIONS = " + string(header) + ";\n" + source
}

// heapFlag is the V8 option HEAP_SIZE sets. V8 reads '_' and '-' in option
// names alike.
const heapFlag = "--max-old-space-size"

// WithHeapSize returns nodeOptions (as NodeOptions built it) with
// --max-old-space-size=mib inserted right before the preload's --import
// token, where the preload finds and removes it again (Options.HeapFlag).
func WithHeapSize(nodeOptions string, mib int64) string {
	flag := heapFlag + "=" + strconv.FormatInt(mib, 10)
	i := strings.LastIndex(nodeOptions, "--import data:")
	if i < 0 {
		return strings.TrimSpace(nodeOptions + " " + flag)
	}
	return nodeOptions[:i] + flag + " " + nodeOptions[i:]
}

// UserHeapSize reports whether the user set V8's old-space limit already, in
// NODE_OPTIONS or in the command's arguments (node --max-old-space-size=512
// app.js, or the value as the next argument): HEAP_SIZE never overrides it.
func UserHeapSize(nodeOptions string, argv []string) bool {
	for _, a := range append(strings.Fields(nodeOptions), argv...) {
		name, _, _ := strings.Cut(a, "=")
		if strings.ReplaceAll(name, "_", "-") == heapFlag {
			return true
		}
	}
	return false
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
