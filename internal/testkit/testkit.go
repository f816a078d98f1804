// Package testkit holds the two helpers that tests in several packages
// share: a Buffer that collects a process's output while the test reads it,
// and Poll, the one loop that waits for a condition (tests wait on
// conditions, never on fixed sleeps).
package testkit

import (
	"bytes"
	"sync"
	"testing"
	"time"
)

// Buffer is a bytes.Buffer safe for one writer (a process's output) and
// concurrent readers.
type Buffer struct {
	// Max, when positive, bounds what is kept: writes past it are dropped
	// (and reported written, so the process never sees an error).
	Max int

	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *Buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.Max > 0 && b.buf.Len() > b.Max {
		return len(p), nil
	}
	return b.buf.Write(p)
}

func (b *Buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// pollEvery is how often Poll checks once a wait is under way: often
// enough that a wait ends within milliseconds of its condition, rarely
// enough to cost nothing. The first checks come sooner (1, 2, 4, 8 ms), for
// conditions that hold almost at once.
const pollEvery = 10 * time.Millisecond

// Poll calls cond until it returns true, and then returns true; or, once
// timeout has passed without that, false.
func Poll(timeout time.Duration, cond func() bool) bool {
	return PollEvery(timeout, pollEvery, cond)
}

// PollEvery is Poll with checks at most every interval apart, for a cond
// that costs something (a docker inspect).
func PollEvery(timeout, every time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for sleep := min(time.Millisecond, every); !cond(); sleep = min(2*sleep, every) {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(sleep)
	}
	return true
}

// WaitFor polls cond until it holds, failing tb after timeout.
func WaitFor(tb testing.TB, timeout time.Duration, what string, cond func() bool) {
	tb.Helper()
	if !Poll(timeout, cond) {
		tb.Fatalf("timed out after %v waiting for %s", timeout, what)
	}
}

// Never fails tb if cond holds at any check during d: for what must not
// happen (a short spike must not be recycled).
func Never(tb testing.TB, d time.Duration, what string, cond func() bool) {
	tb.Helper()
	if Poll(d, cond) {
		tb.Fatalf("%s", what)
	}
}
