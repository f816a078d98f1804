package config

import (
	"bytes"
	"fmt"
	"io"
	"reflect"
	"strconv"
	"strings"
	"time"
)

// Variable describes one configuration variable for help and docs.
type Variable struct {
	Name    string // with Prefix, e.g. CLUSTERINIT_WORKERS
	Default string // as SPEC words it; empty when the variable has none
	Help    string // one line
}

// Variables lists every variable in Config order. It is built from the
// struct tags that Load itself uses, so it cannot drift from the parser.
func Variables() []Variable {
	fields := configFields()
	vars := make([]Variable, len(fields))
	for i, f := range fields {
		vars[i] = Variable{Name: f.key, Default: f.def, Help: f.help}
	}
	return vars
}

// usage is the Invocation section of SPEC.md.
const usage = `Usage:
  clusterinit [--] COMMAND [ARG...]   run N copies of COMMAND as workers (the main job)
  clusterinit health                  probe the running supervisor's /readyz; exit 0 ready, 1 not (for ECS healthCheck on distroless images)
  clusterinit reload                  ask the running supervisor for a rolling reload (same as SIGHUP)
  clusterinit status [--json]         the running fleet as a table (slot, pid, state, uptime, restarts, CPU, memory, heap, event-loop delay), like pm2 list; exit 1 when no supervisor answers
  clusterinit config                  print the effective configuration (env + detected CPU/memory limits and where each came from, the heap size each worker gets) and exit; exit 2 if invalid
  clusterinit version                 print version
  clusterinit help | -h | --help      list every variable with its default and meaning

Configuration is environment variables, all prefixed CLUSTERINIT_. Durations use
Go syntax (500ms, 30s, 5m). Sizes accept B, K/M/G/T (powers of 1000) and
Ki/Mi/Gi/Ti (powers of 1024), e.g. 300M, 1.5Gi. 0 turns a limit off. An empty
variable means its default. An invalid value or an unknown CLUSTERINIT_*
variable is reported, one line per problem, and clusterinit starts nothing and
exits 2.

Variables:
`

// helpWidth is where WriteHelp wraps the meaning of each variable; 80
// columns stays readable in a terminal and in CI logs.
const helpWidth = 80

// WriteHelp writes the usage and every variable with its default and
// meaning. Write errors are ignored: help goes to a terminal or a pipe, and
// there is nothing useful to do if it cannot be written.
func WriteHelp(w io.Writer) {
	var b bytes.Buffer
	b.WriteString(usage)
	for _, v := range Variables() {
		def := v.Default
		if def == "" {
			def = "unset"
		}
		fmt.Fprintf(&b, "\n  %s (default: %s)\n", v.Name, def)
		writeWrapped(&b, v.Help, "      ", helpWidth)
	}
	_, _ = w.Write(b.Bytes())
}

// writeWrapped writes text in lines of at most width columns (longer words
// stay whole), each starting with indent.
func writeWrapped(b *bytes.Buffer, text, indent string, width int) {
	col := 0
	for _, word := range strings.Fields(text) {
		switch {
		case col == 0:
			b.WriteString(indent)
			col = len(indent)
		case col+1+len(word) > width:
			b.WriteString("\n" + indent)
			col = len(indent)
		default:
			b.WriteByte(' ')
			col++
		}
		b.WriteString(word)
		col += len(word)
	}
	b.WriteByte('\n')
}

// Write prints the configuration as CLUSTERINIT_NAME=value lines in Config
// order, each value in the canonical form its parser reads back, so the
// output can be pasted into an env file and gives the same Config.
func (c *Config) Write(w io.Writer) {
	var b bytes.Buffer
	for _, kv := range c.Values() {
		fmt.Fprintf(&b, "%s=%s\n", kv[0], kv[1])
	}
	_, _ = w.Write(b.Bytes())
}

// Values lists every variable with its effective value in canonical form
// (what Write prints), in Config order: for /status, where durations as
// nanoseconds would be unreadable.
func (c *Config) Values() [][2]string {
	v := reflect.ValueOf(c).Elem()
	fields := configFields()
	out := make([][2]string, len(fields))
	for i, f := range fields {
		out[i] = [2]string{f.key, formatValue(v.Field(f.index))}
	}
	return out
}

// ValueMap is Values as a map, which encodes as a JSON object.
func (c *Config) ValueMap() map[string]string {
	m := map[string]string{}
	for _, kv := range c.Values() {
		m[kv[0]] = kv[1]
	}
	return m
}

// formatValue gives the text of one field: String for the value types and
// time.Duration, strconv for the plain bool and int fields.
func formatValue(v reflect.Value) string {
	if d, ok := v.Interface().(time.Duration); ok {
		return formatDuration(d)
	}
	if s, ok := v.Interface().(fmt.Stringer); ok {
		return s.String()
	}
	switch v.Kind() {
	case reflect.Bool:
		return strconv.FormatBool(v.Bool())
	case reflect.Int:
		return strconv.FormatInt(v.Int(), 10)
	}
	// A new field of another kind must get a case above; fmt's default
	// form is a visible stand-in until then, and the round-trip test fails.
	return fmt.Sprint(v.Interface())
}

// formatDuration writes d as SPEC and the help do: 5m, not 5m0s; 1h30m;
// 0 for off. It parses back to d.
func formatDuration(d time.Duration) string {
	if d == 0 {
		return "0"
	}
	out := d.String()
	if strings.HasSuffix(out, "m0s") {
		out = strings.TrimSuffix(out, "0s")
	}
	if strings.HasSuffix(out, "h0m") {
		out = strings.TrimSuffix(out, "0m")
	}
	return out
}
