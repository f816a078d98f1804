// Command clusterinit is a PID 1 for containers that runs one copy of a
// (Node.js) server per CPU on sockets it binds itself, and keeps them healthy.
package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/clusterinit/clusterinit/config"
	"github.com/clusterinit/clusterinit/footprint"
	"github.com/clusterinit/clusterinit/health"
	"github.com/clusterinit/clusterinit/limits"
	"github.com/clusterinit/clusterinit/listeners"
	"github.com/clusterinit/clusterinit/preload"
	"github.com/clusterinit/clusterinit/procsample"
	"github.com/clusterinit/clusterinit/signals"
	"github.com/clusterinit/clusterinit/supervisor"
)

// version is stamped at build time with -ldflags "-X main.version=…".
var version = "dev"

func main() { os.Exit(run(os.Args[1:], os.Stdout, os.Stderr)) }

// Exit statuses, as SPEC.md defines them.
const (
	exitOK    = 0
	exitFail  = 1
	exitUsage = 2
)

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 && args[0] == supervisor.ExecShimArg {
		return supervisor.ExecShim(args[1:])
	}
	if len(args) == 0 {
		config.WriteHelp(stderr)
		return exitUsage
	}
	switch args[0] {
	case "help", "-h", "--help":
		config.WriteHelp(stdout)
		return exitOK
	case "version", "--version":
		fmt.Fprintln(stdout, "clusterinit", version)
		return exitOK
	}

	cfg, err := config.Load(os.Environ())
	if err != nil {
		fmt.Fprintln(stderr, err)
		return exitUsage
	}
	switch args[0] {
	case "config":
		return printConfig(cfg, args[1:], stdout, stderr)
	case "health":
		return health.Probe(cfg.HealthAddr, stdout, stderr)
	case "reload":
		return health.RequestReload(cfg.HealthAddr, stdout, stderr)
	case "status":
		asJSON := false
		for _, a := range args[1:] {
			if a != "--json" {
				fmt.Fprintf(stderr, "clusterinit status: unknown option %q; usage: clusterinit status [--json]\n", a)
				return exitUsage
			}
			asJSON = true
		}
		return health.Status(cfg.HealthAddr, asJSON, stdout, stderr)
	case "--":
		args = args[1:]
	}
	if len(args) == 0 || strings.HasPrefix(args[0], "-") {
		fmt.Fprintf(stderr, "clusterinit: unknown option or missing command %q; usage: clusterinit [--] COMMAND [ARG...]\n", strings.Join(args, " "))
		return exitUsage
	}
	return supervise(cfg, args, stderr)
}

// printConfig prints the effective configuration; argv is the command as it
// would be run (`clusterinit config -- node --max-old-space-size=512 app.js`),
// for the heap size.
func printConfig(cfg *config.Config, argv []string, stdout, stderr io.Writer) int {
	if len(argv) > 0 && argv[0] == "--" {
		argv = argv[1:]
	}
	lim, err := limits.Detector{}.Detect(context.Background())
	if err != nil {
		fmt.Fprintln(stderr, "clusterinit: detect limits:", err)
	}
	cfg.Write(stdout)
	fmt.Fprintf(stdout, "# detected: cpu=%g (%s) memory=%d (%s) affinity=%d\n",
		lim.CPU, lim.CPUSource, lim.MemoryBytes, lim.MemorySource, lim.Affinity)
	if note := cpuNote(cfg, lim); note != "" {
		fmt.Fprintf(stdout, "# note: %s\n", note)
	}
	workers := workerCount(cfg, lim)
	fmt.Fprintf(stdout, "# workers: %d\n", workers)
	fmt.Fprintf(stdout, "# heap size per worker: %s\n",
		supervisor.DescribeHeap(cfg.HeapSize, lim.MemoryBytes, workers, cfg.Shim, userHeapSize(argv)))
	if rss := supervisor.MaxRSSBytes(cfg.MaxRSS, lim.MemoryBytes, workers); cfg.MaxRSS.Auto {
		fmt.Fprintf(stdout, "# max rss per worker: %d (MAX_RSS=auto: 90%% of the share; 0: off, no memory limit known)\n", rss)
	}
	return exitOK
}

// cpuNote is the missing-CPU-limit warning, which matters only when the
// worker count is derived from it.
func cpuNote(cfg *config.Config, lim limits.Limits) string {
	if !cfg.Workers.Auto {
		return ""
	}
	return lim.CPUNote()
}

// userHeapSize: the user set --max-old-space-size, which HEAP_SIZE never
// overrides.
func userHeapSize(argv []string) bool {
	return preload.UserHeapSize(os.Getenv("NODE_OPTIONS"), argv)
}

func workerCount(cfg *config.Config, lim limits.Limits) int {
	if cfg.Workers.Auto {
		return lim.Workers()
	}
	return cfg.Workers.N
}

// supervise is the main job: bind, fork, supervise, exit.
func supervise(cfg *config.Config, argv []string, stderr io.Writer) int {
	// Every line clusterinit writes to its stderr, its own and prefixed
	// workers', goes through one lock, so none splits another.
	errOut := supervisor.NewLineWriter(stderr)
	log := newLogger(cfg, errOut)

	// A command that cannot run fails now, before anything binds or forks.
	path, err := exec.LookPath(argv[0])
	if err != nil {
		log.Error("cannot start the command", "command", argv[0], "err", err)
		return exitFail
	}
	self, err := selfPath()
	if err != nil {
		log.Error("find clusterinit's own executable", "err", err)
		return exitFail
	}

	if err := signals.CloseInheritedFds(); err != nil {
		log.Warn("inherited fds may leak to workers", "err", err)
	}
	if err := signals.BecomeSubreaper(); err != nil {
		log.Warn("become child subreaper: orphans will not be reaped unless clusterinit is PID 1", "err", err)
	}
	// Signal intake starts before the first fork, so no SIGCHLD or SIGTERM
	// arrives unhandled.
	done := make(chan struct{})
	defer close(done)
	reaper := signals.NewReaper()
	intake := signals.NewIntake(reaper)
	intake.Start(done)
	go reaper.Run(done)

	detector := limits.Detector{}
	lim, err := detector.Detect(context.Background())
	if err != nil {
		log.Warn("detect cpu and memory limits", "err", err)
	}
	workers := workerCount(cfg, lim)
	if cfg.MinReady > workers {
		log.Warn("MIN_READY is more than the number of workers: /readyz will answer 503 until workers are added",
			"min_ready", cfg.MinReady, "workers", workers)
	}

	var addrs []string
	if !cfg.Listen.None {
		addrs = cfg.Listen.Addrs
	}
	socks, err := listeners.Open(addrs, cfg.ListenMode == config.ListenReuseport, workers)
	if err != nil {
		log.Error("bind listeners", "err", err)
		return exitFail
	}
	defer socks.Close()

	userHeap := userHeapSize(argv)
	nodeOptions := ""
	if cfg.Shim {
		nodeOptions = preload.NodeOptions(os.Getenv("NODE_OPTIONS"), preload.Options{StopSignal: cfg.StopSignal.String(), StopMessage: cfg.StopMessage, HeapFlag: !userHeap})
	}
	startAttrs := []any{"version", version, "command", strings.Join(argv, " "), "workers", workers,
		"cpu_limit", lim.CPU, "cpu_source", lim.CPUSource,
		"memory_limit", lim.MemoryBytes, "memory_source", lim.MemorySource,
		"heap_size", supervisor.DescribeHeap(cfg.HeapSize, lim.MemoryBytes, workers, cfg.Shim, userHeap),
		"listen", addrs, "listen_mode", string(cfg.ListenMode)}
	if note := cpuNote(cfg, lim); note != "" {
		startAttrs = append(startAttrs, "cpu_note", note)
	}
	log.Info("starting", startAttrs...)

	sampler, err := procsample.New("")
	if err != nil {
		log.Warn("no /proc: worker CPU and memory are not sampled, MAX_RSS and MAX_CPU do nothing", "err", err)
		sampler = nil
	}
	sup := supervisor.New(supervisor.Options{
		Config:       cfg,
		Path:         path,
		Argv:         argv,
		Workers:      workers,
		Self:         self,
		NodeOptions:  nodeOptions,
		Listeners:    socks,
		Exits:        reaper.Exits(),
		Signals:      intake.Signals(),
		Log:          log,
		Stdout:       supervisor.NewLineWriter(os.Stdout),
		Stderr:       errOut,
		Limits:       lim,
		UserHeapSize: userHeap,
		OOMKills:     detector.OOMKills,
		Headroom:     headroom(detector, lim),
		FleetUp:      func() { go releaseStartupPages(log) },
		Sampler:      sampler,
	})
	if !cfg.HealthAddr.Off {
		srv, err := health.Serve(health.Options{
			Addr: cfg.HealthAddr.HostPort, Fleet: sup, Version: version,
			MinReady: cfg.MinReady, Log: log, Config: cfg.ValueMap(),
		})
		if err != nil {
			log.Error("start health server", "err", err)
			return exitFail
		}
		defer srv.Close()
	}
	code := sup.Run()
	log.Info("exiting", "status", code)
	return code
}

// selfPath is clusterinit's own executable, which every worker starts as
// (the exec shim). /proc/self/exe is the sure way; an empty root (a chroot,
// a scratch image without /proc) has none, and then argv[0] serves.
func selfPath() (string, error) {
	if p, err := os.Executable(); err == nil {
		return p, nil
	} else if p, lerr := exec.LookPath(os.Args[0]); lerr == nil {
		return filepath.Abs(p)
	} else {
		return "", fmt.Errorf("%w; and argv[0] %q: %v", err, os.Args[0], lerr)
	}
}

// headroom reports how much more memory the container may use, when it has
// a limit.
func headroom(d limits.Detector, lim limits.Limits) func() (int64, error) {
	if lim.MemoryBytes <= 0 {
		return nil
	}
	return func() (int64, error) {
		used, err := d.MemoryUsage()
		if err != nil {
			return 0, err
		}
		return lim.MemoryBytes - used, nil
	}
}

// releaseStartupPages gives back the pages of clusterinit's executable that
// only startup used (footprint): most of its resident memory.
func releaseStartupPages(log *slog.Logger) {
	r, err := footprint.Release()
	if err != nil {
		log.Debug("release startup pages", "err", err)
		return
	}
	log.Debug("released startup pages", "rss_bytes_before", r.ResidentBefore, "rss_bytes", r.ResidentAfter,
		"file_rss_bytes_before", r.FileRSSBefore, "file_rss_bytes", r.FileRSSAfter)
}

func newLogger(cfg *config.Config, w io.Writer) *slog.Logger {
	opts := &slog.HandlerOptions{Level: cfg.LogLevel.Level()}
	if cfg.LogFormat == config.LogJSON {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}
