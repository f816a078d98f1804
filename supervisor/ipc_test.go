package supervisor

import (
	"testing"
	"time"
)

func TestBackoffDoublesToCap(t *testing.T) {
	base := 100 * time.Millisecond
	want := []time.Duration{100 * time.Millisecond, 200 * time.Millisecond, 400 * time.Millisecond, 800 * time.Millisecond}
	for i, w := range want {
		if got := backoff(base, i+1); got != w {
			t.Errorf("backoff(%d) = %v, want %v", i+1, got, w)
		}
	}
	if got := backoff(base, 50); got != maxRestartDelay {
		t.Errorf("backoff(50) = %v, want the 30s cap", got)
	}
	if got := backoff(time.Minute, 1); got != maxRestartDelay {
		t.Errorf("a RESTART_DELAY above the cap gives %v", got)
	}
}
