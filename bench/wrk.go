package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// wrkScript makes wrk print its summary as one JSON line. It defines no
// request() or response() function, so wrk keeps sending one pre-built
// request and never calls into Lua per request: the script costs nothing
// under load.
const wrkScript = `done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "BENCHJSON {\"requests\":%.0f,\"duration_us\":%.0f,\"connect\":%.0f,\"read\":%.0f,\"write\":%.0f,\"status\":%.0f,\"timeout\":%.0f,\"p50_us\":%.0f,\"p99_us\":%.0f,\"max_us\":%.0f}\n",
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(99), latency.max))
end
`

// wrkResult is one wrk run.
type wrkResult struct {
	Requests   int64   `json:"requests"`
	DurationUS int64   `json:"duration_us"`
	Connect    int64   `json:"connect"`
	Read       int64   `json:"read"`
	Write      int64   `json:"write"`
	Status     int64   `json:"status"` // responses other than 2xx and 3xx
	Timeout    int64   `json:"timeout"`
	P50US      float64 `json:"p50_us"`
	P99US      float64 `json:"p99_us"`
	MaxUS      float64 `json:"max_us"`

	CPU time.Duration `json:"-"` // wrk's own user + system time
}

// failed is every request wrk counts as failed: socket errors (connect,
// read, write, timeout) and non-2xx/3xx responses.
func (r wrkResult) failed() int64 {
	return r.Connect + r.Read + r.Write + r.Timeout + r.Status
}

func (r wrkResult) rps() float64 {
	if r.DurationUS <= 0 {
		return 0
	}
	return float64(r.Requests) / (float64(r.DurationUS) / 1e6)
}

// wrkRun is a wrk process under way.
type wrkRun struct {
	cmd  *exec.Cmd
	out  bytes.Buffer
	done chan struct{}
	err  error
}

// wrkOpts describes one load: always on loopback, always bounded by -d.
type wrkOpts struct {
	url      string
	conns    int
	threads  int
	duration time.Duration
	close    bool // a new connection per request
}

// startWrk starts wrk; its load ends after opts.duration at the latest.
func (e *env) startWrk(ctx context.Context, o wrkOpts) (*wrkRun, error) {
	if !strings.HasPrefix(o.url, "http://127.0.0.1:") {
		return nil, fmt.Errorf("refusing to load %s: loopback only", o.url)
	}
	threads := o.threads
	if threads > o.conns {
		threads = o.conns
	}
	secs := int(o.duration.Round(time.Second) / time.Second)
	if secs < 1 {
		secs = 1
	}
	args := []string{"-t", strconv.Itoa(threads), "-c", strconv.Itoa(o.conns),
		"-d", strconv.Itoa(secs) + "s", "--timeout", "2s", "-s", e.wrkScript}
	if o.close {
		args = append(args, "-H", "Connection: close")
	}
	args = append(args, o.url)
	w := &wrkRun{cmd: exec.Command(e.wrk, args...), done: make(chan struct{})}
	w.cmd.Stdout = &w.out
	w.cmd.Stderr = &w.out
	w.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := w.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start wrk: %w", err)
	}
	pid := w.cmd.Process.Pid
	unregister := e.onCleanup(func() { syscall.Kill(-pid, syscall.SIGKILL) })
	go func() {
		w.err = w.cmd.Wait()
		unregister()
		close(w.done)
	}()
	go func() {
		select {
		case <-ctx.Done():
			syscall.Kill(-pid, syscall.SIGKILL)
		case <-w.done:
		}
	}()
	return w, nil
}

// stop asks wrk to finish now; it still prints its summary.
func (w *wrkRun) stop() {
	select {
	case <-w.done:
	default:
		w.cmd.Process.Signal(syscall.SIGINT)
	}
}

// wait waits for wrk (at most its duration plus a margin) and parses its
// summary.
func (w *wrkRun) wait(limit time.Duration) (wrkResult, error) {
	select {
	case <-w.done:
	case <-time.After(limit):
		syscall.Kill(-w.cmd.Process.Pid, syscall.SIGKILL)
		<-w.done
		return wrkResult{}, fmt.Errorf("wrk did not finish within %s", limit)
	}
	if w.err != nil {
		return wrkResult{}, fmt.Errorf("wrk: %v: %s", w.err, w.out.String())
	}
	var r wrkResult
	for _, line := range strings.Split(w.out.String(), "\n") {
		if j, ok := strings.CutPrefix(line, "BENCHJSON "); ok {
			if err := json.Unmarshal([]byte(j), &r); err != nil {
				return r, fmt.Errorf("wrk summary %q: %v", j, err)
			}
			if ru, ok := w.cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
				r.CPU = time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
			}
			return r, nil
		}
	}
	return r, fmt.Errorf("wrk printed no summary: %s", w.out.String())
}

// writeWrkScript writes the Lua script into dir.
func writeWrkScript(dir string) (string, error) {
	p := filepath.Join(dir, "summary.lua")
	return p, os.WriteFile(p, []byte(wrkScript), 0o644)
}
