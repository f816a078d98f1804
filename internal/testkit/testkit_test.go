package testkit

import (
	"strings"
	"sync"
	"testing"
	"time"
)

func TestBufferConcurrentAndBounded(t *testing.T) {
	b := &Buffer{Max: 10}
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 100 {
				if n, err := b.Write([]byte("abcd")); n != 4 || err != nil {
					t.Errorf("Write = %d, %v", n, err)
				}
				_ = b.String()
			}
		}()
	}
	wg.Wait()
	if s := b.String(); len(s) > 10+4 || !strings.HasPrefix(s, "abcdabcd") {
		t.Fatalf("kept %q, want at most Max plus one write", s)
	}
}

func TestPoll(t *testing.T) {
	n := 0
	if !Poll(time.Second, func() bool { n++; return n == 3 }) || n != 3 {
		t.Fatalf("Poll stopped after %d checks, want 3", n)
	}
	t0 := time.Now()
	if Poll(50*time.Millisecond, func() bool { return false }) {
		t.Fatal("Poll of a false condition returned true")
	}
	if d := time.Since(t0); d < 50*time.Millisecond || d > time.Second {
		t.Fatalf("Poll gave up after %v, want about 50ms", d)
	}
}
