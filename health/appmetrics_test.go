package health

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/clusterinit/clusterinit/supervisor"
)

func TestJSNumber(t *testing.T) {
	// What JavaScript's String(x) prints, checked in node.
	for x, want := range map[float64]string{
		0: "0", 1: "1", -2.5: "-2.5", 0.1: "0.1", 1e-7: "1e-7", 1.5e-7: "1.5e-7",
		0.000001: "0.000001", 123456789012345680000: "123456789012345680000",
		1e21: "1e+21", 1.2345e22: "1.2345e+22", 0.3333333333333333: "0.3333333333333333",
		math.MaxFloat64: "1.7976931348623157e+308", 5e-324: "5e-324", 100: "100", 2.5e-5: "0.000025",
	} {
		if got := jsNumber(x); got != want {
			t.Errorf("jsNumber(%v) = %q, want %q", x, got, want)
		}
	}
}

// promClient is the real prom-client from npm that testdata/promclient
// installs (testdata/setup-node-apps.sh promclient).
func promClient(t *testing.T) string {
	t.Helper()
	dir, err := filepath.Abs(filepath.Join("..", "testdata", "promclient", "node_modules", "prom-client"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "package.json")); err != nil {
		out, err := exec.Command("bash", filepath.Join("..", "testdata", "setup-node-apps.sh"), "promclient").CombinedOutput()
		if err != nil {
			t.Fatalf("install prom-client: %v\n%s", err, out)
		}
	}
	return dir
}

// The merge is prom-client's AggregatorRegistry.aggregate(), byte for byte:
// every aggregator, label sets in any order, histograms bucket by bucket,
// summaries, escaping, a series only one worker has.
func TestMergeMatchesPromClientAggregate(t *testing.T) {
	cmd := exec.Command("node", filepath.Join("testdata", "aggregate.js"))
	cmd.Env = append(os.Environ(), "PROM_CLIENT="+promClient(t))
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("node testdata/aggregate.js: %v", err)
	}
	var ref struct {
		Workers [][]AppMetric `json:"workers"`
		Text    string        `json:"text"`
	}
	if err := json.Unmarshal(out, &ref); err != nil {
		t.Fatalf("decode reference: %v", err)
	}
	merged, skipped := MergeAppMetrics(ref.Workers)
	if len(skipped) > 0 {
		t.Errorf("skipped %v", skipped)
	}
	var buf bytes.Buffer
	WriteAppMetrics(&buf, merged)
	if buf.String() != ref.Text {
		t.Errorf("merged text differs from prom-client's AggregatorRegistry:\n--- got\n%s\n--- prom-client\n%s", buf.String(), ref.Text)
	}
	// And Prometheus's own parser reads it.
	families := parseMetrics(t, buf.String())
	if c := families["http_requests_total"].GetMetric(); len(c) != 3 {
		t.Errorf("http_requests_total: %d series, want 3 (200, 500, 404)", len(c))
	}
	if _, ok := families["g_omit"]; ok {
		t.Error("an aggregator: 'omit' metric was served")
	}
}

func TestMergeSkipsUnknownAggregator(t *testing.T) {
	one := 1.0
	m := []AppMetric{{Name: "a", Type: "gauge", Aggregator: "median", Values: []AppValue{{Value: &one}}},
		{Name: "b", Type: "counter", Values: []AppValue{{Value: &one}}}}
	merged, skipped := MergeAppMetrics([][]AppMetric{m, m})
	if len(merged) != 1 || merged[0].Name != "b" || *merged[0].Values[0].Value != 2 {
		t.Errorf("merged %+v", merged)
	}
	if len(skipped) != 1 || skipped[0] != "a" {
		t.Errorf("skipped %v, want [a]", skipped)
	}
}

// /metrics/app serves what answered in time, merged, says who was left out,
// and counts them in /metrics.
func TestAppMetricsEndpointLeavesOutSlowWorkers(t *testing.T) {
	answers := make(chan json.RawMessage, 3)
	answers <- json.RawMessage(`[{"name":"jobs_total","help":"Jobs.","type":"counter","aggregator":"sum","values":[{"value":2,"labels":{}}]}]`)
	answers <- json.RawMessage(`[{"name":"jobs_total","help":"Jobs.","type":"counter","aggregator":"sum","values":[{"value":5,"labels":{}}]}]`)
	f := newFleet(twoReady())
	f.scrape = &supervisor.Scrape{Asked: 3, Answers: answers} // the third never answers
	s := serve(t, Options{Fleet: f, appMetricsWait: 50 * time.Millisecond})

	a := do(t, "GET", "http://"+s.Addr()+"/metrics/app")
	if a.code != 200 || a.header.Get("Content-Type") != metricsContentType {
		t.Fatalf("GET /metrics/app = %d %q", a.code, a.header.Get("Content-Type"))
	}
	if !strings.Contains(a.body, "# clusterinit: 1 of 3 ready workers did not answer within 50ms") {
		t.Errorf("the page does not say a worker was left out:\n%s", a.body)
	}
	fams := parseMetrics(t, a.body)
	if got := fams["jobs_total"].GetMetric()[0].GetCounter().GetValue(); got != 7 {
		t.Errorf("jobs_total = %v, want 2+5", got)
	}
	m := parseMetrics(t, do(t, "GET", "http://"+s.Addr()+"/metrics").body)
	if got := m["clusterinit_app_metrics_missed_total"].GetMetric()[0].GetCounter().GetValue(); got != 1 {
		t.Errorf("clusterinit_app_metrics_missed_total = %v, want 1", got)
	}
}

// BenchmarkDecodeAndMerge is the server's share of one /metrics/app scrape
// of 8 workers with 400 series each: decode every answer, merge.
func BenchmarkDecodeAndMerge(b *testing.B) {
	var sb strings.Builder
	sb.WriteString(`[{"name":"app_wide_total","help":"x","type":"counter","aggregator":"sum","values":[`)
	for i := range 400 {
		if i > 0 {
			sb.WriteByte(',')
		}
		fmt.Fprintf(&sb, `{"value":%d,"labels":{"key":"series-with-a-longish-label-value-%d"}}`, i, i)
	}
	sb.WriteString(`]}]`)
	raw := []byte(sb.String())
	b.SetBytes(int64(8 * len(raw)))
	for range b.N {
		var lists [][]AppMetric
		for range 8 {
			var l []AppMetric
			if err := json.Unmarshal(raw, &l); err != nil {
				b.Fatal(err)
			}
			lists = append(lists, l)
		}
		MergeAppMetrics(lists)
	}
}

// The fast label scan and the general decoder agree, escapes included.
func TestLabelScanMatchesGeneralDecoder(t *testing.T) {
	for _, in := range []string{`{}`, `null`, ` { "a" : "x" , "b":1.5e-7,"c":true } `, `{"le":"+Inf","q\"uote":"a\\b\"c\u00e9"}`,
		`{"n":-0,"big":123456789012345678901234}`, `{"nested":{"x":1}}`, `{"arr":[1,2]}`} {
		var fast, general LabelList
		errFast := json.Unmarshal([]byte(in), &fast)
		errGeneral := general.decodeGeneral([]byte(in))
		if in == "null" {
			errGeneral = nil
		}
		if (errFast != nil) != (errGeneral != nil) || !slices.Equal(fast, general) {
			t.Errorf("%s: scan %v %v, general %v %v", in, fast, errFast, general, errGeneral)
		}
	}
}

// FuzzLabels: for any JSON the workers could send, the fast label scan and
// the general decoder agree, and the merge never panics.
func FuzzLabels(f *testing.F) {
	for _, s := range []string{`{}`, `{"a":"b","le":0.5}`, `{"q\"":"\u00e9\\"}`, `{"n":{"x":1}}`, `null`, ` {"a" : 1e400 } `} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		if !json.Valid([]byte(in)) {
			return
		}
		var fast, general LabelList
		errFast := json.Unmarshal([]byte(in), &fast)
		errGeneral := general.decodeGeneral([]byte(in))
		if strings.TrimSpace(in) == "null" {
			errGeneral = nil
		}
		if errFast == nil && errGeneral == nil && !slices.Equal(fast, general) {
			t.Fatalf("%q: scan %v, general %v", in, fast, general)
		}
		if (errFast == nil) != (errGeneral == nil) {
			t.Fatalf("%q: scan error %v, general error %v", in, errFast, errGeneral)
		}
		one := 1.0
		MergeAppMetrics([][]AppMetric{{{Name: "m", Values: []AppValue{{Value: &one, Labels: fast}}}}})
	})
}
