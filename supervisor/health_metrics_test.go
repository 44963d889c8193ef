package supervisor_test

import (
	"testing"

	dto "github.com/prometheus/client_model/go"
)

// sumOf adds up a family's counter or gauge values.
func sumOf(f *dto.MetricFamily) (sum float64) {
	for _, m := range f.GetMetric() {
		sum += m.GetCounter().GetValue() + m.GetGauge().GetValue()
	}
	return sum
}

// The health port answers /metrics itself, from the status table, for the
// whole server: the same families as a worker's scrape, every request
// counted (the health port's own answers are not requests of the server),
// and the listen queue of the shared socket, or the sum over the slots'
// sockets with --reuse-port.
func TestHealthPortServesMetrics(t *testing.T) {
	for _, reusePort := range []bool{false, true} {
		hp := healthPort(t)
		args := []string{"--workers", "2", "--health-bind", hp, "--backlog", "64"}
		if reusePort {
			args = append(args, "--reuse-port")
		}
		s := start(t, nil, args...)
		const n = 200
		if r := load(s.url("/pid"), n, 4); len(r.errors) > 0 {
			t.Fatal(r.errors[0])
		}
		fromHealth := scrape(t, "http://"+hp+"/metrics")
		fromHealth = scrape(t, "http://"+hp+"/metrics") // a second scrape counts nothing more
		fromWorker := scrape(t, s.url("/metrics"))
		for name := range fromWorker {
			if fromHealth[name] == nil {
				t.Errorf("reuse-port %v: %s is in a worker's scrape, not in the health port's", reusePort, name)
			}
		}
		if got := sumOf(fromHealth["mcpgateway_http_requests_total"]); got != n {
			t.Errorf("reuse-port %v: health port counts %v requests, want %d", reusePort, got, n)
		}
		if got := sumOf(fromHealth["mcpgateway_workers"]); got != 2 {
			t.Errorf("reuse-port %v: workers %v", reusePort, got)
		}
		limit := sumOf(fromHealth["mcpgateway_listen_queue_limit"])
		if want := 64.0 * map[bool]float64{false: 1, true: 2}[reusePort]; limit != want {
			t.Errorf("reuse-port %v: listen_queue_limit %v, want %v (the whole server's)", reusePort, limit, want)
		}
	}
}
