package rpc

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/valyala/fasthttp"
	"go.uber.org/zap"

	"github.com/mcpgateway/mcpgateway/store"
)

// SSE answers to POST /mcp (docs/mcp.md, G9 to G12). A tools/call of an
// upstream's tool whose client accepts text/event-stream and asked for
// notifications (a progressToken in params._meta, or, in 2026-07-28, a
// logLevel there) is answered with an event stream: the upstream's
// notifications/progress and notifications/message as they come, the
// response last, then the end of the stream. Everything else keeps its
// JSON answer, and /rpc never streams.
//
// The handler returns before the call runs: the call and the stream run in
// fasthttp's body stream writer, after the worker has counted the request
// as answered. So a stream is not a request in flight, and the worker's
// request timeout does not apply to it (FEDERATION_TIMEOUT bounds the
// upstream call); it holds its connection, which the connection cap counts.
// The writer owns copies of what it needs: fasthttp may reuse the
// RequestCtx while it still runs, once the client has gone.
//
// A client that goes away (a failed write: each event, and a comment every
// keepAliveEvery) cancels the upstream call, in every revision: the gateway
// offers no resumption, so the answer could never be delivered (2026-07-28:
// closing the stream is the cancellation). In a legacy session,
// notifications/cancelled for the call cancels it too when it reaches the
// worker that runs it (runningCalls).

const (
	metaLogLevel       = "io.modelcontextprotocol/logLevel" // 2026-07-28: the per-request log level
	contentTypeSSE     = "text/event-stream"
	methodToolsCall    = "tools/call"
	noteProgress       = "notifications/progress"
	noteMessage        = "notifications/message"
	noteCancelled      = "notifications/cancelled"
	streamRetryMs      = 1000 // the retry hint of 2025-11-25's priming event
	streamEventIDBytes = 8
)

// keepAliveEvery is how often a stream that has nothing to send writes a
// comment: proxies keep it open, and a client that has gone is found.
var keepAliveEvery = 15 * time.Second

// logLevels are the syslog severities of MCP logging, least severe first.
var logLevels = [...]string{"debug", "info", "notice", "warning", "error", "critical", "alert", "emergency"}

// logLevel returns the index in logLevels of the raw JSON string v, or -1.
func logLevel(v []byte) int {
	if len(v) == 0 || v[0] != '"' {
		return -1
	}
	return levelIndex(string(unquote(v)))
}

// levelIndex returns the index in logLevels of level, or -1.
func levelIndex(level string) int {
	for i, l := range logLevels {
		if level == l {
			return i
		}
	}
	return -1
}

// acceptsSSE reports whether the client's Accept lists text/event-stream.
func acceptsSSE(ctx *fasthttp.RequestCtx) bool {
	return bytes.Contains(ctx.Request.Header.Peek("Accept"), []byte(contentTypeSSE))
}

// streamCall is a tools/call of an upstream tool answered over SSE: copies
// of everything it needs, none pointing into the request.
type streamCall struct {
	tool  store.Tool
	args  []byte
	id    []byte
	user  string
	rev   revision
	token json.RawMessage // the client's progressToken; nil: no progress asked
	level int             // the least severe notifications/message forwarded; -1: none
	key   string          // in Server.calls, for notifications/cancelled; "": none
}

// deferToStream decides whether a tools/call of the upstream tool t is
// answered over SSE and, if so, records it in buf.stream for serveMCP or
// serveModern to start once the handler's checks are all done.
func (s *Server) deferToStream(ctx context.Context, t store.Tool, params, args []byte, buf *buffers) bool {
	if !buf.sse || buf.id == nil {
		return false
	}
	meta := member(params, "_meta")
	token := member(meta, "progressToken")
	if token != nil && token[0] != '"' && token[0] != '-' && (token[0] < '0' || token[0] > '9') {
		token = nil // a token is a string or a number
	}
	var level int
	if buf.rev.modern() { // the request's own level
		level = logLevel(member(meta, metaLogLevel))
	} else { // the session's, from logging/setLevel (mcp_logging.go)
		level = s.sessionLevel(ctx, buf)
	}
	if token == nil && level < 0 {
		return false
	}
	sc := &streamCall{tool: t, args: bytes.Clone(args), id: bytes.Clone(buf.id), user: buf.user, rev: buf.rev,
		token: bytes.Clone(token), level: level}
	if buf.sid != nil {
		sc.key = callKey(buf.sid, buf.id)
	}
	buf.stream = sc
	return true
}

// startStream answers with the event stream of sc.
func (s *Server) startStream(ctx *fasthttp.RequestCtx, sc *streamCall) {
	callCtx, cancel := context.WithCancel(context.Background())
	done := s.calls.add(sc.key, cancel)
	s.noteStreams(1)
	ctx.Response.SetStatusCode(fasthttp.StatusOK)
	ctx.Response.Header.SetContentType(contentTypeSSE)
	ctx.Response.Header.Set("Cache-Control", "no-cache")
	ctx.Response.Header.Set("X-Accel-Buffering", "no") // nginx: pass events on at once
	ctx.SetBodyStreamWriter(func(w *bufio.Writer) {
		defer s.noteStreams(-1)
		defer done()
		defer cancel()
		s.runStream(callCtx, cancel, sc, w)
	})
}

// runStream runs the call of sc and writes its events to w.
func (s *Server) runStream(ctx context.Context, cancel context.CancelFunc, sc *streamCall, w *bufio.Writer) {
	ev := &eventWriter{w: w, cancel: cancel}
	defer func() {
		if r := recover(); r != nil {
			s.panics.Add(1)
			if s.opt.OnPanic != nil {
				s.opt.OnPanic()
			}
			s.log.Error("recovered panic in an MCP stream", zap.String("panic", fmt.Sprint(r)), zap.Stack("stack"))
			ev.send(appendError(nil, sc.id, codeInternalError, "Internal error"))
		}
	}()
	if sc.rev == rev20251125 {
		ev.stream = newStreamID()
	}
	ev.open()
	stop := ev.keepAlive()
	defer stop()

	buf := getBuffers()
	defer putBuffers(buf)
	buf.user, buf.rev, buf.callCtx = sc.user, sc.rev, ctx
	if sc.token != nil {
		buf.progressToken = sc.token // an untyped nil otherwise: no progress asked upstream
	}
	buf.onNote = func(note json.RawMessage) {
		if sc.forwards(note) {
			ev.send(note)
		}
	}
	out := appendResultHead(buf.out[:0], sc.id)
	start := len(out)
	// The request's RequestCtx is not this goroutine's to use: a scratch
	// one stands in for callUpstream's store lookups and marks.
	var scratch fasthttp.RequestCtx
	scratch.Init(&fasthttp.Request{}, nil, nil)
	out, rerr := s.callUpstream(&scratch, sc.tool, sc.args, buf, out)
	stop() // the response ends the stream: no comment after it
	buf.out = s.endReply(out, 0, start, sc.id, []byte(methodToolsCall), sc.rev, rerr)
	if ctx.Err() == nil { // cancelled: nothing more is sent for it (H6, C1)
		ev.send(buf.out)
	}
}

// forwards reports whether the upstream's notification note goes to the
// client: progress when it asked for it, log messages at or above its
// level; nothing else (no list changes or server requests on a POST's
// stream, H5).
func (sc *streamCall) forwards(note json.RawMessage) bool {
	if validate(note) != nil {
		return false
	}
	v := trimValue(note)
	method := member(v, "method")
	switch {
	case method == nil || method[0] != '"':
		return false
	case string(unquote(method)) == noteProgress:
		return sc.token != nil
	case string(unquote(method)) == noteMessage:
		return sc.level >= 0 && logLevel(member(member(v, "params"), "level")) >= sc.level
	}
	return false
}

// --- Events -------------------------------------------------------------------------

// eventWriter writes the events of one stream: the call's goroutine and the
// keep-alive ticker share it. The first failed write (the client is gone)
// cancels the call.
type eventWriter struct {
	mu     sync.Mutex
	w      *bufio.Writer
	cancel context.CancelFunc
	failed bool
	stream string // 2025-11-25: events carry ids "<stream>-<n>"; "": no ids
	seq    int
}

// newStreamID names a stream in its event ids (2025-11-25: an id SHOULD
// identify its stream, and be unique across the session's streams).
func newStreamID() string {
	var b [streamEventIDBytes]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// open starts the stream. In 2025-11-25 the priming event (an id and empty
// data) tells the client it may resume, with a retry hint; otherwise a
// comment, so that the client has the headers at once.
func (e *eventWriter) open() {
	if e.stream == "" {
		e.write([]byte(": stream open\n\n"))
		return
	}
	e.write([]byte("id: " + e.stream + "-0\nretry: " + strconv.Itoa(streamRetryMs) + "\ndata: \n\n"))
}

// send writes one JSON-RPC message as an event.
func (e *eventWriter) send(msg []byte) {
	e.mu.Lock()
	defer e.mu.Unlock()
	var data bytes.Buffer
	if json.Compact(&data, msg) != nil {
		return
	}
	b := make([]byte, 0, data.Len()+64)
	if e.stream != "" {
		e.seq++
		b = append(b, "id: "+e.stream+"-"...)
		b = strconv.AppendInt(b, int64(e.seq), 10)
		b = append(b, '\n')
	}
	b = append(b, "event: message\ndata: "...)
	b = append(b, data.Bytes()...)
	e.writeLocked(append(b, "\n\n"...))
}

func (e *eventWriter) write(b []byte) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.writeLocked(b)
}

func (e *eventWriter) writeLocked(b []byte) {
	if e.failed {
		return
	}
	if _, err := e.w.Write(b); err == nil {
		err = e.w.Flush()
		if err == nil {
			return
		}
	}
	e.failed = true
	e.cancel()
}

// keepAlive writes a comment every keepAliveEvery until stop (which may be
// called more than once).
func (e *eventWriter) keepAlive() (stop func()) {
	quit := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		tick := time.NewTicker(keepAliveEvery)
		defer tick.Stop()
		for {
			select {
			case <-quit:
				return
			case <-tick.C:
				e.write([]byte(":\n\n"))
			}
		}
	}()
	return sync.OnceFunc(func() { close(quit); <-done })
}

// --- Running calls (cancellation) ------------------------------------------------

// runningCalls are the upstream calls of legacy sessions running in this
// worker, by session and request id: notifications/cancelled ends them.
// A cancellation that reaches another worker finds nothing here and is
// ignored, as the specification allows (docs/mcp.md, G10).
type runningCalls struct {
	mu sync.Mutex
	m  map[string]*runningCall
}

type runningCall struct{ cancel context.CancelFunc }

// callKey names a call: the session id and the raw request id.
func callKey(sid, id []byte) string { return string(sid) + " " + string(trimValue(id)) }

// add registers a call under key ("": none); done removes it.
func (rc *runningCalls) add(key string, cancel context.CancelFunc) (done func()) {
	if key == "" {
		return func() {}
	}
	c := &runningCall{cancel}
	rc.mu.Lock()
	if rc.m == nil {
		rc.m = map[string]*runningCall{}
	}
	rc.m[key] = c
	rc.mu.Unlock()
	return func() {
		rc.mu.Lock()
		if rc.m[key] == c {
			delete(rc.m, key)
		}
		rc.mu.Unlock()
	}
}

// cancel ends the call named key, and says whether one ran here.
func (rc *runningCalls) cancel(key string) bool {
	rc.mu.Lock()
	c := rc.m[key]
	rc.mu.Unlock()
	if c != nil {
		c.cancel()
	}
	return c != nil
}

// callUpstreamCancellable runs a JSON-answered upstream call of a legacy
// session so that notifications/cancelled for it can end it.
func (s *Server) callUpstreamCancellable(ctx *fasthttp.RequestCtx, t store.Tool, args []byte, buf *buffers, out []byte) ([]byte, *rpcError) {
	if buf.sid == nil || buf.id == nil {
		return s.callUpstream(ctx, t, args, buf, out)
	}
	callCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	defer s.calls.add(callKey(buf.sid, buf.id), cancel)()
	buf.callCtx = callCtx
	return s.callUpstream(ctx, t, args, buf, out)
}

// cancelled handles notifications/cancelled of a legacy session: the call
// it names stops, if it runs in this worker; the reason is logged (C3).
func (s *Server) cancelled(params []byte, buf *buffers) {
	id := member(params, "requestId")
	if buf.sid == nil || id == nil {
		return
	}
	found := s.calls.cancel(callKey(buf.sid, id))
	reason := member(params, "reason")
	s.log.Info("MCP request cancelled by the client", zap.ByteString("request_id", id),
		zap.ByteString("reason", reason), zap.Bool("running_here", found))
}

// noteStreams counts open streams (OpenStreams, Options.OnStreams).
func (s *Server) noteStreams(delta int64) {
	n := s.streams.Add(delta)
	if s.opt.OnStreams != nil {
		s.opt.OnStreams(int(n))
	}
}

// OpenStreams is how many SSE answers this worker is writing now.
func (s *Server) OpenStreams() int { return int(s.streams.Load()) }
