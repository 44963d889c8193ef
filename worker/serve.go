package worker

import (
	"bytes"
	"fmt"
	"net"
	"runtime/debug"
	"strconv"
	"time"

	"github.com/mcpgateway/mcpgateway/supervisor/protocol"
	"github.com/valyala/fasthttp"
	"go.uber.org/zap"
)

// serve starts fasthttp on every inherited listener.
func (w *worker) serve() {
	keepAlive := w.opts.KeepAlive
	w.server = &fasthttp.Server{
		Handler:                      w.handle,
		Name:                         "mcpgateway",
		Concurrency:                  2 * max(w.opts.WorkerConnections, 1), // the accept gate enforces the real cap
		ReadBufferSize:               max(w.opts.MaxHeaderSize, 1024),      // also the request-head limit: 431 past it
		MaxRequestBodySize:           w.opts.MaxRequestBodySize,
		IdleTimeout:                  keepAlive,
		DisableKeepalive:             keepAlive <= 0,
		ReadTimeout:                  readTimeout(w.opts.Timeout),
		NoDefaultContentType:         true,
		DisablePreParseMultipartForm: true,
		ConnState:                    w.conns.state,
		Logger:                       fasthttpLogger{w.log},
	}
	for _, ln := range w.listeners {
		go func(ln net.Listener) {
			err := w.serveListener(&gatedListener{Listener: ln, w: w})
			if err != nil && !w.draining.Load() {
				w.log.Error("listener failed", zap.String("addr", ln.Addr().String()), zap.Error(err))
			}
		}(ln)
	}
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

var (
	healthPath  = []byte("/health")
	metricsPath = []byte("/metrics")
	healthBody  = []byte(`{"status":"healthy"}`)
	jsonType    = []byte("application/json")
)

// handle wraps the application's handler: /health, backpressure, in-flight
// tracking for timeouts, panics, counting and recycling.
func (w *worker) handle(ctx *fasthttp.RequestCtx) {
	start := protocol.Nanotime()
	if ctx.IsGet() || ctx.IsHead() {
		// Liveness and metrics are answered here, before backpressure, so
		// they are never refused: an overloaded server is when they matter.
		switch path := ctx.Path(); {
		case bytes.Equal(path, healthPath):
			ctx.SetContentTypeBytes(jsonType)
			ctx.SetBody(healthBody)
			w.account(ctx, start)
			return
		case bytes.Equal(path, metricsPath):
			w.metrics(ctx)
			w.account(ctx, start)
			return
		}
	}
	n := w.row.Add(protocol.FInFlight, 1)
	if limit := w.opts.Backpressure; limit > 0 && n > uint64(limit) {
		w.row.Sub(protocol.FInFlight, 1)
		w.refuse(ctx, limit)
		w.account(ctx, start)
		return
	}
	req := w.inflight.begin(ctx.Conn(), start)
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
		// Already answered 504 by the watchdog; this late answer goes nowhere
		// and the request counts as what the client got.
		w.abandoned.Add(-1)
		ctx.SetStatusCode(fasthttp.StatusGatewayTimeout)
	}
	w.row.Sub(protocol.FInFlight, 1)
	w.account(ctx, start)
}

// account counts a finished request and retires the worker at its limit.
func (w *worker) account(ctx *fasthttp.RequestCtx, start int64) {
	if w.draining.Load() {
		ctx.SetConnectionClose()
	}
	dur := protocol.Nanotime() - start
	code := ctx.Response.StatusCode()
	if class := code / 100; class >= 1 && class <= 5 {
		w.row.Add(protocol.C1xx+protocol.Field(class-1), 1)
	}
	w.row.Add(protocol.CDurationSum, uint64(dur))
	w.row.Add(protocol.CBucket0+protocol.Field(protocol.BucketIndex(dur)), 1)
	served := w.row.Add(protocol.CServed, 1)
	if w.maxRequests > 0 && served >= w.maxRequests {
		w.retire(protocol.ReasonRecycled)
	}
	if w.opts.AccessLog {
		w.access.Info("request", zap.ByteString("method", ctx.Method()), zap.ByteString("path", ctx.Path()),
			zap.Int("status", code), zap.Duration("duration", time.Duration(dur)),
			zap.String("remote", ctx.RemoteAddr().String()))
	}
}

// refuse answers at once when the worker is at its in-flight limit: a fast
// 503 the client can retry beats a queue that grows until timeouts.
func (w *worker) refuse(ctx *fasthttp.RequestCtx, limit int) {
	w.row.Add(protocol.CRefused, 1)
	ctx.SetStatusCode(fasthttp.StatusServiceUnavailable)
	ctx.Response.Header.Set("Retry-After", "1")
	ctx.SetContentTypeBytes(jsonType)
	ctx.SetBodyString(`{"detail":"server busy: ` + strconv.Itoa(limit) +
		` requests in flight in this worker; retry shortly","status":503}`)
}

// expireRequests answers every request older than the timeout with a 504,
// closes its connection, and asks the master for a replacement: Go cannot
// stop the goroutine that is stuck, but a new process can take over.
func (w *worker) expireRequests() {
	if w.opts.Timeout <= 0 {
		return
	}
	conns := w.inflight.expire(protocol.Nanotime() - int64(w.opts.Timeout))
	if len(conns) == 0 {
		return
	}
	body := fmt.Sprintf(`{"jsonrpc":"2.0","id":null,"error":{"code":-32603,"message":"request timed out after %s; the worker is being replaced"}}`, w.opts.Timeout)
	resp := []byte(fmt.Sprintf("HTTP/1.1 504 Gateway Timeout\r\nServer: mcpgateway\r\nContent-Type: application/json\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s", len(body), body))
	for _, c := range conns {
		w.abandoned.Add(1)
		w.row.Add(protocol.CTimeouts, 1)
		_ = c.SetWriteDeadline(time.Now().Add(time.Second))
		_, _ = c.Write(resp)
		_ = c.Close()
	}
	w.log.Warn("request timeout", zap.Int("requests", len(conns)), zap.Duration("timeout", w.opts.Timeout))
	w.retire(protocol.ReasonTimeout)
}

// fasthttpLogger sends fasthttp's own messages (mostly broken connections) to
// debug level: they are the clients' business, not events of ours.
type fasthttpLogger struct{ log *zap.Logger }

func (l fasthttpLogger) Printf(format string, args ...any) {
	if ce := l.log.Check(zap.DebugLevel, "fasthttp"); ce != nil {
		ce.Write(zap.String("message", fmt.Sprintf(format, args...)))
	}
}
