package preload

import (
	"encoding/json"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestParse(t *testing.T) {
	cases := []struct {
		line    string
		kind    Kind
		wantErr bool
	}{
		{`"ready"`, KindReady, false},
		{`{"type":"ready"}`, KindReady, false},
		{`{"type":"process:msg","data":{}}`, KindIgnored, false},
		{`"shutdown"`, KindIgnored, false},
		{`{"cmd":"NODE_HANDLE","type":"net.Server","msg":"x"}`, KindHandle, false},
		{`{"cmd":"NODE_CLUSTERINIT","event":"listening","port":3000}`, KindListening, false},
		{`{"cmd":"NODE_CLUSTERINIT","event":"pong","seq":7,"eld":0.25}`, KindPong, false},
		{`{"cmd":"NODE_CLUSTERINIT","event":"pong","seq":"x"}`, KindIgnored, false},
		{`{"cmd":"NODE_CLUSTERINIT","event":"denied","permission":"net"}`, KindDenied, false},
		{`[1,2]`, KindIgnored, false},
		{`42`, KindIgnored, false},
		{``, KindIgnored, true},
		{`   `, KindIgnored, true},
		{`not json`, KindIgnored, true},
		{`{"type":`, KindIgnored, true},
		{`"unterminated`, KindIgnored, true},
	}
	for _, c := range cases {
		m, err := Parse([]byte(c.line + "\n"))
		if (err != nil) != c.wantErr || m.Kind != c.kind {
			t.Errorf("%q: kind %v err %v, want kind %v err %v", c.line, m.Kind, err, c.kind, c.wantErr)
		}
	}
	for line, want := range map[string]Message{
		`{"cmd":"NODE_CLUSTERINIT","event":"pong","seq":7,"eld":0.25}`: {Kind: KindPong, Seq: 7, ELD: 0.25},
		`{"cmd":"NODE_CLUSTERINIT","event":"pong","seq":8,"eld":0.001,"elu":0.5,"heap_used":1048576,"heap_limit":4345298944,"gc":1.25,"requests":12345}`: {
			Kind: KindPong, Seq: 8, ELD: 0.001, ELU: 0.5, HeapUsed: 1 << 20, HeapLimit: 4345298944, GCSeconds: 1.25, Requests: 12345},
		`{"cmd":"NODE_CLUSTERINIT","event":"listening","port":3000}`:               {Kind: KindListening, Port: 3000},
		`{"cmd":"NODE_CLUSTERINIT","event":"metrics","seq":3,"metrics":[{"a":1}]}`: {Kind: KindMetrics, Seq: 3, Metrics: json.RawMessage(`[{"a":1}]`)},
		// An answer without a list is an empty one: the scrape still counts it.
		`{"cmd":"NODE_CLUSTERINIT","event":"metrics","seq":4,"metrics":{"a":1}}`: {Kind: KindMetrics, Seq: 4, Metrics: json.RawMessage(`[]`)},
		`{"cmd":"NODE_CLUSTERINIT","event":"metrics","seq":5}`:                   {Kind: KindMetrics, Seq: 5, Metrics: json.RawMessage(`[]`)},
	} {
		if m, err := Parse([]byte(line)); err != nil || !reflect.DeepEqual(m, want) {
			t.Errorf("%s parsed as %+v, %v; want %+v", line, m, err, want)
		}
	}
}

func FuzzParse(f *testing.F) {
	for _, s := range []string{`"ready"`, `{"type":"ready"}`, `{"cmd":"NODE_HANDLE"}`,
		`{"cmd":"NODE_CLUSTERINIT","event":"pong","seq":1,"eld":1e-3}`, `{`, strings.Repeat("[", 1000)} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, line []byte) {
		m, err := Parse(line)
		if err != nil && m.Kind != KindIgnored {
			t.Fatalf("error with a meaningful kind: %+v %v", m, err)
		}
	})
}

// The lines the supervisor writes are each one valid JSON value and a
// newline (Node would crash the worker on anything else), and each means
// what it says.
func TestWrittenLines(t *testing.T) {
	for _, c := range []struct {
		line []byte
		want string
	}{
		{ShutdownLine(), `"shutdown"`},
		{DrainLine(0), `{"cmd":"NODE_CLUSTERINIT_DRAIN"}`},
		{DrainLine(2 * time.Second), `{"cmd":"NODE_CLUSTERINIT_DRAIN","handover_ms":2000}`},
		{HandleNackLine(), `{"cmd":"NODE_HANDLE_NACK"}`},
		{PingLine(1 << 40), `{"cmd":"NODE_CLUSTERINIT_PING","seq":1099511627776}`},
	} {
		if string(c.line) != c.want+"\n" {
			t.Errorf("%q, want %q and a newline", c.line, c.want)
		}
		if _, err := Parse(c.line); err != nil {
			t.Errorf("%q: %v", c.line, err)
		}
	}
}

func TestWorkerEnv(t *testing.T) {
	environ := []string{"PATH=/bin", "LISTEN_FDS=9", "NODE_UNIQUE_ID=1", "NODE_OPTIONS=--x", "NODE_CHANNEL_FD=4", "KEEP=1"}
	if got, want := BaseEnv(environ, ""), []string{"PATH=/bin", "NODE_OPTIONS=--x", "KEEP=1"}; !slices.Equal(got, want) {
		t.Errorf("BaseEnv without preload = %q, want %q", got, want)
	}
	if got, want := BaseEnv(append(environ, SourceVar+"=stale"), "--y", "KEEP"), []string{"PATH=/bin", "NODE_OPTIONS=--y", SourceEnv()}; !slices.Equal(got, want) {
		t.Errorf("BaseEnv with preload = %q, want %q", got, want)
	}
	if got, want := WorkerEnv(2, []string{"port80", "port443"}), []string{"CLUSTERINIT_WORKER=2", "NODE_APP_INSTANCE=2",
		"NODE_CHANNEL_FD=5", "NODE_CHANNEL_SERIALIZATION_MODE=json", "LISTEN_FDS=2", "LISTEN_FDNAMES=port80:port443"}; !slices.Equal(got, want) {
		t.Errorf("WorkerEnv = %q, want %q", got, want)
	}
	if got, want := WorkerEnv(0, nil), []string{"CLUSTERINIT_WORKER=0", "NODE_APP_INSTANCE=0",
		"NODE_CHANNEL_FD=3", "NODE_CHANNEL_SERIALIZATION_MODE=json"}; !slices.Equal(got, want) {
		t.Errorf("WorkerEnv without sockets = %q, want %q", got, want)
	}
}
