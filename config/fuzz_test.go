package config

import (
	"bytes"
	"errors"
	"math"
	"reflect"
	"slices"
	"strings"
	"testing"
	"unicode/utf8"
)

// The fuzz targets check that no input panics and that whatever a parser
// accepts prints, through String, as text it reads back to the same value:
// Config.Write and the help rely on that.

func FuzzParseSize(f *testing.F) {
	for _, s := range []string{"0", "300M", "1.5Gi", "512", "1KiB", "9223372036854775807", "8388608Ti", "0.5", "1e3", "-1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		var v Size
		if err := v.UnmarshalText([]byte(s)); err != nil {
			return
		}
		if v < 0 {
			t.Fatalf("%q: negative size %d", s, v)
		}
		var back Size
		if err := back.UnmarshalText([]byte(v.String())); err != nil || back != v {
			t.Fatalf("%q = %d prints as %q, which reads back as %d, %v", s, v, v, back, err)
		}
	})
}

func FuzzParseFraction(f *testing.F) {
	for _, s := range []string{"0", "0.9", "90%", "33.3%", "64", "6400%", "NaN", "1e-1", "0.000000000000000000001"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		var v Fraction
		if err := v.UnmarshalText([]byte(s)); err != nil {
			return
		}
		if math.IsNaN(float64(v)) || v < 0 || v > maxFraction {
			t.Fatalf("%q: accepted %v", s, float64(v))
		}
		var back Fraction
		if err := back.UnmarshalText([]byte(v.String())); err != nil || back != v {
			t.Fatalf("%q = %v prints as %q, which reads back as %v, %v", s, float64(v), v, float64(back), err)
		}
	})
}

func FuzzParseSignal(f *testing.F) {
	for _, s := range []string{"SIGTERM", "TERM", "sigint", "15", "0", "32", "SIGRTMIN", "iot"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		sig, err := ParseSignal(s)
		if err != nil {
			return
		}
		if sig < 1 || sig > 31 {
			t.Fatalf("%q: accepted signal %d", s, int(sig))
		}
		name := SignalName(sig)
		if !strings.HasPrefix(name, "SIG") {
			t.Fatalf("%q: signal %d has name %q", s, int(sig), name)
		}
		var back Signal
		if err := back.UnmarshalText([]byte(Signal(sig).String())); err != nil || back.Sys() != sig {
			t.Fatalf("%q = %v reads back as %v, %v", s, sig, back, err)
		}
	})
}

func FuzzParseListen(f *testing.F) {
	for _, s := range []string{":3000", "none", "127.0.0.1:80, [::1]:80", ":3000,", "[fe80::1%eth0]:1", "a.b:65535", ":0"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		var l Listen
		if err := l.UnmarshalText([]byte(s)); err != nil {
			return
		}
		if l.None == (len(l.Addrs) > 0) {
			t.Fatalf("%q: %#v is neither none nor a list", s, l)
		}
		for i, a := range l.Addrs {
			if a == "" || strings.ContainsAny(a, ",\n") || slices.Contains(l.Addrs[:i], a) {
				t.Fatalf("%q: bad address %q in %q", s, a, l.Addrs)
			}
		}
		var back Listen
		if err := back.UnmarshalText([]byte(l.String())); err != nil || !reflect.DeepEqual(back, l) {
			t.Fatalf("%q = %#v prints as %q, which reads back as %#v, %v", s, l, l, back, err)
		}
		var a Addr
		for _, addr := range l.Addrs {
			if err := a.UnmarshalText([]byte(addr)); err != nil || a.HostPort != addr {
				t.Fatalf("listen address %q is not a valid health address: %v", addr, err)
			}
		}
	})
}

func FuzzParseWorkers(f *testing.F) {
	for _, s := range []string{"auto", "1", "1024", "1025", "0", "+1", "Auto"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		var w Workers
		if err := w.UnmarshalText([]byte(s)); err != nil {
			return
		}
		if !w.Auto && (w.N < 1 || w.N > maxWorkers) || w.Auto && w.N != 0 {
			t.Fatalf("%q: accepted %#v", s, w)
		}
		var back Workers
		if err := back.UnmarshalText([]byte(w.String())); err != nil || back != w {
			t.Fatalf("%q = %#v reads back as %#v, %v", s, w, back, err)
		}
	})
}

// FuzzLoad takes an environment as newline-separated KEY=value entries.
func FuzzLoad(f *testing.F) {
	f.Add("CLUSTERINIT_WORKERS=4\nCLUSTERINIT_MAX_RSS=300M\nPORT=8080")
	f.Add("CLUSTERINIT_MAX_RS=1\nCLUSTERINIT_WORKERS=0\nCLUSTERINIT_READY_TIMEOUT=30")
	f.Add("CLUSTERINIT_LISTEN=none\nCLUSTERINIT_USER=1000:1000\nCLUSTERINIT_MAX_CPU=90%")
	f.Add("CLUSTERINIT_=1\nCLUSTERINIT_WORKER=2\nPORT=x")
	f.Add("CLUSTERINIT_HANG_TIMEOUT=1s\nCLUSTERINIT_SHIM=0\nCLUSTERINIT_MIN_READY=9\nCLUSTERINIT_WORKERS=8")
	f.Fuzz(func(t *testing.T, in string) {
		environ := strings.Split(in, "\n")
		cfg, err := Load(environ)
		if err != nil {
			if cfg != nil {
				t.Fatal("a Config alongside problems")
			}
			var e *Error
			if !errors.As(err, &e) || len(e.Problems) == 0 {
				t.Fatalf("error %v is not an *Error with problems", err)
			}
			for _, p := range e.Problems {
				if strings.ContainsAny(p, "\n\r") || !utf8.ValidString(p) {
					t.Fatalf("problem is not one line: %q", p)
				}
				if !strings.HasPrefix(p, Prefix) && !strings.HasPrefix(p, `"`+Prefix) && !strings.HasPrefix(p, "PORT=") {
					t.Fatalf("problem does not start with a variable: %q", p)
				}
				if strings.Contains(p, "internal error") {
					t.Fatalf("internal error: %q", p)
				}
				if !strings.Contains(p, ": want ") && !strings.Contains(p, ": unknown variable") {
					t.Fatalf("problem does not say what is wanted: %q", p)
				}
			}
			return
		}
		var b bytes.Buffer
		cfg.Write(&b)
		back, err := Load(strings.Split(strings.TrimSuffix(b.String(), "\n"), "\n"))
		if err != nil {
			t.Fatalf("Write output of %q does not load: %v\n%s", in, err, b.String())
		}
		if !reflect.DeepEqual(back, cfg) {
			t.Fatalf("round trip of %q:\n got %+v\nwant %+v", in, *back, *cfg)
		}
	})
}

func FuzzParseHeapSize(f *testing.F) {
	for _, s := range []string{"auto", "AUTO", "off", "0", "512Mi", "16Mi", "15.9Mi", "1.5Gi", "16777216", "x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		var v HeapSize
		if err := v.UnmarshalText([]byte(s)); err != nil {
			return
		}
		if !v.Auto && !v.Off && v.Size < minHeapSize || (v.Auto || v.Off) && v.Size != 0 {
			t.Fatalf("%q: accepted %+v", s, v)
		}
		var back HeapSize
		if err := back.UnmarshalText([]byte(v.String())); err != nil || back != v {
			t.Fatalf("%q = %+v prints as %q, which reads back as %+v, %v", s, v, v, back, err)
		}
	})
}

func FuzzParseMemLimit(f *testing.F) {
	for _, s := range []string{"auto", "Auto", "0", "300M", "1.5Gi", "autox", "-1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		var v MemLimit
		if err := v.UnmarshalText([]byte(s)); err != nil {
			return
		}
		if v.Auto && v.Size != 0 || v.Size < 0 {
			t.Fatalf("%q: accepted %+v", s, v)
		}
		var back MemLimit
		if err := back.UnmarshalText([]byte(v.String())); err != nil || back != v {
			t.Fatalf("%q = %+v prints as %q, which reads back as %+v, %v", s, v, v, back, err)
		}
	})
}
