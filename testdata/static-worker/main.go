// Command static-worker is the worker of the empty-root test
// (packaging_test.go): a static binary (built with CGO_ENABLED=0) that needs
// nothing from the filesystem. It serves HTTP on the socket handed to it as
// fd 3 by the systemd socket-activation protocol (LISTEN_FDS, LISTEN_PID),
// answers with its slot and pid, and exits 0 on SIGTERM.
package main

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "static-worker:", err)
		os.Exit(1)
	}
}

func run() error {
	n, err := strconv.Atoi(os.Getenv("LISTEN_FDS"))
	if err != nil || n < 1 {
		return fmt.Errorf("no socket handed over: LISTEN_FDS=%q", os.Getenv("LISTEN_FDS"))
	}
	if pid := os.Getenv("LISTEN_PID"); pid != strconv.Itoa(os.Getpid()) {
		return fmt.Errorf("LISTEN_PID=%q is not this process (%d)", pid, os.Getpid())
	}
	ln, err := net.FileListener(os.NewFile(3, "listener"))
	if err != nil {
		return fmt.Errorf("fd 3: %w", err)
	}
	slot := os.Getenv("CLUSTERINIT_WORKER")
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "worker %s pid %d\n", slot, os.Getpid())
	})}

	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	fmt.Printf("static worker %s up, pid %d\n", slot, os.Getpid())

	select {
	case err := <-served:
		return err
	case <-stop:
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return srv.Shutdown(ctx)
}
