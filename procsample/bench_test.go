package procsample

import (
	"fmt"
	"os"
	"testing"
	"time"
)

// BenchmarkSample32Workers: one Sample pass for 32 real sleeping workers,
// each with one child, on whatever else the machine runs. procs/op is the
// number of processes in /proc during the pass: the cost grows with it, not
// with the number of workers.
func BenchmarkSample32Workers(b *testing.B) {
	s := newSampler(b)
	roots := make([]int, 0, 32)
	for range 32 {
		roots = append(roots, startShell(b, "sleep 600 & wait").pid())
	}
	waitFor(b, 30*time.Second, func() (bool, string) {
		m := sample(b, s, roots...)
		for _, r := range roots {
			if m[r].Procs != 2 {
				return false, fmt.Sprintf("worker %d: %+v, want 2 procs", r, m[r])
			}
		}
		return true, ""
	})
	entries, err := os.ReadDir("/proc")
	if err != nil {
		b.Fatal(err)
	}
	procs := 0
	for _, e := range entries {
		if e.Name()[0] >= '0' && e.Name()[0] <= '9' {
			procs++
		}
	}

	b.ReportAllocs()
	for b.Loop() {
		if _, err := s.Sample(roots); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(procs), "procs/op")
}
