package e2e

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/clusterinit/clusterinit/preload"
)

// The test binary doubles as a worker where Go is simpler than Node: with
// CITEST_HELPER set, TestMain runs helperMain instead of the tests. (The
// prefix is not CLUSTERINIT_, which clusterinit would reject as a typo.)
//
// Modes:
//
//	serve     block; on SIGTERM wait CITEST_TERM_DELAY, write CITEST_LAST_WORDS bytes, exit 0; print SIGUSR2s
//	ignore    ignore SIGTERM, block
//	exit      exit with CITEST_EXIT_CODE (default 10+slot) after CITEST_EXIT_AFTER
//	orphans   start CITEST_ORPHANS children that outlive it, then behave as CITEST_THEN
//	daemonize orphan CITEST_ORPHANS grandchildren through an intermediate child, then serve
//	orphan    (a child of orphans) sleep CITEST_ORPHAN_SLEEP, exit 0
//	listenfds serve HTTP on the socket handed as fd 3 (systemd protocol), no Node
//	ipcgarbage write malformed, blank and oversized lines on the IPC fd, then "ready"
//	crashonce exit 1 the first time in each slot (marker file in CITEST_DIR), then serve
func helperMain(mode string) int {
	slot, _ := strconv.Atoi(os.Getenv("CLUSTERINIT_WORKER"))
	switch mode {
	case "serve":
		return helperServe(slot)
	case "ignore":
		signal.Ignore(syscall.SIGTERM)
		fmt.Printf("helper up slot=%d pid=%d\n", slot, os.Getpid())
		select {}
	case "exit":
		// A stop request ends it cleanly; otherwise it "crashes" with a
		// status that names its slot, so tests can check attribution.
		sigs := make(chan os.Signal, 1)
		signal.Notify(sigs, syscall.SIGTERM)
		select {
		case <-sigs:
			return 0
		case <-time.After(envDuration("CITEST_EXIT_AFTER", 0)):
		}
		code := 10 + slot
		if c := os.Getenv("CITEST_EXIT_CODE"); c != "" {
			code, _ = strconv.Atoi(c)
		}
		return code
	case "daemonize":
		// Double fork: an intermediate child starts the orphans and exits at
		// once, so they are re-parented while this worker keeps serving.
		cmd := exec.Command(os.Args[0])
		cmd.Env = append(os.Environ(), "CITEST_HELPER=orphans", "CITEST_THEN=none")
		if err := cmd.Run(); err != nil {
			fmt.Fprintln(os.Stderr, "helper: spawner:", err)
			return 3
		}
		return helperServe(slot)
	case "none":
		return 0
	case "orphans":
		n, _ := strconv.Atoi(os.Getenv("CITEST_ORPHANS"))
		for i := 0; i < n; i++ {
			cmd := exec.Command(os.Args[0])
			cmd.Env = append(os.Environ(), "CITEST_HELPER=orphan")
			if err := cmd.Start(); err != nil {
				fmt.Fprintln(os.Stderr, "helper: start orphan:", err)
				return 3
			}
			cmd.Process.Release() // never waited for: it is orphaned when we exit
		}
		return helperMain(os.Getenv("CITEST_THEN"))
	case "orphan":
		time.Sleep(envDuration("CITEST_ORPHAN_SLEEP", 100*time.Millisecond))
		return 0
	case "listenfds":
		return helperListenFDs(slot)
	case "ipcgarbage":
		return helperIPCGarbage(slot)
	case "biglines":
		// 20 lines of 64 KiB, each of one letter naming the slot, on stdout
		// and stderr, written as fast as possible by every worker at once.
		line := strings.Repeat(string(rune('a'+slot)), 64<<10) + "\n"
		for i := 0; i < 20; i++ {
			os.Stdout.WriteString(line)
			os.Stderr.WriteString(line)
		}
		return helperServe(slot)
	case "crashonce":
		marker := fmt.Sprintf("%s/crashed-%d", os.Getenv("CITEST_DIR"), slot)
		if _, err := os.Stat(marker); err != nil {
			os.WriteFile(marker, nil, 0o644)
			return 1
		}
		return helperServe(slot)
	}
	fmt.Fprintln(os.Stderr, "helper: unknown mode", mode)
	return 3
}

func helperServe(slot int) int {
	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGUSR2)
	fmt.Printf("helper up slot=%d pid=%d\n", slot, os.Getpid())
	for sig := range sigs {
		switch sig {
		case syscall.SIGUSR2:
			fmt.Printf("helper got SIGUSR2 slot=%d pid=%d\n", slot, os.Getpid())
		case syscall.SIGTERM:
			time.Sleep(envDuration("CITEST_TERM_DELAY", 0))
			// Last words: CITEST_LAST_WORDS bytes without a final newline,
			// most of them still in the pipe when the worker is gone.
			if n, _ := strconv.Atoi(os.Getenv("CITEST_LAST_WORDS")); n > 0 {
				os.Stdout.WriteString(strings.Repeat("z", n-1) + "!")
			}
			return 0
		}
	}
	return 0
}

func envDuration(key string, def time.Duration) time.Duration {
	if d, err := time.ParseDuration(os.Getenv(key)); err == nil {
		return d
	}
	return def
}

// helperListenFDs is a non-Node server using socket activation: it checks
// LISTEN_PID is its own pid, as sd_listen_fds does.
func helperListenFDs(slot int) int {
	if os.Getenv("LISTEN_PID") != strconv.Itoa(os.Getpid()) || os.Getenv("LISTEN_FDS") != "1" {
		fmt.Fprintf(os.Stderr, "helper: LISTEN_PID=%q LISTEN_FDS=%q, pid %d\n", os.Getenv("LISTEN_PID"), os.Getenv("LISTEN_FDS"), os.Getpid())
		return 4
	}
	ln, err := net.FileListener(os.NewFile(preload.FirstSocketFd, os.Getenv("LISTEN_FDNAMES")))
	if err != nil {
		fmt.Fprintln(os.Stderr, "helper:", err)
		return 4
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, `{"worker":"%d","pid":%d,"fdname":%q}`, slot, os.Getpid(), os.Getenv("LISTEN_FDNAMES"))
	})}
	go func() {
		sigs := make(chan os.Signal, 1)
		signal.Notify(sigs, syscall.SIGTERM)
		<-sigs
		srv.Shutdown(context.Background())
	}()
	if err := srv.Serve(ln); err != http.ErrServerClosed {
		return 5
	}
	return 0
}

// helperIPCGarbage speaks to clusterinit's IPC channel the worst way it can.
func helperIPCGarbage(slot int) int {
	fd, err := strconv.Atoi(os.Getenv("NODE_CHANNEL_FD"))
	if err != nil {
		return 4
	}
	ipc := os.NewFile(uintptr(fd), "ipc")
	for _, line := range []string{
		"not json at all\n",
		"\n",
		"{\"type\":\n",
		"\"" + strings.Repeat("x", 17<<20) + "\"\n", // over clusterinit's 16 MiB line limit
		"[1,2,3]\n",
		"{\"cmd\":\"NODE_CLUSTERINIT\",\"event\":\"pong\",\"seq\":\"x\"}\n",
		"\"ready\"\n",
	} {
		if _, err := ipc.WriteString(line); err != nil {
			fmt.Fprintln(os.Stderr, "helper: write ipc:", err)
			return 4
		}
	}
	return helperServe(slot)
}
