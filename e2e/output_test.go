package e2e

import (
	"fmt"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Eight workers write 64 KiB lines at once: with WORKER_LOG_PREFIX every line
// comes out whole, prefixed with its slot, never cut by another worker's
// (or by clusterinit's own log lines on stderr).
func TestPrefixedLogsStayWhole(t *testing.T) {
	env, args := helper("biglines")
	p := start(t, false, fleetEnv(8, append(env, "CLUSTERINIT_WORKER_LOG_PREFIX=true")...), args...)
	p.waitUp(8)
	p.signal(syscall.SIGTERM)
	if code := p.wait(20 * time.Second); code != 0 {
		t.Fatalf("exit code %d", code)
	}
	for name, out := range map[string]string{"stdout": p.stdout.String(), "stderr": p.stderr.String()} {
		perSlot := map[int]int{}
		for _, line := range strings.Split(out, "\n") {
			if line == "" || strings.HasPrefix(line, "{") || strings.Contains(line, "helper up") {
				continue // clusterinit's JSON log lines, the helpers' greeting
			}
			var slot int
			if _, err := fmt.Sscanf(line, "[worker %d] ", &slot); err != nil {
				t.Fatalf("%s: line without prefix: %.80q", name, line)
			}
			body := line[len(fmt.Sprintf("[worker %d] ", slot)):]
			want := strings.Repeat(string(rune('a'+slot)), 64<<10)
			if body != want {
				t.Fatalf("%s: line of slot %d is not whole: %d bytes, starts %.40q", name, slot, len(body), body)
			}
			perSlot[slot]++
		}
		for slot := 0; slot < 8; slot++ {
			if perSlot[slot] != 20 {
				t.Errorf("%s: %d whole lines from slot %d, want 20", name, perSlot[slot], slot)
			}
		}
	}
}

// What a worker writes just before it exits, a last line without a newline
// included, is out before clusterinit exits: its copy is flushed first.
func TestPrefixedLastWordsSurviveExit(t *testing.T) {
	const size = 256 << 10 // several pipe buffers
	for i := 0; i < 5; i++ {
		env, args := helper("serve")
		p := start(t, false, fleetEnv(1, append(env, "CLUSTERINIT_WORKER_LOG_PREFIX=true", "CITEST_LAST_WORDS="+strconv.Itoa(size))...), args...)
		p.waitUp(1)
		p.signal(syscall.SIGTERM)
		if code := p.wait(20 * time.Second); code != 0 {
			t.Fatalf("exit code %d", code)
		}
		want := "[worker 0] " + strings.Repeat("z", size-1) + "!\n"
		if out := p.stdout.String(); !strings.HasSuffix(out, want) {
			t.Fatalf("run %d: stdout ends %q (%d bytes), want the whole last line", i, tail(out[max(0, len(out)-60):], 1), len(out))
		}
	}
}

// Without the prefix, workers write straight to clusterinit's own stdout.
func TestUnprefixedOutputGoesStraightThrough(t *testing.T) {
	env, args := helper("serve")
	p := start(t, false, fleetEnv(1, env...), args...)
	p.waitUp(1)
	if !strings.HasPrefix(p.stdout.String(), "helper up slot=0") {
		t.Errorf("stdout %q, want the worker's line unchanged", p.stdout.String())
	}
}
