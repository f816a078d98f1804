package supervisor

import (
	"strings"
	"syscall"
	"testing"

	"github.com/clusterinit/clusterinit/config"
	"github.com/clusterinit/clusterinit/preload"
)

func TestHeapSizeMiB(t *testing.T) {
	auto, off := config.HeapSize{Auto: true}, config.HeapSize{Off: true}
	for _, tc := range []struct {
		h       config.HeapSize
		limit   int64
		workers int
		want    int64
	}{
		{auto, 512 << 20, 2, 115}, // 256 MiB share: 179 − 64
		{auto, 1 << 30, 2, 294},   // 512 MiB share: 358 − 64
		{auto, 1 << 30, 3, 174},   // 341 MiB share
		{auto, 4 << 30, 2, 1369},  // 2 GiB share
		{auto, 256 << 20, 4, 32},  // 64 MiB share: the floor
		{auto, 0, 2, 0},           // no limit: Node's default
		{auto, 1 << 30, 0, 652},   // no slots counts as one
		{off, 1 << 30, 2, 0},      // Node's default
		{config.HeapSize{Size: 700 << 20}, 0, 2, 700},
	} {
		if got := HeapSizeMiB(tc.h, tc.limit, tc.workers); got != tc.want {
			t.Errorf("HeapSizeMiB(%v, %d MiB, %d) = %d, want %d", tc.h, tc.limit>>20, tc.workers, got, tc.want)
		}
	}
}

func TestMaxRSSBytes(t *testing.T) {
	if got := MaxRSSBytes(config.MemLimit{Auto: true}, 1<<30, 2); got != 483183820 {
		t.Errorf("auto, 1 GiB, 2 workers: %d", got)
	}
	if got := MaxRSSBytes(config.MemLimit{Auto: true}, 0, 2); got != 0 {
		t.Errorf("auto without a limit: %d, want 0 (off)", got)
	}
	if got := MaxRSSBytes(config.MemLimit{Size: 300 << 20}, 1<<30, 2); got != 300<<20 {
		t.Errorf("a size: %d", got)
	}
}

// Each worker gets the heap size for the number of slots when it starts;
// the user's own flag, or no preload, means none.
func TestFleetHeapSizeFollowsTheWorkerCount(t *testing.T) {
	f := newFleet(t, 2)
	f.s.opt.NodeOptions = "--import data:preload"
	f.s.opt.Limits.MemoryBytes = 1 << 30
	f.run()
	f.signal(syscall.SIGTTIN)
	var got []int64
	for _, st := range f.procs.starts {
		got = append(got, st.heapMiB)
	}
	if len(got) != 3 || got[0] != 294 || got[1] != 294 || got[2] != 174 {
		t.Errorf("heap sizes of the workers started = %v, want [294 294 174]", got)
	}

	f = newFleet(t, 1)
	f.s.opt.NodeOptions = "--import data:preload"
	f.s.opt.Limits.MemoryBytes = 1 << 30
	f.s.opt.UserHeapSize = true
	f.run()
	if h := f.procs.starts[0].heapMiB; h != 0 {
		t.Errorf("with the user's --max-old-space-size: heap size %d, want none", h)
	}
}

// A SIGKILL that clusterinit did not send, while the OOM kill counter rose,
// is an OOM kill: logged and counted as such, restarted, and not a failed
// start (MAX_FAILED_STARTS=1 would give up at the first). A SIGKILL without
// a rise stays a crash.
func TestFleetOOMKill(t *testing.T) {
	f := newFleet(t, 2, "CLUSTERINIT_MAX_FAILED_STARTS=2")
	kills := int64(3)
	f.s.opt.OOMKills = func() (int64, error) { return kills, nil }
	f.s.oomKills, _ = f.s.readOOMKills()
	f.run()
	f.readyAll()
	victim := f.last(0)
	kills++
	f.exit(victim, killedBy(syscall.SIGKILL))
	if n := f.s.counters.exits[ExitOOM]; n != 1 {
		t.Errorf("exits[oom] = %d, want 1", n)
	}
	if f.s.failedStarts != 0 || f.s.stopping {
		t.Errorf("an OOM kill counted as a failed start: %d, stopping %v", f.s.failedStarts, f.s.stopping)
	}
	if !strings.Contains(strings.Join(f.logs, "\n"), "OOM killer") {
		t.Errorf("no log line names the OOM killer")
	}
	f.until("slot 0 restarted", func() bool { return f.last(0) != victim })

	// The same signal with no rise: somebody's kill -9.
	other := f.last(1)
	f.exit(other, killedBy(syscall.SIGKILL))
	if n := f.s.counters.exits[ExitCrash]; n != 1 || f.s.counters.exits[ExitOOM] != 1 {
		t.Errorf("exits = %v, want one crash and one oom", f.s.counters.exits)
	}
}

// MAX_REQUESTS: a worker is recycled once its pong reports that many
// requests (less up to 10%), one at a time.
func TestFleetMaxRequests(t *testing.T) {
	f := newFleet(t, 2, "CLUSTERINIT_SHIM=true", "CLUSTERINIT_MAX_REQUESTS=100")
	f.run()
	f.readyAll()
	w0, w1 := f.last(0), f.last(1)
	for _, pid := range []int{w0, w1} {
		if l := f.s.workers[pid].requestLimit; l < 90 || l > 100 {
			t.Fatalf("worker %d: request limit %d, want 90…100", pid, l)
		}
	}
	pong := func(pid int, requests uint64) {
		f.s.onMessage(message{pid: pid, Message: preload.Message{Kind: preload.KindPong, Requests: requests}}, f.now)
		f.settle()
	}
	pong(w0, 89)
	if n := len(f.procs.starts); n != 2 {
		t.Fatalf("recycled below MAX_REQUESTS less 10%%: %d starts", n)
	}
	pong(w0, 100)
	if n := len(f.procs.starts); n != 3 || f.last(0) == w0 {
		t.Fatalf("not recycled at MAX_REQUESTS: starts %v", f.procs.starts)
	}
	pong(w1, 100) // a replacement is under way: not now
	if n := len(f.procs.starts); n != 3 {
		t.Fatalf("two recycles at once: starts %v", f.procs.starts)
	}
	if n := f.s.counters.recycles[RecycleRequests]; n != 1 {
		t.Errorf("recycles[requests] = %d, want 1", n)
	}
	f.ready(f.last(0))
	f.wantState(w0, "draining")
	f.exit(w0, exitCode(0))
	f.until("the recycle to end", func() bool { return f.s.replacing == nil })
	pong(w1, 101)
	if n := len(f.procs.starts); n != 4 || f.last(1) == w1 {
		t.Errorf("the second worker was not recycled after the first: starts %v", f.procs.starts)
	}
}
