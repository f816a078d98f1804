package e2e

import (
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
)

// promClientApp is testdata/promclient's app (app.js, or app.mjs for the ES
// module form), with prom-client installed from npm.
func promClientApp(t testing.TB, file string) string {
	t.Helper()
	out, err := exec.Command("bash", "testdata/setup-node-apps.sh", "promclient", "promclient/v13", "promclient/v14").CombinedOutput()
	if err != nil {
		t.Fatalf("install prom-client: %v\n%s", err, out)
	}
	return filepath.Join("testdata", "promclient", file)
}

// counterSum is the value of a single-series metric, or the sum over its
// series.
func familySum(f *dto.MetricFamily) float64 {
	total := 0.0
	for _, m := range f.GetMetric() {
		switch {
		case m.Counter != nil:
			total += m.GetCounter().GetValue()
		case m.Gauge != nil:
			total += m.GetGauge().GetValue()
		case m.Histogram != nil:
			total += float64(m.GetHistogram().GetSampleCount())
		}
	}
	return total
}

// /metrics/app with the real prom-client: the app's counters, gauges and
// histograms from every worker merged as AggregatorRegistry merges them, so
// K requests spread over the workers read exactly K, in CommonJS and ESM
// apps, on prom-client 13, 14 and 15, with answers longer than the IPC read
// buffer.
func TestAppMetricsMergedAcrossWorkers(t *testing.T) {
	for _, c := range []struct{ name, file, promClient string }{
		{"commonjs", "app.js", ""},
		{"esm", "app.mjs", ""},
		{"prom-client-13", "app.js", "v13"},
		{"prom-client-14", "app.js", "v14"},
	} {
		t.Run(c.name, func(t *testing.T) {
			health := fmt.Sprintf("127.0.0.1:%d", freePort(t))
			extra := []string{"CLUSTERINIT_HEALTH_ADDR=" + health, "SERIES=1200"}
			if c.promClient != "" {
				dir, err := filepath.Abs(filepath.Join("testdata", "promclient", c.promClient, "node_modules", "prom-client"))
				if err != nil {
					t.Fatal(err)
				}
				extra = append(extra, "PROM_CLIENT="+dir)
			}
			_, url := nodeFleetAt(t, 3, promClientApp(t, c.file), extra...)
			const k = 120
			for i := range k {
				if got := httpGetClose(url + "/"); !strings.Contains(got, `"slot"`) {
					t.Fatalf("request %d: %s", i, got)
				}
			}
			body := scrapeText(t, "http://"+health+"/metrics/app")
			fams := parseText(t, body)
			if got := familySum(fams["app_requests_total"]); got != k {
				t.Errorf("app_requests_total = %v, want %d (every worker's count, summed)", got, k)
			}
			if got := familySum(fams["app_latency_seconds"]); got != k {
				t.Errorf("app_latency_seconds count = %v, want %d", got, k)
			}
			if got := familySum(fams["app_workers"]); got != 3 {
				t.Errorf("app_workers = %v, want 3: not every worker answered\n%s", got, tail(body, 20))
			}
			if got := familySum(fams["app_highest_slot"]); got != 2 {
				t.Errorf("app_highest_slot (aggregator max) = %v, want 2", got)
			}
			if got := len(fams["app_wide_total"].GetMetric()); got != 1200 {
				t.Errorf("app_wide_total: %d series, want 1200 (each worker's answer is longer than 64 KiB)", got)
			}
			// One worker's own /metrics sees only its share.
			own := parseText(t, scrapeText(t, url+"/metrics"))
			if got := familySum(own["app_workers"]); got != 1 {
				t.Errorf("a worker's own app_workers = %v, want 1", got)
			}
		})
	}
}

// A worker whose event loop is blocked mid-scrape is left out after 1 s and
// counted; the others' metrics are served.
func TestAppMetricsLeavesOutHungWorker(t *testing.T) {
	health := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	_, url := nodeFleetAt(t, 2, promClientApp(t, "app.js"), "CLUSTERINIT_HEALTH_ADDR="+health)
	blocked := make(chan string, 1)
	go func() { blocked <- httpGetClose(url + "/block?ms=6000") }()

	var body string
	var took time.Duration
	waitFor(t, 5*time.Second, "a scrape that leaves the blocked worker out", func() bool {
		t0 := time.Now()
		body = scrapeText(t, "http://"+health+"/metrics/app")
		took = time.Since(t0)
		return strings.Contains(body, "1 of 2 ready workers did not answer")
	})
	// 1 s for the hung worker, and slack for a loaded machine; the block
	// lasts 6 s.
	if took > 3*time.Second {
		t.Errorf("the scrape took %s: it waited for the hung worker past 1 s", took)
	}
	if got := familySum(parseText(t, body)["app_workers"]); got != 1 {
		t.Errorf("app_workers = %v, want 1 (the worker that answered)", got)
	}
	m := parseText(t, scrapeText(t, "http://"+health+"/metrics"))
	if got := familySum(m["clusterinit_app_metrics_missed_total"]); got < 1 {
		t.Errorf("clusterinit_app_metrics_missed_total = %v, want at least 1", got)
	}
	<-blocked
}

// parseText parses a page with Prometheus's own parser, or fails the test.
func parseText(t *testing.T, body string) map[string]*dto.MetricFamily {
	t.Helper()
	fams, err := parseMetricsText(body)
	if err != nil {
		t.Fatalf("Prometheus's parser: %v\n%s", err, body)
	}
	return fams
}

// scrapeText GETs a metrics page, or fails the test.
func scrapeText(t *testing.T, url string) string {
	t.Helper()
	code, body, err := fetch("GET", url)
	if err != nil || code != http.StatusOK {
		t.Fatalf("GET %s: %d %v\n%s", url, code, err, body)
	}
	return body
}

// BenchmarkAppMetricsScrape times one scrape of the app's metrics from 8
// workers with a few hundred series each (400 wide-counter series and the
// app's own), and the scraped supervisor's CPU time per scrape: clusterinit's
// /metrics/app beside the hand-written cluster primary it replaces
// (prom-client's AggregatorRegistry). docs/benchmarks.md quotes it:
//
//	go test -run '^$' -bench AppMetricsScrape -benchtime 200x ./e2e
func BenchmarkAppMetricsScrape(b *testing.B) {
	const workers, series = 8, "SERIES=400"
	b.Run("clusterinit", func(b *testing.B) {
		health := fmt.Sprintf("127.0.0.1:%d", freePort(b))
		p, _ := nodeFleetAt(b, workers, promClientApp(b, "app.js"), "CLUSTERINIT_HEALTH_ADDR="+health, series)
		benchScrape(b, "http://"+health+"/metrics/app", p.pid())
	})
	b.Run("cluster-primary", func(b *testing.B) {
		port, mport := freePort(b), freePort(b)
		cmd := exec.Command("node", promClientApp(b, "primary.js"))
		cmd.Env = append(testEnv(), fmt.Sprintf("WORKERS=%d", workers), series,
			fmt.Sprintf("PORT=%d", port), fmt.Sprintf("METRICS_PORT=%d", mport))
		out := &syncBuffer{}
		cmd.Stdout, cmd.Stderr = out, out
		if err := cmd.Start(); err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { cmd.Process.Signal(syscall.SIGTERM); cmd.Wait() })
		waitFor(b, 20*time.Second, "the cluster primary's workers", func() bool { return strings.Contains(out.String(), "ready") })
		benchScrape(b, fmt.Sprintf("http://127.0.0.1:%d/", mport), cmd.Process.Pid)
	})
}

// benchScrape scrapes url b.N times and reports the size of the page and the
// CPU time that supervisor spent per scrape.
func benchScrape(b *testing.B, url string, supervisor int) {
	code, body, err := fetch("GET", url)
	if err != nil || code != 200 || !strings.Contains(body, "app_wide_total") {
		b.Fatalf("GET %s: %d %v\n%s", url, code, err, tail(body, 5))
	}
	cpu0 := processCPU(b, supervisor)
	b.ResetTimer()
	for range b.N {
		if code, _, err := fetch("GET", url); err != nil || code != 200 {
			b.Fatalf("GET %s: %d %v", url, code, err)
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(strings.Count(body, "\n")-2*strings.Count(body, "# HELP")), "series")
	b.ReportMetric((processCPU(b, supervisor)-cpu0).Seconds()*1e3/float64(b.N), "sup-cpu-ms/op")
}

// processCPU is the user and system CPU time of pid so far.
func processCPU(t testing.TB, pid int) time.Duration {
	t.Helper()
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatal(err)
	}
	// The fields after the command name, which is in parentheses and may
	// hold spaces: utime and stime are the 12th and 13th of them.
	f := strings.Fields(string(raw[strings.LastIndexByte(string(raw), ')')+2:]))
	utime, _ := strconv.ParseInt(f[11], 10, 64)
	stime, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(utime+stime) * time.Second / 100 // USER_HZ
}
