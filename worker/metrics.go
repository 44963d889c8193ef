package worker

import (
	"bytes"
	"io"
	"maps"
	"math"
	"net"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"

	"github.com/mcpgateway/mcpgateway/supervisor/protocol"
	"github.com/valyala/fasthttp"
	"golang.org/x/sys/unix"
)

// The /metrics endpoint reports the whole server, not the worker that happens
// to answer the scrape: every worker maps the master's status table, and a
// protocol.Table Snapshot is a consistent view of all of it (exited workers'
// counters folded into the header, plus every live row). Any worker can answer
// and every answer is the same, give or take requests served in between.
//
// The text exposition format (0.0.4) is small: HELP and TYPE lines, one line
// per sample, three escapes. It is written here rather than through
// prometheus/common/expfmt, whose data model is protobuf: linking it costs
// every process about 1.3 MiB of resident memory (measured: a worker under
// load 19.9 -> 18.6 MiB, the master 12.8 -> 11.7 MiB), against a budget of
// 20 and 15. The tests parse every scrape with expfmt's own parser, the one
// Prometheus uses, so the format stays checked by the library.

// MetricsPrefix starts every metric name.
const MetricsPrefix = "mcpgateway_"

// MetricsContentType is the Content-Type of a /metrics answer: the Prometheus
// text format 0.0.4.
const MetricsContentType = "text/plain; version=0.0.4; charset=utf-8"

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
	var b []byte
	for _, f := range buildFamilies(s, now, info, queues) {
		b = f.append(b)
	}
	_, err := w.Write(b)
	return err
}

// buildFamilies turns a snapshot into metric families, sorted by name.
func buildFamilies(s protocol.Snapshot, now int64, info BuildInfo, queues []ListenQueue) []*family {
	var fams []*family
	add := func(name, help, typ string, ms ...series) {
		fams = append(fams, &family{name: MetricsPrefix + name, help: help, typ: typ, series: ms})
	}
	t := &s.Total

	// Requests, whole server.
	codes := make([]series, len(t.Status))
	for i, n := range t.Status {
		codes[i] = counter(n, "code", strconv.Itoa(i+1)+"xx")
	}
	add("http_requests_total", "HTTP requests answered by the whole server since the master started, by status class; includes the 503s of backpressure, never goes backwards.", "counter", codes...)
	refused := make([]series, len(protocol.RefusalReasons))
	for i, reason := range protocol.RefusalReasons {
		refused[i] = counter(t.RefusedBy[i], "reason", reason)
	}
	add("http_requests_refused_total", "Requests refused with 503 and Retry-After, by reason: queue_delay (they waited past --max-queue-delay while the worker was shedding), in_flight (their worker was at its in-flight limit, --backpressure), connections (a new connection met a worker at its connection cap or a deep accept queue).", "counter", refused...)
	add("http_request_timeouts_total", "Requests that ran past the timeout and were answered 504 by their worker's watchdog.", "counter", counter(t.Timeouts))
	add("handler_panics_total", "Panics recovered while handling requests: by the worker (answered 500), or by the gateway itself (a JSON-RPC message answered -32603).", "counter", counter(t.Panics))
	add("http_request_duration_seconds", "Time from the start of handling a request to its answer, whole server.", "histogram", histogram(protocol.Buckets, t.Buckets, t.DurationSum))
	add("request_queue_seconds", "Queueing delay of each request that reached admission, whole server: from the kernel's receive timestamp of its bytes to its handler starting (accept queue, socket buffer and scheduler included). 0 where the socket gives no timestamp.", "histogram", histogram(protocol.QueueBuckets, t.QueueBuckets, t.QueueSum))

	rl := t.RateLimits
	add("rate_limited_total", "Tool calls refused by a rate limit (429 or a batch entry's -32000), by limit: user (USER_RATE_LIMIT) or tool (TOOL_RATE_LIMIT).", "counter",
		counter(rl[0], "limit", "user"), counter(rl[1], "limit", "tool"))
	add("rate_limit_let_through_total", "Tool calls let through without their limit, by cause: table_full (no slot for the bucket in the instance's table), redis (a batch given when a lease from Redis failed; the instance's own limit still applied).", "counter",
		counter(rl[2], "cause", "table_full"), counter(rl[4], "cause", "redis"))
	add("rate_limit_leases_total", "Leases of tokens from the buckets shared by instances in Redis (CACHE_TYPE=redis), failed ones included.", "counter", counter(rl[3]+rl[4]))

	up := t.Upstream
	add("upstream_calls_total", "Tool calls forwarded to upstream MCP servers, by outcome: answered (a result or the upstream's JSON-RPC error), failed (not answered: refused, timed out, a broken stream), circuit_open (refused at once, its circuit breaker open), busy (refused at once with 503, its adaptive in-flight limit reached; also in http_requests_refused_total{reason=\"in_flight\"}).", "counter",
		counter(up[0], "outcome", "answered"), counter(up[1], "outcome", "failed"), counter(up[2], "outcome", "circuit_open"), counter(up[3], "outcome", "busy"))
	var upOpen uint64
	for _, wk := range s.Workers {
		upOpen = max(upOpen, wk.UpstreamsOpen)
	}
	add("upstream_circuits_open", "Upstream MCP servers whose circuit breaker is open: the most that any live worker holds open (each worker has its own breakers).", "gauge", gauge(float64(upOpen)))

	var inFlight, conns, streams uint64
	for _, wk := range s.Workers {
		inFlight += wk.InFlight
		conns += wk.Conns
		streams += wk.OpenStreams
	}
	add("http_requests_in_flight", "Requests being handled now, all live workers (the /health fast path is not counted).", "gauge", gauge(float64(inFlight)))
	add("open_connections", "Open client connections, all live workers.", "gauge", gauge(float64(conns)))
	add("open_streams", "SSE answers to POST /mcp being written now, all live workers: tool calls streaming an upstream's notifications. Not counted in http_requests_in_flight; each holds one of open_connections.", "gauge", gauge(float64(streams)))

	// Per slot. A slot's series outlive its processes: labelled by slot
	// only, they do not churn with every recycle as pid and generation
	// labels would. During make-before-break a slot has two live
	// processes: the additive numbers are their sum, the age is the newest
	// one's, and worker_state counts processes per state. Pid and
	// generation are in worker_info, one series per process.
	slots := slotsOf(s.Workers)
	var served, wInFlight, wConns, rss, age, state, procInfo, limits, shedding []series
	for _, sl := range slots {
		l := []string{"slot", strconv.Itoa(sl.slot)}
		served = append(served, counter(sl.served, l...))
		wInFlight = append(wInFlight, gauge(float64(sl.inFlight), l...))
		wConns = append(wConns, gauge(float64(sl.conns), l...))
		rss = append(rss, gauge(float64(sl.rss), l...))
		limits = append(limits, gauge(float64(sl.newest.Limit), l...))
		shedding = append(shedding, gauge(float64(b2u(sl.newest.Shedding)), l...))
		age = append(age, gauge(seconds(now-sl.newest.Started), l...))
		for _, name := range slices.Sorted(maps.Keys(sl.states)) {
			state = append(state, gauge(float64(sl.states[name]), "slot", l[1], "state", name))
		}
		for _, wk := range sl.procs {
			procInfo = append(procInfo, gauge(1, "generation", strconv.Itoa(wk.Generation), "pid", strconv.Itoa(wk.Pid), "slot", l[1]))
		}
	}
	add("worker_requests_total", "Requests served by the slot's live worker processes. Drops when a process of the slot exits (a counter reset, which rate() and increase() handle); the server totals never drop.", "counter", served...)
	add("worker_requests_in_flight", "Requests being handled now by the slot's live worker processes.", "gauge", wInFlight...)
	add("worker_open_connections", "Open client connections of the slot's live worker processes.", "gauge", wConns...)
	add("worker_resident_memory_bytes", "Resident memory of the slot's live worker processes, as each last sampled it.", "gauge", rss...)
	add("worker_age_seconds", "Time since the master started the slot's newest worker process.", "gauge", age...)
	add("worker_state", "Live worker processes of the slot in each state (booting, ready, retiring, draining); states with none are left out. Normally one series per slot, of value 1.", "gauge", state...)
	add("worker_inflight_limit", "The in-flight limit of the slot's newest worker process: fixed (--backpressure) or adapted to latency (--backpressure auto); 0 is none.", "gauge", limits...)
	add("worker_shedding", "1 while the slot's newest worker process sheds by queueing delay (--max-queue-delay), else 0.", "gauge", shedding...)
	add("worker_info", "One series per live worker process, naming its pid and generation (how many processes its slot has had); the value is always 1.", "gauge", procInfo...)

	// The master's bookkeeping.
	add("worker_starts_total", "Worker processes the master has started.", "counter", counter(s.Starts))
	add("stop_queued_connections_reset_total", "Connections still in an accept queue when a stop shut the socket down (the kernel resets them).", "counter", counter(s.StopResets))
	exits := make([]series, 0, len(protocol.ExitReasons))
	for _, reason := range protocol.ExitReasons {
		exits = append(exits, counter(s.Exits[reason], "reason", reason))
	}
	add("worker_exits_total", "Worker processes that have exited, by reason.", "counter", exits...)
	add("workers", "Live worker processes (rows of the status table in use), replacements and draining workers included.", "gauge", gauge(float64(len(s.Workers))))
	add("workers_target", "Worker processes the master aims to keep serving.", "gauge", gauge(float64(s.Target)))

	// Sockets.
	var qLen, qLimit []series
	for _, q := range queues {
		qLen = append(qLen, gauge(float64(q.Length), "addr", q.Addr))
		qLimit = append(qLimit, gauge(float64(q.Limit), "addr", q.Addr))
	}
	add("listen_queue_length", "Connections accepted by the kernel and waiting for a worker to accept them, per listening socket (TCP_INFO).", "gauge", qLen...)
	add("listen_queue_limit", "Most connections the accept queue of a listening socket holds (the effective backlog); past it the kernel drops new connections.", "gauge", qLimit...)

	// The server as a whole.
	uptime := 0.0
	if s.MasterStarted > 0 {
		uptime = seconds(now - s.MasterStarted)
	}
	add("uptime_seconds", "Time since the master process started.", "gauge", gauge(uptime))
	if info.GoVersion == "" {
		info.GoVersion = runtime.Version()
	}
	if info.Version == "" {
		info.Version = "unknown"
	}
	add("build_info", "Build of the serving binary; the value is always 1.", "gauge",
		gauge(1, "goversion", info.GoVersion, "version", info.Version))

	// A family without samples (no live worker, no TCP listener) is left out.
	fams = slices.DeleteFunc(fams, func(f *family) bool { return len(f.series) == 0 })
	slices.SortFunc(fams, func(a, b *family) int { return strings.Compare(a.name, b.name) })
	return fams
}

// slotStatus is what the live processes of one slot add up to.
type slotStatus struct {
	slot                    int
	procs                   []protocol.WorkerStatus // by generation
	newest                  protocol.WorkerStatus
	served, inFlight, conns uint64
	rss                     uint64
	states                  map[string]int // processes by state name
}

// slotsOf groups live workers by slot, in slot order.
func slotsOf(workers []protocol.WorkerStatus) []*slotStatus {
	bySlot := map[int]*slotStatus{}
	var slots []*slotStatus
	for _, wk := range workers {
		sl := bySlot[wk.Slot]
		if sl == nil {
			sl = &slotStatus{slot: wk.Slot, newest: wk, states: map[string]int{}}
			bySlot[wk.Slot] = sl
			slots = append(slots, sl)
		}
		sl.procs = append(sl.procs, wk)
		if wk.Generation > sl.newest.Generation {
			sl.newest = wk
		}
		sl.served += wk.Counters.Served
		sl.inFlight += wk.InFlight
		sl.conns += wk.Conns
		sl.rss += wk.RSS
		sl.states[protocol.StateName(wk.State)]++ // by name: a row is the worker's to write, any value maps to one
	}
	slices.SortFunc(slots, func(a, b *slotStatus) int { return a.slot - b.slot })
	for _, sl := range slots {
		slices.SortFunc(sl.procs, func(a, b protocol.WorkerStatus) int { return a.Generation - b.Generation })
	}
	return slots
}

// family is one metric family of the exposition.
type family struct {
	name, help, typ string
	series          []series
}

// series is one series: labels as name, value, name, value..., and either a
// value or a histogram.
type series struct {
	labels []string
	value  float64
	whole  bool // value is a whole number (a counter): written exactly
	hist   *hist
}

// hist is a histogram as the table keeps it: one count per bucket (the
// last is +Inf), and the sum in nanoseconds.
type hist struct {
	bounds  []float64 // seconds
	buckets []uint64
	sumNs   uint64
}

func counter(v uint64, labels ...string) series {
	return series{labels: labels, value: float64(v), whole: true}
}

func gauge(v float64, labels ...string) series { return series{labels: labels, value: v} }

// histogram is the request-duration histogram of c.
func histogram(bounds []float64, buckets []uint64, sumNs uint64) series {
	return series{hist: &hist{bounds: bounds, buckets: buckets, sumNs: sumNs}}
}

// append writes the family: HELP, TYPE, then its samples.
func (f *family) append(b []byte) []byte {
	b = append(b, "# HELP "...)
	b = append(b, f.name...)
	b = append(b, ' ')
	b = escape(b, f.help, false)
	b = append(b, "\n# TYPE "...)
	b = append(b, f.name...)
	b = append(b, ' ')
	b = append(b, f.typ...)
	b = append(b, '\n')
	for _, s := range f.series {
		if s.hist == nil {
			b = appendSample(b, f.name, s.labels, "", "", s.value, s.whole)
			continue
		}
		// The table keeps one count per bucket (the last is +Inf);
		// Prometheus wants them cumulative.
		h := s.hist
		var cum uint64
		for i, le := range h.bounds {
			if i < len(h.buckets) {
				cum += h.buckets[i]
			}
			b = appendSample(b, f.name+"_bucket", s.labels, "le", strconv.FormatFloat(le, 'g', -1, 64), float64(cum), true)
		}
		for i := len(h.bounds); i < len(h.buckets); i++ {
			cum += h.buckets[i]
		}
		b = appendSample(b, f.name+"_bucket", s.labels, "le", "+Inf", float64(cum), true)
		b = appendSample(b, f.name+"_sum", s.labels, "", "", float64(h.sumNs)/1e9, false)
		b = appendSample(b, f.name+"_count", s.labels, "", "", float64(cum), true)
	}
	return b
}

// appendSample writes one line: name{labels[,extra]} value.
func appendSample(b []byte, name string, labels []string, extraName, extraValue string, v float64, whole bool) []byte {
	b = append(b, name...)
	if len(labels) > 0 || extraName != "" {
		b = append(b, '{')
		for i := 0; i+1 < len(labels); i += 2 {
			b = appendLabel(b, labels[i], labels[i+1])
		}
		if extraName != "" {
			b = appendLabel(b, extraName, extraValue)
		}
		b[len(b)-1] = '}' // the last label's comma
	}
	b = append(b, ' ')
	switch {
	case whole && v >= 0 && v < 1<<53:
		b = strconv.AppendUint(b, uint64(v), 10)
	case math.IsInf(v, 1):
		b = append(b, "+Inf"...)
	case math.IsInf(v, -1):
		b = append(b, "-Inf"...)
	case math.IsNaN(v):
		b = append(b, "NaN"...)
	default:
		b = strconv.AppendFloat(b, v, 'g', -1, 64)
	}
	return append(b, '\n')
}

func appendLabel(b []byte, name, value string) []byte {
	b = append(b, name...)
	b = append(b, '=', '"')
	b = escape(b, value, true)
	return append(b, '"', ',')
}

// escape applies the format's escapes: backslash and newline everywhere,
// the double quote in label values.
func escape(b []byte, s string, quote bool) []byte {
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '\\':
			b = append(b, '\\', '\\')
		case c == '\n':
			b = append(b, '\\', 'n')
		case c == '"' && quote:
			b = append(b, '\\', '"')
		default:
			b = append(b, c)
		}
	}
	return b
}

// seconds converts a nanosecond interval, never negative.
func seconds(ns int64) float64 {
	if ns <= 0 {
		return 0
	}
	return float64(ns) / 1e9
}
