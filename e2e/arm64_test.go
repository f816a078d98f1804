package e2e

// arm64 (Graviton): `make build GOARCH=arm64` cross-builds a static aarch64
// binary, and that binary, run under Debian's qemu-user-static through
// binfmt_misc with the official arm64 node from npm, starts two workers,
// reloads them and stops. .ci/run installs qemu and registers it.

import (
	"debug/elf"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// arm64LibDir holds the arm64 C and C++ runtime the arm64 node links
// against (Debian's libc6-arm64-cross, libstdc++6-arm64-cross,
// libatomic1-arm64-cross); qemu-user finds it through QEMU_LD_PREFIX.
const arm64LibDir = "/usr/aarch64-linux-gnu"

var arm64Build struct {
	once sync.Once
	path string
	out  []byte
	err  error
}

// arm64Binary runs `make build GOARCH=arm64` once, into the directory of
// TestMain's build.
func arm64Binary(t *testing.T) string {
	t.Helper()
	arm64Build.once.Do(func() {
		arm64Build.path = filepath.Join(filepath.Dir(binary), "clusterinit-linux-arm64")
		arm64Build.out, arm64Build.err = exec.Command("make", "--no-print-directory", "build", "GOARCH=arm64",
			"BIN="+arm64Build.path).CombinedOutput()
	})
	if arm64Build.err != nil {
		t.Fatalf("make build GOARCH=arm64: %v\n%s", arm64Build.err, arm64Build.out)
	}
	return arm64Build.path
}

func TestArm64Build(t *testing.T) {
	needLong(t)
	bin := arm64Binary(t)
	checkStatic(t, bin)
	f, err := elf.Open(bin)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if f.Machine != elf.EM_AARCH64 {
		t.Errorf("make build GOARCH=arm64: machine %v, want %v", f.Machine, elf.EM_AARCH64)
	}
}

// arm64Emulation reports why this machine cannot run arm64 binaries, if it
// cannot: qemu-aarch64 must be registered and enabled in binfmt_misc.
func arm64Emulation() error {
	const entry = "/proc/sys/fs/binfmt_misc/qemu-aarch64"
	b, err := os.ReadFile(entry)
	if err != nil {
		return fmt.Errorf("no qemu-aarch64 in binfmt_misc (apt-get install qemu-user-static; mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc; register /usr/lib/binfmt.d/qemu-aarch64.conf): %w", err)
	}
	if !strings.HasPrefix(string(b), "enabled") {
		return fmt.Errorf("%s is not enabled: %.100s", entry, b)
	}
	if _, err := os.Stat(filepath.Join(arm64LibDir, "lib", "ld-linux-aarch64.so.1")); err != nil {
		return fmt.Errorf("the arm64 C runtime for node (apt-get install libc6-arm64-cross libstdc++6-arm64-cross libatomic1-arm64-cross): %w", err)
	}
	return nil
}

// TestArm64Smoke: the arm64 binary under qemu-user, with two workers of the
// arm64 node 26, through a start, a rolling reload and a stop.
func TestArm64Smoke(t *testing.T) {
	needLong(t)
	need(t, "arm64 emulation (qemu-user-static)", arm64Emulation())
	bin := arm64Binary(t)
	nodeBin := nodeLine(t, "26", "arm64")
	path := "PATH=" + nodeBin + ":" + os.Getenv("PATH")
	ld := "QEMU_LD_PREFIX=" + arm64LibDir

	// The node the workers will find first on PATH is arm64's.
	out, err := exec.Command("env", path, ld, "node", "-p", "process.arch").CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != "arm64" {
		t.Fatalf("node -p process.arch on PATH %s: %q, %v; want arm64", nodeBin, out, err)
	}

	port := freePort(t)
	env := testEnv(path, ld,
		"CLUSTERINIT_WORKERS=2",
		fmt.Sprintf("CLUSTERINIT_LISTEN=:%d", port),
		fmt.Sprintf("PORT=%d", port),
		"CLUSTERINIT_LOG_LEVEL=info")
	// Emulated, node takes seconds to start.
	p := startArgv(t, false, env, bin, "--", "node", "testdata/apps/http.js")
	url := fmt.Sprintf("http://127.0.0.1:%d/", port)
	before := map[int]string{}
	for _, l := range p.waitLog("worker ready", 2, 120*time.Second) {
		before[num(l, "pid")] = fmt.Sprint(num(l, "slot"))
	}
	everyAppWorkerAnswers(t, url, before)

	t0 := time.Now()
	p.signal(syscall.SIGHUP)
	p.waitLog("rolling reload done", 1, 240*time.Second)
	after := map[int]string{}
	for _, l := range p.logsWith("worker ready") {
		if pid := num(l, "pid"); before[pid] == "" {
			after[pid] = fmt.Sprint(num(l, "slot"))
		}
	}
	if len(after) != 2 {
		t.Fatalf("replacement workers (pid → slot) %v, want one per slot", after)
	}
	waitExits(t, p, before)
	everyAppWorkerAnswers(t, url, after)
	reload := time.Since(t0)

	stopAppCleanly(t, p)
	t.Logf("arm64 clusterinit with arm64 node 26 under qemu-user: 2 workers answered, reload in %v, stopped with exit 0",
		reload.Round(time.Millisecond))
}
