package config

import (
	"bytes"
	"errors"
	"log/slog"
	"reflect"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/caarlos0/env/v11"
)

// defaultConfig is SPEC.md's table of defaults written out by hand, so a
// changed envDefault tag shows up as a test failure.
func defaultConfig() Config {
	return Config{
		Workers:         Workers{Auto: true},
		Listen:          Listen{Addrs: []string{":3000"}},
		ListenMode:      ListenShared,
		Ready:           ReadyAuto,
		ReadyTimeout:    30 * time.Second,
		StopSignal:      Signal(syscall.SIGTERM),
		StopMessage:     false,
		DrainTimeout:    25 * time.Second,
		StopDelay:       0,
		HeapSize:        HeapSize{Auto: true},
		MaxRSS:          MemLimit{},
		MaxRSSFor:       30 * time.Second,
		MaxCPU:          0,
		MaxCPUFor:       5 * time.Minute,
		MaxAge:          0,
		HangTimeout:     0,
		SampleEvery:     5 * time.Second,
		RestartDelay:    100 * time.Millisecond,
		MinUptime:       10 * time.Second,
		MaxFailedStarts: 10,
		HealthAddr:      Addr{HostPort: "127.0.0.1:9558"},
		MinReady:        1,
		User:            User{},
		Shim:            true,
		LogFormat:       LogText,
		LogLevel:        LogLevel(slog.LevelInfo),
		WorkerLogPrefix: false,
	}
}

func TestLoadDefaults(t *testing.T) {
	for _, environ := range [][]string{
		nil,
		{"HOME=/root", "PATH=/bin", "NODE_ENV=production"},
		// Empty values mean the default, as if unset.
		{"CLUSTERINIT_WORKERS=", "CLUSTERINIT_LISTEN=", "CLUSTERINIT_USER=", "CLUSTERINIT_SHIM= ", "PORT="},
		// The slot variable workers receive is not a typo.
		{"CLUSTERINIT_WORKER=3"},
		// Lines without "=" are not environment entries.
		{"CLUSTERINIT_WORKERS", "garbage"},
	} {
		cfg, err := Load(environ)
		if err != nil {
			t.Errorf("%q: %v", environ, err)
			continue
		}
		if want := defaultConfig(); !reflect.DeepEqual(*cfg, want) {
			t.Errorf("%q:\n got %+v\nwant %+v", environ, *cfg, want)
		}
	}
}

// TestLoadIgnoresProcessEnv guards against caarlos0/env falling back to
// os.Environ: Load must see only the environ it was given.
func TestLoadIgnoresProcessEnv(t *testing.T) {
	t.Setenv("CLUSTERINIT_WORKERS", "7")
	t.Setenv("CLUSTERINIT_BOGUS", "1")
	t.Setenv("PORT", "x")
	for _, environ := range [][]string{nil, {}, {"HOME=/"}} {
		cfg, err := Load(environ)
		if err != nil {
			t.Fatalf("%q: %v", environ, err)
		}
		if !reflect.DeepEqual(*cfg, defaultConfig()) {
			t.Errorf("%q: got %+v", environ, *cfg)
		}
	}
}

func TestLoadValues(t *testing.T) {
	cfg, err := Load([]string{
		"CLUSTERINIT_WORKERS=4",
		"CLUSTERINIT_LISTEN=127.0.0.1:8080, [::1]:8080",
		"CLUSTERINIT_LISTEN_MODE=reuseport",
		"CLUSTERINIT_READY=message",
		"CLUSTERINIT_READY_TIMEOUT=1m",
		"CLUSTERINIT_STOP_SIGNAL=int",
		"CLUSTERINIT_STOP_MESSAGE=1",
		"CLUSTERINIT_DRAIN_TIMEOUT=90s",
		"CLUSTERINIT_STOP_DELAY=10s",
		"CLUSTERINIT_HEAP_SIZE=768Mi",
		"CLUSTERINIT_MAX_RSS= 1.5Gi ",
		"CLUSTERINIT_MAX_RSS_FOR=1m30s",
		"CLUSTERINIT_MAX_CPU=90%",
		"CLUSTERINIT_MAX_CPU_FOR=2m",
		"CLUSTERINIT_MAX_AGE=6h",
		"CLUSTERINIT_HANG_TIMEOUT=20s",
		"CLUSTERINIT_SAMPLE_EVERY=100ms",
		"CLUSTERINIT_RESTART_DELAY=0",
		"CLUSTERINIT_MIN_UPTIME=1s",
		"CLUSTERINIT_MAX_FAILED_STARTS=3",
		"CLUSTERINIT_HEALTH_ADDR=off",
		"CLUSTERINIT_MIN_READY=4",
		"CLUSTERINIT_USER=1000:1000",
		"CLUSTERINIT_SHIM=TRUE",
		"CLUSTERINIT_LOG_FORMAT=json",
		"CLUSTERINIT_LOG_LEVEL=debug",
		"CLUSTERINIT_WORKER_LOG_PREFIX=t",
		"PORT=not-used-when-LISTEN-is-set",
	})
	if err != nil {
		t.Fatal(err)
	}
	want := Config{
		Workers:         Workers{N: 4},
		Listen:          Listen{Addrs: []string{"127.0.0.1:8080", "[::1]:8080"}},
		ListenMode:      ListenReuseport,
		Ready:           ReadyMessage,
		ReadyTimeout:    time.Minute,
		StopSignal:      Signal(syscall.SIGINT),
		StopMessage:     true,
		DrainTimeout:    90 * time.Second,
		StopDelay:       10 * time.Second,
		HeapSize:        HeapSize{Size: 768 << 20},
		MaxRSS:          MemLimit{Size: 3 << 29},
		MaxRSSFor:       90 * time.Second,
		MaxCPU:          0.9,
		MaxCPUFor:       2 * time.Minute,
		MaxAge:          6 * time.Hour,
		HangTimeout:     20 * time.Second,
		SampleEvery:     100 * time.Millisecond,
		RestartDelay:    0,
		MinUptime:       time.Second,
		MaxFailedStarts: 3,
		HealthAddr:      Addr{Off: true},
		MinReady:        4,
		User:            User{Set: true, UID: 1000, GID: 1000},
		Shim:            true,
		LogFormat:       LogJSON,
		LogLevel:        LogLevel(slog.LevelDebug),
		WorkerLogPrefix: true,
	}
	if !reflect.DeepEqual(*cfg, want) {
		t.Errorf("\n got %+v\nwant %+v", *cfg, want)
	}
	assertRoundTrip(t, cfg)
}

func TestLoadPort(t *testing.T) {
	for _, c := range []struct {
		environ []string
		listen  []string
		problem string
	}{
		{environ: []string{"PORT=8080"}, listen: []string{":8080"}},
		{environ: []string{"PORT= 8080 "}, listen: []string{":8080"}},
		{environ: []string{"PORT=08080"}, listen: []string{":8080"}},
		{environ: []string{"PORT="}, listen: []string{":3000"}},
		{environ: []string{"PORT=8080", "CLUSTERINIT_LISTEN=:9000"}, listen: []string{":9000"}},
		{environ: []string{"PORT=8080", "CLUSTERINIT_LISTEN="}, listen: []string{":8080"}},
		{environ: []string{"PORT=x", "CLUSTERINIT_LISTEN=:9000"}, listen: []string{":9000"}},
		{environ: []string{"PORT=x"}, problem: `PORT="x": want a port number from 1 to 65535 (it sets the default of CLUSTERINIT_LISTEN)`},
		{environ: []string{"PORT=0"}, problem: `PORT="0": want a port number from 1 to 65535 (it sets the default of CLUSTERINIT_LISTEN)`},
		{environ: []string{"PORT=65536"}, problem: `PORT="65536": want a port number from 1 to 65535 (it sets the default of CLUSTERINIT_LISTEN)`},
		{environ: []string{"PORT=:8080"}, problem: `PORT=":8080": want a port number from 1 to 65535 (it sets the default of CLUSTERINIT_LISTEN)`},
	} {
		cfg, err := Load(c.environ)
		if c.problem != "" {
			assertProblems(t, c.environ, err, c.problem)
			continue
		}
		if err != nil {
			t.Errorf("%q: %v", c.environ, err)
			continue
		}
		if !reflect.DeepEqual(cfg.Listen, Listen{Addrs: c.listen}) {
			t.Errorf("%q: Listen %#v, want %q", c.environ, cfg.Listen, c.listen)
		}
	}
}

// TestLoadProblems checks the exact problem lines: every bad value at once,
// sorted by variable, with no caarlos0/env wording.
func TestLoadProblems(t *testing.T) {
	for _, c := range []struct {
		name     string
		environ  []string
		problems []string
	}{
		{
			name: "several at once",
			environ: []string{
				"CLUSTERINIT_MAX_RSS=300X",
				"CLUSTERINIT_MAX_RS=1",
				"CLUSTERINIT_WORKERS=0",
				"CLUSTERINIT_READY_TIMEOUT=30",
				"CLUSTERINIT_SHIM=yes",
				"CLUSTERINIT_LISTEN_MODE=rr",
				"CLUSTERINIT_READY=listen",
				"CLUSTERINIT_STOP_SIGNAL=SIGFOO",
				"CLUSTERINIT_MAX_CPU=90",
				"CLUSTERINIT_HEALTH_ADDR=9558",
				"CLUSTERINIT_LOG_FORMAT=xml",
				"CLUSTERINIT_LOG_LEVEL=trace",
				"CLUSTERINIT_LISTEN=:3000,",
				"CLUSTERINIT_MAX_FAILED_STARTS=ten",
				"CLUSTERINIT_WORKER_LOG_PREFIX=on",
				"CLUSTERINIT_USER=a b",
				"PORT=x",
			},
			problems: []string{
				`CLUSTERINIT_HEALTH_ADDR="9558": want ` + wantAddr,
				`CLUSTERINIT_LISTEN=":3000,": want ` + wantListen,
				`CLUSTERINIT_LISTEN_MODE="rr": want shared or reuseport`,
				`CLUSTERINIT_LOG_FORMAT="xml": want text or json`,
				`CLUSTERINIT_LOG_LEVEL="trace": want debug, info, warn or error`,
				`CLUSTERINIT_MAX_CPU="90": want a fraction of one core such as 0.9 or 90%, from 0 to 64`,
				`CLUSTERINIT_MAX_FAILED_STARTS="ten": want a whole number of at least 1`,
				`CLUSTERINIT_MAX_RS="1": unknown variable (did you mean CLUSTERINIT_MAX_RSS?)`,
				`CLUSTERINIT_MAX_RSS="300X": want auto or a size such as 300M or 1.5Gi`,
				`CLUSTERINIT_READY="listen": want auto, message or none`,
				`CLUSTERINIT_READY_TIMEOUT="30": want a Go duration such as 500ms, 30s or 5m`,
				`CLUSTERINIT_SHIM="yes": want true or false`,
				`CLUSTERINIT_STOP_SIGNAL="SIGFOO": want a signal name such as SIGTERM, or a number from 1 to 31`,
				`CLUSTERINIT_USER="a b": want a user name from /etc/passwd, a uid, or uid:gid`,
				`CLUSTERINIT_WORKERS="0": want auto or a whole number from 1 to 1024`,
				`CLUSTERINIT_WORKER_LOG_PREFIX="on": want true or false`,
			},
		},
		{
			name:    "value shown as written",
			environ: []string{"CLUSTERINIT_WORKERS= x\t", "CLUSTERINIT_MIN_READY=\n"},
			problems: []string{
				`CLUSTERINIT_WORKERS=" x\t": want auto or a whole number from 1 to 1024`,
			},
		},
		{
			name: "ranges",
			environ: []string{
				"CLUSTERINIT_READY_TIMEOUT=0s",
				"CLUSTERINIT_DRAIN_TIMEOUT=-1s",
				"CLUSTERINIT_STOP_DELAY=-1s",
				"CLUSTERINIT_MAX_RSS=300",
				"CLUSTERINIT_MAX_RSS_FOR=-1s",
				"CLUSTERINIT_MAX_CPU_FOR=-1m",
				"CLUSTERINIT_MAX_AGE=-1h",
				"CLUSTERINIT_HANG_TIMEOUT=-1s",
				"CLUSTERINIT_SAMPLE_EVERY=99ms",
				"CLUSTERINIT_RESTART_DELAY=-1ms",
				"CLUSTERINIT_MIN_UPTIME=0",
				"CLUSTERINIT_MAX_FAILED_STARTS=0",
				"CLUSTERINIT_MIN_READY=-1",
			},
			problems: []string{
				`CLUSTERINIT_DRAIN_TIMEOUT="-1s": want a duration greater than 0, such as 25s`,
				`CLUSTERINIT_HANG_TIMEOUT="-1s": want a duration of 0 or more, such as 30s`,
				`CLUSTERINIT_MAX_AGE="-1h": want a duration of 0 or more, such as 6h`,
				`CLUSTERINIT_MAX_CPU_FOR="-1m": want a duration of 0 or more, such as 5m`,
				`CLUSTERINIT_MAX_FAILED_STARTS="0": want a whole number of at least 1`,
				`CLUSTERINIT_MAX_RSS="300": want auto, 0 or a size of at least 1Mi, such as 300M or 1.5Gi (a plain number is bytes)`,
				`CLUSTERINIT_MAX_RSS_FOR="-1s": want a duration of 0 or more, such as 30s`,
				`CLUSTERINIT_MIN_READY="-1": want a whole number of 0 or more`,
				`CLUSTERINIT_MIN_UPTIME="0": want a duration greater than 0, such as 10s`,
				`CLUSTERINIT_READY_TIMEOUT="0s": want a duration greater than 0, such as 30s`,
				`CLUSTERINIT_RESTART_DELAY="-1ms": want a duration of 0 or more, such as 100ms`,
				`CLUSTERINIT_SAMPLE_EVERY="99ms": want a duration of at least 100ms, such as 5s`,
				`CLUSTERINIT_STOP_DELAY="-1s": want a duration of 0 or more, such as 10s`,
			},
		},
		{
			name:    "heap size and max requests",
			environ: []string{"CLUSTERINIT_HEAP_SIZE=15Mi", "CLUSTERINIT_MAX_RSS=autom", "CLUSTERINIT_MAX_REQUESTS=-5"},
			problems: []string{
				`CLUSTERINIT_HEAP_SIZE="15Mi": want auto, off, or a size of at least 16Mi such as 512Mi`,
				`CLUSTERINIT_MAX_REQUESTS="-5": want a whole number of 0 or more, such as 10000`,
				`CLUSTERINIT_MAX_RSS="autom": want auto or a size such as 300M or 1.5Gi`,
			},
		},
		{
			name:     "max requests needs the preload",
			environ:  []string{"CLUSTERINIT_MAX_REQUESTS=1000", "CLUSTERINIT_SHIM=false"},
			problems: []string{`CLUSTERINIT_MAX_REQUESTS="1000": want 0 while CLUSTERINIT_SHIM is false, since the request count comes from the Node preload`},
		},
		{
			name:     "hang timeout needs the preload",
			environ:  []string{"CLUSTERINIT_HANG_TIMEOUT=30s", "CLUSTERINIT_SHIM=false"},
			problems: []string{`CLUSTERINIT_HANG_TIMEOUT="30s": want 0 while CLUSTERINIT_SHIM is false, since the heartbeat comes from the Node preload`},
		},
		{
			// No second line about HANG_TIMEOUT when SHIM itself is wrong.
			name:     "dependent rule skipped",
			environ:  []string{"CLUSTERINIT_HANG_TIMEOUT=30s", "CLUSTERINIT_SHIM=no way", "CLUSTERINIT_MIN_READY=5", "CLUSTERINIT_WORKERS=x"},
			problems: []string{`CLUSTERINIT_SHIM="no way": want true or false`, `CLUSTERINIT_WORKERS="x": want auto or a whole number from 1 to 1024`},
		},
		{
			name:     "min ready above a fixed worker count",
			environ:  []string{"CLUSTERINIT_WORKERS=2", "CLUSTERINIT_MIN_READY=3"},
			problems: []string{`CLUSTERINIT_MIN_READY="3": want at most CLUSTERINIT_WORKERS (2), or /readyz can never answer 200`},
		},
		{
			name:     "integer overflow",
			environ:  []string{"CLUSTERINIT_MIN_READY=99999999999999999999"},
			problems: []string{`CLUSTERINIT_MIN_READY="99999999999999999999": want a whole number of 0 or more`},
		},
		{
			name: "unknown variables",
			environ: []string{
				"CLUSTERINIT_WOKRERS=2",
				"CLUSTERINIT_workers=2",
				"CLUSTERINIT_PORT=80",
				"CLUSTERINIT_=x",
				"CLUSTERINIT_MAXRSS=1G",
				"CLUSTERINIT_BOGUS=1",
				"CLUSTERINIT_A\nB=1",
				"clusterinit_workers=2",
				"WORKERS=2",
			},
			problems: []string{
				`CLUSTERINIT_="x": unknown variable`,
				// sorted by the name itself, not by its quoted form
				`"CLUSTERINIT_A\nB"="1": unknown variable`,
				`CLUSTERINIT_BOGUS="1": unknown variable`,
				`CLUSTERINIT_MAXRSS="1G": unknown variable (did you mean CLUSTERINIT_MAX_RSS?)`,
				`CLUSTERINIT_PORT="80": unknown variable`,
				`CLUSTERINIT_WOKRERS="2": unknown variable (did you mean CLUSTERINIT_WORKERS?)`,
				`CLUSTERINIT_workers="2": unknown variable (did you mean CLUSTERINIT_WORKERS?)`,
			},
		},
		{
			name:     "later duplicate wins",
			environ:  []string{"CLUSTERINIT_WORKERS=nope", "CLUSTERINIT_WORKERS=also-nope"},
			problems: []string{`CLUSTERINIT_WORKERS="also-nope": want auto or a whole number from 1 to 1024`},
		},
	} {
		t.Run(c.name, func(t *testing.T) {
			cfg, err := Load(c.environ)
			if cfg != nil {
				t.Errorf("got a Config alongside problems")
			}
			assertProblems(t, c.environ, err, c.problems...)
		})
	}
}

func assertProblems(t *testing.T, environ []string, err error, want ...string) {
	t.Helper()
	var e *Error
	if !errors.As(err, &e) {
		t.Errorf("%q: error %v is not an *Error", environ, err)
		return
	}
	if !reflect.DeepEqual(e.Problems, want) {
		t.Errorf("%q: problems\n%s\nwant\n%s", environ, strings.Join(e.Problems, "\n"), strings.Join(want, "\n"))
	}
	if err.Error() != strings.Join(want, "\n") {
		t.Errorf("Error() = %q", err.Error())
	}
	for _, p := range e.Problems {
		if strings.Contains(p, "parse error") || strings.Contains(p, "env:") || strings.Contains(p, "strconv") {
			t.Errorf("library wording leaked: %q", p)
		}
	}
}

// TestLoadUser goes through Load with /etc/passwd, so only names every
// Linux image has.
func TestLoadUser(t *testing.T) {
	cfg, err := Load([]string{"CLUSTERINIT_USER=root"})
	if err != nil {
		t.Skip("no usable /etc/passwd:", err)
	}
	if cfg.User != (User{Set: true, Name: "root"}) {
		t.Errorf("USER=root: %#v", cfg.User)
	}
	environ := []string{"CLUSTERINIT_USER=no-such-user-clusterinit"}
	_, err = Load(environ)
	assertProblems(t, environ, err, `CLUSTERINIT_USER="no-such-user-clusterinit": want a user name from /etc/passwd, a uid, or uid:gid (no user "no-such-user-clusterinit" in /etc/passwd)`)
}

// TestStructValueTags makes sure caarlos0/env never fills the fields inside
// the struct value types from a variable named just the prefix; Load does
// not pass unknown names on, but the tags must hold on their own too.
func TestStructValueTags(t *testing.T) {
	var cfg Config
	err := env.ParseWithOptions(&cfg, env.Options{Prefix: Prefix, Environment: map[string]string{
		Prefix: "12", "CLUSTERINIT_WORKERS": "2",
	}})
	if err != nil {
		t.Fatal(err)
	}
	want := defaultConfig()
	want.Workers = Workers{N: 2}
	if !reflect.DeepEqual(cfg, want) {
		t.Errorf("\n got %+v\nwant %+v", cfg, want)
	}
}

func TestWrite(t *testing.T) {
	cfg := defaultConfig()
	var b bytes.Buffer
	cfg.Write(&b)
	want := `CLUSTERINIT_WORKERS=auto
CLUSTERINIT_LISTEN=:3000
CLUSTERINIT_LISTEN_MODE=shared
CLUSTERINIT_READY=auto
CLUSTERINIT_READY_TIMEOUT=30s
CLUSTERINIT_STOP_SIGNAL=SIGTERM
CLUSTERINIT_STOP_MESSAGE=false
CLUSTERINIT_DRAIN_TIMEOUT=25s
CLUSTERINIT_STOP_DELAY=0
CLUSTERINIT_HEAP_SIZE=auto
CLUSTERINIT_MAX_RSS=0
CLUSTERINIT_MAX_RSS_FOR=30s
CLUSTERINIT_MAX_CPU=0
CLUSTERINIT_MAX_CPU_FOR=5m
CLUSTERINIT_MAX_AGE=0
CLUSTERINIT_MAX_REQUESTS=0
CLUSTERINIT_HANG_TIMEOUT=0
CLUSTERINIT_SAMPLE_EVERY=5s
CLUSTERINIT_RESTART_DELAY=100ms
CLUSTERINIT_MIN_UPTIME=10s
CLUSTERINIT_MAX_FAILED_STARTS=10
CLUSTERINIT_HEALTH_ADDR=127.0.0.1:9558
CLUSTERINIT_MIN_READY=1
CLUSTERINIT_USER=
CLUSTERINIT_SHIM=true
CLUSTERINIT_LOG_FORMAT=text
CLUSTERINIT_LOG_LEVEL=info
CLUSTERINIT_WORKER_LOG_PREFIX=false
`
	if b.String() != want {
		t.Errorf("Write:\n%s\nwant\n%s", b.String(), want)
	}
	assertRoundTrip(t, &cfg)

	cfg.Listen = Listen{None: true}
	cfg.User = User{Set: true, Name: "root"}
	cfg.MaxRSS = MemLimit{Size: 300_000_000}
	cfg.MaxCPU = 0.333
	cfg.StopSignal = Signal(syscall.SIGUSR2)
	cfg.HealthAddr = Addr{HostPort: "[::1]:0"}
	assertRoundTrip(t, &cfg)
}

// assertRoundTrip checks that Write's output loads back as the same Config.
func assertRoundTrip(t *testing.T, cfg *Config) {
	t.Helper()
	var b bytes.Buffer
	cfg.Write(&b)
	environ := strings.Split(strings.TrimSuffix(b.String(), "\n"), "\n")
	back, err := Load(environ)
	if err != nil {
		t.Errorf("Write output does not load:\n%s\n%v", b.String(), err)
		return
	}
	if !reflect.DeepEqual(back, cfg) {
		t.Errorf("round trip:\n got %+v\nwant %+v", *back, *cfg)
	}
}

// TestVariables compares with SPEC.md's table: the same 28 names, in its
// order, with its defaults.
func TestVariables(t *testing.T) {
	spec := []struct{ name, def string }{
		{"WORKERS", "auto"},
		{"LISTEN", ":$PORT, or :3000 when PORT is unset"},
		{"LISTEN_MODE", "shared"},
		{"READY", "auto"},
		{"READY_TIMEOUT", "30s"},
		{"STOP_SIGNAL", "SIGTERM"},
		{"STOP_MESSAGE", "false"},
		{"DRAIN_TIMEOUT", "25s"},
		{"STOP_DELAY", "0s"},
		{"HEAP_SIZE", "auto"},
		{"MAX_RSS", "0"},
		{"MAX_RSS_FOR", "30s"},
		{"MAX_CPU", "0"},
		{"MAX_CPU_FOR", "5m"},
		{"MAX_AGE", "0"},
		{"MAX_REQUESTS", "0"},
		{"HANG_TIMEOUT", "0"},
		{"SAMPLE_EVERY", "5s"},
		{"RESTART_DELAY", "100ms"},
		{"MIN_UPTIME", "10s"},
		{"MAX_FAILED_STARTS", "10"},
		{"HEALTH_ADDR", "127.0.0.1:9558"},
		{"MIN_READY", "1"},
		{"USER", ""},
		{"SHIM", "true"},
		{"LOG_FORMAT", "text"},
		{"LOG_LEVEL", "info"},
		{"WORKER_LOG_PREFIX", "false"},
	}
	vars := Variables()
	if len(vars) != len(spec) {
		t.Fatalf("%d variables, SPEC has %d", len(vars), len(spec))
	}
	for i, s := range spec {
		v := vars[i]
		if v.Name != Prefix+s.name || v.Default != s.def {
			t.Errorf("variable %d: %s=%q, SPEC says %s%s=%q", i, v.Name, v.Default, Prefix, s.name, s.def)
		}
		if v.Help == "" || strings.Contains(v.Help, "\n") {
			t.Errorf("%s: help %q", v.Name, v.Help)
		}
	}
}

func TestWriteHelp(t *testing.T) {
	var b bytes.Buffer
	WriteHelp(&b)
	out := b.String()
	for _, cmd := range []string{"clusterinit [--] COMMAND [ARG...]", "clusterinit health", "clusterinit reload", "clusterinit config", "clusterinit version", "clusterinit help | -h | --help"} {
		if !strings.Contains(out, "\n  "+cmd) {
			t.Errorf("help lacks %q", cmd)
		}
	}
	for _, v := range Variables() {
		def := v.Default
		if def == "" {
			def = "unset"
		}
		if !strings.Contains(out, "\n  "+v.Name+" (default: "+def+")\n") {
			t.Errorf("help lacks %s with its default %q", v.Name, def)
		}
		if !strings.Contains(strings.Join(strings.Fields(out), " "), v.Help) {
			t.Errorf("help lacks the meaning of %s", v.Name)
		}
	}
	_, table, _ := strings.Cut(out, "Variables:\n")
	for line := range strings.SplitSeq(table, "\n") {
		if len(line) > helpWidth {
			t.Errorf("help line wider than %d: %q", helpWidth, line)
		}
	}
}
