package health

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// The application's own metrics (/metrics/app) arrive from each worker as
// prom-client's registry.getMetricsAsJSON() and are merged here exactly as
// prom-client's AggregatorRegistry.aggregate() merges a cluster's workers:
// metrics by name (the first worker's help, type and aggregator win), then
// within a metric the values by sample name and label set, combined by the
// metric's aggregator. Output follows prom-client's text rendering (families
// in first-seen order, a blank line between them), so a dashboard moved from
// a cluster primary's clusterMetrics() sees the same series.

// appMetricsWait is how long /metrics/app waits for the workers' answers: a
// worker that has not answered by then (a busy or hung event loop) is left
// out of that scrape and counted in clusterinit_app_metrics_missed_total.
const appMetricsWait = time.Second

// appMetrics serves /metrics/app: every ready worker's prom-client metrics,
// merged.
func (s *Server) appMetrics(w http.ResponseWriter, _ *http.Request) {
	sc, err := s.fleet.AppMetrics()
	if err != nil {
		writeText(w, http.StatusServiceUnavailable, err.Error()+"\n")
		return
	}
	timeout := time.NewTimer(s.appMetricsWait)
	defer timeout.Stop()
	var lists [][]AppMetric
	answered := 0
wait:
	for answered < sc.Asked {
		select {
		case raw := <-sc.Answers:
			answered++
			var list []AppMetric
			if err := json.Unmarshal(raw, &list); err != nil {
				s.log.Warn("a worker's app metrics are not prom-client's getMetricsAsJSON()", "err", err)
				continue
			}
			lists = append(lists, list)
		case <-timeout.C:
			break wait
		}
	}
	missed := sc.Asked - answered
	s.appMetricsMissed.Add(uint64(missed))
	merged, skipped := MergeAppMetrics(lists)

	var b bytes.Buffer
	if missed > 0 {
		fmt.Fprintf(&b, "# clusterinit: %d of %d ready workers did not answer within %s and are left out\n", missed, sc.Asked, s.appMetricsWait)
	}
	for _, name := range skipped {
		fmt.Fprintf(&b, "# clusterinit: %s left out: its aggregator is not one of prom-client's (sum, first, min, max, average, omit)\n", escapeHelp(name))
	}
	WriteAppMetrics(&b, merged)
	h := w.Header()
	h.Set("Content-Type", metricsContentType)
	h.Set("Content-Length", strconv.Itoa(b.Len()))
	noStore(h)
	w.Write(b.Bytes())
}

// AppMetric is one metric of getMetricsAsJSON().
type AppMetric struct {
	Name       string     `json:"name"`
	Help       string     `json:"help"`
	Type       string     `json:"type"`
	Aggregator string     `json:"aggregator"`
	Values     []AppValue `json:"values"`
}

// AppValue is one sample of an AppMetric. Value is nil where JSON had null:
// NaN and ±Inf do not survive JSON, and prom-client's aggregators then add
// the null as 0, as this merge does.
type AppValue struct {
	Value      *float64  `json:"value"`
	MetricName string    `json:"metricName,omitempty"`
	Labels     LabelList `json:"labels"`
}

// Label is one label of a sample, its value already in text form.
type Label struct{ Name, Value string }

// LabelList keeps labels in the order the app gave them, as prom-client
// prints them.
type LabelList []Label

// UnmarshalJSON reads a JSON object of label values, which prom-client lets
// be strings or numbers (a histogram's le is a number but for "+Inf"),
// keeping the keys' order. encoding/json has checked that b is valid JSON;
// the scan below handles the flat objects prom-client writes, about ten
// times faster than json.Decoder's tokens (a scrape decodes thousands), and
// leaves anything else (a nested value) to the general path.
func (l *LabelList) UnmarshalJSON(b []byte) error {
	*l = nil
	if labels, ok := scanFlatObject(b); ok {
		*l = labels
		return nil
	}
	return l.decodeGeneral(b)
}

// scanFlatObject reads {"k":"v","n":1,…} whose values are strings, numbers,
// true, false or null; ok is false for anything else.
func scanFlatObject(b []byte) (labels LabelList, ok bool) {
	i := skipSpace(b, 0)
	if strings.HasPrefix(string(b[i:]), "null") {
		return nil, true
	}
	if i >= len(b) || b[i] != '{' {
		return nil, false
	}
	i = skipSpace(b, i+1)
	if i < len(b) && b[i] == '}' {
		return nil, true
	}
	for i < len(b) {
		name, next, ok := scanString(b, i)
		if !ok {
			return nil, false
		}
		i = skipSpace(b, next)
		if i >= len(b) || b[i] != ':' {
			return nil, false
		}
		i = skipSpace(b, i+1)
		var value string
		if i < len(b) && b[i] == '"' {
			if value, i, ok = scanString(b, i); !ok {
				return nil, false
			}
		} else {
			j := i
			for j < len(b) && b[j] != ',' && b[j] != '}' && b[j] > ' ' {
				j++
			}
			if j == i || b[i] == '{' || b[i] == '[' {
				return nil, false
			}
			value, i = labelText(b[i:j]), j
		}
		labels = append(labels, Label{Name: name, Value: value})
		i = skipSpace(b, i)
		switch {
		case i < len(b) && b[i] == ',':
			i = skipSpace(b, i+1)
		case i < len(b) && b[i] == '}':
			return labels, true
		default:
			return nil, false
		}
	}
	return nil, false
}

// scanString reads the JSON string starting at b[i] == '"', returning it
// and the index after its closing quote.
func scanString(b []byte, i int) (string, int, bool) {
	if i >= len(b) || b[i] != '"' {
		return "", 0, false
	}
	escaped := false
	for j := i + 1; j < len(b); j++ {
		switch b[j] {
		case '\\':
			escaped = true
			j++ // whatever follows is part of the escape
		case '"':
			// encoding/json turns invalid UTF-8 into U+FFFD: let it.
			if !escaped && utf8.Valid(b[i+1:j]) {
				return string(b[i+1 : j]), j + 1, true
			}
			var s string
			if json.Unmarshal(b[i:j+1], &s) != nil {
				return "", 0, false
			}
			return s, j + 1, true
		}
	}
	return "", 0, false
}

func skipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

// decodeGeneral reads any JSON object of label values with json.Decoder.
func (l *LabelList) decodeGeneral(b []byte) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return fmt.Errorf("decode labels: want an object, got %s", b)
	}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return fmt.Errorf("decode labels: %w", err)
		}
		name, _ := tok.(string)
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return fmt.Errorf("decode label %q: %w", name, err)
		}
		*l = append(*l, Label{Name: name, Value: labelText(raw)})
	}
	_, err := dec.Token()
	return err
}

// labelText is a label value as JavaScript's template string would print
// it: strings as they are, numbers in JavaScript's number format.
func labelText(raw json.RawMessage) string {
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s
	}
	var f float64
	if json.Unmarshal(raw, &f) == nil {
		return jsNumber(f)
	}
	return string(raw) // true, false, null print as themselves
}

// key identifies a label set whatever the order of its labels, as
// prom-client's hashObject does. The bytes 0xfe and 0xff never occur in
// UTF-8, which JSON strings are, so they separate without ambiguity.
func (l LabelList) key() string {
	sorted := l
	if !slices.IsSortedFunc(l, byName) {
		sorted = slices.Clone(l)
		slices.SortFunc(sorted, byName)
	}
	var sb strings.Builder
	for _, lb := range sorted {
		sb.WriteString(lb.Name)
		sb.WriteByte(0xfe)
		sb.WriteString(lb.Value)
		sb.WriteByte(0xff)
	}
	return sb.String()
}

func byName(a, b Label) int { return strings.Compare(a.Name, b.Name) }

// aggregators combine one sample's values from every worker; prom-client's
// names. "omit" drops the metric.
var aggregators = map[string]func([]float64) float64{
	"sum":   func(v []float64) float64 { return sum(v) },
	"first": func(v []float64) float64 { return v[0] },
	"min":   func(v []float64) float64 { return fold(v, math.Inf(1), math.Min) },
	"max":   func(v []float64) float64 { return fold(v, math.Inf(-1), math.Max) },
	"average": func(v []float64) float64 {
		return sum(v) / float64(len(v))
	},
}

func sum(v []float64) float64 { return fold(v, 0, func(a, b float64) float64 { return a + b }) }

func fold(v []float64, start float64, f func(a, b float64) float64) float64 {
	acc := start
	for _, x := range v {
		acc = f(acc, x)
	}
	return acc
}

// MergeAppMetrics merges every worker's metrics. A metric whose aggregator
// is not one of prom-client's built-ins (a custom AggregatorFactory cannot
// travel in JSON) is left out and named in skipped; prom-client would fail
// the whole scrape.
func MergeAppMetrics(workers [][]AppMetric) (merged []AppMetric, skipped []string) {
	var order []string
	byName := map[string][]AppMetric{}
	for _, ms := range workers {
		for _, m := range ms {
			if _, seen := byName[m.Name]; !seen {
				order = append(order, m.Name)
			}
			byName[m.Name] = append(byName[m.Name], m)
		}
	}
	for _, name := range order {
		same := byName[name]
		aggName := same[0].Aggregator
		if aggName == "" {
			aggName = "sum"
		}
		if aggName == "omit" {
			continue
		}
		agg, ok := aggregators[aggName]
		if !ok {
			skipped = append(skipped, name)
			continue
		}
		out := AppMetric{Name: name, Help: same[0].Help, Type: same[0].Type, Aggregator: aggName}
		var keys []string
		type group struct {
			first  AppValue
			values []float64
		}
		groups := map[string]*group{}
		for _, m := range same {
			for _, v := range m.Values {
				k := v.MetricName + "\x00" + v.Labels.key()
				g := groups[k]
				if g == nil {
					g = &group{first: v}
					groups[k] = g
					keys = append(keys, k)
				}
				x := 0.0
				if v.Value != nil {
					x = *v.Value
				}
				g.values = append(g.values, x)
			}
		}
		for _, k := range keys {
			g := groups[k]
			x := agg(g.values)
			out.Values = append(out.Values, AppValue{Value: &x, MetricName: g.first.MetricName, Labels: g.first.Labels})
		}
		merged = append(merged, out)
	}
	return merged, skipped
}

// WriteAppMetrics renders merged metrics in Prometheus text format 0.0.4, as
// prom-client's registry.metrics() does.
func WriteAppMetrics(buf *bytes.Buffer, metrics []AppMetric) {
	for i, m := range metrics {
		if i > 0 {
			buf.WriteByte('\n')
		}
		name := escapeHelp(m.Name)
		fmt.Fprintf(buf, "# HELP %s %s\n# TYPE %s %s\n", name, escapeHelp(m.Help), name, m.Type)
		for _, v := range m.Values {
			sample := v.MetricName
			if sample == "" {
				sample = name
			}
			buf.WriteString(sample)
			if len(v.Labels) > 0 {
				buf.WriteByte('{')
				for j, lb := range v.Labels {
					if j > 0 {
						buf.WriteByte(',')
					}
					fmt.Fprintf(buf, "%s=\"%s\"", lb.Name, escapeLabelValue(lb.Value))
				}
				buf.WriteByte('}')
			}
			buf.WriteByte(' ')
			x := 0.0
			if v.Value != nil {
				x = *v.Value
			}
			buf.WriteString(promValue(x))
			buf.WriteByte('\n')
		}
	}
}

// promValue is prom-client's getValueAsString.
func promValue(x float64) string {
	switch {
	case math.IsNaN(x):
		return "NaN"
	case math.IsInf(x, 1):
		return "+Inf"
	case math.IsInf(x, -1):
		return "-Inf"
	}
	return jsNumber(x)
}

// jsNumber formats x as JavaScript's Number.prototype.toString does: the
// shortest digits that round-trip, in plain notation for exponents from -7
// to 20 and in exponent notation (1e-7, 1.5e+21) outside them.
func jsNumber(x float64) string {
	if x == 0 {
		return "0" // -0 too
	}
	if math.IsNaN(x) || math.IsInf(x, 0) {
		return promValue(x)
	}
	sign := ""
	if x < 0 {
		sign, x = "-", -x
	}
	// digits d1d2…dk and n such that x = 0.d1d2…dk × 10^n.
	e := strconv.FormatFloat(x, 'e', -1, 64) // d.ddde±XX
	mant, exp, _ := strings.Cut(e, "e")
	digits := strings.Replace(mant, ".", "", 1)
	n, _ := strconv.Atoi(exp)
	n++
	k := len(digits)
	switch {
	case k <= n && n <= 21:
		return sign + digits + strings.Repeat("0", n-k)
	case 0 < n && n <= 21:
		return sign + digits[:n] + "." + digits[n:]
	case -6 < n && n <= 0:
		return sign + "0." + strings.Repeat("0", -n) + digits
	}
	expSign := "+"
	if n-1 < 0 {
		expSign = "-"
	}
	m := digits[:1]
	if k > 1 {
		m += "." + digits[1:]
	}
	return sign + m + "e" + expSign + strconv.Itoa(abs(n-1))
}

func abs(i int) int {
	if i < 0 {
		return -i
	}
	return i
}
