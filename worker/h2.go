package worker

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mcpgateway/mcpgateway/supervisor/protocol"
	"github.com/valyala/fasthttp"
	"go.uber.org/zap"
)

// HTTP/2 and TLS.
//
// fasthttp speaks HTTP/1.1 only. With TLS, the worker completes the handshake
// itself and dispatches on the ALPN result: "h2" connections go to Go's own
// HTTP/2 server (net/http), everything else to fasthttp. Without TLS and with
// HTTP "2", every connection is h2c with prior knowledge. The HTTP/2 server's
// requests are turned into a fasthttp.RequestCtx and handed to the same
// w.handle as HTTP/1.1 ones, so /health, /metrics, backpressure, counting,
// timeouts and recycling work the same on both. docs/http2.md has the
// measurements behind this choice.
//
// Connection accounting: every accepted connection is a *trackedConn in
// w.conns (gatedListener). fasthttp's ConnState keeps HTTP/1.1 ones up to
// date; for HTTP/2 ones net/http's ConnState does (active while a stream is
// open, idle between streams, closed). Drain closes the listener; the
// HTTP/2 server then sends GOAWAY, lets open streams finish and closes.

// tlsHandshakeTimeout bounds a client's TLS handshake.
const tlsHandshakeTimeout = 10 * time.Second

// serveTLS accepts, handshakes and dispatches every connection of ln.
func (w *worker) serveTLS(ln net.Listener) error {
	h1 := newHandoffListener(ln.Addr())
	w.serving.Add(1)
	go func() {
		defer w.serving.Done()
		// It stops when h1 is closed, after the drain began; on its own it
		// would leave every http/1.1 handshake waiting for a taker.
		err := w.server.Serve(h1)
		w.listenerStopped(ln.Addr().String()+" (HTTP/1.1 over TLS)", err)
	}()
	var h2 *h2Server
	if w.httpMode != HTTP1 {
		h2 = w.newH2Server(ln.Addr(), true)
		// Shutdown closes the listeners it serves; this one is closed below,
		// once every accepted connection has been handed over.
		go h2.srv.Serve(keepOpen{h2.ln})
	}
	var pending sync.WaitGroup
	err := acceptLoop(ln, w, func(c net.Conn) {
		pending.Add(1)
		go func() {
			defer pending.Done()
			w.dispatchTLS(c, h1, h2)
		}()
	})
	if h2 != nil {
		h2.shutdown() // GOAWAY now, not after the slowest handshake
	}
	// Every connection accepted reaches its server before the servers stop
	// taking new ones: a client that wrote its request on a connection the
	// worker accepted gets an answer (or GOAWAY), not a reset.
	pending.Wait()
	h1.Close()
	if h2 != nil {
		h2.ln.Close()
		h2.shutdown() // GOAWAY to those handed over since
	}
	return err
}

// keepOpen hides a listener's Close from http.Server.Shutdown.
type keepOpen struct{ *handoffListener }

func (keepOpen) Close() error { return nil }

// serveH2C serves h2c with prior knowledge (HTTP "2" without TLS).
func (w *worker) serveH2C(ln net.Listener) error {
	h2 := w.newH2Server(ln.Addr(), false)
	err := h2.srv.Serve(ln)
	h2.shutdown()
	if errors.Is(err, http.ErrServerClosed) {
		err = nil
	}
	return err
}

// acceptLoop calls serve for every connection until the listener is closed,
// riding out temporary errors (EMFILE) as net/http and fasthttp do.
func acceptLoop(ln net.Listener, w *worker, serve func(net.Conn)) error {
	var backoff time.Duration
	for {
		c, err := ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) || w.draining.Load() {
				return nil
			}
			var ne interface{ Temporary() bool }
			if errors.As(err, &ne) && ne.Temporary() {
				backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
				w.log.Warn("accept failed; retrying", zap.Error(err), zap.Duration("in", backoff))
				time.Sleep(backoff)
				continue
			}
			return err
		}
		backoff = 0
		serve(c)
	}
}

// dispatchTLS handshakes one connection and hands it to the server of its
// protocol.
func (w *worker) dispatchTLS(c net.Conn, h1 *handoffListener, h2 *h2Server) {
	tc := tls.Server(c, w.tls)
	c.SetDeadline(time.Now().Add(min(tlsHandshakeTimeout, readTimeout(w.opts.Timeout))))
	if err := tc.Handshake(); err != nil {
		w.log.Debug("TLS handshake failed", zap.String("remote", c.RemoteAddr().String()), zap.Error(err))
		w.dropConn(c)
		return
	}
	c.SetDeadline(time.Time{})
	if proto := tc.ConnectionState().NegotiatedProtocol; proto == "h2" || w.httpMode == HTTP2 {
		if proto != "h2" || h2 == nil {
			// Go lets an http/1.1-only client in without ALPN (issue
			// 46310); tell it why it gets nothing else.
			w.log.Debug("client did not negotiate h2 (HTTP is 2)", zap.String("remote", c.RemoteAddr().String()))
			refuseHTTP1(tc)
			w.dropConn(c)
			return
		}
		if !h2.ln.handoff(tc) {
			w.dropConn(c)
		}
		return
	}
	// HTTP/1.1: fasthttp's ConnState wants a *trackedConn, so the TLS
	// connection takes the TCP one's place in the set.
	var conn net.Conn = tc
	if old, ok := c.(*trackedConn); ok {
		nc := &trackedConn{Conn: tc, writeTimeout: w.writeTimeout()}
		w.conns.add(nc)
		w.conns.state(old, fasthttp.StateClosed) // forget it, the TLS conn owns it now
		conn = nc
	}
	if !h1.handoff(conn) {
		w.dropConn(conn)
	}
}

// h2OnlyResponse answers an HTTP/1.1 client of an HTTP/2-only server.
var h2OnlyResponse = func() string {
	body := `{"detail":"this server speaks HTTP/2 only (HTTP=2)","status":505}`
	return "HTTP/1.1 505 HTTP Version Not Supported\r\nServer: mcpgateway\r\nContent-Type: application/json\r\n" +
		"Content-Length: " + strconv.Itoa(len(body)) + "\r\nConnection: close\r\n\r\n" + body
}()

// refuseHTTP1 reads the request head (an answer sent before the request is
// one the client must discard) and answers h2OnlyResponse.
func refuseHTTP1(c net.Conn) {
	c.SetDeadline(time.Now().Add(time.Second))
	buf := make([]byte, 0, 4096)
	for len(buf) < cap(buf) && !bytes.Contains(buf, []byte("\r\n\r\n")) {
		n, err := c.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if err != nil {
			break
		}
	}
	io.WriteString(c, h2OnlyResponse)
	c.Close()
}

// dropConn closes a connection no server took and forgets it.
func (w *worker) dropConn(c net.Conn) {
	c.Close()
	if tc, ok := c.(*trackedConn); ok {
		w.conns.state(tc, fasthttp.StateClosed)
	}
}

// handoffListener is a net.Listener fed one connection at a time by the
// accept loop. It has no buffer, so a connection is either taken by a
// server or refused at Close, never stranded.
type handoffListener struct {
	addr net.Addr
	ch   chan net.Conn
	done chan struct{}
	once sync.Once
}

func newHandoffListener(addr net.Addr) *handoffListener {
	return &handoffListener{addr: addr, ch: make(chan net.Conn), done: make(chan struct{})}
}

func (l *handoffListener) handoff(c net.Conn) bool {
	select {
	case l.ch <- c:
		return true
	case <-l.done:
		return false
	}
}

func (l *handoffListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.ch:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *handoffListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

func (l *handoffListener) Addr() net.Addr { return l.addr }

// h2Server is Go's HTTP/2 server in front of w.handle, one per listener.
type h2Server struct {
	w   *worker
	srv *http.Server
	ln  *handoffListener // TLS: handshaken "h2" connections
	tls bool
}

type h2ConnKey struct{}

// h2Conn is what a request needs to know about its connection.
type h2Conn struct {
	tracked *trackedConn         // nil if the listener was not gated
	raw     net.Conn             // for its addresses
	state   *tls.ConnectionState // nil without TLS
}

func (w *worker) newH2Server(addr net.Addr, overTLS bool) *h2Server {
	s := &h2Server{w: w, tls: overTLS}
	var protos http.Protocols
	if overTLS {
		protos.SetHTTP2(true)
		s.ln = newHandoffListener(addr)
	} else {
		protos.SetUnencryptedHTTP2(true)
	}
	idle := w.opts.KeepAlive
	if idle <= 0 {
		idle = time.Second
	}
	s.srv = &http.Server{
		Handler:        s,
		Protocols:      &protos,
		ReadTimeout:    readTimeout(w.opts.Timeout), // per stream: reading one request
		IdleTimeout:    idle,                        // then GOAWAY
		MaxHeaderBytes: max(w.opts.MaxHeaderSize, 1024),
		ConnState:      s.connState,
		ConnContext:    s.connContext,
		ErrorLog:       log.New(debugWriter{w.log}, "", 0),
	}
	return s
}

// connContext runs once per connection, before its first request.
func (s *h2Server) connContext(ctx context.Context, c net.Conn) context.Context {
	hc := &h2Conn{raw: c}
	if tc, ok := c.(*tls.Conn); ok {
		st := tc.ConnectionState()
		hc.state = &st
		hc.raw = tc.NetConn()
	}
	hc.tracked, _ = hc.raw.(*trackedConn)
	return context.WithValue(ctx, h2ConnKey{}, hc)
}

// connState keeps w.conns up to date for HTTP/2 connections: net/http calls
// it with the connection it accepted (h2c) or its *tls.Conn.
func (s *h2Server) connState(c net.Conn, st http.ConnState) {
	if tc, ok := c.(*tls.Conn); ok {
		c = tc.NetConn()
	}
	tracked, ok := c.(*trackedConn)
	if !ok {
		return
	}
	switch st {
	case http.StateActive:
		s.w.conns.state(tracked, fasthttp.StateActive)
	case http.StateIdle:
		s.w.conns.state(tracked, fasthttp.StateIdle)
	case http.StateClosed, http.StateHijacked:
		s.w.conns.state(tracked, fasthttp.StateClosed)
	}
}

// shutdown sends GOAWAY to every HTTP/2 connection and lets their streams
// finish. A connection the server took just before may register after the
// first round, so two more follow.
func (s *h2Server) shutdown() {
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), s.w.opts.GracefulTimeout+time.Second)
		defer cancel()
		done := make(chan struct{})
		go func() { s.srv.Shutdown(ctx); close(done) }()
		for _, d := range []time.Duration{100 * time.Millisecond, 900 * time.Millisecond} {
			select {
			case <-done:
				return
			case <-time.After(d):
				go s.srv.Shutdown(ctx) // another GOAWAY round; it returns with the first
			}
		}
		<-done
	}()
}

// h2 request states, in the low bits of h2Request.state; the generation is
// in the others, so a late watchdog cannot touch a reused request.
const (
	h2Running  = 0
	h2Done     = 1
	h2TimedOut = 2
)

// h2Request is one HTTP/2 request in fasthttp's clothes, pooled.
type h2Request struct {
	ctx    fasthttp.RequestCtx
	gen    uint64
	state  atomic.Uint64 // gen<<2 | h2Running/h2Done/h2TimedOut
	result chan bool     // true: the handler returned; false: the watchdog gave up on it
	buf    [1024]byte    // request body chunks; JSON-RPC bodies are small
}

var h2Pool = sync.Pool{New: func() any { return &h2Request{result: make(chan bool, 1)} }}

// settle moves the request of generation gen from running to the given end
// state, once: the first of the handler and the watchdog wins.
func (r *h2Request) settle(gen uint64, to uint64, result bool) {
	if r.state.CompareAndSwap(gen<<2|h2Running, gen<<2|to) {
		r.result <- result
	}
}

// maxBodyDefault is fasthttp's limit when MaxRequestBodySize is 0.
const maxBodyDefault = fasthttp.DefaultMaxRequestBodySize

// ServeHTTP runs one HTTP/2 stream through the same steps as an HTTP/1.1
// request (answerAtOnce, runAdmitted). With a timeout, the handler runs on
// its own goroutine, so that the watchdog's callback can answer the stream
// with a 504 while a stuck handler still holds the request.
func (s *h2Server) ServeHTTP(rw http.ResponseWriter, r *http.Request) {
	hc, _ := r.Context().Value(h2ConnKey{}).(*h2Conn)
	if hc == nil {
		hc = &h2Conn{}
	}
	req := h2Pool.Get().(*h2Request)
	req.gen++
	gen := req.gen
	req.state.Store(gen << 2)
	var conn net.Conn = &streamConn{conn: hc}
	if hc.state != nil {
		conn = &tlsStreamConn{conn.(*streamConn)}
	}
	ctx := &req.ctx
	ctx.Request.Reset()
	ctx.Response.Reset()
	ctx.ResetUserValues()
	ctx.Init2(conn, fasthttpLogger{s.w.log}, false)
	ctx.Response.Header.SetNoDefaultContentType(true)
	if !s.readRequest(rw, r, req) {
		h2Pool.Put(req)
		return
	}
	out := progressWriter{rw: rw, rc: http.NewResponseController(rw), timeout: s.w.writeTimeout()}
	start := protocol.Nanotime()
	switch {
	case s.w.answerAtOnce(ctx, start):
	case s.w.opts.Timeout <= 0:
		s.w.runAdmitted(ctx, start, nil, nil)
	default:
		go func() {
			s.w.runAdmitted(ctx, start, nil, func() { req.settle(gen, h2TimedOut, false) })
			req.settle(gen, h2Done, true)
		}()
		if done := <-req.result; !done {
			writeGatewayTimeout(out, s.w.timeoutBody)
			return // the handler goroutine still has req; it is not pooled
		}
	}
	writeResponse(out, &ctx.Response, r.Method == http.MethodHead)
	ctx.Response.Reset() // drops a body stream, if any
	h2Pool.Put(req)
}

// readRequest copies the request into req.ctx; false when it answered
// already (body too large) or the client went away.
func (s *h2Server) readRequest(rw http.ResponseWriter, r *http.Request, req *h2Request) bool {
	h := &req.ctx.Request.Header
	h.SetMethod(r.Method)
	h.SetRequestURI(r.RequestURI)
	h.SetProtocol("HTTP/2.0")
	h.SetHost(r.Host)
	for k, vv := range r.Header {
		if k == "Content-Length" || k == "Host" {
			continue
		}
		for _, v := range vv {
			h.Add(k, v)
		}
	}
	limit := s.w.opts.MaxRequestBodySize
	if limit <= 0 {
		limit = maxBodyDefault
	}
	if r.ContentLength > int64(limit) {
		http.Error(rw, "Request Entity Too Large", http.StatusRequestEntityTooLarge)
		return false
	}
	n := 0
	for {
		m, err := r.Body.Read(req.buf[:])
		if m > 0 {
			if n += m; n > limit {
				http.Error(rw, "Request Entity Too Large", http.StatusRequestEntityTooLarge)
				return false
			}
			req.ctx.Request.AppendBody(req.buf[:m])
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			return false // reset by the client or timed out: nobody to answer
		}
	}
	if n > 0 || r.ContentLength >= 0 {
		h.SetContentLength(n)
	}
	return true
}

var serverHeader = []string{"mcpgateway"}

// progressWriter writes an HTTP/2 response with a write deadline per chunk:
// a stream whose client grants no flow-control window for writeTimeout is
// reset, as an HTTP/1.1 connection that takes no bytes is closed
// (trackedConn.Write). The stream's deadline is a timer that resets the
// stream when it fires, busy or not, so it is armed only around a write
// and its flush, and cleared after: a quiet event stream stays open.
type progressWriter struct {
	rw      http.ResponseWriter
	rc      *http.ResponseController
	timeout time.Duration
}

// Write writes p in chunks, each flushed under its own deadline (the
// flush is where a write waits for the client).
func (p progressWriter) Write(b []byte) (int, error) {
	written := 0
	for len(b) > 0 {
		chunk := b[:min(len(b), writeChunk)]
		if err := p.arm(); err != nil {
			return written, err
		}
		n, err := p.rw.Write(chunk)
		written += n
		if err == nil {
			err = p.rc.Flush()
		}
		if derr := p.rc.SetWriteDeadline(time.Time{}); err == nil {
			err = derr
		}
		if err != nil {
			return written, err
		}
		b = b[n:]
	}
	return written, nil
}

// arm sets the stream's write deadline for the next write.
func (p progressWriter) arm() error { return p.rc.SetWriteDeadline(time.Now().Add(p.timeout)) }

// writeResponse copies fasthttp's response to the HTTP/2 stream.
func writeResponse(out progressWriter, resp *fasthttp.Response, head bool) {
	hdr := out.rw.Header()
	server := false
	for k, v := range resp.Header.All() {
		switch string(k) {
		case fasthttp.HeaderContentLength, fasthttp.HeaderConnection, fasthttp.HeaderTransferEncoding,
			"Keep-Alive", "Proxy-Connection", "Upgrade":
			continue // connection-specific: not in HTTP/2 (RFC 9113 8.2.2)
		case fasthttp.HeaderServer:
			server = true
		}
		key := string(k)
		hdr[key] = append(hdr[key], string(v))
	}
	if !server {
		hdr["Server"] = serverHeader
	}
	code := resp.StatusCode()
	if resp.IsBodyStream() {
		if cl := resp.Header.ContentLength(); cl >= 0 {
			hdr["Content-Length"] = []string{strconv.Itoa(cl)}
		}
		out.rw.WriteHeader(code)
		if !head {
			resp.BodyWriteTo(out) // flushed chunk by chunk: events are not held back
		}
		return
	}
	body := resp.Body()
	if bodyAllowed(code) {
		hdr["Content-Length"] = []string{strconv.Itoa(len(body))}
	}
	if head || !bodyAllowed(code) || len(body) == 0 {
		out.rw.WriteHeader(code)
		return
	}
	// The body is in memory and the stream ends right after it: the last
	// deadline stays armed until then (the end of the stream stops it), so
	// the final flush, after ServeHTTP returns, is bounded too.
	out.rw.WriteHeader(code)
	for len(body) > 0 {
		chunk := body[:min(len(body), writeChunk)]
		if out.arm() != nil {
			return
		}
		if _, err := out.rw.Write(chunk); err != nil {
			return
		}
		body = body[len(chunk):]
	}
}

func bodyAllowed(code int) bool {
	return code >= 200 && code != http.StatusNoContent && code != http.StatusNotModified
}

// writeGatewayTimeout answers the stream with the watchdog's 504.
func writeGatewayTimeout(out progressWriter, body string) {
	hdr := out.rw.Header()
	hdr["Content-Type"] = []string{"application/json"}
	hdr["Server"] = serverHeader
	hdr["Content-Length"] = []string{strconv.Itoa(len(body))}
	out.rw.WriteHeader(http.StatusGatewayTimeout)
	if out.arm() == nil {
		io.WriteString(out.rw, body)
	}
}

// streamConn is the net.Conn a fasthttp.RequestCtx of an HTTP/2 stream
// holds: it has the connection's addresses, and nothing else (the stream is
// answered through the http.ResponseWriter, and a timeout through the
// tracker's callback).
type streamConn struct {
	conn *h2Conn
}

var errStreamConn = errors.New("an HTTP/2 stream is answered through its response, not its connection")

func (c *streamConn) Read([]byte) (int, error)  { return 0, io.EOF }
func (c *streamConn) Write([]byte) (int, error) { return 0, errStreamConn }
func (c *streamConn) Close() error              { return nil }

func (c *streamConn) LocalAddr() net.Addr {
	if c.conn.raw != nil {
		return c.conn.raw.LocalAddr()
	}
	return zeroAddr
}

func (c *streamConn) RemoteAddr() net.Addr {
	if c.conn.raw != nil {
		return c.conn.raw.RemoteAddr()
	}
	return zeroAddr
}

func (c *streamConn) SetDeadline(time.Time) error      { return nil }
func (c *streamConn) SetReadDeadline(time.Time) error  { return nil }
func (c *streamConn) SetWriteDeadline(time.Time) error { return nil }

// tlsStreamConn makes RequestCtx.IsTLS and TLSConnectionState work.
type tlsStreamConn struct{ *streamConn }

func (c *tlsStreamConn) Handshake() error                     { return nil }
func (c *tlsStreamConn) ConnectionState() tls.ConnectionState { return *c.conn.state }

var zeroAddr = &net.TCPAddr{IP: net.IPv4zero}

// debugWriter sends net/http's log lines (broken connections, protocol
// errors of clients) to debug level, as fasthttpLogger does.
type debugWriter struct{ log *zap.Logger }

func (d debugWriter) Write(p []byte) (int, error) {
	if ce := d.log.Check(zap.DebugLevel, "http2"); ce != nil {
		ce.Write(zap.ByteString("message", bytes.TrimSpace(p)))
	}
	return len(p), nil
}
