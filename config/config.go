package config

import (
	"cmp"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/caarlos0/env/v11"
)

// Prefix starts the name of every clusterinit variable.
const Prefix = "CLUSTERINIT_"

// WorkerVariable is the variable each worker receives with its slot. It is
// not configuration, but a worker that runs clusterinit itself (for
// "clusterinit health", say) passes it back, so Load must not call it a typo.
const WorkerVariable = Prefix + "WORKER"

// Config is clusterinit's whole configuration: one field per variable, the
// name without Prefix in the env tag. Defaults are what SPEC.md states.
// LISTEN's real default is computed from PORT by Load; its envDefault is the
// fallback for when PORT is unset, and helpDefault says so in the help.
type Config struct {
	Workers         Workers       `env:"WORKERS" envDefault:"auto" help:"number of workers; auto: the task's CPU limit rounded up (ECS task metadata Limits.CPU when ECS_CONTAINER_METADATA_URI_V4 is set, else the smallest CPU quota on the cgroup path up to the root), capped by the CPUs this process may run on, at least 1"`
	Listen          Listen        `env:"LISTEN" envDefault:":3000" helpDefault:":$PORT, or :3000 when PORT is unset" help:"comma-separated TCP addresses that clusterinit binds itself and hands to every worker; none: workers bind their own sockets"`
	ListenMode      ListenMode    `env:"LISTEN_MODE" envDefault:"shared" help:"shared: one listening socket per address, accepted from directly by all workers; reuseport: one SO_REUSEPORT socket per address per worker slot"`
	Ready           ReadyMode     `env:"READY" envDefault:"auto" help:"auto: with the preload on, a worker is ready when it listens on a handed socket or sends ready over IPC, whichever comes first, and with SHIM=false at spawn; message: only on process.send('ready'); none: at spawn"`
	ReadyTimeout    time.Duration `env:"READY_TIMEOUT" envDefault:"30s" help:"a worker not ready by then is killed and counts as a failed start"`
	StopSignal      Signal        `env:"STOP_SIGNAL" envDefault:"SIGTERM" help:"signal that tells a worker to drain"`
	StopMessage     bool          `env:"STOP_MESSAGE" envDefault:"false" help:"also send the IPC message shutdown (PM2 shutdown_with_message)"`
	DrainTimeout    time.Duration `env:"DRAIN_TIMEOUT" envDefault:"25s" help:"time from a worker's stop signal to SIGKILL of its process group"`
	StopDelay       time.Duration `env:"STOP_DELAY" envDefault:"0s" help:"on SIGTERM/SIGINT, keep serving this long before draining (load-balancer deregistration)"`
	HeapSize        HeapSize      `env:"HEAP_SIZE" envDefault:"auto" help:"V8 heap limit of each Node worker, passed as --max-old-space-size (needs SHIM); auto: sized from the task's memory limit and the number of workers so that every worker at its heap limit, with its native memory, fits in the limit (see the memory budget), or Node's default when no limit is known; a size such as 512Mi; off: Node's default. A --max-old-space-size in NODE_OPTIONS or the command always wins"`
	MaxRSS          MemLimit      `env:"MAX_RSS" envDefault:"0" help:"recycle a worker whose resident memory (the worker and its descendants) stays above this for MAX_RSS_FOR, such as 300M or 1.5Gi (at least 1Mi); auto: 90% of the worker's share of the task's memory limit (limit / workers), off when no limit is known; 0: off"`
	MaxRSSFor       time.Duration `env:"MAX_RSS_FOR" envDefault:"30s" help:"how long memory must stay above MAX_RSS"`
	MaxCPU          Fraction      `env:"MAX_CPU" envDefault:"0" help:"recycle a worker whose CPU use (the worker and its descendants, as a fraction of one core: 0.9 or 90%) stays above this for MAX_CPU_FOR; 0: off"`
	MaxCPUFor       time.Duration `env:"MAX_CPU_FOR" envDefault:"5m" help:"how long CPU use must stay above MAX_CPU"`
	MaxAge          time.Duration `env:"MAX_AGE" envDefault:"0" help:"recycle a worker older than this, each with up to 10% random jitter, never two at once; 0: off"`
	MaxRequests     int           `env:"MAX_REQUESTS" envDefault:"0" help:"recycle a Node worker once it has answered this many HTTP requests, each with up to 10% random jitter (Gunicorn's max_requests and jitter), never two at once (needs SHIM); 0: off"`
	HangTimeout     time.Duration `env:"HANG_TIMEOUT" envDefault:"0" help:"recycle a Node worker whose event loop has not answered the preload's heartbeat for this long (needs SHIM); 0: off"`
	SampleEvery     time.Duration `env:"SAMPLE_EVERY" envDefault:"5s" help:"how often CPU, memory and heartbeats are sampled"`
	RestartDelay    time.Duration `env:"RESTART_DELAY" envDefault:"100ms" help:"delay before restarting a crashed worker; doubles per consecutive crash of that slot up to 30s, resets after MIN_UPTIME of healthy running"`
	MinUptime       time.Duration `env:"MIN_UPTIME" envDefault:"10s" help:"a worker that exits sooner than this (or never gets ready) counts as a failed start"`
	MaxFailedStarts int           `env:"MAX_FAILED_STARTS" envDefault:"10" help:"consecutive failed starts (all slots together) after which clusterinit stops everything and exits 1, so the orchestrator replaces the task"`
	HealthAddr      Addr          `env:"HEALTH_ADDR" envDefault:"127.0.0.1:9558" help:"address of the health and metrics server; off: disabled"`
	MinReady        int           `env:"MIN_READY" envDefault:"1" help:"/readyz answers 200 while at least this many workers are ready and clusterinit is not stopping"`
	User            User          `env:"USER" help:"run workers as this user (name, uid or uid:gid); clusterinit binds the listeners first, so privileged ports work"`
	Shim            bool          `env:"SHIM" envDefault:"true" help:"inject the Node preload into workers; false for non-Node commands"`
	LogFormat       LogFormat     `env:"LOG_FORMAT" envDefault:"text" help:"clusterinit's own log lines on stderr: text or json"`
	LogLevel        LogLevel      `env:"LOG_LEVEL" envDefault:"info" help:"debug, info, warn or error"`
	WorkerLogPrefix bool          `env:"WORKER_LOG_PREFIX" envDefault:"false" help:"prefix each line that a worker writes with its slot; false: workers write straight to clusterinit's stdout/stderr"`
}

// Error is every problem Load found, one line each, sorted by variable.
type Error struct {
	Problems []string
}

func (e *Error) Error() string { return strings.Join(e.Problems, "\n") }

// Load parses environ (os.Environ form, "KEY=value") into a Config. Any
// problem makes it return a nil Config and an *Error listing all of them.
func Load(environ []string) (*Config, error) {
	vars := environMap(environ)
	fields := configFields()
	byKey := make(map[string]field, len(fields))
	for _, f := range fields {
		byKey[f.key] = f
	}

	var probs problems
	// caarlos0/env gets only the known variables, trimmed; the raw values
	// stay in vars for the problem lines, which show what the user wrote.
	known := make(map[string]string)
	for k, v := range vars {
		if !strings.HasPrefix(k, Prefix) || k == WorkerVariable {
			continue
		}
		if _, ok := byKey[k]; !ok {
			probs.add(k, fmt.Sprintf("%s=%s: unknown variable%s", quoteName(k), shownValue(k, v), suggest(k, fields)))
			continue
		}
		known[k] = strings.TrimSpace(v)
	}

	// LISTEN follows PORT, the variable Node frameworks and PaaS platforms
	// already use, so an app moved under clusterinit keeps its port. PORT is
	// only clusterinit's business when it decides LISTEN.
	const listenKey = Prefix + "LISTEN"
	if known[listenKey] == "" {
		if port := strings.TrimSpace(vars["PORT"]); port != "" {
			if n, ok := parseDecimal(port, 65535); ok && n >= 1 {
				known[listenKey] = ":" + strconv.FormatUint(n, 10)
			} else {
				probs.add("PORT", fmt.Sprintf("PORT=%q: want a port number from 1 to 65535 (it sets the default of %s)", vars["PORT"], listenKey))
			}
		}
	}

	var cfg Config
	failed := make(map[string]bool) // Go field names that did not parse
	if err := env.ParseWithOptions(&cfg, env.Options{Prefix: Prefix, Environment: known}); err != nil {
		var agg env.AggregateError
		errs := []error{err}
		if errors.As(err, &agg) {
			errs = agg.Errors
		}
		rules := cfg.rules()
		for _, e := range errs {
			f, inner, ok := fieldOfError(e, fields)
			if !ok {
				// Only a bug in this package (a field type the library
				// cannot parse, a bad tag) gets here; say so plainly
				// rather than blaming the user's value.
				probs.add("", fmt.Sprintf("%sinternal error: %v", Prefix, e))
				continue
			}
			failed[f.goName] = true
			probs.add(f.key, fmt.Sprintf("%s=%q: %s", f.key, valueOf(f, vars), f.want(inner, rules)))
		}
	}

	// Range and consistency rules run only on fields that parsed, and
	// report at most one problem per variable, so every line is actionable.
	reported := make(map[string]bool)
	for _, r := range cfg.rules() {
		if r.ok || failed[r.field] || reported[r.field] || slices.ContainsFunc(r.deps, func(d string) bool { return failed[d] }) {
			continue
		}
		reported[r.field] = true
		f := fieldByGoName(fields, r.field)
		probs.add(f.key, fmt.Sprintf("%s=%q: want %s", f.key, valueOf(f, vars), r.want))
	}

	if len(probs) > 0 {
		return nil, probs.err()
	}
	return &cfg, nil
}

// rule is a check on a parsed value that its type alone cannot make,
// because it depends on the variable or on another variable.
type rule struct {
	field string   // Go name of the checked field
	deps  []string // other fields the check reads; skipped if one failed
	ok    bool
	want  string
}

func (c *Config) rules() []rule {
	const (
		positive = "a duration greater than 0, such as "
		nonNeg   = "a duration of 0 or more, such as "
	)
	return []rule{
		{field: "ReadyTimeout", ok: c.ReadyTimeout > 0, want: positive + "30s"},
		{field: "DrainTimeout", ok: c.DrainTimeout > 0, want: positive + "25s"},
		{field: "StopDelay", ok: c.StopDelay >= 0, want: nonNeg + "10s"},
		// A bare number is bytes, so MAX_RSS=300 (meant as MB) would
		// recycle every worker as soon as it starts; no Node process is
		// below a mebibyte, so such a limit is always a mistake.
		{field: "MaxRSS", ok: c.MaxRSS.Auto || c.MaxRSS.Size == 0 || c.MaxRSS.Size >= 1<<20, want: "auto, 0 or a size of at least 1Mi, such as 300M or 1.5Gi (a plain number is bytes)"},
		{field: "MaxRSSFor", ok: c.MaxRSSFor >= 0, want: nonNeg + "30s"},
		{field: "MaxCPUFor", ok: c.MaxCPUFor >= 0, want: nonNeg + "5m"},
		{field: "MaxAge", ok: c.MaxAge >= 0, want: nonNeg + "6h"},
		{field: "MaxRequests", ok: c.MaxRequests >= 0, want: "a whole number of 0 or more, such as 10000"},
		// The count comes from the preload, as the heartbeat does.
		{field: "MaxRequests", deps: []string{"Shim"}, ok: c.MaxRequests == 0 || c.Shim,
			want: "0 while " + Prefix + "SHIM is false, since the request count comes from the Node preload"},
		{field: "HangTimeout", ok: c.HangTimeout >= 0, want: nonNeg + "30s"},
		// The heartbeat comes from the preload: without it every worker
		// would look hung, or the setting would silently do nothing.
		{field: "HangTimeout", deps: []string{"Shim"}, ok: c.HangTimeout == 0 || c.Shim,
			want: "0 while " + Prefix + "SHIM is false, since the heartbeat comes from the Node preload"},
		// Sampling reads /proc for every worker and its descendants; below
		// 100ms the supervisor would mostly be measuring itself.
		{field: "SampleEvery", ok: c.SampleEvery >= 100*time.Millisecond, want: "a duration of at least 100ms, such as 5s"},
		{field: "RestartDelay", ok: c.RestartDelay >= 0, want: nonNeg + "100ms"},
		{field: "MinUptime", ok: c.MinUptime > 0, want: positive + "10s"},
		{field: "MaxFailedStarts", ok: c.MaxFailedStarts >= 1, want: "a whole number of at least 1"},
		{field: "MinReady", ok: c.MinReady >= 0, want: "a whole number of 0 or more"},
		// With a fixed count, a higher MIN_READY means /readyz can never
		// pass and the orchestrator would kill a healthy task. With auto
		// the count is known only to the supervisor.
		{field: "MinReady", deps: []string{"Workers"}, ok: c.Workers.Auto || c.MinReady <= c.Workers.N,
			want: fmt.Sprintf("at most %sWORKERS (%d), or /readyz can never answer 200", Prefix, c.Workers.N)},
	}
}

// field is what reflection tells about one Config field.
type field struct {
	index  int
	goName string
	key    string // with Prefix
	def    string // as shown in help
	help   string
	typ    reflect.Type
}

func configFields() []field {
	t := reflect.TypeFor[Config]()
	fields := make([]field, 0, t.NumField())
	for i := range t.NumField() {
		sf := t.Field(i)
		name, _, _ := strings.Cut(sf.Tag.Get("env"), ",")
		def, ok := sf.Tag.Lookup("helpDefault")
		if !ok {
			def = sf.Tag.Get("envDefault")
		}
		fields = append(fields, field{
			index:  i,
			goName: sf.Name,
			key:    Prefix + name,
			def:    def,
			help:   sf.Tag.Get("help"),
			typ:    sf.Type,
		})
	}
	return fields
}

func fieldByGoName(fields []field, name string) field {
	i := slices.IndexFunc(fields, func(f field) bool { return f.goName == name })
	return fields[i]
}

// fieldOfError finds the field a caarlos0/env error is about, and the
// underlying parser error, so the library's own wording never reaches the
// user.
func fieldOfError(err error, fields []field) (field, error, bool) {
	var pe env.ParseError
	if !errors.As(err, &pe) {
		return field{}, nil, false
	}
	i := slices.IndexFunc(fields, func(f field) bool { return f.goName == pe.Name })
	if i < 0 {
		return field{}, nil, false
	}
	return fields[i], pe.Err, true
}

// want words the accepted values for a field whose value did not parse.
func (f field) want(inner error, rules []rule) string {
	var we *wantError
	if errors.As(inner, &we) {
		return we.Error()
	}
	switch f.typ.Kind() {
	case reflect.Bool:
		return "want " + wantBool
	case reflect.Int:
		// Integers say their range even when the text was not a number
		// at all: that is the useful part.
		for _, r := range rules {
			if r.field == f.goName {
				return "want " + r.want
			}
		}
		return "want a whole number"
	}
	if f.typ == reflect.TypeFor[time.Duration]() {
		return "want " + wantDuration
	}
	return "want a valid value"
}

// valueOf is the value a problem line shows: exactly what the user wrote,
// untrimmed, so it can be searched for in the task definition. Defaults are
// valid, so a problem is never about a variable that was not set.
func valueOf(f field, vars map[string]string) string { return vars[f.key] }

// environMap turns os.Environ-style entries into a map. A later duplicate
// wins, as it does for the exec'd program's getenv.
func environMap(environ []string) map[string]string {
	m := make(map[string]string, len(environ))
	for _, kv := range environ {
		if k, v, ok := strings.Cut(kv, "="); ok && k != "" {
			m[k] = v
		}
	}
	return m
}

// problems gathers problem lines with the variable each one is about.
type problems []problem

type problem struct{ name, line string }

func (p *problems) add(name, line string) { *p = append(*p, problem{name, line}) }

func (p problems) err() *Error {
	slices.SortStableFunc(p, func(a, b problem) int { return cmp.Compare(a.name, b.name) })
	e := &Error{Problems: make([]string, len(p))}
	for i, x := range p {
		e.Problems[i] = x.line
	}
	return e
}

// quoteName prints a variable name as is unless it holds characters that
// would break the one-line-per-problem promise or hide in a terminal.
func quoteName(k string) string {
	if !utf8.ValidString(k) || strings.IndexFunc(k, func(r rune) bool { return !unicode.IsPrint(r) || r == ' ' }) >= 0 {
		return strconv.Quote(k)
	}
	return k
}

// suggest names the known variable closest to an unknown one, if it is
// close enough to be a plausible typo.
func suggest(key string, fields []field) string {
	typo := strings.ToUpper(strings.TrimPrefix(key, Prefix))
	best, bestDist := "", 3
	for _, f := range fields {
		if d := editDistance(typo, strings.TrimPrefix(f.key, Prefix), bestDist); d < bestDist {
			best, bestDist = f.key, d
		}
	}
	if best == "" {
		return ""
	}
	return " (did you mean " + best + "?)"
}

// editDistance is the optimal-string-alignment distance between a and b:
// insertions, deletions, substitutions and swaps of neighbours each count
// one, the last because transposed letters are the most common typo. It
// returns limit as soon as the distance is known to be at least limit.
func editDistance(a, b string, limit int) int {
	if d := len(a) - len(b); d >= limit || -d >= limit {
		return limit
	}
	prev2 := make([]int, len(b)+1)
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		rowMin := cur[0]
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
			if i > 1 && j > 1 && a[i-1] == b[j-2] && a[i-2] == b[j-1] {
				cur[j] = min(cur[j], prev2[j-2]+1)
			}
			rowMin = min(rowMin, cur[j])
		}
		if rowMin >= limit {
			return limit
		}
		prev2, prev, cur = prev, cur, prev2
	}
	return min(prev[len(b)], limit)
}

// secretWords mark a variable name whose value must never be printed: an
// unknown CLUSTERINIT_* variable may be a secret meant for something else,
// and problem lines end up in the task's logs.
var secretWords = []string{"SECRET", "TOKEN", "PASSW", "PWD", "KEY", "CREDENTIAL", "AUTH", "PRIVATE", "SESSION", "COOKIE", "SIGNATURE", "CERT"}

// shownValue is how a problem line shows the value of variable name.
func shownValue(name, value string) string {
	upper := strings.ToUpper(name)
	for _, w := range secretWords {
		if strings.Contains(upper, w) {
			return "(value hidden)"
		}
	}
	return fmt.Sprintf("%q", value)
}
