package supervisor

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/clusterinit/clusterinit/preload"
)

// ExecShimArg is the hidden first argument with which clusterinit re-executes
// itself as the first image of every worker. The shim runs in the worker's
// own process, so it can set LISTEN_PID to that process's pid (which os/exec
// cannot do between fork and exec) and drop privileges, and then replaces
// itself with the real command: the worker's pid never changes.
const ExecShimArg = "__clusterinit_exec"

// shimArgs builds the shim's arguments: clusterinit's pid (the parent the
// shim expects), credentials ("-" for none, or "uid:gid"), the resolved
// command path, then the command's argv.
func shimArgs(self string, parent int, cred string, path string, argv []string) []string {
	return append([]string{self, ExecShimArg, strconv.Itoa(parent), cred, path}, argv...)
}

// oomScoreAdjRaise is how much a worker's oom_score_adj is above
// clusterinit's. The OOM killer adds oom_score_adj/1000 of the memory limit
// to each candidate's size, so half the limit on top of a worker's own
// memory always outweighs clusterinit's few MiB: the kernel picks a worker
// (the biggest, as they all get the same raise), never the supervisor that
// would restart it. A raise, unlike a cut, needs no privilege.
const oomScoreAdjRaise = 500

// ExecShim is the shim's main; it returns an exit status only when exec
// failed (127 not found, 126 not executable, as shells do) or clusterinit
// died before the worker could be tied to it (1).
func ExecShim(args []string) int {
	if len(args) < 4 {
		fmt.Fprintln(os.Stderr, "clusterinit: exec shim: missing arguments")
		return 127
	}
	parent, err := strconv.Atoi(args[0])
	if err != nil {
		fmt.Fprintf(os.Stderr, "clusterinit: exec shim: parent pid %q: %v\n", args[0], err)
		return 127
	}
	cred, path, argv := args[1], args[2], args[3:]
	// no_new_privs (below) is a per-thread setting inherited through exec
	// only by the thread that calls it, and so is the parent-death signal's
	// tie to the forking thread: keep everything on one thread.
	runtime.LockOSThread()
	if err := raiseOOMScoreAdj(oomScoreAdjRaise); err != nil {
		// The worker runs anyway; only the OOM killer's choice is affected.
		fmt.Fprintf(os.Stderr, "clusterinit: exec shim: %v\n", err)
	}
	env := os.Environ()
	if os.Getenv("LISTEN_FDS") != "" {
		env = setEnv(env, "LISTEN_PID", strconv.Itoa(os.Getpid()))
	}
	if cred != "-" {
		if err := dropPrivileges(cred); err != nil {
			fmt.Fprintf(os.Stderr, "clusterinit: drop privileges to %s: %v\n", cred, err)
			return 126
		}
		// A worker running as USER must not regain root through a
		// set-user-ID program in the image (su, mount, passwd…).
		if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
			fmt.Fprintf(os.Stderr, "clusterinit: set no_new_privs: %v\n", err)
			return 126
		}
	}
	// After dropping privileges: a change of credentials clears the
	// parent-death signal.
	if err := dieWithParent(parent); err != nil {
		fmt.Fprintf(os.Stderr, "clusterinit: exec shim: %v\n", err)
		return 1
	}
	err = syscall.Exec(path, argv, env)
	fmt.Fprintf(os.Stderr, "clusterinit: exec %s: %v\n", path, err)
	if errors.Is(err, syscall.ENOENT) {
		return 127
	}
	return 126
}

// dieWithParent makes the kernel SIGKILL this process (and, after execve,
// the worker) when clusterinit dies, so no worker outlives it when it is
// killed without stopping them and is not PID 1 (as PID 1 its namespace
// dies with it). The setting survives execve of a program that is not
// set-user-ID; a change of credentials clears it, so it is made last.
//
// The kernel sends it when the *thread* that forked this process exits
// (golang/go#27505), not only when the whole of clusterinit does: the
// supervisor forks every worker from its loop goroutine, which Run locks to
// one OS thread for its whole life, so that thread exits only with the
// process.
//
// A parent that died before the prctl sends nothing, so the parent is
// checked after it: the shim has then already been handed to a subreaper
// or init.
func dieWithParent(parent int) error {
	if err := unix.Prctl(unix.PR_SET_PDEATHSIG, uintptr(unix.SIGKILL), 0, 0, 0); err != nil {
		return fmt.Errorf("set parent-death signal: %w", err)
	}
	if ppid := os.Getppid(); ppid != parent {
		return fmt.Errorf("clusterinit (pid %d) exited before this worker started (its parent is now pid %d): not starting it", parent, ppid)
	}
	return nil
}

// raiseOOMScoreAdj sets this process's oom_score_adj (inherited from
// clusterinit) by raise higher, up to the kernel's maximum of 1000. The
// worker and everything it starts inherit it.
func raiseOOMScoreAdj(raise int) error {
	const file = "/proc/self/oom_score_adj"
	b, err := os.ReadFile(file)
	if err != nil {
		return fmt.Errorf("raise oom_score_adj: %w", err)
	}
	cur, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		return fmt.Errorf("raise oom_score_adj: parse %s: %w", file, err)
	}
	if err := os.WriteFile(file, []byte(strconv.Itoa(min(cur+raise, 1000))), 0); err != nil {
		return fmt.Errorf("raise oom_score_adj: %w", err)
	}
	return nil
}

// dropPrivileges clears supplementary groups, then sets gid before uid (after
// setuid the process could no longer change its gid). Go applies these to
// every thread.
func dropPrivileges(cred string) error {
	u, g, ok := strings.Cut(cred, ":")
	if !ok {
		return fmt.Errorf("want uid:gid, got %q", cred)
	}
	uid, err := strconv.Atoi(u)
	if err != nil {
		return err
	}
	gid, err := strconv.Atoi(g)
	if err != nil {
		return err
	}
	if err := syscall.Setgroups(nil); err != nil {
		return fmt.Errorf("setgroups: %w", err)
	}
	if err := syscall.Setgid(gid); err != nil {
		return fmt.Errorf("setgid %d: %w", gid, err)
	}
	if err := syscall.Setuid(uid); err != nil {
		return fmt.Errorf("setuid %d: %w", uid, err)
	}
	return nil
}

// setEnv returns env with key set to value, replacing any earlier entry.
func setEnv(env []string, key, value string) []string {
	return append(preload.WithoutEnv(env, key), key+"="+value)
}
