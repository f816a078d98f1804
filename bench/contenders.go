package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/clusterinit/clusterinit/internal/testkit"
)

type kind int

const (
	kindNode kind = iota
	kindCluster
	kindPM2
	kindClusterinit
)

// contender is one way of running the app.
type contender struct {
	Name  string // as in BENCH_CONTENDERS
	Label string // as in the tables
	kind  kind
	arg   string // cluster: the scheduling policy; clusterinit: the listen mode
	// noPreload runs clusterinit with SHIM=false and an app that takes the
	// handed socket itself: the same fleet without the preload, to show
	// what the preload costs per request. It is a reference, not a mode.
	noPreload bool
	// extraEnv is added to a clusterinit contender's environment (the
	// recycle scenario's MAX_AGE).
	extraEnv []string
	// appMain, when set, is the app that bench/app.js runs instead of
	// testdata/apps/http.js (the Next.js standalone server).
	appMain string
}

var allContenders = []contender{
	{Name: "node", Label: "node, 1 process", kind: kindNode},
	{Name: "cluster-rr", Label: "Node cluster, round-robin", kind: kindCluster, arg: "rr"},
	{Name: "cluster-none", Label: "Node cluster, SCHED_NONE", kind: kindCluster, arg: "none"},
	{Name: "pm2", Label: "PM2 cluster mode", kind: kindPM2},
	{Name: "clusterinit-shared", Label: "clusterinit shared", kind: kindClusterinit, arg: "shared"},
	{Name: "clusterinit-reuseport", Label: "clusterinit reuseport", kind: kindClusterinit, arg: "reuseport"},
	{Name: "clusterinit-nopreload", Label: "clusterinit shared, no preload", kind: kindClusterinit, arg: "shared", noPreload: true},
}

func (c contender) supervised() bool { return c.kind != kindNode }

// isClusterinit is true for clusterinit's modes, which the targets are for.
func (c contender) isClusterinit() bool {
	return c.kind == kindClusterinit && !c.noPreload
}

func (c contender) workers(s settings) int {
	if c.kind == kindNode {
		return 1
	}
	return s.Workers
}

// instance is a running contender.
type instance struct {
	c       contender
	e       *env
	workers int
	port    int
	url     string
	dir     string
	ready   string // the app appends its pid here once listening
	counts  string // the app appends "pid count" here on SIGUSR2
	cmd     *exec.Cmd
	exited  chan struct{}
	out     *testkit.Buffer
	pm2Home string
	eco     string // PM2 ecosystem file

	supPID  int           // the supervisor: clusterinit, the cluster primary, PM2's daemon
	readyIn time.Duration // from exec to every worker listening

	stopOnce   sync.Once
	unregister func()
}

// maxOutput bounds what is kept of a contender's output: enough to show why
// it failed, never the benchmark's memory.
const maxOutput = 1 << 20

// start runs contender c and waits until every worker listens and the port
// answers. readyIn is measured from just before exec to the moment the last
// worker's listen callback has run (each appends its pid to a file the
// harness polls every millisecond).
func (e *env) start(ctx context.Context, c contender) (*instance, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp(e.tmp, c.Name+"-")
	if err != nil {
		return nil, err
	}
	in := &instance{
		c: c, e: e, workers: c.workers(e.s), port: port, dir: dir,
		url:    fmt.Sprintf("http://127.0.0.1:%d", port),
		ready:  filepath.Join(dir, "ready"),
		counts: filepath.Join(dir, "counts"),
		exited: make(chan struct{}),
		out:    &testkit.Buffer{Max: maxOutput},
	}
	appEnv := []string{
		"PORT=" + strconv.Itoa(port),
		"BENCH_APP_MAIN=" + c.appMain,
		"HOSTNAME=127.0.0.1", // where the app asks to listen (Next.js), as wrk loads 127.0.0.1
		"NEXT_TELEMETRY_DISABLED=1",
		"BENCH_READY_FILE=" + in.ready,
		"BENCH_COUNT_FILE=" + in.counts,
	}
	var cmd *exec.Cmd
	switch c.kind {
	case kindNode:
		cmd = exec.Command(e.node, e.appJS)
		cmd.Env = childEnv(appEnv...)
	case kindCluster:
		cmd = exec.Command(e.node, e.primaryJS)
		cmd.Env = childEnv(append(appEnv,
			"BENCH_WORKERS="+strconv.Itoa(in.workers),
			"NODE_CLUSTER_SCHED_POLICY="+c.arg)...)
	case kindClusterinit:
		hport, err := freePort()
		if err != nil {
			return nil, err
		}
		cmd = exec.Command(e.binary, "--", e.node, e.appJS)
		cmd.Env = childEnv(append(appEnv,
			"CLUSTERINIT_WORKERS="+strconv.Itoa(in.workers),
			"CLUSTERINIT_LISTEN=127.0.0.1:"+strconv.Itoa(port),
			"CLUSTERINIT_LISTEN_MODE="+c.arg,
			"CLUSTERINIT_HEALTH_ADDR=127.0.0.1:"+strconv.Itoa(hport))...)
		if c.noPreload {
			cmd.Env = append(cmd.Env, "CLUSTERINIT_SHIM=false", "BENCH_LISTEN_FD=3")
		}
		cmd.Env = append(cmd.Env, c.extraEnv...)
	case kindPM2:
		in.pm2Home = filepath.Join(dir, "pm2home")
		in.eco = filepath.Join(dir, "ecosystem.config.js")
		if err := os.MkdirAll(in.pm2Home, 0o755); err != nil {
			return nil, err
		}
		if err := os.WriteFile(in.eco, []byte(ecosystem(e.appJS, in.workers, appEnv)), 0o644); err != nil {
			return nil, err
		}
		cmd = exec.Command(e.pm2, "start", in.eco)
		cmd.Env = in.pm2Env()
	}
	cmd.Dir = e.root
	cmd.Stdout, cmd.Stderr = in.out, in.out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	in.cmd = cmd
	// Registered before exec, so that whatever it starts is killed even if
	// the harness fails or is interrupted half-way.
	in.unregister = e.onCleanup(in.kill)

	t0 := time.Now()
	if err := cmd.Start(); err != nil {
		in.unregister()
		return nil, fmt.Errorf("%s: start: %w", c.Name, err)
	}
	go func() {
		cmd.Wait()
		close(in.exited)
	}()
	fail := func(err error) (*instance, error) {
		in.stop()
		return nil, fmt.Errorf("%s: %w\noutput:\n%s", c.Name, err, in.out.String())
	}
	for {
		if len(readPIDs(in.ready)) >= in.workers {
			in.readyIn = time.Since(t0)
			break
		}
		select {
		case <-in.exited:
			if c.kind != kindPM2 { // the pm2 CLI exits once it has asked its daemon
				return fail(fmt.Errorf("exited before %d workers were listening", in.workers))
			}
		default:
		}
		if time.Since(t0) > 30*time.Second {
			return fail(fmt.Errorf("%d workers not listening after 30s (%d are)", in.workers, len(readPIDs(in.ready))))
		}
		if ctx.Err() != nil {
			return fail(ctx.Err())
		}
		time.Sleep(time.Millisecond)
	}
	switch c.kind {
	case kindPM2:
		select {
		case <-in.exited:
		case <-time.After(30 * time.Second):
			return fail(errors.New("pm2 start did not return within 30s"))
		}
		if code := cmd.ProcessState.ExitCode(); code != 0 {
			return fail(fmt.Errorf("pm2 start exited %d", code))
		}
		b, err := os.ReadFile(filepath.Join(in.pm2Home, "pm2.pid"))
		if err != nil {
			return fail(err)
		}
		if in.supPID, err = strconv.Atoi(strings.TrimSpace(string(b))); err != nil {
			return fail(fmt.Errorf("pm2.pid: %v", err))
		}
	case kindNode:
		in.supPID = 0
	default:
		in.supPID = cmd.Process.Pid
	}
	if err := in.answers(5 * time.Second); err != nil {
		return fail(err)
	}
	return in, nil
}

// ecosystem is a PM2 ecosystem file as users write one for a plain app
// that does not send 'ready': cluster mode, PM2's default listen_timeout,
// and a kill_timeout of 5 s.
func ecosystem(script string, workers int, env []string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "module.exports = {\n  apps: [{\n    name: 'bench',\n    script: %q,\n", script)
	fmt.Fprintf(&b, "    exec_mode: 'cluster',\n    instances: %d,\n    kill_timeout: 5000,\n    env: {\n", workers)
	for _, kv := range env {
		k, v, _ := strings.Cut(kv, "=")
		fmt.Fprintf(&b, "      %s: %q,\n", k, v)
	}
	b.WriteString("    },\n  }],\n};\n")
	return b.String()
}

func (in *instance) pm2Env() []string {
	return childEnv("PM2_HOME="+in.pm2Home, "PM2_DISCRETE_MODE=true")
}

// answers waits until GET / answers 200.
func (in *instance) answers(limit time.Duration) error {
	client := http.Client{Timeout: time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	deadline := time.Now().Add(limit)
	for {
		resp, err := client.Get(in.url + "/")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return nil
			}
			err = fmt.Errorf("status %d", resp.StatusCode)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("GET %s/: %v", in.url, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// readPIDs returns the distinct pids in a ready file, in order.
func readPIDs(path string) []int {
	b, _ := os.ReadFile(path)
	var pids []int
	seen := map[int]bool{}
	for _, f := range strings.Fields(string(b)) {
		if pid, err := strconv.Atoi(f); err == nil && !seen[pid] {
			seen[pid] = true
			pids = append(pids, pid)
		}
	}
	return pids
}

// workerPIDs returns the workers alive now.
func (in *instance) workerPIDs() []int {
	var out []int
	for _, pid := range readPIDs(in.ready) {
		if alive(pid) {
			out = append(out, pid)
		}
	}
	return out
}

// triggerReload asks the supervisor for a rolling reload of every worker, as
// its users do; wait returns once the asking itself is over (pm2 reload
// returns when PM2 is done).
func (in *instance) triggerReload(ctx context.Context) (wait func() error, err error) {
	switch in.c.kind {
	case kindClusterinit, kindCluster:
		return func() error { return nil }, syscall.Kill(in.supPID, syscall.SIGHUP)
	case kindPM2:
		cmd := exec.CommandContext(ctx, in.e.pm2, "reload", in.eco)
		cmd.Env = in.pm2Env()
		cmd.Dir = in.e.root
		out := testkit.Buffer{Max: maxOutput}
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Start(); err != nil {
			return nil, err
		}
		return func() error {
			if err := cmd.Wait(); err != nil {
				return fmt.Errorf("pm2 reload: %v: %s", err, out.String())
			}
			return nil
		}, nil
	}
	return nil, fmt.Errorf("%s has no reload", in.c.Name)
}

// waitReloaded waits until every worker in old has exited and as many new
// workers listen.
func (in *instance) waitReloaded(ctx context.Context, old []int, limit time.Duration) error {
	was := map[int]bool{}
	for _, pid := range old {
		was[pid] = true
	}
	deadline := time.Now().Add(limit)
	for {
		oldLeft, fresh := 0, 0
		for _, pid := range old {
			if alive(pid) {
				oldLeft++
			}
		}
		for _, pid := range in.workerPIDs() {
			if !was[pid] {
				fresh++
			}
		}
		if oldLeft == 0 && fresh >= in.workers {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("reload not done after %s: %d old workers alive, %d new listening", limit, oldLeft, fresh)
		}
		if err := sleepCtx(ctx, 5*time.Millisecond); err != nil {
			return err
		}
	}
}

// dumpCounts makes every worker append its request count since the last
// dump to the counts file, and returns them by pid.
func (in *instance) dumpCounts() (map[int]int64, error) {
	pids := in.workerPIDs()
	before, _ := os.ReadFile(in.counts)
	for _, pid := range pids {
		syscall.Kill(pid, syscall.SIGUSR2)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		b, _ := os.ReadFile(in.counts)
		got := map[int]int64{}
		if len(b) >= len(before) {
			for _, line := range strings.Split(string(b[len(before):]), "\n") {
				f := strings.Fields(line)
				if len(f) != 2 {
					continue
				}
				pid, _ := strconv.Atoi(f[0])
				n, _ := strconv.ParseInt(f[1], 10, 64)
				got[pid] = n
			}
		}
		all := true
		for _, pid := range pids {
			if _, ok := got[pid]; !ok {
				all = false
			}
		}
		if all {
			return got, nil
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("workers %v did not all report their counts", pids)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// isApp reports whether pid still runs the bench app (and is not a process
// that reused the pid).
func isApp(pid int, appJS string) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	return err == nil && bytes.Contains(b, []byte(appJS))
}

// stop stops the contender the way its users would (SIGTERM, pm2 kill), and
// kills whatever is left.
func (in *instance) stop() {
	in.stopOnce.Do(func() {
		defer in.unregister()
		switch in.c.kind {
		case kindPM2:
			cmd := exec.Command(in.e.pm2, "kill")
			cmd.Env = in.pm2Env()
			cmd.Dir = in.e.root
			cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
			done := make(chan struct{})
			if cmd.Start() == nil {
				go func() { cmd.Wait(); close(done) }()
				select {
				case <-done:
				case <-time.After(30 * time.Second):
					syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
					<-done
				}
			}
		default:
			pid := in.cmd.Process.Pid
			sig := syscall.SIGTERM
			grace := 5 * time.Second
			if in.c.kind == kindClusterinit {
				// clusterinit drains its workers itself.
				syscall.Kill(pid, sig)
				grace = 30 * time.Second
			} else {
				syscall.Kill(-pid, sig)
			}
			select {
			case <-in.exited:
			case <-time.After(grace):
			}
		}
		in.kill()
	})
}

// kill SIGKILLs everything the contender may have left: its process group,
// PM2's daemon and its group, and every worker that ever listened.
func (in *instance) kill() {
	if in.cmd != nil && in.cmd.Process != nil {
		syscall.Kill(-in.cmd.Process.Pid, syscall.SIGKILL)
	}
	if in.pm2Home != "" {
		if b, err := os.ReadFile(filepath.Join(in.pm2Home, "pm2.pid")); err == nil {
			if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && pid > 1 && alive(pid) {
				syscall.Kill(-pid, syscall.SIGKILL)
				syscall.Kill(pid, syscall.SIGKILL)
			}
		}
		// The pid file is not enough: any pm2 command starts a new daemon,
		// detached in a session of its own, when none answers (a `pm2 kill`
		// or `pm2 reload` on a loaded machine), and one was once left
		// behind, spinning at 90% of a CPU over the deleted PM2_HOME.
		// Every process started with this PM2_HOME is the daemon or a
		// worker of it.
		for _, pid := range pidsWithEnv("PM2_HOME=" + in.pm2Home) {
			syscall.Kill(pid, syscall.SIGKILL)
		}
	}
	for _, pid := range readPIDs(in.ready) {
		if pid > 1 && alive(pid) && isApp(pid, in.e.appJS) {
			syscall.Kill(pid, syscall.SIGKILL)
		}
	}
	if in.cmd != nil && in.cmd.Process != nil {
		select {
		case <-in.exited:
		case <-time.After(5 * time.Second):
		}
	}
}
