// Package preload builds the NODE_OPTIONS that load clusterinit's Node preload
// (preload.js) into every worker, and defines, once, the worker protocol the
// supervisor speaks with it: the IPC lines each side writes, their parser,
// and the environment and fds a worker is started with (protocol.go).
//
// The preload needs no file on disk (read-only and distroless images work):
// NODE_OPTIONS --imports a small bootstrap as a data: URL, which compiles
// preload.js from the worker's environment (NODE_CLUSTERINIT_PRELOAD). It
// redirects listen() on a handed port to the handed fd, reports readiness,
// answers heartbeats and drains on the stop signal; see preload.js.
package preload

import (
	_ "embed"
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
// kept first and verbatim, may be "") followed by --import and a small
// bootstrap module as a data: URL, with o baked in. The bootstrap compiles
// preload.js from the worker's environment (SourceEnv, which BaseEnv adds)
// and runs it. The preload strips exactly that token again from the
// worker's process.env, so the worker's own children see existing
// unchanged. The result depends only on its arguments: compute it once and
// reuse it for every spawn.
func NodeOptions(existing string, o Options) string {
	token := "--import " + bootstrapURL(o)
	if existing == "" {
		return token
	}
	return existing + " " + token
}

// SourceVar is the variable that carries preload.js to the worker. It is
// not CLUSTERINIT_-prefixed: a clusterinit started by a worker's child
// would reject it as an unknown setting (the bootstrap deletes it from the
// worker's process.env, but a non-Node worker passes it on).
const SourceVar = "NODE_CLUSTERINIT_PRELOAD"

// SourceEnv is SourceVar=preload.js, for the environment of every worker
// whose NODE_OPTIONS NodeOptions built.
func SourceEnv() string { return SourceVar + "=" + source }

// The preload travels as plain text in the environment, not inside the
// data: URL: Node decodes a data: URL in JavaScript (percent-decoding and
// base64 over the whole 48 KB), which cost every worker's boot about 9 ms
// of CPU (main thread, Node 26) and a few ms of GC; the bootstrap's URL is a
// few hundred bytes (docs/benchmarks.md, "The preload's boot"). The
// bootstrap takes the text out of process.env first, so neither the app nor
// the worker's children see it, and compiles it as a function body (strict
// mode, preload.js's first statement) with vm.compileFunction, which
// --disallow-code-generation-from-strings does not forbid. A preload that
// fails to compile or throws says so on stderr and leaves the app to run
// without it (preload.js itself catches whatever its steps throw).
const bootstrapJS = `import{createRequire}from'node:module';import{compileFunction}from'node:vm';` +
	`const e=process.env,s=e.` + SourceVar + `;delete e.` + SourceVar + `;` +
	`if(typeof s==='string')try{compileFunction(s,['createRequire','preloadURL','CLUSTERINIT_OPTIONS'],` +
	`{filename:'clusterinit-preload.js'})(createRequire,import.meta.url,` + optionsPlaceholder + `)}` +
	`catch(x){console.error('clusterinit: the preload failed; the app runs without it:',x)}`

// optionsPlaceholder in bootstrapJS is replaced by the options as JSON.
const optionsPlaceholder = "$OPTIONS$"

// bootstrapURL is the bootstrap module with o baked in, as a data: URL in
// which every byte but [A-Za-z0-9-_.~] is percent-encoded: no space, quote
// or backslash (NODE_OPTIONS splits and unquotes on those), no '#' or '?',
// and nothing a URL parser would normalize, so import.meta.url is this
// string exactly (the preload looks for it in NODE_OPTIONS).
func bootstrapURL(o Options) string {
	header, _ := json.Marshal(struct {
		StopSignal  string `json:"stopSignal"`
		StopMessage bool   `json:"stopMessage"`
		HeapFlag    bool   `json:"heapFlag"`
	}{normalizeSignal(o.StopSignal), o.StopMessage, o.HeapFlag})
	js := strings.Replace(bootstrapJS, optionsPlaceholder, string(header), 1)
	const hex = "0123456789ABCDEF"
	var b strings.Builder
	b.WriteString("data:text/javascript,")
	for i := 0; i < len(js); i++ {
		c := js[i]
		if 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_' || c == '.' || c == '~' {
			b.WriteByte(c)
			continue
		}
		b.WriteByte('%')
		b.WriteByte(hex[c>>4])
		b.WriteByte(hex[c&15])
	}
	return b.String()
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
