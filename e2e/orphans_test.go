package e2e

import (
	"net"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// alive reports whether pid is a process that has not exited (a zombie
// waiting for its new parent to reap it has exited).
func alive(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	return len(f) > 0 && f[0] != "Z" && f[0] != "X"
}

// SIGKILL of clusterinit when it is not PID 1 (under an init, in a
// terminal, in a test) leaves no worker behind: each dies of its
// parent-death signal at once, and the port is free soon after (waited
// for up to 10 s, for a loaded machine; without the signal the workers
// would never go).
func TestNoWorkerOutlivesAKilledClusterinit(t *testing.T) {
	for _, mode := range []string{"shared", "reuseport"} {
		t.Run(mode, func(t *testing.T) {
			p, url := nodeFleet(t, 2, "http.js", "CLUSTERINIT_LISTEN_MODE="+mode)
			port := strings.TrimPrefix(url, "http://127.0.0.1:")
			var pids []int
			for _, l := range p.logsWith("worker started") {
				pids = append(pids, num(l, "pid"))
			}
			for _, pid := range pids {
				if !alive(pid) {
					t.Fatalf("worker %d is not running before the kill", pid)
				}
			}
			killed := time.Now()
			p.signal(syscall.SIGKILL)
			p.wait(5 * time.Second)
			var left []int
			waitFor(t, 10*time.Second, "every worker to die with clusterinit", func() bool {
				left = left[:0]
				for _, pid := range pids {
					if alive(pid) {
						left = append(left, pid)
					}
				}
				return len(left) == 0
			})
			var ln net.Listener
			waitFor(t, 10*time.Second, "port "+port+" to be free", func() bool {
				var err error
				ln, err = net.Listen("tcp", ":"+port)
				return err == nil
			})
			ln.Close()
			t.Logf("%s: %d workers gone and port free %v after SIGKILL of clusterinit", mode, len(pids), time.Since(killed).Round(time.Millisecond))
		})
	}
}
