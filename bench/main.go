// Command bench runs clusterinit side by side with a single node process,
// Node's cluster module (round-robin and SCHED_NONE) and PM2 cluster mode
// over the same app, and writes the results into docs/benchmarks.md
// (section "Side by side", between <!-- bench:begin --> and
// <!-- bench:end -->):
//
//	make bench               # the full run, 15-20 minutes on 2 cores
//	go run ./bench -smoke    # a few seconds per contender; writes nothing
//
// It installs wrk (apt-get) and PM2 (npm, into bench/.cache) when missing,
// loads only 127.0.0.1, bounds every load in time, and kills everything it
// started, also when it fails or is interrupted.
//
// Settings come from flags or the environment (flags win): BENCH_RUNS,
// BENCH_DURATION, BENCH_CPU_DURATION, BENCH_WARMUP, BENCH_IDLE,
// BENCH_RELOAD_LEAD, BENCH_RECYCLE_AGE, BENCH_SKEW_DURATION, BENCH_NEXT_DURATION, BENCH_QUIET_WAIT, BENCH_RETRIES, BENCH_STARTS, BENCH_CONNECTIONS, BENCH_WRK_THREADS,
// BENCH_WORKERS, BENCH_CPU_N, BENCH_CONTENDERS, BENCH_OUT, BENCH_SMOKE.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// settings of one run.
type settings struct {
	Runs         int           // each contender runs every scenario this many times; medians are reported
	Duration     time.Duration // each throughput scenario
	CPUDuration  time.Duration // the CPU-heavy scenario
	SkewDuration time.Duration // each skewed-workload scenario; 0 skips them
	NextDuration time.Duration // each Next.js scenario; 0 skips them
	Warmup       time.Duration // keep-alive load before the first measurement
	Idle         time.Duration // idle window for the supervisor's memory and wakeups
	ReloadLead   time.Duration // load before the reload is asked for
	RecycleAge   time.Duration // clusterinit's MAX_AGE in the recycle scenario; 0 skips it
	Starts       int           // extra exec-to-ready samples per contender
	QuietWait    time.Duration // at most this long in all waiting for an idle machine between contenders
	QuietCores   float64       // idle: fewer CPUs than this busy
	NoiseCores   float64       // a contender's round is measured again when other processes used more CPUs than this
	Retries      int           // at most this many times
	Conns        int
	Threads      int // wrk threads
	Workers      int
	CPUN         int // loop rounds of GET /cpu
	Contenders   []string
	Smoke        bool
	Out          string // markdown file whose section is replaced; "" writes nothing
	Binary       string // clusterinit binary; "" builds one
	Root         string // repository; "" finds it from the working directory
	Command      string // the command shown as "reproduce with"
	Log          io.Writer
}

func defaults(smoke bool) settings {
	if smoke {
		return settings{
			Runs: 1, Duration: time.Second, CPUDuration: time.Second, SkewDuration: time.Second, NextDuration: time.Second, Warmup: 0,
			Idle: 500 * time.Millisecond, ReloadLead: 300 * time.Millisecond, RecycleAge: 2 * time.Second, Starts: 0,
			Conns: 50, Threads: 2, Workers: 2, CPUN: 400000, Smoke: true, QuietCores: 0.3, NoiseCores: 0.15,
			Command: "go run ./bench -smoke",
		}
	}
	return settings{
		Runs: 3, Duration: 5 * time.Second, CPUDuration: 3 * time.Second, SkewDuration: 4 * time.Second, NextDuration: 4 * time.Second, Warmup: time.Second,
		Idle: 2 * time.Second, ReloadLead: 250 * time.Millisecond, RecycleAge: 8 * time.Second, Starts: 5,
		QuietWait: 2 * time.Minute, QuietCores: 0.3, NoiseCores: 0.15, Retries: 3,
		Conns: 50, Threads: 2, Workers: 2, CPUN: 400000,
		Out: "docs/benchmarks.md", Command: "make bench",
	}
}

func main() {
	smoke := envBool("BENCH_SMOKE")
	for _, a := range os.Args[1:] {
		if a == "-smoke" || a == "--smoke" || a == "-smoke=true" {
			smoke = true
		}
	}
	s := defaults(smoke)
	if err := s.fromEnv(); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(2)
	}
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.Bool("smoke", smoke, "a few seconds per contender; writes nothing unless -out is given")
	fs.IntVar(&s.Runs, "runs", s.Runs, "runs of every scenario per contender (medians are reported)")
	fs.DurationVar(&s.Duration, "duration", s.Duration, "duration of each throughput scenario")
	fs.DurationVar(&s.CPUDuration, "cpu-duration", s.CPUDuration, "duration of the CPU-heavy scenario")
	fs.IntVar(&s.Starts, "starts", s.Starts, "extra exec-to-ready samples per contender")
	contenders := fs.String("contenders", strings.Join(s.Contenders, ","), "comma-separated contenders (default: all)")
	fs.StringVar(&s.Out, "out", s.Out, "markdown file to update between the bench markers; empty: none")
	fs.StringVar(&s.Binary, "clusterinit", s.Binary, "clusterinit binary (default: build one)")
	toolsOnly := fs.Bool("tools", false, "only install what the harness runs (wrk, PM2) and exit")
	if err := fs.Parse(os.Args[1:]); err != nil {
		os.Exit(2)
	}
	s.Log = os.Stderr
	if *toolsOnly {
		if err := installTools(context.Background(), s); err != nil {
			fmt.Fprintln(os.Stderr, "bench:", err)
			os.Exit(1)
		}
		return
	}
	s.Contenders = splitList(*contenders)

	ctx, cancel := context.WithCancel(context.Background())
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	go func() {
		sig := <-sigs
		fmt.Fprintf(os.Stderr, "bench: %v: stopping and cleaning up\n", sig)
		cancel()
	}()

	res, err := run(ctx, s)
	if res != nil {
		md := res.markdown()
		fmt.Println(md)
		if s.Out != "" && err == nil {
			if werr := updateDoc(filepath.Join(res.root, s.Out), md); werr != nil {
				fmt.Fprintln(os.Stderr, "bench:", werr)
				os.Exit(1)
			}
			fmt.Fprintf(os.Stderr, "bench: wrote %s\n", s.Out)
		}
		if len(res.Errors) > 0 && err == nil {
			err = fmt.Errorf("%d measurement(s) failed", len(res.Errors))
		}
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func (s *settings) fromEnv() error {
	var errs []string
	dur := func(name string, p *time.Duration) {
		if v := os.Getenv(name); v != "" {
			d, err := time.ParseDuration(v)
			if err != nil {
				errs = append(errs, fmt.Sprintf("%s=%q: want a duration such as 5s", name, v))
				return
			}
			*p = d
		}
	}
	num := func(name string, p *int) {
		if v := os.Getenv(name); v != "" {
			n, err := strconv.Atoi(v)
			if err != nil || n < 0 {
				errs = append(errs, fmt.Sprintf("%s=%q: want a number", name, v))
				return
			}
			*p = n
		}
	}
	num("BENCH_RUNS", &s.Runs)
	dur("BENCH_DURATION", &s.Duration)
	dur("BENCH_CPU_DURATION", &s.CPUDuration)
	dur("BENCH_WARMUP", &s.Warmup)
	dur("BENCH_IDLE", &s.Idle)
	dur("BENCH_RELOAD_LEAD", &s.ReloadLead)
	dur("BENCH_SKEW_DURATION", &s.SkewDuration)
	dur("BENCH_NEXT_DURATION", &s.NextDuration)
	dur("BENCH_RECYCLE_AGE", &s.RecycleAge)
	dur("BENCH_QUIET_WAIT", &s.QuietWait)
	num("BENCH_STARTS", &s.Starts)
	num("BENCH_CONNECTIONS", &s.Conns)
	num("BENCH_WRK_THREADS", &s.Threads)
	num("BENCH_WORKERS", &s.Workers)
	num("BENCH_CPU_N", &s.CPUN)
	num("BENCH_RETRIES", &s.Retries)
	if v, ok := os.LookupEnv("BENCH_OUT"); ok {
		s.Out = v
	}
	if v := os.Getenv("BENCH_CONTENDERS"); v != "" {
		s.Contenders = splitList(v)
	}
	if len(errs) > 0 {
		return fmt.Errorf("%s", strings.Join(errs, "; "))
	}
	return nil
}

func envBool(name string) bool {
	b, _ := strconv.ParseBool(os.Getenv(name))
	return b
}

func splitList(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

// selected returns the contenders to run, in the order of allContenders.
func (s settings) selected() ([]contender, error) {
	if len(s.Contenders) == 0 {
		return allContenders, nil
	}
	want := map[string]bool{}
	for _, n := range s.Contenders {
		want[n] = true
	}
	var out []contender
	for _, c := range allContenders {
		if want[c.Name] {
			out = append(out, c)
			delete(want, c.Name)
		}
	}
	for n := range want {
		return nil, fmt.Errorf("unknown contender %q", n)
	}
	return out, nil
}

// run measures every selected contender: first the exec-to-ready samples,
// then s.Runs rounds in which each contender runs every scenario, one
// contender after another.
func run(ctx context.Context, s settings) (*results, error) {
	if s.Runs < 1 || s.Workers < 1 || s.Conns < 1 || s.Threads < 1 {
		return nil, fmt.Errorf("runs, workers, connections and wrk threads must be at least 1")
	}
	cs, err := s.selected()
	if err != nil {
		return nil, err
	}
	t0 := time.Now()
	e, err := prepare(ctx, s)
	if err != nil {
		return nil, err
	}
	defer e.close()
	res := newResults(e, cs)
	e.logf("machine: %d CPUs, %s; node %s, pm2 %s, wrk %s, clusterinit %s",
		e.machine.NCPU, e.machine.CPUModel, e.versions.Node, e.versions.PM2, e.versions.Wrk, e.versions.Clusterinit)

	for i := 0; i < s.Starts; i++ {
		for _, c := range cs {
			if c.Name == "cluster-none" { // starts as cluster-rr does
				continue
			}
			e.waitQuiet(ctx)
			in, err := e.start(ctx, c)
			if err != nil {
				if ctx.Err() != nil {
					return res, ctx.Err()
				}
				res.fail(c, "start", err)
				continue
			}
			res.add(c, mStartMS, ms(in.readyIn))
			in.stop()
		}
	}
	for r := 1; r <= s.Runs; r++ {
		// Each round starts one further along the list, so that no
		// contender always runs right after the same one (PM2's daemon
		// going away, say) or always first.
		for i := range cs {
			c := cs[(i+r-1)%len(cs)]
			for attempt := 0; ; attempt++ {
				e.waitQuiet(ctx)
				e.logf("run %d/%d: %s", r, s.Runs, c.Name)
				t1 := time.Now()
				one := res.fresh()
				noise, err := e.runOne(ctx, c, one)
				if err != nil {
					if ctx.Err() != nil {
						return res, ctx.Err()
					}
					res.fail(c, fmt.Sprintf("run %d", r), err)
					break
				}
				// Measured while something else ran: measure again, as long
				// as the budget for waiting on the machine lasts.
				if noise > s.NoiseCores && attempt < s.Retries && e.quietBudget > 0 {
					e.quietBudget -= time.Since(t1)
					res.Redone++
					e.logf("%s: other processes used %.2f CPUs meanwhile: measuring again", c.Name, noise)
					continue
				}
				res.merge(one)
				res.add(c, mNoise, noise)
				break
			}
		}
	}
	res.Elapsed = time.Since(t0)
	e.logf("done in %s", res.Elapsed.Round(time.Second))
	return res, nil
}

// waitQuiet waits until the machine's CPUs are idle (fewer than QuietCores
// busy over half a second) or the run's budget for waiting is spent: the
// machine may be shared, and a contender measured while something else
// runs is measured short.
func (e *env) waitQuiet(ctx context.Context) {
	t0 := time.Now()
	defer func() { e.quietBudget -= time.Since(t0) }()
	for time.Since(t0) < e.quietBudget {
		m0 := readMachineCPU()
		if sleepCtx(ctx, 500*time.Millisecond) != nil {
			return
		}
		busy := coresBusy(m0, readMachineCPU(), e.machine.NCPU)
		if busy < e.s.QuietCores {
			return
		}
		if time.Since(t0) < 600*time.Millisecond {
			e.logf("machine busy (%.2f CPUs): waiting for quiet, %s at most", busy, e.quietBudget.Round(time.Second))
		}
	}
}

// runOne starts c, runs every scenario once, and stops it. noise is the
// most CPUs that other processes used during one of its measurements.
func (e *env) runOne(ctx context.Context, c contender, res *results) (noise float64, err error) {
	in, err := e.start(ctx, c)
	if err != nil {
		return 0, err
	}
	defer in.stop()
	res.add(c, mStartMS, ms(in.readyIn))

	// Idle: nothing happens; the supervisor should sleep. Whatever keeps
	// the machine busy meanwhile is someone else: the noise of this run.
	var cs0 int64
	if c.supervised() {
		cs0 = contextSwitches(in.supPID)
	}
	o0, t0 := othersCPU(in.supPID), time.Now()
	if err := sleepCtx(ctx, e.s.Idle); err != nil {
		return 0, err
	}
	noise = (othersCPU(in.supPID) - o0).Seconds() / time.Since(t0).Seconds()
	if c.supervised() {
		res.add(c, mWakeups, float64(contextSwitches(in.supPID)-cs0)/time.Since(t0).Seconds())
		res.add(c, mIdleRSS, rssMiB(in.supPID))
		res.add(c, mIdleAnon, rssAnonMiB(in.supPID))
	}
	if e.s.Warmup > 0 {
		if _, err := e.load(ctx, in, "/", false, e.s.Warmup); err != nil {
			return noise, fmt.Errorf("warmup: %w", err)
		}
	}

	// A new connection per request.
	l, err := e.load(ctx, in, "/", true, e.s.Duration)
	if err != nil {
		return noise, fmt.Errorf("connection: close: %w", err)
	}
	res.addLoad(c, "close", l)
	noise = max(noise, l.others)

	// CPU-heavy handler, keep-alive.
	if e.s.CPUDuration > 0 {
		l, err = e.load(ctx, in, fmt.Sprintf("/cpu?n=%d", e.s.CPUN), false, e.s.CPUDuration)
		if err != nil {
			return noise, fmt.Errorf("cpu-heavy: %w", err)
		}
		res.addLoad(c, "cpu", l)
		noise = max(noise, l.others)
	}

	// The skewed workload: a few slow requests among many fast ones, with a
	// new connection per request (where direct accept lets a connection
	// wait for a free worker) and with keep-alive.
	if e.s.SkewDuration > 0 {
		for _, sc := range []struct {
			name  string
			close bool
		}{{"skewclose", true}, {"skewka", false}} {
			l, err = e.load(ctx, in, "/skew", sc.close, e.s.SkewDuration)
			if err != nil {
				return noise, fmt.Errorf("%s: %w", sc.name, err)
			}
			res.addLoad(c, sc.name, l)
			res.add(c, sc.name+sP50, l.wrk.P50US/1000)
			noise = max(noise, l.others)
		}
	}

	// Keep-alive, with the requests each worker served.
	if _, err := in.dumpCounts(); err != nil {
		return noise, err
	}
	l, err = e.load(ctx, in, "/", false, e.s.Duration)
	if err != nil {
		return noise, fmt.Errorf("keep-alive: %w", err)
	}
	res.addLoad(c, "ka", l)
	noise = max(noise, l.others)
	counts, err := in.dumpCounts()
	if err != nil {
		return noise, err
	}
	if c.supervised() {
		res.add(c, mBalance, balance(counts))
	}

	if c.supervised() {
		o0, t0 := othersCPU(in.supPID), time.Now()
		r, err := e.reload(ctx, in)
		if err != nil {
			return noise, fmt.Errorf("reload: %w", err)
		}
		noise = max(noise, (othersCPU(in.supPID)-o0).Seconds()/time.Since(t0).Seconds())
		res.add(c, mReloadFailed, float64(r.wrk.failed()))
		res.add(c, mReloadP99, r.wrk.P99US/1000)
		res.add(c, mReloadSecs, r.took.Seconds())
		res.add(c, mReloadP99Ratio, r.wrk.P99US/l.wrk.P99US)
		res.add(c, mReloadRPSRatio, r.wrk.rps()/l.wrk.rps())
		res.addReloadErrors(c, r.wrk)
	}
	if e.s.NextDuration > 0 && !c.noPreload {
		if err := e.nextApp(ctx, c, res); err != nil {
			return noise, fmt.Errorf("next.js: %w", err)
		}
	}
	if c.isClusterinit() && e.s.RecycleAge > 0 {
		if err := e.recycle(ctx, c, res); err != nil {
			return noise, fmt.Errorf("recycle: %w", err)
		}
	}
	return noise, nil
}

// nextApp runs contender c over the Next.js standalone build of
// testdata/nextjs (a server-rendered page per request): a short keep-alive
// warm-up, then a new connection per request and keep-alive.
func (e *env) nextApp(ctx context.Context, c contender, res *results) error {
	c.appMain = e.nextServer
	in, err := e.start(ctx, c)
	if err != nil {
		return err
	}
	defer in.stop()
	if _, err := e.load(ctx, in, "/", false, e.s.NextDuration/2); err != nil {
		return fmt.Errorf("warm-up: %w", err)
	}
	for _, sc := range []struct {
		name  string
		close bool
	}{{"nextclose", true}, {"nextka", false}} {
		l, err := e.load(ctx, in, "/", sc.close, e.s.NextDuration)
		if err != nil {
			return fmt.Errorf("%s: %w", sc.name, err)
		}
		res.addLoad(c, sc.name, l)
		res.add(c, sc.name+sP50, l.wrk.P50US/1000)
	}
	return nil
}

// recycle measures a MAX_AGE recycle of every worker under keep-alive load,
// on a fresh instance with MAX_AGE=RecycleAge: keep-alive load from half the
// age for a quarter of it ("before"), then from 0.85 of the age (each
// worker's recycle comes between 0.9 and 1.0 of it, one at a time) until
// every first worker has exited and as many successors listen, plus 250 ms
// ("during").
func (e *env) recycle(ctx context.Context, c contender, res *results) error {
	age := e.s.RecycleAge
	c.extraEnv = append(c.extraEnv, "CLUSTERINIT_MAX_AGE="+age.String())
	in, err := e.start(ctx, c)
	if err != nil {
		return err
	}
	defer in.stop()
	started := time.Now()
	old := in.workerPIDs()
	if err := sleepCtx(ctx, time.Until(started.Add(age/2))); err != nil {
		return err
	}
	before, err := e.load(ctx, in, "/", false, age/4)
	if err != nil {
		return fmt.Errorf("before: %w", err)
	}
	if err := sleepCtx(ctx, time.Until(started.Add(age*85/100))); err != nil {
		return err
	}
	w, err := e.startWrk(ctx, wrkOpts{url: in.url + "/", conns: e.s.Conns, threads: e.s.Threads, duration: 2 * time.Minute})
	if err != nil {
		return err
	}
	defer w.stop()
	t0 := time.Now()
	if err := in.waitReloaded(ctx, old, 90*time.Second); err != nil {
		return err
	}
	took := time.Since(t0)
	sleepCtx(ctx, 250*time.Millisecond)
	w.stop()
	during, err := w.wait(30 * time.Second)
	if err != nil {
		return err
	}
	res.add(c, mRecycleBeforeP99, before.wrk.P99US/1000)
	res.add(c, mRecycleP99, during.P99US/1000)
	res.add(c, mRecycleP99Ratio, during.P99US/before.wrk.P99US)
	res.add(c, mRecycleRPSRatio, during.rps()/before.wrk.rps())
	res.add(c, mRecycleFailed, float64(during.failed()))
	res.add(c, mRecycleSecs, took.Seconds())
	return nil
}

// loadResult is one bounded wrk run with what the processes used meanwhile.
type loadResult struct {
	wrk       wrkResult
	wall      time.Duration
	supCPU    float64 // the supervisor, % of one core
	supRSSMax float64 // the supervisor's largest resident memory, MiB
	supAnon   float64 // its anonymous resident memory at the end, MiB
	workers   float64 // CPUs used by the workers
	wrkCores  float64 // CPUs used by wrk
	machine   float64 // CPUs busy on the machine (all processes, kernel included)
	others    float64 // CPUs used by processes that are not the benchmark's
}

// load runs wrk against in for d: 50 keep-alive connections, or a new
// connection per request.
func (e *env) load(ctx context.Context, in *instance, path string, connClose bool, d time.Duration) (loadResult, error) {
	pids := in.workerPIDs()
	workerCPU := func() (t time.Duration) {
		for _, pid := range pids {
			t += cpuOf(pid)
		}
		return t
	}
	var r loadResult
	m0, w0, o0 := readMachineCPU(), workerCPU(), othersCPU(in.supPID)
	var s0 time.Duration
	if in.supPID > 0 {
		s0 = cpuOf(in.supPID)
		r.supRSSMax = rssMiB(in.supPID)
	}
	t0 := time.Now()
	w, err := e.startWrk(ctx, wrkOpts{url: in.url + path, conns: e.s.Conns, threads: e.s.Threads, duration: d, close: connClose})
	if err != nil {
		return r, err
	}
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
loop:
	for {
		select {
		case <-w.done:
			break loop
		case <-tick.C:
			if in.supPID > 0 {
				r.supRSSMax = max(r.supRSSMax, rssMiB(in.supPID))
			}
		}
	}
	r.wall = time.Since(t0)
	if r.wrk, err = w.wait(d + 15*time.Second); err != nil {
		return r, err
	}
	secs := r.wall.Seconds()
	if in.supPID > 0 {
		r.supCPU = (cpuOf(in.supPID) - s0).Seconds() / secs * 100
		r.supRSSMax = max(r.supRSSMax, rssMiB(in.supPID))
		r.supAnon = rssAnonMiB(in.supPID)
	}
	r.workers = (workerCPU() - w0).Seconds() / secs
	r.wrkCores = r.wrk.CPU.Seconds() / secs
	r.machine = coresBusy(m0, readMachineCPU(), e.machine.NCPU)
	r.others = (othersCPU(in.supPID) - o0).Seconds() / secs
	if r.wrk.Requests == 0 {
		return r, fmt.Errorf("no request succeeded: %+v", r.wrk)
	}
	return r, nil
}

type reloadResult struct {
	wrk  wrkResult
	took time.Duration // from asking to every old worker gone and every new one listening
}

// reload asks for a rolling reload of every worker under keep-alive load.
// wrk runs from ReloadLead before the request until the reload is over
// (every old worker has exited, every new one listens), plus 250 ms.
func (e *env) reload(ctx context.Context, in *instance) (reloadResult, error) {
	var r reloadResult
	old := in.workerPIDs()
	w, err := e.startWrk(ctx, wrkOpts{url: in.url + "/", conns: e.s.Conns, threads: e.s.Threads,
		duration: e.s.ReloadLead + 2*time.Minute})
	if err != nil {
		return r, err
	}
	defer w.stop()
	if err := sleepCtx(ctx, e.s.ReloadLead); err != nil {
		return r, err
	}
	t0 := time.Now()
	wait, err := in.triggerReload(ctx)
	if err != nil {
		return r, err
	}
	werr := in.waitReloaded(ctx, old, 90*time.Second)
	if err := wait(); err != nil && werr == nil {
		werr = err
	}
	r.took = time.Since(t0)
	if werr != nil {
		return r, werr
	}
	sleepCtx(ctx, 250*time.Millisecond)
	w.stop()
	r.wrk, err = w.wait(30 * time.Second)
	return r, err
}

// balance is the busiest worker's requests over the idlest's.
func balance(counts map[int]int64) float64 {
	var lo, hi int64 = -1, 0
	for _, n := range counts {
		if lo < 0 || n < lo {
			lo = n
		}
		hi = max(hi, n)
	}
	if lo <= 0 {
		if hi == 0 {
			return 0
		}
		return math.Inf(1) // a worker served nothing
	}
	return float64(hi) / float64(lo)
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
