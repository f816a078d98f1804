package health

import (
	"bytes"
	"math"
	"math/rand/v2"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/clusterinit/clusterinit/supervisor"
)

// parseMetrics parses a page with Prometheus's own parser, under the strict
// (legacy) name rules, which every scraper accepts.
func parseMetrics(t *testing.T, page string) map[string]*dto.MetricFamily {
	t.Helper()
	p := expfmt.NewTextParser(model.LegacyValidation)
	fams, err := p.TextToMetricFamilies(strings.NewReader(page))
	if err != nil {
		t.Fatalf("parse /metrics: %v\n%s", err, page)
	}
	return fams
}

// values maps each sample's label set ("" or `k="v"`, one label here) to
// its value.
func values(t *testing.T, fams map[string]*dto.MetricFamily, name string, typ dto.MetricType) map[string]float64 {
	t.Helper()
	f, ok := fams[name]
	if !ok {
		t.Errorf("no family %s", name)
		return nil
	}
	if f.GetType() != typ {
		t.Errorf("%s has type %v, want %v", name, f.GetType(), typ)
	}
	if f.GetHelp() == "" {
		t.Errorf("%s has no help", name)
	}
	out := map[string]float64{}
	for _, m := range f.GetMetric() {
		var key []string
		for _, l := range m.GetLabel() {
			key = append(key, l.GetName()+"="+l.GetValue())
		}
		sort.Strings(key)
		k := strings.Join(key, ",")
		if _, dup := out[k]; dup {
			t.Errorf("%s{%s} appears twice", name, k)
		}
		switch typ {
		case dto.MetricType_GAUGE:
			out[k] = m.GetGauge().GetValue()
		case dto.MetricType_COUNTER:
			out[k] = m.GetCounter().GetValue()
		}
	}
	return out
}

func wantValues(t *testing.T, name string, got, want map[string]float64) {
	t.Helper()
	if len(got) != len(want) {
		t.Errorf("%s = %v, want %v", name, got, want)
		return
	}
	for k, v := range want {
		if g, ok := got[k]; !ok || g != v {
			t.Errorf("%s = %v, want %v", name, got, want)
			return
		}
	}
}

func TestMetrics(t *testing.T) {
	snap := twoReady()
	snap.Workers[0].State = "draining" // the old worker of slot 1
	snap.Recycles["memory-pressure"] = 7
	version := "1.0 \"rc\"\\x\nnext\xff"
	s := serve(t, Options{Fleet: newFleet(snap), Version: version})
	burnCPU(20 * time.Millisecond) // /proc counts CPU in 10 ms ticks: make it non-zero
	a := do(t, "GET", "http://"+s.Addr()+"/metrics")
	if a.code != 200 {
		t.Fatalf("GET /metrics = %d", a.code)
	}
	if ct := a.header.Get("Content-Type"); ct != "text/plain; version=0.0.4; charset=utf-8" {
		t.Errorf("Content-Type = %q", ct)
	}
	fams := parseMetrics(t, a.body)

	// One HELP and one TYPE line per family.
	seen := map[string]int{}
	for line := range strings.SplitSeq(a.body, "\n") {
		if strings.HasPrefix(line, "# TYPE ") || strings.HasPrefix(line, "# HELP ") {
			seen[line[:7]+strings.Fields(line)[2]]++
		}
	}
	for k, n := range seen {
		if n != 1 {
			t.Errorf("%q appears %d times", k, n)
		}
	}

	gauge, counter := dto.MetricType_GAUGE, dto.MetricType_COUNTER
	wantValues(t, "clusterinit_workers", values(t, fams, "clusterinit_workers", gauge),
		map[string]float64{"state=starting": 1, "state=ready": 1, "state=draining": 1})
	wantValues(t, "clusterinit_workers_desired", values(t, fams, "clusterinit_workers_desired", gauge),
		map[string]float64{"": 2})
	wantValues(t, "clusterinit_worker_starts_total", values(t, fams, "clusterinit_worker_starts_total", counter),
		map[string]float64{"": 4})
	wantValues(t, "clusterinit_worker_exits_total", values(t, fams, "clusterinit_worker_exits_total", counter),
		map[string]float64{"reason=crash": 1, "reason=oom": 0, "reason=stopped": 0, "reason=killed": 0})
	wantValues(t, "clusterinit_worker_recycles_total", values(t, fams, "clusterinit_worker_recycles_total", counter),
		map[string]float64{"reason=rss": 2, "reason=cpu": 0, "reason=age": 0, "reason=requests": 0, "reason=hang": 0, "reason=reload": 1,
			"reason=scale": 0, "reason=memory-pressure": 7})
	// Slot 1 has two workers; its series is the newer one's (pid 205).
	wantValues(t, "clusterinit_worker_resident_memory_bytes", values(t, fams, "clusterinit_worker_resident_memory_bytes", gauge),
		map[string]float64{"slot=0": 90 << 20, "slot=1": 40 << 20})
	wantValues(t, "clusterinit_worker_cpu_seconds_total", values(t, fams, "clusterinit_worker_cpu_seconds_total", counter),
		map[string]float64{"slot=0": 7, "slot=1": 0.75})
	wantValues(t, "clusterinit_worker_event_loop_delay_seconds", values(t, fams, "clusterinit_worker_event_loop_delay_seconds", gauge),
		map[string]float64{"slot=0": 0.001, "slot=1": 0.004})
	wantValues(t, "clusterinit_reloads_total", values(t, fams, "clusterinit_reloads_total", counter),
		map[string]float64{"result=success": 3, "result=failure": 0})
	wantValues(t, "clusterinit_cpu_limit", values(t, fams, "clusterinit_cpu_limit", gauge), map[string]float64{"": 1.5})
	wantValues(t, "clusterinit_memory_limit_bytes", values(t, fams, "clusterinit_memory_limit_bytes", gauge), map[string]float64{"": 1 << 30})
	wantValues(t, "clusterinit_orphans_reaped_total", values(t, fams, "clusterinit_orphans_reaped_total", counter),
		map[string]float64{"": 5})
	// The parser undoes the escaping; invalid UTF-8 comes back as U+FFFD.
	wantValues(t, "clusterinit_build_info", values(t, fams, "clusterinit_build_info", gauge),
		map[string]float64{"version=1.0 \"rc\"\\x\nnext\uFFFD": 1})

	for name, typ := range map[string]dto.MetricType{
		"process_resident_memory_bytes": gauge,
		"process_cpu_seconds_total":     counter,
		"process_start_time_seconds":    gauge,
		"process_open_fds":              gauge,
	} {
		v := values(t, fams, name, typ)[""]
		if !(v > 0) {
			t.Errorf("%s = %v, want > 0", name, v)
		}
	}
	start := values(t, fams, "process_start_time_seconds", gauge)[""]
	if now := float64(time.Now().Unix()); start > now+1 || start < now-3600 {
		t.Errorf("process_start_time_seconds = %v, now is %v", start, now)
	}

	// The snapshot's maps and slices are shared: rendering must not add
	// the zero-valued reasons to them.
	if len(snap.Exits) != 1 || len(snap.Reloads) != 1 || snap.Workers[0].Pid != 101 {
		t.Errorf("rendering /metrics changed the snapshot: %+v", snap)
	}
}

// Every family /metrics serves is named in the README's Health server
// section, so an operator can find what each one is.
func TestMetricsNamedInREADME(t *testing.T) {
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	s := serve(t, Options{Fleet: newFleet(twoReady()), Version: "1"})
	fams := parseMetrics(t, do(t, "GET", "http://"+s.Addr()+"/metrics").body)
	if len(fams) < 15 {
		t.Fatalf("only %d families on /metrics", len(fams))
	}
	for name := range fams {
		if !bytes.Contains(readme, []byte("`"+name)) {
			t.Errorf("README.md does not name the metric %s", name)
		}
	}
}

func TestMetricsEmptyFleet(t *testing.T) {
	for _, snap := range []*supervisor.Snapshot{nil, {}} {
		s := serve(t, Options{Fleet: newFleet(snap)})
		a := do(t, "GET", "http://"+s.Addr()+"/metrics")
		if a.code != 200 {
			t.Fatalf("GET /metrics = %d", a.code)
		}
		fams := parseMetrics(t, a.body)
		wantValues(t, "clusterinit_workers", values(t, fams, "clusterinit_workers", dto.MetricType_GAUGE),
			map[string]float64{"state=starting": 0, "state=ready": 0, "state=draining": 0})
		wantValues(t, "clusterinit_worker_exits_total", values(t, fams, "clusterinit_worker_exits_total", dto.MetricType_COUNTER),
			map[string]float64{"reason=crash": 0, "reason=oom": 0, "reason=stopped": 0, "reason=killed": 0})
		wantValues(t, "clusterinit_build_info", values(t, fams, "clusterinit_build_info", dto.MetricType_GAUGE),
			map[string]float64{"version=": 1})
		s.Close()
	}
}

// Scrapes race the loop replacing the snapshot; under -race this checks
// that the server only ever reads what it is handed.
func TestMetricsWhileSnapshotsChange(t *testing.T) {
	f := newFleet(twoReady())
	s := serve(t, Options{Fleet: f})
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			snap := twoReady()
			snap.Starts = uint64(i)
			f.snap.Store(snap)
			// Often enough to overlap every scrape, without starving them.
			time.Sleep(50 * time.Microsecond)
		}
	}()
	for range 50 {
		for _, path := range []string{"/metrics", "/status", "/readyz"} {
			if a := do(t, "GET", "http://"+s.Addr()+path); a.code != 200 {
				t.Fatalf("GET %s = %d", path, a.code)
			}
		}
	}
	close(stop)
	wg.Wait()
}

func TestTextWriter(t *testing.T) {
	var b bytes.Buffer
	w := textWriter{b: &b}
	w.family("x_total", counter, "Help with \\ and\nnewline.")
	w.count("x_total", math.MaxUint64, "a", `q"\`+"\n", "b", "plain")
	w.value("x_total", math.Inf(1))
	want := "# HELP x_total Help with \\\\ and\\nnewline.\n" +
		"# TYPE x_total counter\n" +
		"x_total{a=\"q\\\"\\\\\\n\",b=\"plain\"} 18446744073709551615\n" +
		"x_total +Inf\n"
	if b.String() != want {
		t.Errorf("got\n%s\nwant\n%s", b.String(), want)
	}
	parseMetrics(t, b.String())
}

func TestFormatFloat(t *testing.T) {
	for v, want := range map[float64]string{
		0: "0", 1: "1", 0.25: "0.25", 1e21: "1e+21", 104857600: "104857600", -3: "-3", 1 << 53: "9.007199254740992e+15", 0.001: "0.001", 1795461603.15: "1795461603.15", 0.00001: "1e-05",
		math.Inf(-1): "-Inf", math.MaxFloat64: "1.7976931348623157e+308",
	} {
		if got := formatFloat(v); got != want {
			t.Errorf("formatFloat(%v) = %q, want %q", v, got, want)
		}
	}
	if got := formatFloat(math.NaN()); got != "NaN" {
		t.Errorf("formatFloat(NaN) = %q", got)
	}
	// Whatever the form, the value must survive the trip exactly.
	r := rand.New(rand.NewPCG(1, 2))
	for range 10000 {
		v := math.Float64frombits(r.Uint64())
		if math.IsNaN(v) || math.IsInf(v, 0) {
			continue
		}
		for _, x := range []float64{v, r.Float64() * 1e12, float64(r.Int64N(1 << 62))} {
			if back, err := strconv.ParseFloat(formatFloat(x), 64); err != nil || back != x {
				t.Fatalf("formatFloat(%v) = %q, parses back as %v, %v", x, formatFloat(x), back, err)
			}
		}
	}
}

func TestCurrentPerSlot(t *testing.T) {
	ws := []supervisor.WorkerStatus{
		{Slot: 2, Pid: 30, StartedAt: t0},
		{Slot: 0, Pid: 10, StartedAt: t0.Add(time.Second)},
		{Slot: 0, Pid: 11, StartedAt: t0},
		{Slot: 2, Pid: 31, StartedAt: t0}, // same start: higher pid wins
	}
	got := currentPerSlot(ws)
	if len(got) != 2 || got[0].Pid != 10 || got[1].Pid != 31 {
		t.Errorf("currentPerSlot = %+v, want pids 10 and 31", got)
	}
}

// burnCPU spins until this process has used at least d of CPU time.
func burnCPU(d time.Duration) {
	for {
		var ru syscall.Rusage
		syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
		if time.Duration(ru.Utime.Nano()+ru.Stime.Nano()) >= d {
			return
		}
		for i := 0; i < 1e6; i++ {
		}
	}
}
