package rpc

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/valyala/fasthttp"
	"go.uber.org/zap"

	"github.com/mcpgateway/mcpgateway/store"
	"github.com/mcpgateway/mcpgateway/upstream"
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
// keepAliveEvery) cancels an upstream call whose stream cannot be resumed
// (2026-07-28: closing the stream is the cancellation; 2025-06-18 streams
// have no event ids). A 2025-11-25 call goes on, recording its events for
// the client to resume (mcp_resume.go). In a legacy session,
// notifications/cancelled for the call cancels it, on any worker.

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
	sid   string          // the legacy session's id; "": none

	modern *upstream.Modern // a 2026-07-28 request's, for the upstream (mcp_modern.go)
}

// deferToStream decides whether a tools/call of the upstream tool t is
// answered over SSE and, if so, records it in buf.stream for serveMCP or
// serveModern to start once the handler's checks are all done.
func (s *Server) deferToStream(ctx *fasthttp.RequestCtx, t store.Tool, params, args []byte, buf *buffers) bool {
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
	if token == nil && level < 0 && buf.sid == nil {
		// Nothing asked for. A legacy session's call streams all the same:
		// its upstream may send it requests (sampling, elicitation, roots;
		// mcp_relay.go), which only a stream can carry.
		return false
	}
	sc := &streamCall{tool: t, args: bytes.Clone(args), id: bytes.Clone(buf.id), user: buf.user, rev: buf.rev,
		token: bytes.Clone(token), level: level}
	if buf.params != nil {
		sc.modern = newModern(ctx, buf.params)
	}
	if buf.sid != nil {
		sc.key, sc.sid = callKey(buf.sid, buf.id), string(buf.sid)
	}
	buf.stream = sc
	return true
}

// startStream answers with the event stream of sc. The call runs in a
// goroutine of its own (a callRun), so that the call of a resumable stream
// outlives the stream: when its client goes, or the worker hands the stream
// off as it stops (Drain), the call goes on recording its events for the
// client to resume on any worker (mcp_resume.go).
func (s *Server) startStream(ctx *fasthttp.RequestCtx, sc *streamCall) {
	run := s.launch(sc)
	s.noteStreams(1)
	sseHeaders(ctx)
	ctx.SetBodyStreamWriter(func(w *bufio.Writer) {
		defer s.noteStreams(-1)
		s.followRun(run, w)
	})
}

// sseHeaders starts a 200 event-stream answer.
func sseHeaders(ctx *fasthttp.RequestCtx) {
	ctx.Response.SetStatusCode(fasthttp.StatusOK)
	ctx.Response.Header.SetContentType(contentTypeSSE)
	ctx.Response.Header.Set("Cache-Control", "no-cache")
	ctx.Response.Header.Set("X-Accel-Buffering", "no") // nginx: pass events on at once
}

// followRun writes the events of run to w as they come, the response last.
// A client that goes away cancels a call that cannot be resumed (H6; T8 is
// a SHOULD NOT that resumption lets the gateway keep); one that can goes
// on without its stream. A stopping worker hands a resumable stream off: it
// ends it, and the client resumes on another worker after the retry hint.
func (s *Server) followRun(run *callRun, w *bufio.Writer) {
	ev := &eventWriter{w: w, stream: run.stream}
	ev.open(run.stream)
	tick := time.NewTicker(keepAliveEvery)
	defer tick.Stop()
	drain := s.draining
	sent := 0
	for {
		evs, ended := run.since(sent)
		for _, data := range evs {
			sent++
			ev.send(sent, data)
		}
		if ev.failed {
			if run.key == "" {
				run.cancel(errClientGone)
			} else {
				run.persist() // for the client to resume (mcp_resume.go)
			}
			return
		}
		if ended {
			return
		}
		select {
		case <-run.changed:
		case <-tick.C:
			ev.write([]byte(":\n\n"))
		case <-drain:
			if run.key != "" {
				run.persist() // before the client resumes elsewhere
				ev.write(retryHint)
				return
			}
			drain = nil // not resumable: the drain waits for it
		}
	}
}

// runCall runs the call of run and records its events, the response last.
func (s *Server) runCall(run *callRun) {
	sc := run.sc
	defer run.end()
	defer func() {
		if r := recover(); r != nil {
			s.panics.Add(1)
			if s.opt.OnPanic != nil {
				s.opt.OnPanic()
			}
			s.log.Error("recovered panic in an MCP stream", zap.String("panic", fmt.Sprint(r)), zap.Stack("stack"))
			run.emit(appendError(nil, sc.id, codeInternalError, "Internal error"), true)
		}
	}()
	buf := getBuffers()
	defer putBuffers(buf)
	buf.user, buf.rev, buf.callCtx, buf.modern = sc.user, sc.rev, run.ctx, sc.modern
	if !sc.rev.modern() {
		buf.ask = s.askClient(run)
	}
	if sc.token != nil {
		buf.progressToken = sc.token // an untyped nil otherwise: no progress asked upstream
	}
	// The request's RequestCtx is not this goroutine's to use: a scratch
	// one stands in for callUpstream's store lookups and marks.
	var scratch fasthttp.RequestCtx
	scratch.Init(&fasthttp.Request{}, nil, nil)
	buf.onNote = func(note json.RawMessage) {
		if method, id, params, ok := upstreamRequest(note); ok { // sampling, elicitation, roots (mcp_relay.go)
			s.relayRequest(run, method, id, params, func(ctx context.Context, msg []byte) error {
				c, err := s.upstreamClient(ctx, sc.tool.Gateway)
				if err != nil {
					return err
				}
				return c.Respond(ctx, msg)
			})
			return
		}
		if sc.forwards(note) {
			run.emit(note, false)
		}
	}
	out := appendResultHead(buf.out[:0], sc.id)
	start := len(out)
	out, rerr := s.callUpstream(&scratch, sc.tool, sc.args, buf, out)
	buf.out = s.endReply(out, 0, start, sc.id, []byte(methodToolsCall), sc.rev, rerr)
	switch cause := context.Cause(run.ctx); {
	case run.ctx.Err() == nil:
		run.emit(buf.out, true)
	case errors.Is(cause, errShutdown): // the worker stopped before the upstream answered
		run.emit(appendError(nil, sc.id, codeInternalError,
			"Internal error: the gateway stopped before the upstream answered; the call may be retried"), true)
	default: // cancelled by its client: nothing more is sent for it (H6, C1)
		run.emit(nil, true)
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

// eventWriter writes the events of one stream. The first failed write (the
// client is gone) marks it failed; its owner decides what that means.
type eventWriter struct {
	w      *bufio.Writer
	failed bool
	stream string // 2025-11-25: events carry ids "<stream>-<n>"; "": no ids
}

// retryHint tells a client whose stream ends before its response when to
// reconnect (GET with Last-Event-ID).
var retryHint = []byte("retry: " + strconv.Itoa(streamRetryMs) + "\n\n")

// newStreamID names a stream in its event ids (2025-11-25: an id SHOULD
// identify its stream, and be unique across the session's streams).
func newStreamID() string {
	var b [streamEventIDBytes]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// open starts the stream. With event ids (2025-11-25) the priming event (an
// id and empty data) tells the client it may resume, with a retry hint;
// otherwise a comment, so that the client has the headers at once.
func (e *eventWriter) open(stream string) {
	if stream == "" {
		e.write([]byte(": stream open\n\n"))
		return
	}
	e.write([]byte("id: " + stream + "-0\nretry: " + strconv.Itoa(streamRetryMs) + "\ndata: \n\n"))
}

// send writes the event seq: one compact JSON-RPC message. Empty data (a
// call that ended unanswered) writes nothing.
func (e *eventWriter) send(seq int, data []byte) {
	if len(data) == 0 {
		return
	}
	b := make([]byte, 0, len(data)+64)
	if e.stream != "" {
		b = append(b, "id: "+e.stream+"-"...)
		b = strconv.AppendInt(b, int64(seq), 10)
		b = append(b, '\n')
	}
	b = append(b, "event: message\ndata: "...)
	b = append(b, data...)
	e.write(append(b, "\n\n"...))
}

func (e *eventWriter) write(b []byte) {
	if e.failed {
		return
	}
	if _, err := e.w.Write(b); err == nil {
		if err = e.w.Flush(); err == nil {
			return
		}
	}
	e.failed = true
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

type runningCall struct{ cancel func() }

// callKey names a call: the session id and the raw request id.
func callKey(sid, id []byte) string { return string(sid) + " " + string(trimValue(id)) }

// add registers a call under key ("": none); done removes it.
func (rc *runningCalls) add(key string, cancel func()) (done func()) {
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
	callCtx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	defer s.calls.add(callKey(buf.sid, buf.id), func() { cancel(errCancelled) })()
	defer s.watchCancel(callCtx, storeCancelKey(buf.sid, buf.id), cancel)()
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
	if !found {
		s.cancelElsewhere(buf.sid, id) // mcp_resume.go
	}
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
