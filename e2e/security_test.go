package e2e

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Checks behind docs/security.md. Tests for findings that still need a code
// change start with t.Skip naming the finding; the line goes with the fix.

// secSecrets returns environment entries that look like what a task
// definition passes to an app, each with a value unique to this run, and
// the values alone.
func secSecrets(t *testing.T) (env []string, values map[string]string) {
	t.Helper()
	values = map[string]string{}
	for _, name := range []string{
		"AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "DATABASE_PASSWORD",
		"DATABASE_URL", "GITHUB_TOKEN", "NPM_TOKEN", "API_KEY",
	} {
		b := make([]byte, 12)
		if _, err := rand.Read(b); err != nil {
			t.Fatal(err)
		}
		v := "sekrit-" + hex.EncodeToString(b)
		if name == "DATABASE_URL" {
			v = "postgres://app:" + v + "@db.internal:5432/app"
		}
		values[name] = v
		env = append(env, name+"="+v)
	}
	return env, values
}

// secCheck fails the test if text holds any of the secret values.
func secCheck(t *testing.T, where, text string, values map[string]string) {
	t.Helper()
	for name, v := range values {
		if strings.Contains(text, v) {
			t.Errorf("%s shows the value of %s", where, name)
		}
	}
}

// Secrets in clusterinit's environment (which the workers inherit, as SPEC
// requires) never appear in `clusterinit config`, its problem lines, the
// health server's answers, the `health` and `reload` commands, or the logs
// of a fleet that starts, crashes, restarts, reloads and stops.
func TestSecretsNeverPrinted(t *testing.T) {
	secretEnv, values := secSecrets(t)

	code, stdout, stderr := runCLI(t, testEnv(secretEnv...), "config")
	if code != 0 {
		t.Fatalf("config: exit %d: %s", code, stderr)
	}
	secCheck(t, "clusterinit config", stdout+stderr, values)

	code, stdout, stderr = runCLI(t, testEnv(append(secretEnv, "CLUSTERINIT_WORKERS=many", "CLUSTERINIT_MAX_RS=1")...), "config")
	if code != 2 {
		t.Errorf("config with invalid variables: exit %d, want 2", code)
	}
	secCheck(t, "the problem lines of clusterinit config", stdout+stderr, values)

	health := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	listen := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	extra := append(slices.Clone(secretEnv),
		"CITEST_DIR="+t.TempDir(),
		"CLUSTERINIT_HEALTH_ADDR="+health, "CLUSTERINIT_LISTEN="+listen,
		"CLUSTERINIT_MIN_UPTIME=100ms", "CLUSTERINIT_RESTART_DELAY=10ms")
	env, args := helper("crashonce", extra...)
	p := start(t, false, fleetEnv(2, env...), args...)
	base := "http://" + health
	waitHealthUp(t, base)
	p.waitUp(2)
	p.waitLog("worker exited unexpectedly", 2, 10*time.Second)

	for _, path := range []string{"/healthz", "/readyz", "/status", "/metrics"} {
		code, body, err := fetch("GET", base+path)
		if err != nil || code != http.StatusOK {
			t.Errorf("GET %s = %d, %v", path, code, err)
		}
		secCheck(t, "GET "+path, body, values)
	}
	cliEnv := testEnv(append(slices.Clone(secretEnv), "CLUSTERINIT_HEALTH_ADDR="+health)...)
	code, stdout, stderr = runCLI(t, cliEnv, "health")
	if code != 0 {
		t.Errorf("clusterinit health: exit %d: %s%s", code, stdout, stderr)
	}
	secCheck(t, "clusterinit health", stdout+stderr, values)
	code, stdout, stderr = runCLI(t, cliEnv, "reload")
	if code != 0 {
		t.Errorf("clusterinit reload: exit %d: %s%s", code, stdout, stderr)
	}
	secCheck(t, "clusterinit reload", stdout+stderr, values)
	p.waitLog("rolling reload done", 1, 60*time.Second)

	p.signal(syscall.SIGTERM)
	if code := p.wait(20 * time.Second); code != 0 {
		t.Errorf("exit code %d, want 0", code)
	}
	if len(p.logs()) < 10 {
		t.Fatalf("too few log lines to mean anything:\n%s", p.stderr.String())
	}
	secCheck(t, "clusterinit's log (stderr, debug level)", p.stderr.String(), values)
	secCheck(t, "clusterinit's stdout", p.stdout.String(), values)
}

// The one place clusterinit prints the value of a variable it does not know
// is the "unknown variable" problem line. A CLUSTERINIT_* name that looks
// like it holds a secret must have its value masked there; other typos keep
// showing their value, as the README documents.
func TestUnknownSecretLookingVariableIsMasked(t *testing.T) {
	_, values := secSecrets(t)
	secret := values["API_KEY"]
	for _, name := range []string{"CLUSTERINIT_API_TOKEN", "CLUSTERINIT_SECRET", "CLUSTERINIT_DB_PASSWORD", "CLUSTERINIT_PRIVATE_KEY"} {
		code, stdout, stderr := runCLI(t, testEnv(name+"="+secret), "config")
		if code != 2 {
			t.Errorf("%s: exit %d, want 2", name, code)
		}
		if !strings.Contains(stderr, name) || !strings.Contains(stderr, "unknown variable") {
			t.Errorf("%s: the problem line does not name the variable: %q", name, stderr)
		}
		if strings.Contains(stdout+stderr, secret) {
			t.Errorf("%s: the value is printed: %q", name, stderr)
		}
	}
	_, _, stderr := runCLI(t, testEnv("CLUSTERINIT_WORKRES=2"), "config")
	if !strings.Contains(stderr, `CLUSTERINIT_WORKRES="2"`) {
		t.Errorf("a plain typo no longer shows its value: %q", stderr)
	}
}

// secProbe runs as the worker: it prints the lines of its /proc status that
// say who it is and what it may do, and lists its open fds with what they
// point to (ls runs as a child while the shell itself holds no fd of its
// own), then sleeps until it is stopped.
const secProbe = `grep -E '^(Uid|Gid|Groups|CapInh|CapPrm|CapEff|CapAmb|NoNewPrivs):' /proc/$$/status | sed 's/^/probe-status /'
echo probe-fds
ls -l /proc/$$/fd
echo probe-done
exec sleep 60`

// secProbeOutput waits for the probe's report and returns its status lines
// (field -> value) and fds (number -> target).
func secProbeOutput(t *testing.T, p *proc) (map[string]string, map[string]string) {
	t.Helper()
	waitFor(t, 10*time.Second, "the probe worker's report", func() bool {
		return strings.Contains(p.stdout.String(), "probe-done")
	})
	status, fds := map[string]string{}, map[string]string{}
	inFDs := false
	for _, line := range strings.Split(p.stdout.String(), "\n") {
		switch {
		case line == "probe-fds":
			inFDs = true
		case line == "probe-done":
			inFDs = false
		case strings.HasPrefix(line, "probe-status "):
			k, v, _ := strings.Cut(strings.TrimPrefix(line, "probe-status "), ":")
			status[k] = strings.Join(strings.Fields(v), " ")
		case inFDs:
			// "lrwx------ 1 nobody nogroup 64 Nov 23 20:23 3 -> socket:[578153]"
			f := strings.Fields(line)
			if len(f) >= 3 && f[len(f)-2] == "->" {
				fds[f[len(f)-3]] = f[len(f)-1]
			}
		}
	}
	return status, fds
}

// With USER, the worker keeps no trace of root: real, effective, saved and
// filesystem ids are all the user's (so setuid(0) is refused), supplementary
// groups are cleared even when clusterinit has some, and it holds no
// capability. clusterinit itself runs here with groups 4 and 27.
func TestWorkersCannotRegainRoot(t *testing.T) {
	if os.Getuid() != 0 {
		t.Fatal("this test needs root (CI runs as root)")
	}
	env := fleetEnv(1, "CLUSTERINIT_USER=65534:65534", fmt.Sprintf("CLUSTERINIT_LISTEN=127.0.0.1:%d", freePort(t)))
	p := startArgv(t, false, env, "setpriv", "--groups", "4,27", "--", binary, "--", "sh", "-c", secProbe)
	status, fds := secProbeOutput(t, p)
	want := map[string]string{
		"Uid":    "65534 65534 65534 65534",
		"Gid":    "65534 65534 65534 65534",
		"Groups": "",
		"CapInh": "0000000000000000",
		"CapPrm": "0000000000000000",
		"CapEff": "0000000000000000",
		"CapAmb": "0000000000000000",
	}
	for k, v := range want {
		if got, ok := status[k]; !ok || got != v {
			t.Errorf("worker %s: %q, want %q", k, got, v)
		}
	}
	// The listening socket bound as root is handed over (fd 3), with the
	// IPC channel after it.
	if !strings.HasPrefix(fds["3"], "socket:") || !strings.HasPrefix(fds["4"], "socket:") {
		t.Errorf("worker fds %v: want the listener as fd 3 and the IPC socket as fd 4", fds)
	}
	t.Logf("worker NoNewPrivs: %s", status["NoNewPrivs"])
	p.signal(syscall.SIGTERM)
	if code := p.wait(10 * time.Second); code != 0 {
		t.Errorf("exit code %d, want 0", code)
	}
}

// With USER, a set-user-ID-root program in the image must not give the
// worker root back: no_new_privs is set before the command is executed.
func TestWorkerNoNewPrivs(t *testing.T) {
	if os.Getuid() != 0 {
		t.Fatal("this test needs root (CI runs as root)")
	}
	dir := t.TempDir()
	suid := filepath.Join(dir, "suid-id")
	idBin, err := os.ReadFile("/usr/bin/id")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(suid, idBin, 0o755); err != nil {
		t.Fatal(err)
	}
	// chmod(2) after the write: the set-user-ID bit is what is tested.
	if err := os.Chmod(suid, 0o755|os.ModeSetuid); err != nil {
		t.Fatal(err)
	}
	// t.TempDir and its parent are private to root; nobody must reach the
	// program.
	os.Chmod(dir, 0o755)
	os.Chmod(filepath.Dir(dir), 0o755)
	probe := `echo "probe-euid $(` + suid + ` -u)"; ` + secProbe
	env := fleetEnv(1, "CLUSTERINIT_USER=65534:65534")
	p := start(t, false, env, "--", "sh", "-c", probe)
	status, _ := secProbeOutput(t, p)
	if status["NoNewPrivs"] != "1" {
		t.Errorf("worker NoNewPrivs: %q, want 1", status["NoNewPrivs"])
	}
	if !strings.Contains(p.stdout.String(), "probe-euid 65534") {
		t.Errorf("a set-user-ID-root program run by the worker got: %q", p.stdout.String())
	}
}

// A worker gets fds 0-2, the listeners and its IPC channel, and nothing
// else clusterinit happened to inherit from whatever started it (here fd 7,
// opened without close-on-exec by a wrapper shell).
func TestWorkerGetsOnlyHandedFDs(t *testing.T) {
	env := fleetEnv(1, fmt.Sprintf("CLUSTERINIT_LISTEN=127.0.0.1:%d", freePort(t)))
	p := startArgv(t, false, env, "sh", "-c", `exec 7</dev/null; exec "$@"`, "sh", binary, "--", "sh", "-c", secProbe)
	_, fds := secProbeOutput(t, p)
	var got []string
	for n := range fds {
		got = append(got, n)
	}
	slices.Sort(got)
	if want := []string{"0", "1", "2", "3", "4"}; !slices.Equal(got, want) {
		t.Errorf("worker fds %v (%v), want exactly %v", got, fds, want)
	}
}
