package worker

import (
	"bytes"
	"crypto/tls"
	"fmt"
	"github.com/mcpgateway/mcpgateway/internal/adaptive"
	"net"
	"runtime/debug"
	"strconv"
	"time"

	"github.com/mcpgateway/mcpgateway/supervisor/protocol"
	"github.com/valyala/fasthttp"
	"go.uber.org/zap"
)

// serve starts fasthttp on every inherited listener, and the watchdog.
func (w *worker) serve() {
	keepAlive := w.opts.KeepAlive
	w.timeoutBody = fmt.Sprintf(`{"jsonrpc":"2.0","id":null,"error":{"code":-32603,"message":"request timed out after %s; the worker is being replaced"}}`, w.opts.Timeout)
	w.timeoutRaw = []byte(fmt.Sprintf("HTTP/1.1 504 Gateway Timeout\r\nServer: mcpgateway\r\nContent-Type: application/json\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s", len(w.timeoutBody), w.timeoutBody))
	w.server = &fasthttp.Server{
		Handler:        w.handle,
		Name:           "mcpgateway",
		Concurrency:    2 * max(w.opts.WorkerConnections, 1), // the accept gate enforces the real cap
		ReadBufferSize: max(w.opts.MaxHeaderSize, 1024),      // also the request-head limit: 431 past it
		// A connection holds its read buffer for its whole life unless
		// fasthttp gives it back while the connection is idle. With the
		// granian profile's 512 KiB, 200 idle keep-alive connections held
		// 101 MiB (review 1.7, measured); given back, a few KiB each.
		// Small buffers (the gunicorn profile's 8 KiB) are kept: taking
		// one from the pool per request costs CPU for no saving.
		ReduceMemoryUsage:            max(w.opts.MaxHeaderSize, 1024) > largeReadBuffer,
		MaxRequestBodySize:           w.opts.MaxRequestBodySize,
		IdleTimeout:                  keepAlive,
		DisableKeepalive:             keepAlive <= 0,
		ReadTimeout:                  readTimeout(w.opts.Timeout),
		NoDefaultContentType:         true,
		DisablePreParseMultipartForm: true,
		ConnState:                    w.connState,
		ErrorHandler:                 parseError, // limits.go: JSON 400, 408, 413, 431 for what fasthttp cannot parse
		Logger:                       fasthttpLogger{w.log},
		// No WriteTimeout: it is one deadline for a whole response. Writes
		// are bounded by progress instead (trackedConn.Write, the sweeper).
	}
	w.shed = newShedder(w.opts.MaxQueueDelay, w.row)
	w.refusers = make(chan struct{}, maxRefusers)
	if w.opts.BackpressureAuto {
		ceiling := w.opts.Backpressure
		if ceiling <= 0 {
			ceiling = max(w.opts.WorkerConnections, 1)
		}
		w.limiter = adaptive.New(ceiling, 0, func(limit int64) { w.row.Store(protocol.FLimit, uint64(limit)) })
	} else {
		w.row.Store(protocol.FLimit, uint64(max(w.opts.Backpressure, 0)))
	}
	for _, ln := range w.listeners {
		// Every worker sets it on the shared socket: the option belongs to
		// the socket, and sockets a systemd or an older master handed over
		// never had it set by ours.
		if err := enableStamps(ln); err != nil {
			w.log.Warn("no receive timestamps: queueing delay is not measured on this socket",
				zap.String("addr", ln.Addr().String()), zap.Error(err))
		}
	}
	for _, ln := range w.listeners {
		w.serving.Add(1)
		go func(ln net.Listener) {
			defer w.serving.Done()
			err := w.serveListener(&gatedListener{Listener: ln, w: w})
			w.listenerStopped(ln.Addr().String(), err)
		}(ln)
	}
	if w.opts.Timeout > 0 { // --timeout 0: no timeout, no watchdog
		go w.every(watchdogInterval(w.opts.Timeout), w.expireRequests)
	}
	go w.every(sweepEvery, w.sweepStalledWriters)
}

// largeReadBuffer is the read buffer size past which idle connections give
// their buffers back.
const largeReadBuffer = 64 << 10

// every runs fn every interval on its own goroutine until the worker
// stops: the watchdog and the sweeper run apart from the heartbeat and the
// parent check, which they can never hold up.
func (w *worker) every(interval time.Duration, fn func()) {
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		select {
		case <-w.stopped:
			return
		case <-tick.C:
			fn()
		}
	}
}

// sweepEvery is how often the worker looks for writes that wait on a
// client: a write is cut between writeTimeout and writeTimeout+sweepEvery.
const sweepEvery = 500 * time.Millisecond

// sweepStalledWriters closes the connections of clients that take nothing
// for writeTimeout.
func (w *worker) sweepStalledWriters() {
	if n := w.conns.closeStalledWriters(protocol.Nanotime()); n > 0 {
		w.log.Info("closed connections whose client took nothing", zap.Int("connections", n),
			zap.Duration("write_timeout", w.writeTimeout()))
	}
}

// listenerStopped runs when a serve goroutine ends. While draining that is
// the plan; otherwise this worker would go on heartbeating as ready while
// one of its sockets has no acceptor (with SO_REUSEPORT, a black hole for
// the kernel's share of connections), so it asks to be replaced.
func (w *worker) listenerStopped(addr string, err error) {
	if w.draining.Load() || w.table.Header().Load(protocol.HStopping) == 1 {
		return // a stop shut the socket down: the master's TERM follows
	}
	w.log.Error("listener failed; asking to be replaced", zap.String("addr", addr), zap.Error(err))
	w.retire(protocol.ReasonListener)
}

// serveListener serves one inherited listener: plain HTTP/1.1 with fasthttp,
// or TLS with ALPN and HTTP/2, or h2c (h2.go).
func (w *worker) serveListener(ln net.Listener) error {
	switch {
	case w.tls != nil:
		return w.serveTLS(ln) // ALPN: h2 to net/http, http/1.1 to fasthttp (h2.go)
	case w.httpMode == HTTP2:
		return w.serveH2C(ln) // h2c with prior knowledge
	}
	return w.server.Serve(ln)
}

// readTimeout bounds reading one request (head and body) so that a slow
// client cannot hold a connection slot for ever.
func readTimeout(timeout time.Duration) time.Duration {
	if timeout <= 0 || timeout > time.Minute {
		return time.Minute
	}
	return timeout
}

// writeTimeout bounds one write to a client (trackedConn.Write, and each
// chunk of an HTTP/2 stream): the same bound as reading a request. A write
// waits only once the kernel's send buffer and the client's receive window
// are both full, that is when the client has read nothing for that long; a
// request that may take `timeout` to compute may take as long to be taken,
// and 60 s (nginx's send_timeout) caps it, also when there is no timeout.
// So a client that never reads is disconnected, and never holds a drain for
// longer than this.
func (w *worker) writeTimeout() time.Duration { return readTimeout(w.opts.Timeout) }

var (
	healthPath   = []byte("/health")
	metricsPath  = []byte("/metrics")
	healthBody   = []byte(`{"status":"healthy"}`)
	readyPath    = []byte("/ready")
	stoppingBody = []byte(`{"status":"stopping","detail":"the server is stopping"}`)
	jsonType     = []byte("application/json")
)

// handle is fasthttp's handler (HTTP/1.1): /health, backpressure, in-flight
// tracking for timeouts, panics, counting and recycling.
//
// The application's handler runs right here, on the connection's
// goroutine: a goroutine per request to keep the 504 of a timeout inside
// fasthttp cost 10-14% of the throughput (measured with wrk). The watchdog
// answers a request that overruns the timeout by writing the 504 on the
// connection itself, which is in order only if every earlier answer on it
// has left fasthttp's buffer: fasthttp holds back the answers of pipelined
// requests to send them together. A write deadline set by the handler makes
// it flush after each answer (SetWriteDeadline; trackedConn makes a zero
// deadline free), so requests that may time out are never held back.
func (w *worker) handle(ctx *fasthttp.RequestCtx) {
	if claimedForClose(ctx.Conn()) {
		// Closed under it: not run, not counted, and no answer (the close
		// may not have happened yet; an empty 200 must not get out first).
		ctx.Conn().Close()
		return
	}
	start := protocol.Nanotime()
	if w.answerAtOnce(ctx, start) {
		return
	}
	if w.opts.Timeout > 0 {
		_ = ctx.SetWriteDeadline(time.Time{}) // flush this answer at once (see above)
	}
	w.runAdmitted(ctx, start, ctx.Conn(), nil)
}

// answerAtOnce answers what never reaches the application: /health and
// /metrics (before backpressure, so never refused: an overloaded server is
// when they matter) and the 503 of backpressure. It returns false for an
// admitted request, counted in FInFlight: runAdmitted must follow.
func (w *worker) answerAtOnce(ctx *fasthttp.RequestCtx, start int64) bool {
	if w.overLimits(ctx) || w.answerProbe(ctx) { // limits.go: request line and header limits first
		w.account(ctx, start)
		return true
	}
	delay := queueDelay(ctx.Conn())
	recordQueueDelay(w.row, delay)
	// Essential requests are picked out only when it matters: the hook
	// reads headers or the body, which a worker that is not shedding
	// need not pay for.
	essential := false
	if w.app.Essential != nil && (w.shed.shedding.Load() || w.nearLimit()) {
		essential = w.app.Essential(ctx)
	}
	if !w.shed.admit(start, delay, essential) {
		w.refuse(ctx, protocol.CRefusedQueueDelay)
		w.account(ctx, start)
		return true
	}
	n := w.row.Add(protocol.FInFlight, 1)
	if limit := w.limit(); limit > 0 && n > limit && (!essential || n > limit+essentialHeadroom(limit)) {
		w.row.Sub(protocol.FInFlight, 1)
		w.refuse(ctx, protocol.CRefusedInFlight)
		w.account(ctx, start)
		return true
	}
	return false
}

// limit is the in-flight limit in force (0: none): adaptive with
// --backpressure auto, else the fixed --backpressure.
func (w *worker) limit() uint64 {
	if w.limiter != nil {
		return uint64(w.limiter.Current())
	}
	return uint64(max(w.opts.Backpressure, 0))
}

// nearLimit is true when the next request may meet the in-flight limit.
func (w *worker) nearLimit() bool {
	limit := w.limit()
	return limit > 0 && w.row.Load(protocol.FInFlight) >= limit
}

// essentialHeadroom is how far past the in-flight limit essential requests
// (initialize, ping, tools/list) are still admitted: a full worker keeps
// answering the requests that let clients connect and discover, which are
// cheap, before the tool calls that filled it.
func essentialHeadroom(limit uint64) uint64 { return max(1, limit/4) }

// queueDelay is how long the request whose head the connection's last read
// completed waited, from its bytes reaching the host (the kernel's receive
// timestamp) to now. 0 where there is no timestamp (HTTP/2 streams, unix
// sockets).
func queueDelay(c net.Conn) int64 {
	if t, ok := c.(*tls.Conn); ok {
		c = t.NetConn()
	}
	if tc, ok := c.(*trackedConn); ok && tc.stamps != nil {
		return tc.stamps.delay(time.Now())
	}
	return 0
}

// answerProbe answers /health, /metrics, and /ready once a stop has
// begun, and says whether it did. /ready otherwise goes to the
// application, which knows its dependencies.
func (w *worker) answerProbe(ctx *fasthttp.RequestCtx) bool {
	if !ctx.IsGet() && !ctx.IsHead() {
		return false
	}
	switch path := ctx.Path(); {
	case bytes.Equal(path, healthPath):
		ctx.SetContentTypeBytes(jsonType)
		ctx.SetBody(healthBody)
		return true
	case bytes.Equal(path, metricsPath):
		if w.metricsAllowed(ctx) { // limits.go: token, public or local clients only
			w.metrics(ctx)
		}
		return true
	case bytes.Equal(path, readyPath) && w.table.Header().Load(protocol.HStopping) == 1:
		// Readiness fails the instant a stop begins, in every worker,
		// while the server goes on serving for the shutdown delay.
		ctx.SetStatusCode(fasthttp.StatusServiceUnavailable)
		ctx.SetContentTypeBytes(jsonType)
		ctx.SetBody(stoppingBody)
		return true
	}
	return false
}

// isProbe is true for the requests no overload refuses: /health, /ready
// and /metrics.
func isProbe(req *fasthttp.Request) bool {
	if !req.Header.IsGet() && !req.Header.IsHead() {
		return false
	}
	path := req.URI().Path()
	return bytes.Equal(path, healthPath) || bytes.Equal(path, readyPath) || bytes.Equal(path, metricsPath)
}

// runAdmitted runs the application's handler for an admitted request. If
// the request overruns the timeout the watchdog calls onTimeout, or when it
// is nil writes the 504 on conn itself (HTTP/1.1).
func (w *worker) runAdmitted(ctx *fasthttp.RequestCtx, start int64, conn net.Conn, onTimeout func()) {
	req := w.inflight.begin(start, conn, onTimeout)
	defer w.finish(ctx, req, start)
	w.app.Handler(ctx)
}

// finish runs after every admitted request, also when the handler panicked.
func (w *worker) finish(ctx *fasthttp.RequestCtx, req *inflightRequest, start int64) {
	if p := recover(); p != nil {
		w.row.Add(protocol.CPanics, 1)
		w.log.Error("handler panic", zap.Any("panic", p), zap.ByteString("path", ctx.Path()),
			zap.ByteString("stack", debug.Stack()))
		ctx.Response.Reset()
		ctx.SetStatusCode(fasthttp.StatusInternalServerError)
		ctx.SetContentTypeBytes(jsonType)
		ctx.SetBodyString(`{"detail":"internal server error"}`)
	}
	if w.inflight.end(req) {
		// The watchdog gave up on it: the client got the 504, and the
		// request counts as what it got. Its connection is closed.
		ctx.Response.Reset()
		w.timeoutResponse().CopyTo(&ctx.Response)
	}
	if w.limiter != nil {
		now := protocol.Nanotime()
		w.limiter.Sample(now, now-start, int64(w.row.Load(protocol.FInFlight)))
	}
	w.row.Sub(protocol.FInFlight, 1)
	w.account(ctx, start)
	// max_requests counts admitted requests only: refusals, /health and
	// /metrics are cheap, and under overload, when refusals pile up,
	// recycling faster would cost capacity exactly when it is scarce.
	if n := w.admitted.Add(1); w.maxRequests > 0 && n >= w.maxRequests {
		w.retire(protocol.ReasonRecycled)
	}
}

// connState is fasthttp's ConnState hook. During a drain a connection whose
// stream just ended is closed at once: the stream began before the drain (a
// stream that a stopping worker handed off, rpc/mcp_resume.go), so it could
// not say "Connection: close", and its client, told to come back after a
// retry delay, would come back to this worker on it rather than reach one
// that stays (measured with the TypeScript SDK: each handed-off stream cost
// a second resumption). Only streams: a keep-alive client of short answers
// sends its next request at once, and closing under it would reset that
// request (measured: TestRecycleUnderLoadDropsNothing lost one); answers
// begun during the drain close their connection themselves (account). A
// request racing the close is dropped unrun (claim), never run and lost.
func (w *worker) connState(c net.Conn, st fasthttp.ConnState) {
	w.conns.state(c, st)
	if st != fasthttp.StateIdle {
		return
	}
	if tc, ok := c.(*trackedConn); ok && tc.streamed.Swap(false) && w.draining.Load() && tc.claim() {
		tc.Close()
	}
}

// account counts a finished request for /metrics and the access log.
func (w *worker) account(ctx *fasthttp.RequestCtx, start int64) {
	if w.draining.Load() {
		ctx.SetConnectionClose()
	}
	if ctx.Response.IsBodyStream() { // an SSE answer, written after this returns (connState)
		if tc, ok := ctx.Conn().(*trackedConn); ok {
			tc.streamed.Store(true)
		}
	}
	dur := protocol.Nanotime() - start
	code := ctx.Response.StatusCode()
	if class := code / 100; class >= 1 && class <= 5 {
		w.row.Add(protocol.C1xx+protocol.Field(class-1), 1)
	}
	w.row.Add(protocol.CDurationSum, uint64(dur))
	w.row.Add(protocol.CBucket0+protocol.Field(protocol.BucketIndex(dur)), 1)
	w.row.Add(protocol.CServed, 1)
	if w.opts.AccessLog {
		w.access.Info("request", zap.ByteString("method", ctx.Method()), zap.ByteString("path", ctx.Path()),
			zap.Int("status", code), zap.Duration("duration", time.Duration(dur)),
			zap.String("remote", ctx.RemoteAddr().String()))
	}
}

// refuse answers at once with a 503 the client can retry, which beats a
// queue that grows until timeouts; reason is the counter of why. The
// client keeps its connection, also a new one: closing it would make the
// client connect again for its next request, a handshake and an accept
// that cost both sides more CPU than the 503 saved, under the very
// saturation it is refused for (measured: at 10× capacity, closing new
// connections turned the load into a connection per request).
func (w *worker) refuse(ctx *fasthttp.RequestCtx, reason protocol.Field) {
	w.row.Add(protocol.CRefused, 1)
	w.row.Add(reason, 1)
	ctx.SetStatusCode(fasthttp.StatusServiceUnavailable)
	ctx.Response.Header.Set("Retry-After", "1")
	ctx.SetContentTypeBytes(jsonType)
	if reason == protocol.CRefusedQueueDelay {
		ctx.SetBody(queueDelayBody)
		return
	}
	ctx.SetBodyString(`{"detail":"server busy: ` + strconv.FormatUint(w.limit(), 10) +
		` requests in flight in this worker; retry shortly","status":503}`)
}

var queueDelayBody = []byte(`{"detail":"server busy: requests wait too long in this worker's queue; retry shortly","status":503}`)

// timeoutResponse is the watchdog's answer: 504 with a JSON-RPC error, and
// the connection closed after it. A new one each time: fasthttp copies it,
// and a shared one would be read by many goroutines at once.
func (w *worker) timeoutResponse() *fasthttp.Response {
	resp := new(fasthttp.Response)
	resp.SetStatusCode(fasthttp.StatusGatewayTimeout)
	resp.Header.SetContentTypeBytes(jsonType)
	resp.SetConnectionClose()
	resp.SetBodyString(w.timeoutBody)
	return resp
}

// watchdogInterval is how often the watchdog looks for overdue requests;
// shorter for a short timeout, so a 504 comes at most a quarter late.
func watchdogInterval(timeout time.Duration) time.Duration {
	return min(100*time.Millisecond, max(timeout/4, 10*time.Millisecond))
}

// expireRequests answers every request older than the timeout with a 504,
// and asks the master for a replacement: Go cannot stop the goroutine that
// is stuck, but a new process can take over.
func (w *worker) expireRequests() {
	expired := w.inflight.expire(protocol.Nanotime() - int64(w.opts.Timeout))
	if len(expired) == 0 {
		return
	}
	for _, r := range expired {
		w.row.Add(protocol.CTimeouts, 1)
		if r.onTimeout != nil {
			r.onTimeout() // HTTP/2: the stream is answered through its server
		} else if r.conn != nil {
			w.answerTimeout(r.conn)
		}
	}
	w.log.Warn("request timeout", zap.Int("requests", len(expired)), zap.Duration("timeout", w.opts.Timeout))
	if !w.draining.Load() { // a draining worker is on its way out already
		w.retire(protocol.ReasonTimeout)
	}
}

// answerTimeout writes the 504 on an HTTP/1.1 connection whose request is
// stuck in its handler, and closes it. The connection's goroutine is in the
// handler, so nothing else writes, and every earlier answer was flushed
// (handle). The connection stops counting for the drain: its goroutine may
// never come back.
func (w *worker) answerTimeout(c net.Conn) {
	_ = c.SetWriteDeadline(time.Now().Add(time.Second))
	_, _ = c.Write(w.timeoutRaw)
	_ = c.Close()
	w.conns.abandon(c)
}

// fasthttpLogger sends fasthttp's own messages (mostly broken connections) to
// debug level: they are the clients' business, not events of ours.
type fasthttpLogger struct{ log *zap.Logger }

func (l fasthttpLogger) Printf(format string, args ...any) {
	if ce := l.log.Check(zap.DebugLevel, "fasthttp"); ce != nil {
		ce.Write(zap.String("message", fmt.Sprintf(format, args...)))
	}
}
