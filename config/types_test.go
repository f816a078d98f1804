package config

import (
	"bufio"
	"encoding"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

const fixtures = "testdata"

// unmarshalCase is one input for a TextUnmarshaler: the value it must
// produce, or ok false when it must be refused with a "want …" error.
type unmarshalCase[T any] struct {
	in   string
	want T
	ok   bool
}

// checkUnmarshal runs cases through the same entry point caarlos0/env uses,
// and checks that a refusal leaves the receiver as it was.
func checkUnmarshal[T any, P interface {
	*T
	encoding.TextUnmarshaler
}](t *testing.T, cases []unmarshalCase[T]) {
	t.Helper()
	for _, c := range cases {
		var got T
		err := P(&got).UnmarshalText([]byte(c.in))
		switch {
		case c.ok && err != nil:
			t.Errorf("%q: unexpected error %v", c.in, err)
		case c.ok && !reflect.DeepEqual(got, c.want):
			t.Errorf("%q: got %#v, want %#v", c.in, got, c.want)
		case !c.ok && err == nil:
			t.Errorf("%q: accepted as %#v, want an error", c.in, got)
		case !c.ok:
			var we *wantError
			if !errors.As(err, &we) || !strings.HasPrefix(err.Error(), "want ") {
				t.Errorf("%q: error %q does not start with want", c.in, err)
			}
			var zero T
			if !reflect.DeepEqual(got, zero) {
				t.Errorf("%q: refused but changed the value to %#v", c.in, got)
			}
		}
	}
}

func good[T any](in string, v T) unmarshalCase[T] { return unmarshalCase[T]{in: in, want: v, ok: true} }
func bad[T any](in string) unmarshalCase[T]       { return unmarshalCase[T]{in: in} }

func TestWorkers(t *testing.T) {
	checkUnmarshal(t, []unmarshalCase[Workers]{
		good("auto", Workers{Auto: true}),
		good("AUTO", Workers{Auto: true}),
		good("1", Workers{N: 1}),
		good("8", Workers{N: 8}),
		good("08", Workers{N: 8}),
		good("1024", Workers{N: 1024}),
		bad[Workers](""),
		bad[Workers]("0"),
		bad[Workers]("1025"),
		bad[Workers]("-1"),
		bad[Workers]("+4"),
		bad[Workers]("4.0"),
		bad[Workers]("max"),
		bad[Workers](" 4"),
		bad[Workers]("99999999999999999999999"),
	})
	for _, w := range []Workers{{Auto: true}, {N: 3}} {
		var back Workers
		if err := back.UnmarshalText([]byte(w.String())); err != nil || back != w {
			t.Errorf("%#v: String %q reads back as %#v, %v", w, w, back, err)
		}
	}
}

func TestListen(t *testing.T) {
	addrs := func(a ...string) Listen { return Listen{Addrs: a} }
	checkUnmarshal(t, []unmarshalCase[Listen]{
		good(":3000", addrs(":3000")),
		good("none", Listen{None: true}),
		good(" None ", Listen{None: true}),
		good("0.0.0.0:80", addrs("0.0.0.0:80")),
		good("127.0.0.1:8080, [::1]:8080", addrs("127.0.0.1:8080", "[::1]:8080")),
		good(" :3000 ,:3001 ", addrs(":3000", ":3001")),
		good("localhost:3000", addrs("localhost:3000")),
		good("my-host.internal:3000", addrs("my-host.internal:3000")),
		good("[::]:443", addrs("[::]:443")),
		good(":065535", addrs(":65535")),
		good("[fe80::1%eth0]:80", addrs("[fe80::1%eth0]:80")),
		bad[Listen](""),
		bad[Listen](","),
		bad[Listen](":3000,"),
		bad[Listen](":3000,,:3001"),
		bad[Listen]("3000"),
		bad[Listen](":0"),
		bad[Listen](":65536"),
		bad[Listen](":http"),
		bad[Listen](":-1"),
		bad[Listen](":+80"),
		bad[Listen]("::1:80"),
		bad[Listen]("[127.0.0.1]:80"),
		bad[Listen]("[localhost]:80"),
		bad[Listen]("1.2.3.999:80"),
		bad[Listen]("bad host:80"),
		bad[Listen]("-host:80"),
		bad[Listen]("host..x:80"),
		bad[Listen]("none,:3000"),
		bad[Listen](":3000,:3000"),
		bad[Listen](":3000, :03000"),
		bad[Listen]("unix:/tmp/sock"),
	})
	var l Listen
	err := l.UnmarshalText([]byte(":80, :80"))
	if err == nil || err.Error() != "want each address only once, not :80 twice" {
		t.Errorf("duplicate: got %v", err)
	}
}

func TestEnums(t *testing.T) {
	checkUnmarshal(t, []unmarshalCase[ListenMode]{
		good("shared", ListenShared),
		good("reuseport", ListenReuseport),
		good("ReusePort", ListenReuseport),
		bad[ListenMode](""),
		bad[ListenMode]("reuse_port"),
		bad[ListenMode]("rr"),
	})
	checkUnmarshal(t, []unmarshalCase[ReadyMode]{
		good("auto", ReadyAuto),
		good("message", ReadyMessage),
		good("NONE", ReadyNone),
		bad[ReadyMode]("listen"),
		bad[ReadyMode](""),
	})
	checkUnmarshal(t, []unmarshalCase[LogFormat]{
		good("text", LogText),
		good("JSON", LogJSON),
		bad[LogFormat]("logfmt"),
	})
	checkUnmarshal(t, []unmarshalCase[LogLevel]{
		good("debug", LogLevel(slog.LevelDebug)),
		good("info", LogLevel(slog.LevelInfo)),
		good("WARN", LogLevel(slog.LevelWarn)),
		good("error", LogLevel(slog.LevelError)),
		bad[LogLevel]("warning"),
		bad[LogLevel]("INFO+2"),
		bad[LogLevel]("trace"),
		bad[LogLevel]("0"),
	})
	for _, l := range []LogLevel{LogLevel(slog.LevelDebug), LogLevel(slog.LevelInfo), LogLevel(slog.LevelWarn), LogLevel(slog.LevelError)} {
		var back LogLevel
		if err := back.UnmarshalText([]byte(l.String())); err != nil || back != l || back.Level() != slog.Level(l) {
			t.Errorf("%v: String %q reads back as %v, %v", l.Level(), l, back, err)
		}
	}
	for _, s := range []interface{ String() string }{ListenShared, ListenReuseport, ReadyAuto, ReadyMessage, ReadyNone, LogText, LogJSON} {
		if s.String() != strings.ToLower(s.String()) || s.String() == "" {
			t.Errorf("%#v: String %q is not the lower-case name", s, s)
		}
	}
}

// TestSizeFixture runs the cases in testdata/sizes.tsv, which
// are kept in a file so they can be read and extended without Go.
func TestSizeFixture(t *testing.T) {
	f, err := os.Open(filepath.Join(fixtures, "sizes.tsv"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	n := 0
	for line := 1; sc.Scan(); line++ {
		text := sc.Text()
		if text == "" || strings.HasPrefix(text, "#") {
			continue
		}
		in, wantText, ok := strings.Cut(text, "\t")
		if !ok {
			t.Fatalf("sizes.tsv:%d: no tab", line)
		}
		n++
		var got Size
		err := got.UnmarshalText([]byte(in))
		if wantText == "error" {
			if err == nil {
				t.Errorf("sizes.tsv:%d: %q accepted as %d, want an error", line, in, got)
			} else if err.Error() != "want "+wantSize {
				t.Errorf("sizes.tsv:%d: %q: error %q", line, in, err)
			}
			continue
		}
		want, perr := strconv.ParseInt(wantText, 10, 64)
		if perr != nil {
			t.Fatalf("sizes.tsv:%d: bad want %q", line, wantText)
		}
		if err != nil || int64(got) != want {
			t.Errorf("sizes.tsv:%d: %q = %d, %v; want %d", line, in, got, err, want)
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if n < 50 {
		t.Fatalf("only %d cases read from sizes.tsv", n)
	}
}

func TestSizeString(t *testing.T) {
	for _, c := range []struct {
		in   Size
		want string
	}{
		{0, "0"},
		{1, "1"},
		{512, "512"},
		{1000, "1K"},
		{1024, "1Ki"},
		{1500, "1500"},
		{1_500_000, "1.5M"},
		{250_000_000, "250M"},
		{1536, "1536"},
		{2048, "2Ki"},
		{300_000_000, "300M"},
		{300 << 20, "300Mi"},
		{3 << 29, "1.5Gi"},
		{1_500_000_000, "1.5G"},
		{1 << 40, "1Ti"},
		{1e12, "1T"},
		{1825361101, "1825361101"},
		{1<<63 - 1, "9223372036854775807"},
		{5 * (1 << 40) / 4, "1280Gi"},
		{3 * (1 << 40) / 2, "1.5Ti"},
	} {
		if got := c.in.String(); got != c.want {
			t.Errorf("Size(%d).String() = %q, want %q", int64(c.in), got, c.want)
		}
		var back Size
		if err := back.UnmarshalText([]byte(c.in.String())); err != nil || back != c.in {
			t.Errorf("Size(%d): %q reads back as %d, %v", int64(c.in), c.in, back, err)
		}
	}
}

func TestFraction(t *testing.T) {
	checkUnmarshal(t, []unmarshalCase[Fraction]{
		good("0", Fraction(0)),
		good("0.9", Fraction(0.9)),
		good("90%", Fraction(0.9)),
		good("33.3%", Fraction(0.333)),
		good("150%", Fraction(1.5)),
		good("2", Fraction(2)),
		good("64", Fraction(64)),
		good("6400%", Fraction(64)),
		good("0%", Fraction(0)),
		good("007.50", Fraction(7.5)),
		bad[Fraction](""),
		bad[Fraction]("%"),
		bad[Fraction]("90"),
		bad[Fraction]("64.0001"),
		bad[Fraction]("6401%"),
		bad[Fraction]("-0.5"),
		bad[Fraction]("+0.5"),
		bad[Fraction](".5"),
		bad[Fraction]("1."),
		bad[Fraction]("1e-1"),
		bad[Fraction]("NaN"),
		bad[Fraction]("Inf"),
		bad[Fraction]("0x1p-1"),
		bad[Fraction]("90 %"),
		bad[Fraction]("90%%"),
		bad[Fraction]("1" + strings.Repeat("0", 400)),
	})
	for _, c := range []struct {
		in   Fraction
		want string
	}{{0, "0"}, {0.9, "0.9"}, {1.5, "1.5"}, {64, "64"}, {0.333, "0.333"}} {
		if got := c.in.String(); got != c.want {
			t.Errorf("Fraction(%v).String() = %q, want %q", float64(c.in), got, c.want)
		}
	}
}

func TestSignal(t *testing.T) {
	checkUnmarshal(t, []unmarshalCase[Signal]{
		good("SIGTERM", Signal(syscall.SIGTERM)),
		good("TERM", Signal(syscall.SIGTERM)),
		good("sigterm", Signal(syscall.SIGTERM)),
		good("Term", Signal(syscall.SIGTERM)),
		good("15", Signal(syscall.SIGTERM)),
		good("SIGINT", Signal(syscall.SIGINT)),
		good("quit", Signal(syscall.SIGQUIT)),
		good("SIGUSR2", Signal(syscall.SIGUSR2)),
		good("1", Signal(syscall.SIGHUP)),
		good("31", Signal(syscall.Signal(31))),
		good("SIGIOT", Signal(syscall.SIGABRT)),
		good("POLL", Signal(syscall.SIGIO)),
		good("cld", Signal(syscall.SIGCHLD)),
		bad[Signal](""),
		bad[Signal]("SIG"),
		bad[Signal]("0"),
		bad[Signal]("32"),
		bad[Signal]("64"),
		bad[Signal]("-15"),
		bad[Signal]("SIGFOO"),
		bad[Signal]("SIGSIGTERM"),
		bad[Signal]("SIGRTMIN"),
		bad[Signal]("SIGRTMIN+1"),
		bad[Signal]("SIG TERM"),
		bad[Signal](" SIGTERM"),
	})
	s := Signal(syscall.SIGTERM)
	if s.String() != "SIGTERM" || s.Sys() != syscall.SIGTERM {
		t.Errorf("Signal(SIGTERM): String %q, Sys %v", s, s.Sys())
	}
	if got := SignalName(syscall.SIGKILL); got != "SIGKILL" {
		t.Errorf("SignalName(SIGKILL) = %q", got)
	}
	if got := SignalName(syscall.Signal(40)); got != "signal 40" {
		t.Errorf("SignalName(40) = %q", got)
	}
	for n := syscall.Signal(1); n <= 31; n++ {
		got, err := ParseSignal(SignalName(n))
		if err != nil || got != n {
			t.Errorf("signal %d: name %q parses as %v, %v", n, SignalName(n), got, err)
		}
	}
	if _, err := ParseSignal("nope"); err == nil || err.Error() != "want "+wantSignal {
		t.Errorf("ParseSignal(nope): %v", err)
	}
}

func TestAddr(t *testing.T) {
	checkUnmarshal(t, []unmarshalCase[Addr]{
		good("off", Addr{Off: true}),
		good("OFF", Addr{Off: true}),
		good("127.0.0.1:9558", Addr{HostPort: "127.0.0.1:9558"}),
		good(":9558", Addr{HostPort: ":9558"}),
		good("[::1]:9558", Addr{HostPort: "[::1]:9558"}),
		good("localhost:0", Addr{HostPort: "localhost:0"}),
		good("127.0.0.1:00080", Addr{HostPort: "127.0.0.1:80"}),
		bad[Addr](""),
		bad[Addr]("9558"),
		bad[Addr](":65536"),
		bad[Addr]("127.0.0.1:9558,:9559"),
		bad[Addr]("none"),
		bad[Addr]("http://127.0.0.1:9558"),
	})
}

func TestParseUser(t *testing.T) {
	passwd := filepath.Join(fixtures, "passwd")
	for _, c := range []struct {
		in   string
		want User
		err  string
	}{
		{in: "", want: User{}},
		{in: "root", want: User{Set: true, Name: "root", UID: 0, GID: 0}},
		{in: "node", want: User{Set: true, Name: "node", UID: 1000, GID: 1000}},
		{in: "app", want: User{Set: true, Name: "app", UID: 1001, GID: 2000}},
		{in: "alias", want: User{Set: true, Name: "alias", UID: 1001, GID: 3000}},
		{in: "build$", want: User{Set: true, Name: "build$", UID: 1500, GID: 1500}},
		{in: "crlf", want: User{Set: true, Name: "crlf", UID: 1600, GID: 1601}},
		// a uid takes the group of the first passwd entry with that uid
		{in: "1001", want: User{Set: true, UID: 1001, GID: 2000}},
		{in: "65534", want: User{Set: true, UID: 65534, GID: 65534}},
		// and its own number when it has no entry
		{in: "4242", want: User{Set: true, UID: 4242, GID: 4242}},
		{in: "1001:0", want: User{Set: true, UID: 1001, GID: 0}},
		{in: "9:9", want: User{Set: true, UID: 9, GID: 9}},
		{in: "4294967294:4294967294", want: User{Set: true, UID: 4294967294, GID: 4294967294}},
		{in: "bob", err: `want ` + wantUser + ` (no user "bob" in ` + passwd + `)`},
		{in: "broken", err: `want ` + wantUser + ` (no user "broken" in ` + passwd + `)`},
		{in: "+nisuser", err: "want " + wantUser},
		{in: "Root", err: `want ` + wantUser + ` (no user "Root" in ` + passwd + `)`},
		{in: "4294967295", err: "want " + wantUser},
		{in: "1:4294967295", err: "want " + wantUser},
		{in: "-1", err: "want " + wantUser},
		{in: "1000:", err: "want " + wantUser},
		{in: ":1000", err: "want " + wantUser},
		{in: "node:node", err: "want " + wantUser},
		{in: "1:2:3", err: "want " + wantUser},
		{in: "a b", err: "want " + wantUser},
		{in: "$x", err: "want " + wantUser},
	} {
		got, err := parseUser(c.in, passwd)
		if c.err != "" {
			if err == nil || err.Error() != c.err {
				t.Errorf("%q: got %#v, %v; want error %q", c.in, got, err, c.err)
			}
			continue
		}
		if err != nil || got != c.want {
			t.Errorf("%q: got %#v, %v; want %#v", c.in, got, err, c.want)
			continue
		}
		back, err := parseUser(got.String(), passwd)
		if err != nil || back != got {
			t.Errorf("%q: String %q reads back as %#v, %v", c.in, got, back, err)
		}
	}

	missing := filepath.Join(t.TempDir(), "passwd")
	if u, err := parseUser("1000", missing); err != nil || u != (User{Set: true, UID: 1000, GID: 1000}) {
		t.Errorf("uid without passwd file: %#v, %v", u, err)
	}
	if _, err := parseUser("node", missing); err == nil || err.Error() != "want "+wantUser+" (cannot read "+missing+")" {
		t.Errorf("name without passwd file: %v", err)
	}
}

// TestUserUnmarshalText uses the machine's own /etc/passwd, so only names
// every Linux image has.
func TestUserUnmarshalText(t *testing.T) {
	if _, err := os.Stat(passwdPath); err != nil {
		t.Skip("no", passwdPath)
	}
	var u User
	if err := u.UnmarshalText([]byte("root")); err != nil || u != (User{Set: true, Name: "root"}) {
		t.Errorf("root: %#v, %v", u, err)
	}
	if err := u.UnmarshalText([]byte("no-such-user-clusterinit")); err == nil {
		t.Errorf("unknown name accepted")
	}
}

func TestMarshalText(t *testing.T) {
	for _, v := range []interface {
		encoding.TextMarshaler
		String() string
	}{
		Workers{N: 2}, Listen{Addrs: []string{":1", ":2"}}, Size(1 << 30), Fraction(0.5),
		Signal(syscall.SIGINT), Addr{Off: true}, User{Set: true, UID: 1, GID: 2}, LogLevel(slog.LevelWarn),
	} {
		b, err := v.MarshalText()
		if err != nil || string(b) != v.String() {
			t.Errorf("%#v: MarshalText %q, %v; String %q", v, b, err, v)
		}
	}
}

func TestEditDistance(t *testing.T) {
	for _, c := range []struct {
		a, b string
		want int
	}{
		{"", "", 0},
		{"MAX_RSS", "MAX_RSS", 0},
		{"MAX_RS", "MAX_RSS", 1},
		{"WOKRERS", "WORKERS", 1},
		{"WORKER", "WORKERS", 1},
		{"MAXRSS", "MAX_RSS", 1},
		{"MAX_AGE", "MAX_RSS", 3},
		{"", "USER", 3},
	} {
		if got := editDistance(c.a, c.b, 3); got != c.want {
			t.Errorf("editDistance(%q, %q) = %d, want %d", c.a, c.b, got, c.want)
		}
	}
}
