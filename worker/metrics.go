package worker

import (
	"bytes"
	"io"
	"math"
	"net"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"

	"github.com/mcpgateway/mcpgateway/supervisor/protocol"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/valyala/fasthttp"
	"golang.org/x/sys/unix"
)

// The /metrics endpoint reports the whole server, not the worker that happens
// to answer the scrape: every worker maps the master's status table, and a
// protocol.Table Snapshot is a consistent view of all of it (exited workers'
// counters folded into the header, plus every live row). Any worker can answer
// and every answer is the same, give or take requests served in between.
//
// The exposition format is written by github.com/prometheus/common/expfmt from
// dto.MetricFamily values (the Prometheus project's own encoder: escaping,
// histogram layout, number formatting), not by hand.

// MetricsPrefix starts every metric name.
const MetricsPrefix = "mcpgateway_"

// MetricsContentType is the Content-Type of a /metrics answer: the Prometheus
// text format 0.0.4.
var MetricsContentType = string(expfmt.NewFormat(expfmt.TypeTextPlain))

// BuildInfo labels the mcpgateway_build_info series. An empty GoVersion is
// filled with runtime.Version(), an empty Version with "unknown".
type BuildInfo struct{ Version, GoVersion string }

// ListenQueue is the accept queue of one listening socket, as the kernel
// reports it: connections that completed the TCP handshake and wait for an
// accept, and the most the queue holds (the effective listen backlog).
type ListenQueue struct {
	Addr          string
	Length, Limit uint64
}

// ReadListenQueue reads the accept-queue depth of a listening TCP socket with
// getsockopt(TCP_INFO): for a socket in the LISTEN state Linux reports the
// current accept-queue length in tcpi_unacked and its limit in tcpi_sacked.
// It returns false for anything else: a unix socket, a socket that is not
// listening, an error.
func ReadListenQueue(fd uintptr, addr string) (ListenQueue, bool) {
	ti, err := unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO)
	if err != nil || ti.State != tcpListen {
		return ListenQueue{}, false
	}
	return ListenQueue{Addr: addr, Length: uint64(ti.Unacked), Limit: uint64(ti.Sacked)}, true
}

// tcpListen is TCP_LISTEN in the kernel's enum of TCP states (tcpi_state).
const tcpListen = 10

// ListenQueues reads the accept queue of every TCP listener that exposes its
// file descriptor (net.TCPListener does); the others are left out.
func ListenQueues(listeners []net.Listener) []ListenQueue {
	var queues []ListenQueue
	for _, ln := range listeners {
		sc, ok := ln.(syscall.Conn)
		if !ok {
			continue
		}
		raw, err := sc.SyscallConn()
		if err != nil {
			continue
		}
		addr := ln.Addr().String()
		_ = raw.Control(func(fd uintptr) {
			if q, ok := ReadListenQueue(fd, addr); ok {
				queues = append(queues, q)
			}
		})
	}
	return queues
}

// MetricsHandler answers a Prometheus scrape from any worker, for the whole
// server, from one consistent Snapshot of table. listeners are the worker's
// inherited listening sockets, for the listen-queue depth.
func MetricsHandler(table *protocol.Table, info BuildInfo, listeners []net.Listener) fasthttp.RequestHandler {
	return func(ctx *fasthttp.RequestCtx) {
		var buf bytes.Buffer
		err := WriteMetrics(&buf, table.Snapshot(), protocol.Nanotime(), info, ListenQueues(listeners))
		if err != nil {
			ctx.Error("metrics: "+err.Error(), fasthttp.StatusInternalServerError)
			return
		}
		ctx.SetContentType(MetricsContentType)
		ctx.SetBody(buf.Bytes())
	}
}

// WriteMetrics writes the whole server's metrics, from the snapshot s, in the
// Prometheus text format 0.0.4. now is protocol.Nanotime(), the clock of every
// time in the status table. Families come out sorted by name.
func WriteMetrics(w io.Writer, s protocol.Snapshot, now int64, info BuildInfo, queues []ListenQueue) error {
	enc := expfmt.NewEncoder(w, expfmt.NewFormat(expfmt.TypeTextPlain))
	for _, mf := range buildFamilies(s, now, info, queues) {
		if err := enc.Encode(mf); err != nil {
			return err
		}
	}
	return nil
}

// buildFamilies turns a snapshot into metric families, sorted by name.
func buildFamilies(s protocol.Snapshot, now int64, info BuildInfo, queues []ListenQueue) []*dto.MetricFamily {
	var fams []*dto.MetricFamily
	add := func(name, help string, typ dto.MetricType, ms ...*dto.Metric) {
		fams = append(fams, &dto.MetricFamily{
			Name: ptr(MetricsPrefix + name), Help: ptr(help), Type: typ.Enum(), Metric: ms,
		})
	}
	t := &s.Total

	// Requests, whole server.
	codes := make([]*dto.Metric, len(t.Status))
	for i, n := range t.Status {
		codes[i] = counter(float64(n), "code", strconv.Itoa(i+1)+"xx")
	}
	add("http_requests_total", "HTTP requests answered by the whole server since the master started, by status class; includes the 503s of backpressure, never goes backwards.", dto.MetricType_COUNTER, codes...)
	add("http_requests_refused_total", "Requests refused with 503 and Retry-After because their worker was at its in-flight limit (backpressure).", dto.MetricType_COUNTER, counter(float64(t.Refused)))
	add("http_request_timeouts_total", "Requests that ran past the timeout and were answered 504 by their worker's watchdog.", dto.MetricType_COUNTER, counter(float64(t.Timeouts)))
	add("handler_panics_total", "Requests whose handler panicked (answered 500).", dto.MetricType_COUNTER, counter(float64(t.Panics)))
	add("http_request_duration_seconds", "Time from the start of handling a request to its answer, whole server.", dto.MetricType_HISTOGRAM, histogram(t))

	var inFlight, conns uint64
	for _, wk := range s.Workers {
		inFlight += wk.InFlight
		conns += wk.Conns
	}
	add("http_requests_in_flight", "Requests being handled now, all live workers (the /health fast path is not counted).", dto.MetricType_GAUGE, gauge(float64(inFlight)))
	add("open_connections", "Open client connections, all live workers.", dto.MetricType_GAUGE, gauge(float64(conns)))

	// Per live worker process.
	var served, wInFlight, wConns, rss, age, state []*dto.Metric
	for _, wk := range s.Workers {
		l := []string{"generation", strconv.Itoa(wk.Generation), "pid", strconv.Itoa(wk.Pid), "slot", strconv.Itoa(wk.Slot)}
		served = append(served, counter(float64(wk.Counters.Served), l...))
		wInFlight = append(wInFlight, gauge(float64(wk.InFlight), l...))
		wConns = append(wConns, gauge(float64(wk.Conns), l...))
		rss = append(rss, gauge(float64(wk.RSS), l...))
		age = append(age, gauge(seconds(now-wk.Started), l...))
		state = append(state, gauge(1, append(slices.Clone(l), "state", protocol.StateName(wk.State))...))
	}
	add("worker_requests_total", "Requests served by this worker process; a new series starts at 0 for each generation of a slot.", dto.MetricType_COUNTER, served...)
	add("worker_requests_in_flight", "Requests being handled now by this worker process.", dto.MetricType_GAUGE, wInFlight...)
	add("worker_open_connections", "Open client connections of this worker process.", dto.MetricType_GAUGE, wConns...)
	add("worker_resident_memory_bytes", "Resident memory of this worker process, as it last sampled it.", dto.MetricType_GAUGE, rss...)
	add("worker_age_seconds", "Time since the master started this worker process.", dto.MetricType_GAUGE, age...)
	add("worker_state", "State of this worker process (booting, ready, retiring, draining): 1 for its current state.", dto.MetricType_GAUGE, state...)

	// The master's bookkeeping.
	add("worker_starts_total", "Worker processes the master has started.", dto.MetricType_COUNTER, counter(float64(s.Starts)))
	exits := make([]*dto.Metric, 0, len(protocol.ExitReasons))
	for _, reason := range protocol.ExitReasons {
		exits = append(exits, counter(float64(s.Exits[reason]), "reason", reason))
	}
	add("worker_exits_total", "Worker processes that have exited, by reason.", dto.MetricType_COUNTER, exits...)
	add("workers", "Live worker processes (rows of the status table in use), replacements and draining workers included.", dto.MetricType_GAUGE, gauge(float64(len(s.Workers))))
	add("workers_target", "Worker processes the master aims to keep serving.", dto.MetricType_GAUGE, gauge(float64(s.Target)))

	// Sockets.
	var qLen, qLimit []*dto.Metric
	for _, q := range queues {
		qLen = append(qLen, gauge(float64(q.Length), "addr", q.Addr))
		qLimit = append(qLimit, gauge(float64(q.Limit), "addr", q.Addr))
	}
	add("listen_queue_length", "Connections accepted by the kernel and waiting for a worker to accept them, per listening socket (TCP_INFO).", dto.MetricType_GAUGE, qLen...)
	add("listen_queue_limit", "Most connections the accept queue of a listening socket holds (the effective backlog); past it the kernel drops new connections.", dto.MetricType_GAUGE, qLimit...)

	// The server as a whole.
	uptime := 0.0
	if s.MasterStarted > 0 {
		uptime = seconds(now - s.MasterStarted)
	}
	add("uptime_seconds", "Time since the master process started.", dto.MetricType_GAUGE, gauge(uptime))
	if info.GoVersion == "" {
		info.GoVersion = runtime.Version()
	}
	if info.Version == "" {
		info.Version = "unknown"
	}
	add("build_info", "Build of the serving binary; the value is always 1.", dto.MetricType_GAUGE,
		gauge(1, "goversion", info.GoVersion, "version", info.Version))

	// A family without samples (no live worker, no TCP listener) is left out:
	// expfmt refuses to encode one.
	fams = slices.DeleteFunc(fams, func(mf *dto.MetricFamily) bool { return len(mf.Metric) == 0 })
	slices.SortFunc(fams, func(a, b *dto.MetricFamily) int { return strings.Compare(a.GetName(), b.GetName()) })
	return fams
}

// histogram makes the request-duration histogram. The table keeps one count
// per bucket (the last is +Inf); Prometheus wants cumulative counts.
func histogram(c *protocol.Counters) *dto.Metric {
	h := &dto.Histogram{SampleSum: ptr(float64(c.DurationSum) / 1e9)}
	var cum uint64
	for i, le := range protocol.Buckets {
		if i < len(c.Buckets) {
			cum += c.Buckets[i]
		}
		h.Bucket = append(h.Bucket, &dto.Bucket{UpperBound: ptr(le), CumulativeCount: ptr(cum)})
	}
	for i := len(protocol.Buckets); i < len(c.Buckets); i++ {
		cum += c.Buckets[i] // +Inf
	}
	h.Bucket = append(h.Bucket, &dto.Bucket{UpperBound: ptr(math.Inf(1)), CumulativeCount: ptr(cum)})
	h.SampleCount = ptr(cum)
	return &dto.Metric{Histogram: h}
}

func counter(v float64, labels ...string) *dto.Metric {
	return &dto.Metric{Label: labelPairs(labels), Counter: &dto.Counter{Value: ptr(v)}}
}

func gauge(v float64, labels ...string) *dto.Metric {
	return &dto.Metric{Label: labelPairs(labels), Gauge: &dto.Gauge{Value: ptr(v)}}
}

// labelPairs makes label pairs from name, value, name, value...
func labelPairs(kv []string) []*dto.LabelPair {
	if len(kv) == 0 {
		return nil
	}
	ls := make([]*dto.LabelPair, 0, len(kv)/2)
	for i := 0; i+1 < len(kv); i += 2 {
		ls = append(ls, &dto.LabelPair{Name: ptr(kv[i]), Value: ptr(kv[i+1])})
	}
	return ls
}

// seconds converts a nanosecond interval, never negative.
func seconds(ns int64) float64 {
	if ns <= 0 {
		return 0
	}
	return float64(ns) / 1e9
}

func ptr[T any](v T) *T { return &v }
