package config

import (
	"fmt"
	"log/slog"
	"math"
	"math/big"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// wantError is what every value parser returns. It holds only the "want …"
// half of a problem line; Load adds the variable's name and value in front,
// which a parser does not know.
type wantError struct{ want string }

func (e *wantError) Error() string { return "want " + e.want }

func want(text string) error { return &wantError{want: text} }

func wantf(format string, args ...any) error {
	return &wantError{want: fmt.Sprintf(format, args...)}
}

// The "want" texts shared by a parser and the tests that check its lines.
const (
	wantWorkers    = "auto or a whole number from 1 to 1024"
	wantListen     = "comma-separated addresses such as :3000 or 127.0.0.1:8080 (port 1 to 65535), or none"
	wantListenMode = "shared or reuseport"
	wantReady      = "auto, message or none"
	wantSize       = "a size such as 300M or 1.5Gi"
	wantFraction   = "a fraction of one core such as 0.9 or 90%, from 0 to 64"
	wantSignal     = "a signal name such as SIGTERM, or a number from 1 to 31"
	wantAddr       = "an address such as 127.0.0.1:9558 or :9558 (port 0 to 65535), or off"
	wantUser       = "a user name from /etc/passwd, a uid, or uid:gid"
	wantLogFormat  = "text or json"
	wantLogLevel   = "debug, info, warn or error"
	wantDuration   = "a Go duration such as 500ms, 30s or 5m"
	wantBool       = "true or false"
)

// maxWorkers bounds WORKERS: far above any real CPU count, low enough that a
// stray extra digit is caught rather than forking thousands of Node processes.
const maxWorkers = 1024

// Workers is CLUSTERINIT_WORKERS: either Auto (the supervisor derives the
// count from the CPU limit) or a fixed N.
type Workers struct {
	// The env:"-" tags stop caarlos0/env from descending into the struct and
	// filling its fields from a variable named just "CLUSTERINIT_".
	Auto bool `env:"-"`
	N    int  `env:"-"`
}

// UnmarshalText accepts "auto" or a whole number from 1 to 1024.
func (w *Workers) UnmarshalText(text []byte) error {
	s := string(text)
	if strings.EqualFold(s, "auto") {
		*w = Workers{Auto: true}
		return nil
	}
	n, ok := parseDecimal(s, maxWorkers)
	if !ok || n < 1 {
		return want(wantWorkers)
	}
	*w = Workers{N: int(n)}
	return nil
}

// MarshalText gives the same text as String.
func (w Workers) MarshalText() ([]byte, error) { return []byte(w.String()), nil }

func (w Workers) String() string {
	if w.Auto {
		return "auto"
	}
	return strconv.Itoa(w.N)
}

// parseDecimal parses a plain run of ASCII digits no larger than limit.
// strconv.Atoi alone would also take signs ("+5", "-0"); configuration
// numbers are digits and nothing else.
func parseDecimal(s string, limit uint64) (uint64, bool) {
	if s == "" || strings.TrimLeft(s, "0123456789") != "" {
		return 0, false
	}
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil || n > limit {
		return 0, false
	}
	return n, true
}

// Listen is CLUSTERINIT_LISTEN: the TCP addresses clusterinit binds for the
// workers, or None when the workers bind their own sockets.
type Listen struct {
	None bool `env:"-"`
	// Addrs are canonical host:port strings (net.JoinHostPort form), in the
	// order given, without duplicates; they are never empty unless None.
	Addrs []string `env:"-"`
}

// UnmarshalText accepts "none" or a comma-separated list of host:port,
// :port or [ipv6]:port items.
func (l *Listen) UnmarshalText(text []byte) error {
	s := strings.TrimSpace(string(text))
	if strings.EqualFold(s, "none") {
		*l = Listen{None: true}
		return nil
	}
	var addrs []string
	for item := range strings.SplitSeq(s, ",") {
		addr, ok := parseHostPort(strings.TrimSpace(item), 1)
		if !ok {
			return want(wantListen)
		}
		for _, a := range addrs {
			if a == addr {
				// Binding the same address twice can only fail at start-up,
				// after the problem could have been reported with the others.
				return wantf("each address only once, not %s twice", addr)
			}
		}
		addrs = append(addrs, addr)
	}
	*l = Listen{Addrs: addrs}
	return nil
}

// MarshalText gives the same text as String.
func (l Listen) MarshalText() ([]byte, error) { return []byte(l.String()), nil }

func (l Listen) String() string {
	if l.None {
		return "none"
	}
	return strings.Join(l.Addrs, ",")
}

// parseHostPort checks one TCP address and returns it in canonical form.
// The port must be numeric (a service name like "http" would depend on
// /etc/services, which distroless images lack) and at least minPort.
func parseHostPort(s string, minPort uint64) (string, bool) {
	host, portText, err := net.SplitHostPort(s)
	if err != nil {
		return "", false
	}
	port, ok := parseDecimal(portText, 65535)
	if !ok || port < minPort {
		return "", false
	}
	if !validHost(host, strings.HasPrefix(s, "[")) {
		return "", false
	}
	return net.JoinHostPort(host, strconv.FormatUint(port, 10)), true
}

// validHost accepts an empty host (all interfaces), an IP address, or a DNS
// name. A bracketed host must be an IPv6 address, as in a URL.
func validHost(host string, bracketed bool) bool {
	if host == "" {
		return !bracketed
	}
	if addr, err := netip.ParseAddr(host); err == nil {
		return addr.Is6() == bracketed
	}
	if bracketed || len(host) > 253 {
		return false
	}
	// "1.2.3.999" is a mistyped address, not a name; a name needs a letter.
	if strings.Trim(host, "0123456789.") == "" {
		return false
	}
	for label := range strings.SplitSeq(host, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for _, c := range label {
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				return false
			}
		}
	}
	return true
}

// ListenMode is CLUSTERINIT_LISTEN_MODE.
type ListenMode string

// The listening modes of SPEC: one socket shared by all workers, or one
// SO_REUSEPORT socket per address per worker slot.
const (
	ListenShared    ListenMode = "shared"
	ListenReuseport ListenMode = "reuseport"
)

// UnmarshalText accepts shared or reuseport, in any letter case.
func (m *ListenMode) UnmarshalText(text []byte) error {
	switch v := ListenMode(strings.ToLower(string(text))); v {
	case ListenShared, ListenReuseport:
		*m = v
		return nil
	}
	return want(wantListenMode)
}

func (m ListenMode) String() string { return string(m) }

// ReadyMode is CLUSTERINIT_READY: what makes a new worker count as ready.
type ReadyMode string

// The readiness modes of SPEC.
const (
	ReadyAuto    ReadyMode = "auto"
	ReadyMessage ReadyMode = "message"
	ReadyNone    ReadyMode = "none"
)

// UnmarshalText accepts auto, message or none, in any letter case.
func (r *ReadyMode) UnmarshalText(text []byte) error {
	switch v := ReadyMode(strings.ToLower(string(text))); v {
	case ReadyAuto, ReadyMessage, ReadyNone:
		*r = v
		return nil
	}
	return want(wantReady)
}

func (r ReadyMode) String() string { return string(r) }

// LogFormat is CLUSTERINIT_LOG_FORMAT.
type LogFormat string

// The formats of clusterinit's own log lines.
const (
	LogText LogFormat = "text"
	LogJSON LogFormat = "json"
)

// UnmarshalText accepts text or json, in any letter case.
func (f *LogFormat) UnmarshalText(text []byte) error {
	switch v := LogFormat(strings.ToLower(string(text))); v {
	case LogText, LogJSON:
		*f = v
		return nil
	}
	return want(wantLogFormat)
}

func (f LogFormat) String() string { return string(f) }

// LogLevel is CLUSTERINIT_LOG_LEVEL, a slog level limited to the four names
// SPEC lists (slog's own parser would also take forms like "INFO+2").
type LogLevel slog.Level

// Level makes LogLevel a slog.Leveler, so it can go straight into
// slog.HandlerOptions.
func (l LogLevel) Level() slog.Level { return slog.Level(l) }

// UnmarshalText accepts debug, info, warn or error, in any letter case.
func (l *LogLevel) UnmarshalText(text []byte) error {
	switch strings.ToLower(string(text)) {
	case "debug":
		*l = LogLevel(slog.LevelDebug)
	case "info":
		*l = LogLevel(slog.LevelInfo)
	case "warn":
		*l = LogLevel(slog.LevelWarn)
	case "error":
		*l = LogLevel(slog.LevelError)
	default:
		return want(wantLogLevel)
	}
	return nil
}

// MarshalText gives the same text as String.
func (l LogLevel) MarshalText() ([]byte, error) { return []byte(l.String()), nil }

func (l LogLevel) String() string { return strings.ToLower(slog.Level(l).String()) }

// Size is a number of bytes, as in CLUSTERINIT_MAX_RSS; 0 means off.
type Size int64

// sizeUnit is one suffix Size understands.
type sizeUnit struct {
	suffix string
	bytes  int64
}

// sizeUnits lists the units in the order String prefers them when two forms
// are equally short: binary first, because memory limits (cgroups, ECS
// MiB) are binary and "512Mi" then reads back as the limit the user set.
var sizeUnits = [...]sizeUnit{
	{"Ti", 1 << 40}, {"Gi", 1 << 30}, {"Mi", 1 << 20}, {"Ki", 1 << 10},
	{"T", 1e12}, {"G", 1e9}, {"M", 1e6}, {"K", 1e3},
	{"", 1},
}

// UnmarshalText accepts a decimal number followed by an optional unit: B,
// K/M/G/T (powers of 1000) or Ki/Mi/Gi/Ti (powers of 1024), in any letter
// case and optionally ending in B (300MB, 1.5GiB). A plain number is bytes.
// Fractions of a byte are rounded to the nearest byte.
func (s *Size) UnmarshalText(text []byte) error {
	n, ok := parseSize(string(text))
	if !ok {
		return want(wantSize)
	}
	*s = n
	return nil
}

func parseSize(s string) (Size, bool) {
	intEnd := len(s) - len(strings.TrimLeft(s, "0123456789"))
	if intEnd == 0 {
		return 0, false
	}
	digits, rest := s[:intEnd], s[intEnd:]
	fracDigits := 0
	if strings.HasPrefix(rest, ".") {
		frac := rest[1:]
		fracEnd := len(frac) - len(strings.TrimLeft(frac, "0123456789"))
		if fracEnd == 0 {
			return 0, false
		}
		digits += frac[:fracEnd]
		fracDigits = fracEnd
		rest = frac[fracEnd:]
	}
	// No valid size has this many digits; the cap keeps the arithmetic
	// below cheap whatever the input.
	if len(digits) > 64 {
		return 0, false
	}
	unit := strings.ToLower(rest)
	if len(unit) > 1 {
		unit = strings.TrimSuffix(unit, "b")
		if unit == "b" {
			return 0, false
		}
	}
	var mult int64
	switch unit {
	case "", "b":
		mult = 1
	default:
		for _, u := range sizeUnits {
			if u.suffix != "" && unit == strings.ToLower(u.suffix) {
				mult = u.bytes
			}
		}
	}
	if mult == 0 {
		return 0, false
	}
	num, _ := new(big.Int).SetString(digits, 10)
	if num.Sign() == 0 {
		return 0, true
	}
	// bytes = round(num * mult / 10^fracDigits), halves rounded up.
	den := new(big.Int).Exp(big.NewInt(10), big.NewInt(int64(fracDigits)), nil)
	x := new(big.Int).Mul(num, big.NewInt(mult))
	x.Mul(x, big.NewInt(2)).Add(x, den)
	x.Quo(x, den.Mul(den, big.NewInt(2)))
	// A non-zero size that rounds to zero would silently turn a limit off.
	if !x.IsInt64() || x.Sign() == 0 {
		return 0, false
	}
	return Size(x.Int64()), true
}

// MarshalText gives the same text as String.
func (s Size) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// String gives the shortest exact form (300M, 1.5Gi, 512), so what is
// printed parses back to the same number of bytes.
func (s Size) String() string {
	if s <= 0 {
		return strconv.FormatInt(int64(s), 10)
	}
	best := ""
	for _, u := range sizeUnits {
		f, ok := exactQuotient(int64(s), u.bytes)
		if !ok {
			continue
		}
		text := f + u.suffix
		// Shortest wins; between equals a whole number reads better
		// (300M, not 0.3G), then the order of sizeUnits decides.
		if best == "" || len(text) < len(best) ||
			len(text) == len(best) && strings.Contains(best, ".") && !strings.Contains(text, ".") {
			best = text
		}
	}
	return best
}

// exactQuotient writes n/d as a terminating decimal, or reports false when
// it needs too many digits to be worth considering as a short form.
func exactQuotient(n, d int64) (string, bool) {
	q, r := n/d, n%d
	text := strconv.FormatInt(q, 10)
	if r == 0 {
		return text, true
	}
	var frac []byte
	for r != 0 {
		if len(frac) == 20 {
			return "", false
		}
		r *= 10 // r < d <= 2^40, so this cannot overflow
		frac = append(frac, byte('0'+r/d))
		r %= d
	}
	return text + "." + string(frac), true
}

// maxFraction is 64 cores: a CPU ratio above that cannot be reached by a
// worker in any container clusterinit is meant for, and is most likely a
// percentage written without its % sign.
const maxFraction = 64

// Fraction is a share of one CPU core, as in CLUSTERINIT_MAX_CPU; 0 is off.
type Fraction float64

// UnmarshalText accepts a plain decimal (0.9) or a percentage (90%).
// Exponents, signs, hex, Inf and NaN are not decimals an operator writes,
// so they are refused rather than interpreted.
func (f *Fraction) UnmarshalText(text []byte) error {
	v, ok := parseFraction(string(text))
	if !ok {
		return want(wantFraction)
	}
	*f = v
	return nil
}

func parseFraction(s string) (Fraction, bool) {
	num, percent := strings.CutSuffix(s, "%")
	intPart, frac, dotted := strings.Cut(num, ".")
	if intPart == "" || strings.Trim(intPart, "0123456789") != "" ||
		dotted && (frac == "" || strings.Trim(frac, "0123456789") != "") {
		return 0, false
	}
	if percent {
		// Shift the decimal point in the text rather than dividing by
		// 100 afterwards, so 33.3% is exactly the float 0.333 is.
		num += "e-2"
	}
	v, err := strconv.ParseFloat(num, 64)
	if err != nil || math.IsInf(v, 0) || v > maxFraction {
		return 0, false
	}
	return Fraction(v), true
}

// MarshalText gives the same text as String.
func (f Fraction) MarshalText() ([]byte, error) { return []byte(f.String()), nil }

// String gives the shortest decimal that parses back to the same float.
func (f Fraction) String() string { return strconv.FormatFloat(float64(f), 'f', -1, 64) }

// Signal is a signal as configured in CLUSTERINIT_STOP_SIGNAL.
type Signal syscall.Signal

// Sys returns the signal for use with syscall and os/signal.
func (s Signal) Sys() syscall.Signal { return syscall.Signal(s) }

// UnmarshalText accepts what ParseSignal accepts.
func (s *Signal) UnmarshalText(text []byte) error {
	sig, err := ParseSignal(string(text))
	if err != nil {
		return err
	}
	*s = Signal(sig)
	return nil
}

// MarshalText gives the same text as String.
func (s Signal) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

func (s Signal) String() string { return SignalName(syscall.Signal(s)) }

// ParseSignal accepts a signal name with or without its SIG prefix in any
// letter case (SIGTERM, TERM, sigterm) or a number from 1 to 31. Real-time
// signals are refused: their numbers differ between libcs, so a name for
// them would be ambiguous and a number is unlikely to be meant.
func ParseSignal(s string) (syscall.Signal, error) {
	if n, ok := parseDecimal(s, 31); ok {
		if n >= 1 && unix.SignalName(syscall.Signal(n)) != "" {
			return syscall.Signal(n), nil
		}
		return 0, want(wantSignal)
	}
	name := strings.ToUpper(s)
	if !strings.HasPrefix(name, "SIG") {
		name = "SIG" + name
	}
	// The older names some tools still print, mapped to the ones the
	// kernel table uses.
	switch name {
	case "SIGIOT":
		name = "SIGABRT"
	case "SIGPOLL":
		name = "SIGIO"
	case "SIGCLD":
		name = "SIGCHLD"
	}
	if sig := unix.SignalNum(name); sig >= 1 && sig <= 31 {
		return sig, nil
	}
	return 0, want(wantSignal)
}

// SignalName gives the conventional name of sig (SIGTERM), or "signal N"
// for a signal without one, so log lines always say something readable.
func SignalName(sig syscall.Signal) string {
	if name := unix.SignalName(sig); name != "" {
		return name
	}
	return "signal " + strconv.Itoa(int(sig))
}

// Addr is CLUSTERINIT_HEALTH_ADDR: a TCP address, or Off.
type Addr struct {
	Off bool `env:"-"`
	// HostPort is canonical (net.JoinHostPort form); empty when Off.
	HostPort string `env:"-"`
}

// UnmarshalText accepts "off" or one host:port; port 0 asks the kernel for
// any free port, which is useful in tests.
func (a *Addr) UnmarshalText(text []byte) error {
	s := string(text)
	if strings.EqualFold(s, "off") {
		*a = Addr{Off: true}
		return nil
	}
	hp, ok := parseHostPort(s, 0)
	if !ok {
		return want(wantAddr)
	}
	*a = Addr{HostPort: hp}
	return nil
}

// MarshalText gives the same text as String.
func (a Addr) MarshalText() ([]byte, error) { return []byte(a.String()), nil }

func (a Addr) String() string {
	if a.Off {
		return "off"
	}
	return a.HostPort
}

// The smallest heap size HEAP_SIZE takes: below it Node spends its time
// collecting garbage before an app has even loaded.
const minHeapSize = 16 << 20

// HeapSize is CLUSTERINIT_HEAP_SIZE: the V8 heap limit of each Node worker.
// Auto sizes it from the task's memory limit, Off leaves Node's default,
// else Size (whole MiB, at least 16Mi) is passed as --max-old-space-size.
type HeapSize struct {
	Auto bool `env:"-"`
	Off  bool `env:"-"`
	Size Size `env:"-"`
}

const wantHeapSize = "auto, off, or a size of at least 16Mi such as 512Mi"

// UnmarshalText accepts "auto", "off" (or 0) or a size of at least 16Mi.
func (h *HeapSize) UnmarshalText(text []byte) error {
	s := string(text)
	switch {
	case strings.EqualFold(s, "auto"):
		*h = HeapSize{Auto: true}
		return nil
	case strings.EqualFold(s, "off"), s == "0":
		*h = HeapSize{Off: true}
		return nil
	}
	n, ok := parseSize(s)
	if !ok || n < minHeapSize {
		return want(wantHeapSize)
	}
	*h = HeapSize{Size: n}
	return nil
}

// MarshalText gives the same text as String.
func (h HeapSize) MarshalText() ([]byte, error) { return []byte(h.String()), nil }

func (h HeapSize) String() string {
	switch {
	case h.Auto:
		return "auto"
	case h.Off:
		return "off"
	}
	return h.Size.String()
}

// MemLimit is a per-worker memory limit that may be derived from the task's
// memory limit, as CLUSTERINIT_MAX_RSS: Auto, or Size (0: off).
type MemLimit struct {
	Auto bool `env:"-"`
	Size Size `env:"-"`
}

// UnmarshalText accepts "auto" or a size.
func (m *MemLimit) UnmarshalText(text []byte) error {
	if strings.EqualFold(string(text), "auto") {
		*m = MemLimit{Auto: true}
		return nil
	}
	n, ok := parseSize(string(text))
	if !ok {
		return want("auto or " + wantSize)
	}
	*m = MemLimit{Size: n}
	return nil
}

// MarshalText gives the same text as String.
func (m MemLimit) MarshalText() ([]byte, error) { return []byte(m.String()), nil }

func (m MemLimit) String() string {
	if m.Auto {
		return "auto"
	}
	return m.Size.String()
}
