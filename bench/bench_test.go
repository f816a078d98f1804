package main

import (
	"context"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/clusterinit/clusterinit/internal/testkit"
)

// TestSmoke runs the whole harness in smoke mode (every contender, every
// scenario, about a second each) so that it cannot rot: it installs wrk and
// PM2 when missing, exactly as `make bench` does. It checks that every
// measurement was taken, not what the figures are: they mean nothing at
// these durations on a machine busy with other tests.
func TestSmoke(t *testing.T) {
	// A minute or more of load: like the long end-to-end tests, it runs when
	// every test must (E2E_ALL=1, as make test and CI set).
	if os.Getenv("E2E_ALL") != "1" {
		t.Skip("long test: runs with E2E_ALL=1 (make test sets it)")
	}
	s := defaults(true)
	log := &testkit.Buffer{}
	s.Log = log
	// About 55–90 s here: seven contenders, each over the plain app and the
	// Next.js build, and the recycle scenario for clusterinit's modes.
	ctx, cancel := context.WithTimeout(context.Background(), 240*time.Second)
	defer cancel()
	t0 := time.Now()
	res, err := run(ctx, s)
	t.Logf("smoke run took %s", time.Since(t0).Round(time.Millisecond))
	// Nothing a contender started outlives the run, failed or not: PM2's
	// daemon detaches into a session of its own, so only its environment
	// finds it.
	if left := pidsWithEnv("PM2_HOME=" + filepath.Join(os.TempDir(), "clusterinit-bench-")); len(left) > 0 {
		t.Errorf("processes of PM2 left running after the run: %v", left)
	}
	if err != nil {
		t.Fatalf("smoke run: %v\n%s", err, log.String())
	}
	md := res.markdown()
	t.Log("\n" + md)
	if len(res.Errors) > 0 {
		t.Fatalf("failed measurements:\n%s\n%s", strings.Join(res.Errors, "\n"), log.String())
	}

	for _, c := range allContenders {
		positive := []string{mStartMS, "ka" + sRPS, "close" + sRPS, "cpu" + sRPS, "skewclose" + sRPS, "skewka" + sP99}
		if !c.noPreload {
			positive = append(positive, "nextclose"+sRPS, "nextka"+sP99)
		}
		if c.isClusterinit() {
			positive = append(positive, mRecycleP99, mRecycleBeforeP99, mRecycleSecs, mRecycleP99Ratio, mRecycleRPSRatio)
		}
		if c.supervised() {
			positive = append(positive, mIdleRSS, "ka"+sSupRSS, "close"+sSupRSS, mBalance, mReloadSecs, mReloadP99, mReloadP99Ratio, mReloadRPSRatio)
		}
		for _, m := range positive {
			v := res.samplesOf(c.Name, m)
			if len(v) != 1 || !(v[0] > 0) || math.IsInf(v[0], 1) {
				t.Errorf("%s: %s = %v, want one positive, finite sample", c.Name, m, v)
			}
		}
		if c.supervised() {
			if v := res.samplesOf(c.Name, mReloadFailed); len(v) != 1 || v[0] < 0 {
				t.Errorf("%s: reload failures = %v, want one sample", c.Name, v)
			}
		}
	}
	for _, want := range []string{markBegin, markEnd, "### Throughput", "### Supervisor cost",
		"### Rolling reload", "### Time from exec", "### Targets", "PM2 cluster mode", "clusterinit reuseport",
		"### Skewed workload", "### A real app: Next.js", "### MAX_AGE recycle", "the preload's cost"} {
		if !strings.Contains(md, want) {
			t.Errorf("report lacks %q", want)
		}
	}

	// The report goes into a copy of docs/benchmarks.md as `make bench`
	// writes it: twice, the second replacing the first, the rest kept.
	orig, err := os.ReadFile(filepath.Join(res.root, "docs", "benchmarks.md"))
	if err != nil {
		t.Fatal(err)
	}
	doc := filepath.Join(t.TempDir(), "benchmarks.md")
	if err := os.WriteFile(doc, orig, 0o644); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 2; i++ {
		if err := updateDoc(doc, md); err != nil {
			t.Fatal(err)
		}
	}
	got, _ := os.ReadFile(doc)
	if strings.Count(string(got), markBegin) != 1 || strings.Count(string(got), heading+"\n") != 1 {
		t.Errorf("after two updates the document has %d begin markers and %d %q headings",
			strings.Count(string(got), markBegin), strings.Count(string(got), heading+"\n"), heading)
	}
	before, _, _ := strings.Cut(string(orig), markBegin)
	if !strings.HasPrefix(string(got), strings.TrimSuffix(before, heading+"\n\n")) {
		t.Error("updating the document changed what precedes the section")
	}
}

func TestReplaceSection(t *testing.T) {
	sec := markBegin + "\nnew\n" + markEnd + "\n"
	got, err := replaceSection("# Benchmarks\n\nkept\n", sec)
	if err != nil || got != "# Benchmarks\n\nkept\n\n"+heading+"\n\n"+markBegin+"\nnew\n"+markEnd+"\n" {
		t.Errorf("append: %q, %v", got, err)
	}
	doc := "a\n" + heading + "\n\n" + markBegin + "\nold\n" + markEnd + "\n\n### Notes after\n"
	got, err = replaceSection(doc, sec)
	if err != nil || got != "a\n"+heading+"\n\n"+markBegin+"\nnew\n"+markEnd+"\n\n### Notes after\n" {
		t.Errorf("replace: %q, %v", got, err)
	}
	if _, err := replaceSection(markEnd+"\n"+markBegin, sec); err == nil {
		t.Error("unbalanced markers accepted")
	}
}

func TestBalanceAndMedian(t *testing.T) {
	if b := balance(map[int]int64{1: 150, 2: 100}); b != 1.5 {
		t.Errorf("balance = %v", b)
	}
	if m := median([]float64{3, 1, 2}); m != 2 {
		t.Errorf("median = %v", m)
	}
	if m := median([]float64{4, 1, 2, 3}); m != 2.5 {
		t.Errorf("median = %v", m)
	}
	if fmtInt(1234567) != "1,234,567" || fmtInt(12) != "12" {
		t.Errorf("fmtInt: %s %s", fmtInt(1234567), fmtInt(12))
	}
}

// A figure beside a target's verdict never prints as the limit itself
// unless it is the limit.
func TestRatioVsLimit(t *testing.T) {
	for _, c := range []struct {
		v, limit float64
		want     string
	}{
		{1.503, 1.5, "1.503×"},
		{0.897, 0.9, "0.897×"},
		{1.5, 1.5, "1.50×"},
		{1.44, 1.5, "1.44×"},
		{0.99, 0.95, "0.99×"},
	} {
		if got := fmtRatioVs(c.v, c.limit); got != c.want {
			t.Errorf("fmtRatioVs(%v, %v) = %q, want %q", c.v, c.limit, got, c.want)
		}
	}
	r := &results{samples: map[string]map[string][]float64{"a": {"m": {1.2, 2.4, 1.1}}}}
	if got, want := r.ratioCell("a", "m"), "1.20× (1.20×; 2.40×; 1.10×)"; got != want {
		t.Errorf("ratioCell = %q, want %q", got, want)
	}
}
