package supervisor_test

import (
	"net/http"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
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
	// Recycled workers exit once their clients' connections are closed;
	// scrape until some have. Each earlier scrape is a request too.
	var families map[string]*dto.MetricFamily
	var recycled float64
	for scrapes := 0; ; scrapes++ {
		families = scrape(t, s.url("/metrics"))
		var total float64
		for _, m := range families["mcpgateway_http_requests_total"].GetMetric() {
			total += m.GetCounter().GetValue()
		}
		if want := float64(n + scrapes); total != want {
			t.Fatalf("requests counted %v, want exactly %v", total, want)
		}
		recycled = 0
		for _, m := range families["mcpgateway_worker_exits_total"].GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "reason" && l.GetValue() == "recycled" {
					recycled = m.GetCounter().GetValue()
				}
			}
		}
		if recycled >= 3 {
			break
		}
		if scrapes == 100 {
			t.Fatalf("want recycled workers to have exited, /metrics says %v", recycled)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if h := families["mcpgateway_http_request_duration_seconds"].GetMetric()[0].GetHistogram(); h.GetSampleCount() < n {
		t.Fatalf("histogram count %d, want at least %d", h.GetSampleCount(), n)
	}
	t.Logf("%d requests over %v recycled workers, counted exactly", n, recycled)
}

func scrape(t *testing.T, url string) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	parser := expfmt.NewTextParser(model.LegacyValidation)
	families, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("/metrics does not parse: %v", err)
	}
	return families
}
