package main

import (
	"fmt"
	"math"
	"os"
	"sort"
	"strings"
	"sync"
	"time"
)

// Metric names; a load scenario's are its prefix ("ka", "close", "cpu") and
// one of the load suffixes.
const (
	mStartMS      = "start_ms"
	mWakeups      = "idle_wakeups"
	mIdleRSS      = "idle_rss"
	mIdleAnon     = "idle_rss_anon"
	mNoise        = "noise"
	mBalance      = "balance"
	mReloadFailed = "reload_failed"
	mReloadP99    = "reload_p99_ms"
	mReloadSecs   = "reload_secs"
	// Each round's reload against the keep-alive run just before it, in the
	// same round: the pair shares an instance, a connection split and a
	// minute of the machine, which medians taken apart do not.
	mReloadP99Ratio = "reload_p99_ratio"
	mReloadRPSRatio = "reload_rps_ratio"

	mRecycleBeforeP99 = "recycle_before_p99_ms"
	mRecycleP99       = "recycle_p99_ms"
	mRecycleFailed    = "recycle_failed"
	mRecycleSecs      = "recycle_secs"
	mRecycleP99Ratio  = "recycle_p99_ratio"
	mRecycleRPSRatio  = "recycle_rps_ratio"

	sRPS     = "_rps"
	sP99     = "_p99_ms"
	sP50     = "_p50_ms"
	sFailed  = "_failed"
	sSupCPU  = "_sup_cpu"
	sSupRSS  = "_sup_rss"
	sSupAnon = "_sup_anon"
	sWorkers = "_workers"
	sWrk     = "_wrk"
	sMachine = "_machine"
)

const (
	markBegin = "<!-- bench:begin -->"
	markEnd   = "<!-- bench:end -->"
	heading   = "## Side by side"
)

// results holds every sample of a run.
type results struct {
	s        settings
	root     string
	machine  machineInfo
	versions versions
	cs       []contender
	date     time.Time
	Elapsed  time.Duration

	Redone int // contender rounds measured again because of other processes

	mu           sync.Mutex
	samples      map[string]map[string][]float64 // contender → metric → samples
	reloadErrors map[string][]string             // contender → wrk's error counts per run
	Errors       []string
}

func newResults(e *env, cs []contender) *results {
	return &results{
		s: e.s, root: e.root, machine: e.machine, versions: e.versions, cs: cs,
		date:         time.Now().UTC(),
		samples:      map[string]map[string][]float64{},
		reloadErrors: map[string][]string{},
	}
}

// fresh returns an empty results for one contender round, to merge once
// it is kept.
func (r *results) fresh() *results {
	return &results{s: r.s, root: r.root, machine: r.machine, versions: r.versions, cs: r.cs, date: r.date,
		samples: map[string]map[string][]float64{}, reloadErrors: map[string][]string{}}
}

// merge adds o's samples to r.
func (r *results) merge(o *results) {
	o.mu.Lock()
	defer o.mu.Unlock()
	r.mu.Lock()
	defer r.mu.Unlock()
	for name, ms := range o.samples {
		if r.samples[name] == nil {
			r.samples[name] = map[string][]float64{}
		}
		for m, v := range ms {
			r.samples[name][m] = append(r.samples[name][m], v...)
		}
	}
	for name, e := range o.reloadErrors {
		r.reloadErrors[name] = append(r.reloadErrors[name], e...)
	}
	r.Errors = append(r.Errors, o.Errors...)
}

func (r *results) add(c contender, metric string, v float64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	m := r.samples[c.Name]
	if m == nil {
		m = map[string][]float64{}
		r.samples[c.Name] = m
	}
	m[metric] = append(m[metric], v)
}

func (r *results) addLoad(c contender, scenario string, l loadResult) {
	r.add(c, scenario+sRPS, l.wrk.rps())
	r.add(c, scenario+sP99, l.wrk.P99US/1000)
	r.add(c, scenario+sFailed, float64(l.wrk.failed()))
	r.add(c, scenario+sWorkers, l.workers)
	r.add(c, scenario+sWrk, l.wrkCores)
	r.add(c, scenario+sMachine, l.machine)
	if c.supervised() {
		r.add(c, scenario+sSupCPU, l.supCPU)
		r.add(c, scenario+sSupRSS, l.supRSSMax)
		r.add(c, scenario+sSupAnon, l.supAnon)
	}
}

func (r *results) addReloadErrors(c contender, w wrkResult) {
	r.mu.Lock()
	defer r.mu.Unlock()
	var parts []string
	for _, p := range []struct {
		n string
		v int64
	}{{"connect", w.Connect}, {"read", w.Read}, {"write", w.Write}, {"timeout", w.Timeout}, {"non-2xx", w.Status}} {
		if p.v > 0 {
			parts = append(parts, fmt.Sprintf("%s %d", p.n, p.v))
		}
	}
	r.reloadErrors[c.Name] = append(r.reloadErrors[c.Name], strings.Join(parts, ", "))
}

func (r *results) fail(c contender, what string, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	msg := fmt.Sprintf("%s, %s: %v", c.Name, what, err)
	if len(msg) > 2000 {
		msg = msg[:2000] + "…"
	}
	r.Errors = append(r.Errors, msg)
	fmt.Fprintln(os.Stderr, "bench: FAILED:", msg)
}

// samplesOf returns the samples of one metric.
func (r *results) samplesOf(name, metric string) []float64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]float64(nil), r.samples[name][metric]...)
}

// median of a contender's metric; NaN without samples.
func (r *results) median(name, metric string) float64 {
	return median(r.samplesOf(name, metric))
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return math.NaN()
	}
	v = append([]float64(nil), v...)
	sort.Float64s(v)
	if len(v)%2 == 1 {
		return v[len(v)/2]
	}
	return (v[len(v)/2-1] + v[len(v)/2]) / 2
}

func (r *results) has(name string) bool {
	for _, c := range r.cs {
		if c.Name == name {
			return true
		}
	}
	return false
}

// Formatting: "–" for what was not measured.

func fmtNum(v float64, decimals int) string {
	if math.IsNaN(v) {
		return "–"
	}
	if math.IsInf(v, 1) {
		return "∞"
	}
	return fmt.Sprintf("%.*f", decimals, v)
}

// fmtInt formats with thousands separators.
func fmtInt(v float64) string {
	if math.IsNaN(v) {
		return "–"
	}
	s := fmt.Sprintf("%.0f", v)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	if neg {
		return "-" + b.String()
	}
	return b.String()
}

func fmtRatio(v float64) string {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return fmtNum(v, 2)
	}
	return fmt.Sprintf("%.2f×", v)
}

// fmtRatioVs is fmtRatio with a third decimal where two would print the
// limit itself (1.503 as "1.50×"), so that a target's verdict and the figure
// beside it never seem to disagree.
func fmtRatioVs(v, limit float64) string {
	if s := fmtRatio(v); s != fmtRatio(limit) || v == limit {
		return s
	}
	return fmt.Sprintf("%.3f×", v)
}

// atLeast and atMost judge a ratio against a target's limit and print it
// for the verdict's line.
func atLeast(v, limit float64) (string, bool) { return fmtRatioVs(v, limit), v >= limit }
func atMost(v, limit float64) (string, bool)  { return fmtRatioVs(v, limit), v <= limit }

// ratioCell is a per-round ratio's median, then each round's:
// "1.20× (1.10×; 1.20×; 2.40×)".
func (r *results) ratioCell(name, metric string) string {
	v := r.samplesOf(name, metric)
	if len(v) < 2 {
		return fmtRatio(median(v))
	}
	per := make([]string, len(v))
	for i, x := range v {
		per[i] = fmtRatio(x)
	}
	return fmtRatio(median(v)) + " (" + strings.Join(per, "; ") + ")"
}

// bestOther is the highest median of metric among contenders other than
// name, and which one it is.
func (r *results) bestOther(name, metric string) (float64, string) {
	best, who := math.NaN(), ""
	for _, c := range r.cs {
		if c.Name == name || c.noPreload {
			continue
		}
		if v := r.median(c.Name, metric); !math.IsNaN(v) && (math.IsNaN(best) || v > best) {
			best, who = v, c.Label
		}
	}
	return best, who
}

func (r *results) best(metric string) float64 {
	best := math.NaN()
	for _, c := range r.cs {
		if v := r.median(c.Name, metric); !math.IsNaN(v) && (math.IsNaN(best) || v > best) {
			best = v
		}
	}
	return best
}

// markdown renders the section between the markers.
func (r *results) markdown() string {
	var b strings.Builder
	p := func(format string, args ...any) { fmt.Fprintf(&b, format, args...) }
	s := r.s
	p("%s\n", markBegin)
	p("<!-- Generated by `%s`; do not edit between the markers: a rerun replaces this part. -->\n\n", s.Command)
	if s.Smoke {
		p("**Smoke run: durations too short for the figures to mean anything.**\n\n")
	}
	p("Reproduce with `%s` (%s UTC, took %s).\n\n", s.Command, r.date.Format("2006-01-02 15:04"), r.Elapsed.Round(time.Second))
	m, v := r.machine, r.versions
	p("- Machine: %d CPUs (`nproc`), %s, %.1f GiB of memory, Linux %s; wrk runs on the same CPUs as the contenders.\n",
		m.NCPU, m.CPUModel, m.MemGiB, m.Kernel)
	p("- Versions: Node %s, PM2 %s, wrk %s, clusterinit `%s`, %s.\n", v.Node, v.PM2, v.Wrk, v.Clusterinit, v.Go)
	p("- App: `bench/app.js`, which runs `testdata/apps/http.js` unchanged (a JSON reply per request) and adds a per-process request counter and a CPU-heavy `GET /cpu?n=%d` (about 0.6 ms of JavaScript). %d workers for every contender but `node`.\n",
		s.CPUN, s.Workers)
	p("- Load: wrk, %d connections, %d threads, 127.0.0.1 only. Each of %d rounds starts every contender in turn (each round one further along the list), runs every scenario on it and stops it: %s warm-up with keep-alive, %s with a new connection per request (`-H 'Connection: close'`), %s of the CPU-heavy handler, %s with keep-alive, then a rolling reload under keep-alive load. Figures are medians over the rounds.\n",
		s.Conns, s.Threads, s.Runs, s.Warmup, s.Duration, s.CPUDuration, s.Duration)
	var bg []float64
	for _, c := range r.cs {
		bg = append(bg, r.samplesOf(c.Name, mNoise)...)
	}
	if len(bg) > 0 {
		sort.Float64s(bg)
		p("- Noise: the most CPUs that other processes (not the benchmark's) used during one measurement of a kept round: median %s, max %s of %d; %d round(s) were measured again because they used more than %.2f.\n",
			fmtNum(median(bg), 2), fmtNum(bg[len(bg)-1], 2), m.NCPU, r.Redone, r.s.NoiseCores)
		if median(bg) > r.s.NoiseCores && !r.s.Smoke {
			p("\n**Other processes kept the machine busy during this run: the figures are not comparable. Rerun on an idle machine.**\n\n")
		}
	}
	p("- Supervisor: clusterinit itself, the cluster primary (`bench/cluster-primary.js`), PM2's God daemon. Memory is its VmRSS; CPU is its utime+stime over the load (from `/proc/<pid>/stat`); idle wakeups are its threads' context switches per second over %s with no load.\n\n",
		s.Idle)

	// Throughput.
	p("### Throughput\n\n")
	p("| contender | keep-alive req/s | vs best | keep-alive p99 | new connection per request, req/s | vs cluster round-robin | CPU-heavy req/s | busiest / idlest worker |\n")
	p("|---|--:|--:|--:|--:|--:|--:|--:|\n")
	bestKA := r.best("ka" + sRPS)
	rrClose := r.median("cluster-rr", "close"+sRPS)
	for _, c := range r.cs {
		ka := r.median(c.Name, "ka"+sRPS)
		cl := r.median(c.Name, "close"+sRPS)
		p("| %s | %s | %s | %s ms | %s | %s | %s | %s |\n", c.Label,
			fmtInt(ka), fmtRatio(ka/bestKA), fmtNum(r.median(c.Name, "ka"+sP99), 1),
			fmtInt(cl), fmtRatio(cl/rrClose),
			fmtInt(r.median(c.Name, "cpu"+sRPS)),
			fmtNum(r.median(c.Name, mBalance), 2))
	}

	// Skewed workload.
	if s.SkewDuration > 0 {
		p("\n### Skewed workload\n\n")
		p("`GET /skew`: every 33rd request of each process is busy for about 50 ms of JavaScript, the others for about 1 ms (3%% slow, as a few heavy pages among many light ones), %s per run. With a new connection per request, a worker busy on a slow request does not accept, so under direct accept (clusterinit shared, SCHED_NONE) a new connection waits only for a free worker; round-robin (the cluster module, PM2) hands it to the next worker whether busy or not, and `reuseport` hashes it to a slot's queue whatever that worker is doing. With keep-alive every connection stays with one worker, so all contenders queue behind its slow requests.\n\n", s.SkewDuration)
		r.latencyTable(&b, "skew", false)
	}

	// A real app.
	if s.NextDuration > 0 {
		p("\n### A real app: Next.js standalone, a server-rendered page per request\n\n")
		p("`testdata/nextjs` built with `output: 'standalone'` (`force-dynamic`: every request renders the page), run by each contender through `bench/app.js` (`BENCH_APP_MAIN`), %s warm-up, then %s per scenario.\n\n", s.NextDuration/2, s.NextDuration)
		r.latencyTable(&b, "next", true)
	}

	// Supervisor cost.
	p("\n### Supervisor cost\n\n")
	p("Resident memory (VmRSS) and, in brackets, its anonymous part (RssAnon: heap and stacks, without the file-backed pages of the executable and libraries).\n\n")
	p("| contender | memory idle | memory under load (max) | CPU, keep-alive load | CPU, new connection per request | idle wakeups/s |\n")
	p("|---|--:|--:|--:|--:|--:|\n")
	for _, c := range r.cs {
		if !c.supervised() {
			p("| %s | n/a | n/a | n/a | n/a | n/a |\n", c.Label)
			continue
		}
		load := max(r.median(c.Name, "ka"+sSupRSS), r.median(c.Name, "close"+sSupRSS))
		loadAnon := max(r.median(c.Name, "ka"+sSupAnon), r.median(c.Name, "close"+sSupAnon))
		p("| %s | %s MiB (%s) | %s MiB (%s) | %s%% | %s%% | %s |\n", c.Label,
			fmtNum(r.median(c.Name, mIdleRSS), 1), fmtNum(r.median(c.Name, mIdleAnon), 1),
			fmtNum(load, 1), fmtNum(loadAnon, 1),
			fmtNum(r.median(c.Name, "ka"+sSupCPU), 2), fmtNum(r.median(c.Name, "close"+sSupCPU), 2),
			fmtNum(r.median(c.Name, mWakeups), 1))
	}

	// CPU breakdown.
	p("\n### Where the CPUs go under load\n\n")
	p("CPUs used on average during each load (of %d): the workers, the supervisor, wrk, and everything busy on the machine (kernel included).\n\n", m.NCPU)
	p("| contender | load | workers | supervisor | wrk | machine busy |\n")
	p("|---|---|--:|--:|--:|--:|\n")
	for _, c := range r.cs {
		for _, sc := range []struct{ key, label string }{{"ka", "keep-alive"}, {"close", "new connection per request"}, {"cpu", "CPU-heavy"}} {
			if len(r.samplesOf(c.Name, sc.key+sRPS)) == 0 {
				continue
			}
			sup := "n/a"
			if c.supervised() {
				sup = fmtNum(r.median(c.Name, sc.key+sSupCPU)/100, 2)
			}
			p("| %s | %s | %s | %s | %s | %s |\n", c.Label, sc.label,
				fmtNum(r.median(c.Name, sc.key+sWorkers), 2), sup,
				fmtNum(r.median(c.Name, sc.key+sWrk), 2), fmtNum(r.median(c.Name, sc.key+sMachine), 2))
		}
	}

	// Reload.
	p("\n### Rolling reload of every worker under keep-alive load\n\n")
	p("clusterinit: SIGHUP. PM2: `pm2 reload ecosystem.config.js` (cluster mode, `kill_timeout: 5000`, default `listen_timeout`; the plain app sends no `ready`, so no `wait_ready`). Node cluster: SIGHUP to the primary, which forks a new worker per old one, waits for `listening`, disconnects the old one and kills it after 5 s. Failed requests are wrk's socket errors (connect, read, write, timeout) and non-2xx responses; \"during\" is wrk's p99 from %s before the request until every old worker has exited and every new one listens; \"before\" is the keep-alive run just before, on the same instance. The ratios compare each round's reload with its own \"before\" (their median, then each round's); throughput during / before shows what capacity the reload costs.\n\n", s.ReloadLead)
	p("| contender | failed requests, per round | p99 before | p99 during | during / before | req/s during / before | reload took |\n")
	p("|---|---|--:|--:|--:|--:|--:|\n")
	for _, c := range r.cs {
		if !c.supervised() {
			continue
		}
		var per []string
		r.mu.Lock()
		errs := r.reloadErrors[c.Name]
		r.mu.Unlock()
		for i, f := range r.samplesOf(c.Name, mReloadFailed) {
			cell := fmtInt(f)
			if i < len(errs) && errs[i] != "" {
				cell += " (" + errs[i] + ")"
			}
			per = append(per, cell)
		}
		p("| %s | %s | %s ms | %s ms | %s | %s | %s s |\n", c.Label, strings.Join(per, "; "),
			fmtNum(r.median(c.Name, "ka"+sP99), 1), fmtNum(r.median(c.Name, mReloadP99), 1),
			r.ratioCell(c.Name, mReloadP99Ratio), r.ratioCell(c.Name, mReloadRPSRatio), fmtNum(r.median(c.Name, mReloadSecs), 2))
	}

	// Recycling.
	if s.RecycleAge > 0 {
		p("\n### MAX_AGE recycle of every worker under keep-alive load\n\n")
		p("clusterinit only (no other contender recycles by age without a restart): a fresh instance with `MAX_AGE=%s` (each worker's recycle comes at 90–100%% of it, one at a time). \"Before\" is a keep-alive run from half the age for a quarter of it; \"during\" is wrk from 85%% of the age until every first worker has exited and as many successors listen, plus 250 ms. The ratios compare each round's recycles with its own \"before\" (their median, then each round's); throughput during / before shows what capacity the handover costs.\n\n", s.RecycleAge)
		p("| contender | failed requests, per round | p99 before | p99 during | during / before | req/s during / before | recycles took |\n")
		p("|---|---|--:|--:|--:|--:|--:|\n")
		for _, c := range r.cs {
			if !c.isClusterinit() {
				continue
			}
			var per []string
			for _, f := range r.samplesOf(c.Name, mRecycleFailed) {
				per = append(per, fmtInt(f))
			}
			before, during := r.median(c.Name, mRecycleBeforeP99), r.median(c.Name, mRecycleP99)
			p("| %s | %s | %s ms | %s ms | %s | %s | %s s |\n", c.Label, strings.Join(per, "; "),
				fmtNum(before, 1), fmtNum(during, 1), r.ratioCell(c.Name, mRecycleP99Ratio),
				r.ratioCell(c.Name, mRecycleRPSRatio), fmtNum(r.median(c.Name, mRecycleSecs), 2))
		}
	}

	// Start.
	p("\n### Time from exec to every worker listening\n\n")
	p("From just before exec to the moment the last worker's `listen` callback has run (each worker appends its pid to a file polled every millisecond); PM2 from `pm2 start` with a new daemon.\n\n")
	p("| contender | median | min – max | samples | over `node` alone |\n")
	p("|---|--:|--:|--:|--:|\n")
	nodeStart := r.median("node", mStartMS)
	for _, c := range r.cs {
		st := r.samplesOf(c.Name, mStartMS)
		if len(st) == 0 {
			continue
		}
		sort.Float64s(st)
		med := median(st)
		over := "–"
		if c.Name != "node" && !math.IsNaN(nodeStart) {
			over = fmt.Sprintf("%+.1f ms", med-nodeStart)
		}
		p("| %s | %s ms | %s – %s ms | %d | %s |\n", c.Label, fmtNum(med, 1), fmtNum(st[0], 1), fmtNum(st[len(st)-1], 1), len(st), over)
	}

	r.targets(&b)

	if len(r.Errors) > 0 {
		p("\n### Failed measurements\n\n")
		for _, e := range r.Errors {
			first, _, _ := strings.Cut(e, "\n")
			p("- %s\n", first)
		}
	}
	p("%s\n", markEnd)
	return b.String()
}

// target is one row of the targets table.
type target struct {
	label string
	check func(c contender) (measured string, met bool, ok bool)
}

func verdict(met bool) string {
	if met {
		return "met"
	}
	return "**missed**"
}

// targets renders each target of the issue for each clusterinit mode.
func (r *results) targets(b *strings.Builder) {
	var modes []contender
	for _, c := range r.cs {
		if c.isClusterinit() {
			modes = append(modes, c)
		}
	}
	if len(modes) == 0 {
		return
	}
	p := func(format string, args ...any) { fmt.Fprintf(b, format, args...) }
	nan := math.IsNaN
	ts := []target{
		{"keep-alive, 50 connections: req/s ≥ 0.97× the best other contender", func(c contender) (string, bool, bool) {
			own := r.median(c.Name, "ka"+sRPS)
			best, who := r.bestOther(c.Name, "ka"+sRPS)
			if nan(own) || nan(best) {
				return "", false, false
			}
			ratio, ok := atLeast(own/best, 0.97)
			return fmt.Sprintf("%s (best other: %s)", ratio, who), ok, true
		}},
		{"new connection per request: req/s ≥ 1.6× cluster round-robin and PM2, ≥ 0.95× SCHED_NONE", func(c contender) (string, bool, bool) {
			own := r.median(c.Name, "close"+sRPS)
			rr, pm, none := r.median("cluster-rr", "close"+sRPS), r.median("pm2", "close"+sRPS), r.median("cluster-none", "close"+sRPS)
			if nan(own) || nan(rr) || nan(pm) || nan(none) {
				return "", false, false
			}
			vsRR, okRR := atLeast(own/rr, 1.6)
			vsPM2, okPM2 := atLeast(own/pm, 1.6)
			vsNone, okNone := atLeast(own/none, 0.95)
			return fmt.Sprintf("%s RR, %s PM2, %s SCHED_NONE", vsRR, vsPM2, vsNone), okRR && okPM2 && okNone, true
		}},
		{"supervisor memory, idle and under load: ≤ 8 MiB", func(c contender) (string, bool, bool) {
			idle := r.median(c.Name, mIdleRSS)
			load := max(r.median(c.Name, "ka"+sSupRSS), r.median(c.Name, "close"+sSupRSS))
			if nan(idle) || nan(load) {
				return "", false, false
			}
			return fmt.Sprintf("%s / %s MiB", fmtNum(idle, 1), fmtNum(load, 1)), idle <= 8 && load <= 8, true
		}},
		{"supervisor CPU under load: ≤ 1% of one core", func(c contender) (string, bool, bool) {
			ka, cl := r.median(c.Name, "ka"+sSupCPU), r.median(c.Name, "close"+sSupCPU)
			if nan(ka) || nan(cl) {
				return "", false, false
			}
			return fmt.Sprintf("%s%% keep-alive, %s%% new connections", fmtNum(ka, 2), fmtNum(cl, 2)), ka <= 1 && cl <= 1, true
		}},
		{"rolling reload under keep-alive load: 0 failed requests", func(c contender) (string, bool, bool) {
			f := r.samplesOf(c.Name, mReloadFailed)
			if len(f) == 0 {
				return "", false, false
			}
			var sum float64
			for _, v := range f {
				sum += v
			}
			return fmt.Sprintf("%s in %d reloads", fmtInt(sum), len(f)), sum == 0, true
		}},
		{"rolling reload: p99 during / before ≤ 1.5×, req/s during ≥ 0.9× before", func(c contender) (string, bool, bool) {
			p99, rps := r.median(c.Name, mReloadP99Ratio), r.median(c.Name, mReloadRPSRatio)
			if nan(p99) || nan(rps) {
				return "", false, false
			}
			tail, okTail := atMost(p99, 1.5)
			rate, okRate := atLeast(rps, 0.9)
			return fmt.Sprintf("p99 %s, req/s %s", tail, rate), okTail && okRate, true
		}},
		{"MAX_AGE recycle under keep-alive load: 0 failed, p99 during / before ≤ 1.5×, req/s during ≥ 0.9× before", func(c contender) (string, bool, bool) {
			f := r.samplesOf(c.Name, mRecycleFailed)
			p99, rps := r.median(c.Name, mRecycleP99Ratio), r.median(c.Name, mRecycleRPSRatio)
			if len(f) == 0 || nan(p99) || nan(rps) {
				return "", false, false
			}
			var failed float64
			for _, v := range f {
				failed += v
			}
			tail, okTail := atMost(p99, 1.5)
			rate, okRate := atLeast(rps, 0.9)
			return fmt.Sprintf("%s failed, p99 %s, req/s %s", fmtInt(failed), tail, rate), failed == 0 && okTail && okRate, true
		}},
		{"balance, 50 keep-alive connections: busiest / idlest worker ≤ 1.5", func(c contender) (string, bool, bool) {
			v := r.median(c.Name, mBalance)
			if nan(v) {
				return "", false, false
			}
			return fmtNum(v, 2), v <= 1.5, true
		}},
		{"the preload's cost: keep-alive req/s ≥ 0.97× the same fleet without it (SHIM=false, the app on fd 3 itself)", func(c contender) (string, bool, bool) {
			if c.arg != "shared" {
				return "", false, false // the reference runs in shared mode
			}
			own, bare := r.median(c.Name, "ka"+sRPS), r.median("clusterinit-nopreload", "ka"+sRPS)
			if nan(own) || nan(bare) {
				return "", false, false
			}
			ratio, ok := atLeast(own/bare, 0.97)
			return fmt.Sprintf("%s (%s vs %s req/s)", ratio, fmtInt(own), fmtInt(bare)), ok, true
		}},
		{"exec to every worker listening: ≤ 20 ms over `node` alone", func(c contender) (string, bool, bool) {
			own, node := r.median(c.Name, mStartMS), r.median("node", mStartMS)
			if nan(own) || nan(node) {
				return "", false, false
			}
			return fmt.Sprintf("%+.1f ms (%s vs %s ms)", own-node, fmtNum(own, 1), fmtNum(node, 1)), own-node <= 20, true
		}},
	}
	p("\n### Targets\n\n")
	p("| target |")
	for _, c := range modes {
		p(" %s |", c.Label)
	}
	p("\n|---|")
	for range modes {
		p("---|")
	}
	p("\n")
	for _, t := range ts {
		p("| %s |", t.label)
		for _, c := range modes {
			measured, met, ok := t.check(c)
			if !ok {
				p(" not measured |")
				continue
			}
			p(" %s: %s |", verdict(met), measured)
		}
		p("\n")
	}
	p("| idle wakeups per second (it must sleep when nothing happens; no number set) |")
	for _, c := range modes {
		p(" %s/s |", fmtNum(r.median(c.Name, mWakeups), 1))
	}
	p("\n")
}

// latencyTable renders p50, p99 and req/s of the scenarios prefix+"close"
// (a new connection per request) and prefix+"ka" (keep-alive) for every
// contender, without the no-preload reference if skipReference.
func (r *results) latencyTable(b *strings.Builder, prefix string, skipReference bool) {
	fmt.Fprintf(b, "| contender | new connection: p50 | p99 | req/s | keep-alive: p50 | p99 | req/s |\n")
	fmt.Fprintf(b, "|---|--:|--:|--:|--:|--:|--:|\n")
	for _, c := range r.cs {
		if skipReference && c.noPreload {
			continue
		}
		fmt.Fprintf(b, "| %s |", c.Label)
		for _, sc := range []string{prefix + "close", prefix + "ka"} {
			fmt.Fprintf(b, " %s ms | %s ms | %s |", fmtNum(r.median(c.Name, sc+sP50), 1),
				fmtNum(r.median(c.Name, sc+sP99), 1), fmtInt(r.median(c.Name, sc+sRPS)))
		}
		b.WriteString("\n")
	}
}

// updateDoc replaces the text between the markers in path with section (which
// carries the markers), or appends the section with its heading when the
// markers are not there yet. Everything else in the file is kept.
func updateDoc(path, section string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	out, err := replaceSection(string(b), section)
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return os.WriteFile(path, []byte(out), 0o644)
}

func replaceSection(doc, section string) (string, error) {
	section = strings.TrimRight(section, "\n")
	i := strings.Index(doc, markBegin)
	j := strings.Index(doc, markEnd)
	switch {
	case i < 0 && j < 0:
		return strings.TrimRight(doc, "\n") + "\n\n" + heading + "\n\n" + section + "\n", nil
	case i < 0 || j < i:
		return "", fmt.Errorf("unbalanced %s / %s markers", markBegin, markEnd)
	}
	return doc[:i] + section + doc[j+len(markEnd):], nil
}
