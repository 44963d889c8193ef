package supervisor_test

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mcpgateway/mcpgateway/internal/proctest"
)

// metric reads one sample of the server's /metrics (0 when absent).
func (s *server) metric(t *testing.T, series string) float64 {
	t.Helper()
	resp, err := http.Get(s.url("/metrics"))
	if err != nil {
		t.Fatalf("scrape: %v", err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(series) + ` (\S+)$`).FindSubmatch(b)
	if m == nil {
		return 0
	}
	v, _ := strconv.ParseFloat(string(m[1]), 64)
	return v
}

// CPU saturation that an in-flight count cannot see (one worker, a
// 2 ms CPU-bound route, 60 keep-alive clients): requests wait past
// --max-queue-delay, the worker sheds, every request is answered (200 or
// an immediate 503 with Retry-After), and /health answers throughout.
func TestQueueDelayShedding(t *testing.T) {
	s := start(t, nil, "--workers", "1", "--max-queue-delay", "5ms")
	prober := proctest.StartProbing(s.url("/health"), 50*time.Millisecond, 2*time.Second)
	stop := keepLoading(s.url("/burn?us=2000"), 60)
	time.Sleep(3 * time.Second)
	r := stop()
	probes, bad := prober.Stop()
	if len(r.errors) > 0 {
		t.Fatalf("%d requests failed, first: %v", len(r.errors), r.errors[0])
	}
	if r.byStatus[200] == 0 || r.byStatus[503] == 0 || len(r.byStatus) != 2 {
		t.Fatalf("want 200s and 503s, got %v", r.byStatus)
	}
	for body := range r.byBody { // /burn answers a number; a refusal, JSON
		if strings.HasPrefix(body, "{") && !strings.Contains(body, "wait too long") {
			t.Errorf("a 503 body: %s", body)
		}
	}
	shed := s.metric(t, `mcpgateway_http_requests_refused_total{reason="queue_delay"}`)
	if shed != float64(r.byStatus[503]) {
		t.Errorf("refusals by queue_delay %v, the clients got %d 503s", shed, r.byStatus[503])
	}
	if n := s.metric(t, "mcpgateway_request_queue_seconds_count"); n < float64(r.byStatus[200]) {
		t.Errorf("queue-delay histogram counts %v requests, want at least the %d served", n, r.byStatus[200])
	}
	if probes < 5 || len(bad) > 0 {
		t.Fatalf("/health during the overload: %d probes, failures %v", probes, bad)
	}
	t.Logf("answers %v, health probes %d", r.byStatus, probes)
}

// --backpressure auto: the limit falls while latency grows with
// concurrency (a resource that slows with load), and rises again when the
// latency is back to its minimum.
func TestAdaptiveLimitMovesDownAndBackUp(t *testing.T) {
	s := start(t, nil, "--workers", "1", "--backpressure", "64", "--backpressure-auto")
	limit := func() float64 { return s.metric(t, `mcpgateway_worker_inflight_limit{slot="0"}`) }
	if l := limit(); l != 64 {
		t.Fatalf("limit %v at start, want the ceiling 64", l)
	}
	load(s.url("/contend?ms=2"), 300, 1).clean(t) // the latency without load

	stop := keepLoading(s.url("/contend?ms=2"), 40)
	waitFor(t, "the limit to fall below 20", 20*time.Second, func() bool { return limit() < 20 })
	low := limit()
	r := stop()
	if len(r.errors) > 0 || r.byStatus[503] == 0 {
		t.Fatalf("contended load: %d errors (first %v), answers %v", len(r.errors), r.errors, r.byStatus)
	}
	if n := s.metric(t, `mcpgateway_http_requests_refused_total{reason="in_flight"}`); n == 0 {
		t.Error("no refusal counted as in_flight")
	}

	stop = keepLoading(s.url("/contend?ms=2&flat=1"), 40)
	waitFor(t, "the limit to rise to 40", 20*time.Second, func() bool { return limit() >= 40 })
	r = stop()
	if len(r.errors) > 0 {
		t.Fatalf("flat load: %d errors, first %v", len(r.errors), r.errors[0])
	}
	t.Logf("limit 64 → %v → %v", low, limit())
}

// The connection cap bounds a worker's connections even with backpressure
// off. At the cap, idle keep-alive connections make room for new ones, as
// in nginx; when every connection is busy, a new one is answered at once
// with a 503 and closed cleanly, instead of being left in the kernel's
// queue. /metrics is still answered (it is read here past the cap).
func TestConnectionsPastTheCapGetA503(t *testing.T) {
	s := start(t, nil, "--workers", "1", "--worker-connections", "4")
	ask := func(c net.Conn, path string) (int, error) {
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := io.WriteString(c, "GET "+path+" HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
			return 0, err
		}
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			return 0, err
		}
		resp.Body.Close()
		return resp.StatusCode, nil
	}
	dial := func() net.Conn {
		c, err := net.Dial("tcp", s.addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}

	// Four idle keep-alive connections, then a fifth: served, the idle
	// one closed to make room.
	var idle []net.Conn
	for range 4 {
		c := dial()
		if code, err := ask(c, "/pid"); err != nil || code != 200 {
			t.Fatalf("idle connection: %d %v", code, err)
		}
		idle = append(idle, c)
	}
	fifth := dial()
	if code, err := ask(fifth, "/pid"); err != nil || code != 200 {
		t.Fatalf("a new connection at a cap of idle ones: %d %v, want 200", code, err)
	}
	closed := 0
	for _, c := range idle {
		_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
		if _, err := c.Read(make([]byte, 1)); err != nil {
			closed++
		}
	}
	if closed == 0 {
		t.Error("no idle connection was closed to make room")
	}
	for _, c := range append(idle, fifth) {
		c.Close()
	}

	// Four busy connections: new ones are refused.
	waitFor(t, "the connections to close", 5*time.Second, func() bool { return s.table().Snapshot().Workers[0].Conns == 0 })
	for range 4 {
		c := dial()
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := io.WriteString(c, "GET /slow?ms=4000 HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "four requests in flight", 5*time.Second, func() bool {
		return s.metric(t, "mcpgateway_http_requests_in_flight") == 4
	})
	for i := range 3 {
		c := dial()
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		begin := time.Now()
		if _, err := io.WriteString(c, "GET /pid HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
		answer, err := io.ReadAll(c)
		if err != nil || !strings.HasPrefix(string(answer), "HTTP/1.1 503 ") || !strings.Contains(string(answer), "Connection: close") {
			t.Fatalf("connection %d past a cap of busy ones: %q, %v", i, answer, err)
		}
		if took := time.Since(begin); took > 2*time.Second {
			t.Errorf("the refusal took %s", took)
		}
	}
	if got := s.table().Snapshot().Workers[0].Conns; got != 4 {
		t.Errorf("worker holds %d connections, want the cap of 4", got)
	}
	if n := s.metric(t, `mcpgateway_http_requests_refused_total{reason="connections"}`); n != 3 {
		t.Errorf("refusals by connections %v, want 3", n)
	}
}

// A full worker still admits the essential requests (for MCP: initialize,
// ping, tools/list) before others; /health and /metrics are never refused.
func TestEssentialRequestsAreAdmittedFirst(t *testing.T) {
	s := start(t, nil, "--workers", "1", "--backpressure", "2")
	var wg sync.WaitGroup
	for range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := http.Get(s.url("/slow?ms=3000"))
			if err == nil {
				resp.Body.Close()
			}
		}()
	}
	defer wg.Wait()
	waitFor(t, "two requests in flight", 5*time.Second, func() bool {
		return s.metric(t, "mcpgateway_http_requests_in_flight") == 2
	})
	get := func(essential bool) int {
		req, _ := http.NewRequest("GET", s.url("/pid"), nil)
		if essential {
			req.Header.Set("X-Essential", "1")
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := get(false); code != 503 {
		t.Errorf("an ordinary request to a full worker: %d, want 503", code)
	}
	if code := get(true); code != 200 {
		t.Errorf("an essential request to a full worker: %d, want 200", code)
	}
	for _, path := range []string{"/health", "/metrics"} {
		if resp, err := http.Get(s.url(path)); err != nil || resp.StatusCode != 200 {
			t.Errorf("%s from a full worker: %v %v", path, resp, err)
		} else {
			resp.Body.Close()
		}
	}
}
