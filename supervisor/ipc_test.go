package supervisor

import (
	"strings"
	"testing"
	"time"
)

func TestParseIPCLine(t *testing.T) {
	cases := []struct {
		line    string
		kind    msgKind
		wantErr bool
	}{
		{`"ready"`, msgReady, false},
		{`{"type":"ready"}`, msgReady, false},
		{`{"type":"process:msg","data":{}}`, msgIgnored, false},
		{`"shutdown"`, msgIgnored, false},
		{`{"cmd":"NODE_HANDLE","type":"net.Server","msg":"x"}`, msgHandle, false},
		{`{"cmd":"NODE_CLUSTERINIT","event":"listening","port":3000}`, msgListening, false},
		{`{"cmd":"NODE_CLUSTERINIT","event":"pong","seq":7,"eld":0.25}`, msgPong, false},
		{`{"cmd":"NODE_CLUSTERINIT","event":"pong","seq":"x"}`, msgIgnored, false},
		{`[1,2]`, msgIgnored, false},
		{`42`, msgIgnored, false},
		{``, msgIgnored, true},
		{`   `, msgIgnored, true},
		{`not json`, msgIgnored, true},
		{`{"type":`, msgIgnored, true},
		{`"unterminated`, msgIgnored, true},
	}
	for _, c := range cases {
		m, err := parseIPCLine([]byte(c.line + "\n"))
		if (err != nil) != c.wantErr || m.kind != c.kind {
			t.Errorf("%q: kind %v err %v, want kind %v err %v", c.line, m.kind, err, c.kind, c.wantErr)
		}
	}
	m, _ := parseIPCLine([]byte(`{"cmd":"NODE_CLUSTERINIT","event":"pong","seq":7,"eld":0.25}`))
	if m.seq != 7 || m.eld != 0.25 {
		t.Errorf("pong parsed as %+v", m)
	}
}

func FuzzParseIPCLine(f *testing.F) {
	for _, s := range []string{`"ready"`, `{"type":"ready"}`, `{"cmd":"NODE_HANDLE"}`,
		`{"cmd":"NODE_CLUSTERINIT","event":"pong","seq":1,"eld":1e-3}`, `{`, strings.Repeat("[", 1000)} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, line []byte) {
		m, err := parseIPCLine(line)
		if err != nil && m.kind != msgIgnored {
			t.Fatalf("error with a meaningful kind: %+v %v", m, err)
		}
	})
}

// The lines clusterinit writes are each one valid JSON value and a newline:
// Node would crash the worker on anything else.
func TestWrittenLinesAreValidJSON(t *testing.T) {
	for _, line := range [][]byte{lineShutdown, lineDrain, lineHandleNack, pingLine(1 << 40)} {
		s := string(line)
		if !strings.HasSuffix(s, "\n") || strings.Count(s, "\n") != 1 {
			t.Errorf("%q is not one line", s)
		}
		if _, err := parseIPCLine(line); err != nil {
			t.Errorf("%q: %v", s, err)
		}
	}
}

func TestBackoffDoublesToCap(t *testing.T) {
	base := 100 * time.Millisecond
	want := []time.Duration{100 * time.Millisecond, 200 * time.Millisecond, 400 * time.Millisecond, 800 * time.Millisecond}
	for i, w := range want {
		if got := backoff(base, i+1); got != w {
			t.Errorf("backoff(%d) = %v, want %v", i+1, got, w)
		}
	}
	if got := backoff(base, 50); got != maxRestartDelay {
		t.Errorf("backoff(50) = %v, want the 30s cap", got)
	}
	if got := backoff(time.Minute, 1); got != maxRestartDelay {
		t.Errorf("a RESTART_DELAY above the cap gives %v", got)
	}
}
