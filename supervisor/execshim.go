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
)

// ExecShimArg is the hidden first argument with which clusterinit re-executes
// itself as the first image of every worker. The shim runs in the worker's
// own process, so it can set LISTEN_PID to that process's pid (which os/exec
// cannot do between fork and exec) and drop privileges, and then replaces
// itself with the real command: the worker's pid never changes.
const ExecShimArg = "__clusterinit_exec"

// shimArgs builds the shim's arguments: credentials ("-" for none, or
// "uid:gid"), the resolved command path, then the command's argv.
func shimArgs(self string, cred string, path string, argv []string) []string {
	return append([]string{self, ExecShimArg, cred, path}, argv...)
}

// ExecShim is the shim's main; it returns an exit status only when exec
// failed (127 not found, 126 not executable, as shells do).
func ExecShim(args []string) int {
	if len(args) < 3 {
		fmt.Fprintln(os.Stderr, "clusterinit: exec shim: missing arguments")
		return 127
	}
	cred, path, argv := args[0], args[1], args[2:]
	// no_new_privs (below) is a per-thread setting inherited through exec
	// only by the thread that calls it: keep everything on one thread.
	runtime.LockOSThread()
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
	err := syscall.Exec(path, argv, env)
	fmt.Fprintf(os.Stderr, "clusterinit: exec %s: %v\n", path, err)
	if errors.Is(err, syscall.ENOENT) {
		return 127
	}
	return 126
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
	out := withoutEnv(env, key)
	return append(out, key+"="+value)
}

// withoutEnv returns env without any entry for the given keys.
func withoutEnv(env []string, keys ...string) []string {
	out := make([]string, 0, len(env))
outer:
	for _, kv := range env {
		k, _, _ := strings.Cut(kv, "=")
		for _, drop := range keys {
			if k == drop {
				continue outer
			}
		}
		out = append(out, kv)
	}
	return out
}
