package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"time"
)

// pm2Version is the PM2 release the bench installs from npm (the latest at
// the time of writing), pinned so that reruns compare the same thing.
const pm2Version = "7.0.4"

// env is everything a run needs: tools, paths and the cleanups of what it
// started.
type env struct {
	s          settings
	log        io.Writer
	root       string // the repository
	tmp        string // removed at the end
	wrk        string
	wrkScript  string
	pm2        string // the pm2 CLI
	node       string
	binary     string // clusterinit
	appJS      string
	nextServer string // testdata/nextjs's standalone server.js, for the real-app scenario
	primaryJS  string

	machine  machineInfo
	versions versions

	quietBudget time.Duration // what is left of QuietWait

	mu       sync.Mutex
	next     int
	cleanups map[int]func()
}

type machineInfo struct {
	NCPU     int
	CPUModel string
	MemGiB   float64
	Kernel   string
}

type versions struct {
	Node, PM2, Wrk, Clusterinit, Go string
}

func (e *env) logf(format string, args ...any) {
	fmt.Fprintf(e.log, "bench: "+format+"\n", args...)
}

// onCleanup registers f to run at the end of the run, even a failed or
// interrupted one; the returned function unregisters it.
func (e *env) onCleanup(f func()) (unregister func()) {
	e.mu.Lock()
	defer e.mu.Unlock()
	id := e.next
	e.next++
	e.cleanups[id] = f
	return func() {
		e.mu.Lock()
		defer e.mu.Unlock()
		delete(e.cleanups, id)
	}
}

// close runs every cleanup still registered, newest first, and removes the
// temporary directory.
func (e *env) close() {
	e.mu.Lock()
	fs := e.cleanups
	e.cleanups = map[int]func(){}
	e.mu.Unlock()
	for id := e.next - 1; id >= 0; id-- {
		if f, ok := fs[id]; ok {
			f()
		}
	}
	if e.tmp != "" {
		os.RemoveAll(e.tmp)
	}
}

// prepare finds or installs the tools, builds clusterinit unless given one,
// and records the machine and the versions.
func prepare(ctx context.Context, s settings) (*env, error) {
	e := &env{s: s, log: s.Log, cleanups: map[int]func(){}, quietBudget: s.QuietWait}
	if e.log == nil {
		e.log = os.Stderr
	}
	root, err := findRoot(s.Root)
	if err != nil {
		return nil, err
	}
	e.root = root
	e.appJS = filepath.Join(root, "bench", "app.js")
	e.primaryJS = filepath.Join(root, "bench", "cluster-primary.js")
	if s.NextDuration > 0 {
		e.nextServer = filepath.Join(root, "testdata", "nextjs", ".next", "standalone", "server.js")
		if _, err := os.Stat(e.nextServer); err != nil {
			return nil, fmt.Errorf("the Next.js scenario needs the standalone build (bash testdata/setup-node-apps.sh; BENCH_NEXT_DURATION=0 skips it): %w", err)
		}
	}
	if e.tmp, err = os.MkdirTemp("", "clusterinit-bench-"); err != nil {
		return nil, err
	}
	ok := false
	defer func() {
		if !ok {
			e.close()
		}
	}()
	if e.wrkScript, err = writeWrkScript(e.tmp); err != nil {
		return nil, err
	}
	if e.node, err = exec.LookPath("node"); err != nil {
		return nil, errors.New("node not found in PATH")
	}
	if e.wrk, err = ensureWrk(ctx, e); err != nil {
		return nil, err
	}
	if e.pm2, err = ensurePM2(ctx, e); err != nil {
		return nil, err
	}
	if e.binary, err = ensureClusterinit(ctx, e); err != nil {
		return nil, err
	}
	e.machine = readMachine()
	e.versions = readVersions(ctx, e)
	ok = true
	return e, nil
}

// installTools installs wrk and PM2 where prepare finds them, so that CI
// can take their download out of the smoke test's deadline.
func installTools(ctx context.Context, s settings) error {
	e := &env{s: s, log: s.Log}
	var err error
	if e.root, err = findRoot(s.Root); err != nil {
		return err
	}
	if _, err = ensureWrk(ctx, e); err != nil {
		return err
	}
	_, err = ensurePM2(ctx, e)
	return err
}

// findRoot returns the repository root: dir if given, else the nearest
// parent of the working directory holding clusterinit's go.mod.
func findRoot(dir string) (string, error) {
	if dir != "" {
		return filepath.Abs(dir)
	}
	wd, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for d := wd; ; d = filepath.Dir(d) {
		b, err := os.ReadFile(filepath.Join(d, "go.mod"))
		if err == nil && strings.Contains(string(b), "module github.com/clusterinit/clusterinit\n") {
			return d, nil
		}
		if filepath.Dir(d) == d {
			return "", fmt.Errorf("no clusterinit go.mod above %s", wd)
		}
	}
}

// ensureWrk finds wrk, or installs Debian's package.
func ensureWrk(ctx context.Context, e *env) (string, error) {
	if p, err := exec.LookPath("wrk"); err == nil {
		return p, nil
	}
	e.logf("wrk not found: apt-get install -y wrk")
	for _, args := range [][]string{{"update", "-qq"}, {"install", "-y", "-qq", "wrk"}} {
		cmd := exec.CommandContext(ctx, "apt-get", args...)
		cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
		if out, err := cmd.CombinedOutput(); err != nil {
			return "", fmt.Errorf("apt-get %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	return exec.LookPath("wrk")
}

// ensurePM2 installs PM2 from npm into bench/.cache/pm2 (gitignored) unless
// the pinned version is already there. One install at a time: `make bench`
// and the smoke test may run together.
func ensurePM2(ctx context.Context, e *env) (string, error) {
	dir := filepath.Join(e.root, "bench", ".cache", "pm2")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	lock, err := os.OpenFile(filepath.Join(dir, ".lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return "", err
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "node_modules", ".bin", "pm2")
	if v := packageVersion(filepath.Join(dir, "node_modules", "pm2", "package.json")); v == pm2Version {
		if _, err := os.Stat(bin); err == nil {
			return bin, nil
		}
	}
	e.logf("installing pm2@%s from npm into %s", pm2Version, dir)
	cmd := exec.CommandContext(ctx, "npm", "install", "--no-audit", "--no-fund", "--no-save",
		"--no-package-lock", "--loglevel=error", "--prefix", dir, "pm2@"+pm2Version)
	cmd.Env = append(os.Environ(), "npm_config_update_notifier=false")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("npm install pm2@%s: %v\n%s", pm2Version, err, out)
	}
	if _, err := os.Stat(bin); err != nil {
		return "", fmt.Errorf("npm install pm2@%s left no %s", pm2Version, bin)
	}
	return bin, nil
}

func packageVersion(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	var p struct{ Version string }
	json.Unmarshal(b, &p)
	return p.Version
}

// ensureClusterinit returns the binary to benchmark: the one given, or one
// built from the repository into the temporary directory.
func ensureClusterinit(ctx context.Context, e *env) (string, error) {
	if e.s.Binary != "" {
		p, err := filepath.Abs(e.s.Binary)
		if err != nil {
			return "", err
		}
		if _, err := os.Stat(p); err != nil {
			return "", fmt.Errorf("clusterinit binary: %w", err)
		}
		return p, nil
	}
	p := filepath.Join(e.tmp, "clusterinit")
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-ldflags",
		"-s -w -X main.version="+gitDescribe(ctx, e.root), "-o", p, ".")
	cmd.Dir = e.root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build clusterinit: %v\n%s", err, out)
	}
	return p, nil
}

func gitDescribe(ctx context.Context, root string) string {
	cmd := exec.CommandContext(ctx, "git", "describe", "--tags", "--always", "--dirty")
	cmd.Dir = root
	out, err := cmd.Output()
	if err != nil {
		return "dev"
	}
	return strings.TrimSpace(string(out))
}

func readMachine() machineInfo {
	m := machineInfo{NCPU: runtime.NumCPU(), CPUModel: "unknown"}
	if f, err := os.Open("/proc/cpuinfo"); err == nil {
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if k, v, ok := strings.Cut(sc.Text(), ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPUModel = strings.TrimSpace(v)
				break
			}
		}
		f.Close()
	}
	if kb, err := statusField("/proc/meminfo", "MemTotal:"); err == nil {
		m.MemGiB = float64(kb) / (1 << 20)
	}
	var u syscall.Utsname
	if syscall.Uname(&u) == nil {
		var b []byte
		for _, c := range u.Release {
			if c == 0 {
				break
			}
			b = append(b, byte(c))
		}
		m.Kernel = string(b)
	}
	return m
}

func readVersions(ctx context.Context, e *env) versions {
	out := func(name string, args ...string) string {
		b, _ := exec.CommandContext(ctx, name, args...).CombinedOutput()
		line, _, _ := strings.Cut(strings.TrimSpace(string(b)), "\n")
		return line
	}
	v := versions{
		Node:        out(e.node, "--version"),
		PM2:         packageVersion(filepath.Join(filepath.Dir(filepath.Dir(e.pm2)), "pm2", "package.json")),
		Clusterinit: gitDescribe(ctx, e.root),
		Go:          runtime.Version(),
	}
	// `wrk -v` prints its version line and exits 1.
	if f := strings.Fields(out(e.wrk, "-v")); len(f) > 1 {
		v.Wrk = f[1]
	}
	if bv := strings.TrimPrefix(out(e.binary, "version"), "clusterinit "); bv != "" && bv != v.Clusterinit {
		v.Clusterinit += " (binary: " + bv + ")"
	}
	return v
}

// freePort returns a loopback TCP port that was free a moment ago.
func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// childEnv is the environment every contender starts with: the bench's own,
// less anything that would change what is measured (HOSTNAME: the app
// binds it when set, and a container's name is not loopback).
func childEnv(extra ...string) []string {
	var out []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		switch {
		case strings.HasPrefix(k, "CLUSTERINIT_"), strings.HasPrefix(k, "BENCH_"),
			strings.HasPrefix(k, "PM2_"), strings.HasPrefix(k, "NODE_"),
			k == "HOSTNAME", k == "PORT":
			continue
		}
		out = append(out, kv)
	}
	return append(out, extra...)
}

// sleepCtx sleeps d unless ctx ends first.
func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
