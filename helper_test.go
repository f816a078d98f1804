package main

import (
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"syscall"
	"time"
)

// The test binary doubles as a worker where Go is simpler than Node: with
// CITEST_HELPER set, TestMain runs helperMain instead of the tests. (The
// prefix is not CLUSTERINIT_, which clusterinit would reject as a typo.)
//
// Modes:
//
//	serve     block; on SIGTERM wait CITEST_TERM_DELAY then exit 0; print SIGUSR2s
//	ignore    ignore SIGTERM, block
//	exit      exit with CITEST_EXIT_CODE (default 10+slot) after CITEST_EXIT_AFTER
//	orphans   start CITEST_ORPHANS children that outlive it, then behave as CITEST_THEN
//	daemonize orphan CITEST_ORPHANS grandchildren through an intermediate child, then serve
//	orphan    (a child of orphans) sleep CITEST_ORPHAN_SLEEP, exit 0
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
