package supervisor_test

import (
	"net/http"
	"testing"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// After N requests spread over recycled workers, the request counters of
// /metrics sum to N exactly: an exited worker's counts are folded, not lost.
func TestMetricsCountEveryRequestAcrossRecycling(t *testing.T) {
	s := start(t, nil, "--workers", "3", "--max-requests", "150", "--max-requests-jitter", "20")
	const n = 3000
	r := load(s.url("/pid"), n, 20)
	if len(r.errors) > 0 {
		t.Fatal(r.errors[0])
	}
	resp, err := http.Get(s.url("/metrics"))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	parser := expfmt.NewTextParser(model.LegacyValidation)
	families, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("/metrics does not parse: %v", err)
	}
	var total float64
	for _, m := range families["mcpgateway_http_requests_total"].GetMetric() {
		total += m.GetCounter().GetValue()
	}
	if total != n {
		t.Fatalf("requests counted %v, want exactly %d", total, n)
	}
	recycled := 0.0
	for _, m := range families["mcpgateway_worker_exits_total"].GetMetric() {
		for _, l := range m.GetLabel() {
			if l.GetName() == "reason" && l.GetValue() == "recycled" {
				recycled = m.GetCounter().GetValue()
			}
		}
	}
	if recycled < 3 {
		t.Fatalf("want many recycled workers, /metrics says %v", recycled)
	}
	if h := families["mcpgateway_http_request_duration_seconds"].GetMetric()[0].GetHistogram(); h.GetSampleCount() != n {
		t.Fatalf("histogram count %d, want %d", h.GetSampleCount(), n)
	}
	t.Logf("%d requests over %v recycled workers, counted exactly", n, recycled)
}
