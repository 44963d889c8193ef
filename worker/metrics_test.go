package worker

import (
	"bytes"
	"math"
	"net"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mcpgateway/mcpgateway/supervisor/protocol"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/valyala/fasthttp"
)

// record counts one request in a row the way the worker's account does.
func record(r *protocol.Row, status int, dur time.Duration) {
	r.Add(protocol.C1xx+protocol.Field(status/100-1), 1)
	r.Add(protocol.CDurationSum, uint64(dur))
	r.Add(protocol.CBucket0+protocol.Field(protocol.BucketIndex(int64(dur))), 1)
	r.Add(protocol.CServed, 1)
}

// startWorker fills a row as the master does at spawn.
func startWorker(r *protocol.Row, slot, gen, pid int, started int64) {
	r.Store(protocol.FSlot, uint64(slot))
	r.Store(protocol.FGeneration, uint64(gen))
	r.Store(protocol.FStarted, uint64(started))
	r.Store(protocol.FState, protocol.StateReady)
	r.Store(protocol.FPid, uint64(pid))
}

func parseMetrics(t *testing.T, text []byte) map[string]*dto.MetricFamily {
	t.Helper()
	// Legacy validation: every name must also suit Prometheus servers that
	// predate UTF-8 names.
	p := expfmt.NewTextParser(model.LegacyValidation)
	fams, err := p.TextToMetricFamilies(bytes.NewReader(text))
	if err != nil {
		t.Fatalf("parse /metrics output: %v\n%s", err, text)
	}
	return fams
}

// sample finds the one series of family name whose labels include want
// (name, value, ...) and returns its counter or gauge value.
func sample(t *testing.T, fams map[string]*dto.MetricFamily, name string, want ...string) float64 {
	t.Helper()
	mf := fams["mcpgateway_"+name]
	if mf == nil {
		t.Fatalf("no family mcpgateway_%s", name)
	}
	var found []*dto.Metric
	for _, m := range mf.Metric {
		labels := map[string]string{}
		for _, l := range m.Label {
			labels[l.GetName()] = l.GetValue()
		}
		ok := true
		for i := 0; i+1 < len(want); i += 2 {
			if labels[want[i]] != want[i+1] {
				ok = false
			}
		}
		if ok {
			found = append(found, m)
		}
	}
	if len(found) != 1 {
		t.Fatalf("mcpgateway_%s%v: %d series match, want 1", name, want, len(found))
	}
	m := found[0]
	switch mf.GetType() {
	case dto.MetricType_COUNTER:
		return m.GetCounter().GetValue()
	case dto.MetricType_GAUGE:
		return m.GetGauge().GetValue()
	}
	t.Fatalf("mcpgateway_%s is a %v", name, mf.GetType())
	return 0
}

func near(a, b float64) bool { return math.Abs(a-b) <= 1e-9*math.Max(1, math.Abs(b)) }

func TestWriteMetricsWholeServer(t *testing.T) {
	tb, err := protocol.CreateTable(4)
	if err != nil {
		t.Fatal(err)
	}
	defer tb.Close()
	h := tb.Header()
	const sec = int64(time.Second)
	now := int64(1000 * sec)
	h.Store(protocol.HMasterStarted, uint64(now-100*sec))
	h.Store(protocol.HWorkersTarget, 2)

	// Generation 1 of slot 0 serves 10 requests, is recycled and folded.
	old := tb.Row(1)
	startWorker(old, 0, 1, 1001, now-90*sec)
	h.Store(protocol.HMaxRow, 1)
	h.Add(protocol.HStarts, 1)
	for i := range 10 {
		status := 200
		if i == 9 {
			status = 404
		}
		record(old, status, 300*time.Microsecond) // bucket le=0.0005
	}
	old.Add(protocol.CPanics, 1)
	before := tb.Snapshot()
	h.Add(protocol.ExitField(protocol.ReasonRecycled), 1)
	tb.Fold(1)
	after := tb.Snapshot()
	if before.Total.Served != 10 || after.Total.Served != 10 || after.Retired.Served != 10 {
		t.Fatalf("fold changed totals: before %d, after %d (retired %d)",
			before.Total.Served, after.Total.Served, after.Retired.Served)
	}

	// Live: generation 2 of slot 0 (in the freed row) and slot 1.
	w0 := tb.Row(1)
	startWorker(w0, 0, 2, 1003, now-10*sec)
	w1 := tb.Row(2)
	startWorker(w1, 1, 1, 1002, now-90*sec)
	h.Store(protocol.HMaxRow, 2)
	h.Add(protocol.HStarts, 2)
	h.Add(protocol.HStopResets, 4)
	record(w0, 200, 2*time.Millisecond) // le=0.0025
	record(w0, 200, 2*time.Millisecond)
	record(w0, 503, 100*time.Microsecond) // a refusal is answered and counted too
	w0.Add(protocol.CRefused, 1)
	w0.Add(protocol.CRefusedInFlight, 1)
	w0.Add(protocol.CQueueSum, uint64(3*time.Millisecond))
	w0.Add(protocol.CQueueBucket0+protocol.Field(protocol.QueueBucketIndex(int64(3*time.Millisecond))), 1)
	for range 4 {
		record(w1, 200, 30*time.Millisecond) // le=0.05
	}
	record(w1, 504, 20*time.Second) // +Inf
	w1.Add(protocol.CTimeouts, 1)
	w0.Store(protocol.FInFlight, 2)
	w1.Store(protocol.FInFlight, 1)
	w0.Store(protocol.FConns, 7)
	w1.Store(protocol.FConns, 5)
	w0.Store(protocol.FOpenStreams, 2)
	w1.Store(protocol.FOpenStreams, 1)
	w0.Store(protocol.FRSS, 12<<20)
	w1.Store(protocol.FState, protocol.StateRetiring)

	snap := tb.Snapshot()
	var out bytes.Buffer
	queues := []ListenQueue{{Addr: "0.0.0.0:4444", Length: 3, Limit: 2048}}
	if err := WriteMetrics(&out, snap, now, BuildInfo{Version: "1.2.3", GoVersion: "go1.26.8"}, queues); err != nil {
		t.Fatal(err)
	}
	fams := parseMetrics(t, out.Bytes())

	for name, mf := range fams {
		if !strings.HasPrefix(name, "mcpgateway_") {
			t.Errorf("%s: missing the mcpgateway_ prefix", name)
		}
		if mf.GetHelp() == "" {
			t.Errorf("%s: no HELP", name)
		}
	}

	// Whole-server totals include the folded worker exactly once.
	const served = 10 + 3 + 5
	for code, want := range map[string]float64{"1xx": 0, "2xx": 9 + 2 + 4, "3xx": 0, "4xx": 1, "5xx": 2} {
		if got := sample(t, fams, "http_requests_total", "code", code); got != want {
			t.Errorf("http_requests_total{code=%q} = %v, want %v", code, got, want)
		}
	}
	for name, want := range map[string]float64{
		"http_request_timeouts_total": 1, "handler_panics_total": 1,
		"http_requests_in_flight": 3, "open_connections": 12, "open_streams": 3,
		"worker_starts_total": 3, "stop_queued_connections_reset_total": 4, "workers": 2, "workers_target": 2, "uptime_seconds": 100,
	} {
		if got := sample(t, fams, name); !near(got, want) {
			t.Errorf("%s = %v, want %v", name, got, want)
		}
	}

	for reason, want := range map[string]float64{"in_flight": 1, "queue_delay": 0, "connections": 0} {
		if got := sample(t, fams, "http_requests_refused_total", "reason", reason); got != want {
			t.Errorf("http_requests_refused_total{reason=%q} = %v, want %v", reason, got, want)
		}
	}
	if q := fams["mcpgateway_request_queue_seconds"]; q == nil || q.Metric[0].GetHistogram().GetSampleCount() != 1 ||
		!near(q.Metric[0].GetHistogram().GetSampleSum(), 0.003) {
		t.Errorf("request_queue_seconds: %v", q)
	}

	// The histogram is cumulative and counts every request served.
	mf := fams["mcpgateway_http_request_duration_seconds"]
	if mf.GetType() != dto.MetricType_HISTOGRAM || len(mf.Metric) != 1 {
		t.Fatalf("duration: type %v with %d series", mf.GetType(), len(mf.Metric))
	}
	hist := mf.Metric[0].GetHistogram()
	if hist.GetSampleCount() != served {
		t.Errorf("duration count = %d, want %d (served)", hist.GetSampleCount(), served)
	}
	wantSum := (10*300*time.Microsecond + 2*2*time.Millisecond + 100*time.Microsecond + 4*30*time.Millisecond + 20*time.Second).Seconds()
	if !near(hist.GetSampleSum(), wantSum) {
		t.Errorf("duration sum = %v, want %v", hist.GetSampleSum(), wantSum)
	}
	wantCum := map[float64]uint64{0.0005: 11, 0.001: 11, 0.0025: 13, 0.01: 13, 0.05: 17, 10: 17, math.Inf(1): 18}
	var prev uint64
	bounds := 0
	for _, b := range hist.Bucket {
		if b.GetCumulativeCount() < prev {
			t.Errorf("bucket le=%v: %d after %d, not cumulative", b.GetUpperBound(), b.GetCumulativeCount(), prev)
		}
		prev = b.GetCumulativeCount()
		if want, ok := wantCum[b.GetUpperBound()]; ok && b.GetCumulativeCount() != want {
			t.Errorf("bucket le=%v = %d, want %d", b.GetUpperBound(), b.GetCumulativeCount(), want)
		}
		if !math.IsInf(b.GetUpperBound(), 1) {
			if b.GetUpperBound() != protocol.Buckets[bounds] {
				t.Errorf("bucket %d: le=%v, want %v", bounds, b.GetUpperBound(), protocol.Buckets[bounds])
			}
			bounds++
		}
	}
	if bounds != len(protocol.Buckets) || prev != served {
		t.Errorf("%d finite buckets (want %d), +Inf = %d (want %d)", bounds, len(protocol.Buckets), prev, served)
	}

	// Per slot, labelled by slot only; pid and generation in worker_info.
	w0l := []string{"slot", "0"}
	w1l := []string{"slot", "1"}
	for _, c := range []struct {
		name   string
		labels []string
		want   float64
	}{
		{"worker_requests_total", w0l, 3},
		{"worker_requests_total", w1l, 5},
		{"worker_requests_in_flight", w0l, 2},
		{"worker_open_connections", w1l, 5},
		{"worker_resident_memory_bytes", w0l, 12 << 20},
		{"worker_age_seconds", w0l, 10},
		{"worker_age_seconds", w1l, 90},
		{"worker_state", append(w0l, "state", "ready"), 1},
		{"worker_state", append(w1l, "state", "retiring"), 1},
		{"worker_info", []string{"slot", "0", "pid", "1003", "generation", "2"}, 1},
		{"worker_info", []string{"slot", "1", "pid", "1002", "generation", "1"}, 1},
	} {
		if got := sample(t, fams, c.name, c.labels...); !near(got, c.want) {
			t.Errorf("%s%v = %v, want %v", c.name, c.labels, got, c.want)
		}
	}
	for _, name := range []string{"worker_requests_total", "worker_requests_in_flight", "worker_open_connections",
		"worker_resident_memory_bytes", "worker_age_seconds", "worker_state", "worker_info"} {
		mf := fams["mcpgateway_"+name]
		if n := len(mf.Metric); n != 2 {
			t.Errorf("%s: %d series, want 2 (one per live slot; the exited generation has none)", name, n)
		}
		if name == "worker_info" {
			continue
		}
		for _, m := range mf.Metric {
			for _, l := range m.Label {
				if l.GetName() == "pid" || l.GetName() == "generation" {
					t.Errorf("%s has a %s label: it would churn with every recycle", name, l.GetName())
				}
			}
		}
	}

	// Exits: every reason has a series.
	if n := len(fams["mcpgateway_worker_exits_total"].Metric); n != len(protocol.ExitReasons) {
		t.Errorf("worker_exits_total: %d series, want %d", n, len(protocol.ExitReasons))
	}
	for _, reason := range protocol.ExitReasons {
		want := 0.0
		if reason == protocol.ReasonRecycled {
			want = 1
		}
		if got := sample(t, fams, "worker_exits_total", "reason", reason); got != want {
			t.Errorf("worker_exits_total{reason=%q} = %v, want %v", reason, got, want)
		}
	}

	if got := sample(t, fams, "listen_queue_length", "addr", "0.0.0.0:4444"); got != 3 {
		t.Errorf("listen_queue_length = %v, want 3", got)
	}
	if got := sample(t, fams, "listen_queue_limit", "addr", "0.0.0.0:4444"); got != 2048 {
		t.Errorf("listen_queue_limit = %v, want 2048", got)
	}
	if got := sample(t, fams, "build_info", "version", "1.2.3", "goversion", "go1.26.8"); got != 1 {
		t.Errorf("build_info = %v, want 1", got)
	}
}

// A server with no live worker and no TCP listener still makes a valid scrape:
// families without series are left out, the totals stay.
func TestWriteMetricsEmpty(t *testing.T) {
	var out bytes.Buffer
	if err := WriteMetrics(&out, protocol.Snapshot{}, 5, BuildInfo{}, nil); err != nil {
		t.Fatal(err)
	}
	fams := parseMetrics(t, out.Bytes())
	if _, ok := fams["mcpgateway_worker_requests_total"]; ok {
		t.Error("worker_requests_total present without workers")
	}
	if got := sample(t, fams, "http_requests_total", "code", "2xx"); got != 0 {
		t.Errorf("http_requests_total{code=2xx} = %v", got)
	}
	if c := fams["mcpgateway_http_request_duration_seconds"].Metric[0].GetHistogram().GetSampleCount(); c != 0 {
		t.Errorf("duration count = %d", c)
	}
	if got := sample(t, fams, "uptime_seconds"); got != 0 {
		t.Errorf("uptime_seconds = %v without a start time", got)
	}
	if got := sample(t, fams, "build_info", "version", "unknown"); got != 1 {
		t.Errorf("build_info = %v", got)
	}
}

func readQueue(t *testing.T, ln net.Listener) (ListenQueue, bool) {
	t.Helper()
	sc, ok := ln.(syscall.Conn)
	if !ok {
		t.Fatalf("listener %T has no file descriptor", ln)
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var q ListenQueue
	if err := raw.Control(func(fd uintptr) { q, ok = ReadListenQueue(fd, ln.Addr().String()) }); err != nil {
		t.Fatal(err)
	}
	return q, ok
}

func TestReadListenQueueTCP(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	q, ok := readQueue(t, ln)
	if !ok || q.Length != 0 || q.Limit == 0 || q.Addr != ln.Addr().String() {
		t.Fatalf("idle listener: %+v, %v", q, ok)
	}

	// Three handshakes complete in the kernel; nobody accepts them.
	for range 3 {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
	}
	deadline := time.Now().Add(2 * time.Second)
	for {
		q, ok = readQueue(t, ln)
		if !ok {
			t.Fatal("ReadListenQueue failed on a TCP listener")
		}
		if q.Length == 3 || time.Now().After(deadline) {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	if q.Length != 3 {
		t.Fatalf("queue length %d, want 3", q.Length)
	}
	if q.Limit < 3 {
		t.Fatalf("queue limit %d, want at least 3", q.Limit)
	}
	if qs := ListenQueues([]net.Listener{ln}); len(qs) != 1 || qs[0] != q {
		t.Fatalf("ListenQueues = %+v, want [%+v]", qs, q)
	}

	// An accepted (connected) socket is not a listener.
	c, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	raw, err := c.(*net.TCPConn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	raw.Control(func(fd uintptr) {
		if q, ok := ReadListenQueue(fd, "conn"); ok {
			t.Errorf("connected socket read as a listener: %+v", q)
		}
	})
}

func TestReadListenQueueUnix(t *testing.T) {
	ln, err := net.Listen("unix", filepath.Join(t.TempDir(), "s.sock"))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	if q, ok := readQueue(t, ln); ok {
		t.Fatalf("unix socket: %+v, want false", q)
	}
	if qs := ListenQueues([]net.Listener{ln}); len(qs) != 0 {
		t.Fatalf("ListenQueues on a unix socket = %+v", qs)
	}
}

func TestMetricsHandler(t *testing.T) {
	tb, err := protocol.CreateTable(2)
	if err != nil {
		t.Fatal(err)
	}
	defer tb.Close()
	tb.Header().Store(protocol.HMasterStarted, uint64(protocol.Nanotime()))
	r := tb.Row(1)
	startWorker(r, 0, 1, 4242, protocol.Nanotime())
	tb.Header().Store(protocol.HMaxRow, 1)
	for range 7 {
		record(r, 200, time.Millisecond)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()

	var ctx fasthttp.RequestCtx
	MetricsHandler(tb, BuildInfo{Version: "test"}, []net.Listener{ln})(&ctx)
	if code := ctx.Response.StatusCode(); code != 200 {
		t.Fatalf("status %d: %s", code, ctx.Response.Body())
	}
	if ct := string(ctx.Response.Header.ContentType()); !strings.HasPrefix(ct, "text/plain; version=0.0.4") {
		t.Errorf("content type %q", ct)
	}
	fams := parseMetrics(t, ctx.Response.Body())
	if got := sample(t, fams, "worker_requests_total", "slot", "0"); got != 7 {
		t.Errorf("worker_requests_total = %v, want 7", got)
	}
	if got := sample(t, fams, "worker_info", "pid", strconv.Itoa(4242), "generation", "1"); got != 1 {
		t.Errorf("worker_info = %v, want 1", got)
	}
	if got := sample(t, fams, "listen_queue_length", "addr", ln.Addr().String()); got != 0 {
		t.Errorf("listen_queue_length = %v, want 0", got)
	}
}

// During make-before-break a slot has two live processes: its series stay
// one per slot (a scrape with two samples of one series is refused by
// Prometheus), adding up what adds up, and worker_info has one per process.
func TestWriteMetricsSlotBeingReplaced(t *testing.T) {
	tb, err := protocol.CreateTable(4)
	if err != nil {
		t.Fatal(err)
	}
	defer tb.Close()
	const sec = int64(time.Second)
	now := int64(1000 * sec)
	old, repl := tb.Row(1), tb.Row(2)
	startWorker(old, 0, 4, 2001, now-60*sec)
	startWorker(repl, 0, 5, 2002, now-2*sec)
	tb.Header().Store(protocol.HMaxRow, 2)
	old.Store(protocol.FState, protocol.StateReady) // the master has not stopped it yet
	repl.Store(protocol.FState, protocol.StateReady)
	for range 6 {
		record(old, 200, time.Millisecond)
	}
	record(repl, 200, time.Millisecond)
	old.Store(protocol.FInFlight, 2)
	repl.Store(protocol.FInFlight, 1)
	old.Store(protocol.FRSS, 10<<20)
	repl.Store(protocol.FRSS, 8<<20)

	var out bytes.Buffer
	if err := WriteMetrics(&out, tb.Snapshot(), now, BuildInfo{}, nil); err != nil {
		t.Fatal(err)
	}
	fams := parseMetrics(t, out.Bytes())
	for _, c := range []struct {
		name   string
		labels []string
		want   float64
	}{
		{"worker_requests_total", []string{"slot", "0"}, 7},
		{"worker_requests_in_flight", []string{"slot", "0"}, 3},
		{"worker_resident_memory_bytes", []string{"slot", "0"}, 18 << 20},
		{"worker_age_seconds", []string{"slot", "0"}, 2}, // the newest process
		{"worker_state", []string{"slot", "0", "state", "ready"}, 2},
		{"worker_info", []string{"pid", "2001", "generation", "4"}, 1},
		{"worker_info", []string{"pid", "2002", "generation", "5"}, 1},
	} {
		if got := sample(t, fams, c.name, c.labels...); !near(got, c.want) {
			t.Errorf("%s%v = %v, want %v", c.name, c.labels, got, c.want)
		}
	}
	// The old one drains: two states, one process each.
	old.Store(protocol.FState, protocol.StateDraining)
	out.Reset()
	if err := WriteMetrics(&out, tb.Snapshot(), now, BuildInfo{}, nil); err != nil {
		t.Fatal(err)
	}
	fams = parseMetrics(t, out.Bytes())
	for _, st := range []string{"ready", "draining"} {
		if got := sample(t, fams, "worker_state", "slot", "0", "state", st); got != 1 {
			t.Errorf("worker_state{state=%q} = %v, want 1", st, got)
		}
	}
}

// Label values and help text with the characters the format escapes
// round-trip through Prometheus' own parser.
func TestMetricsEscapingRoundTrips(t *testing.T) {
	tb, err := protocol.CreateTable(2)
	if err != nil {
		t.Fatal(err)
	}
	defer tb.Close()
	odd := "v\"1\\2\nend"
	var buf bytes.Buffer
	if err := WriteMetrics(&buf, tb.Snapshot(), protocol.Nanotime(), BuildInfo{Version: odd, GoVersion: "go"}, []ListenQueue{{Addr: `[::1]:80"`, Length: 1, Limit: 2}}); err != nil {
		t.Fatal(err)
	}
	fams := parseMetrics(t, buf.Bytes())
	labels := map[string]string{}
	for _, l := range fams["mcpgateway_build_info"].GetMetric()[0].GetLabel() {
		labels[l.GetName()] = l.GetValue()
	}
	if labels["version"] != odd {
		t.Fatalf("version label = %q, want %q", labels["version"], odd)
	}
	if got := fams["mcpgateway_listen_queue_limit"].GetMetric()[0].GetLabel()[0].GetValue(); got != `[::1]:80"` {
		t.Fatalf("addr label = %q", got)
	}
}
