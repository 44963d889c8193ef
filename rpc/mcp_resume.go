package rpc

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
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
)

// Resumable streams and the state they share across workers (docs/mcp.md,
// G10 and G13; issue 13 items 3 to 5).
//
// A 2025-11-25 session's streamed call records its events in the store
// (store.AppendStreamEvent: Redis with CACHE_TYPE=redis, the database
// otherwise) under "<session> <stream>", kept streamRetention after the
// latest: from the moment it may need them, every event before it is
// written to the stream. That moment is the first of: the call has run
// persistAfter, its stream failed, or the worker hands the stream off. A
// call answered sooner, the common case, writes nothing: with SQLite, the
// two or three transactions of recording every call cost about 1 ms of CPU
// and an 8th of the throughput (measured; docs/mcp.md). What is given up:
// the replay of such a call for a client whose connection broke without
// the worker's write failing. A client whose stream breaks, or
// that a stopping worker hands off (a retry hint, then the end of the
// stream), sends GET /mcp with Last-Event-ID to any worker of any instance:
// that worker replays what followed the id from the store and follows the
// stream until its response. The call itself goes on in the worker that
// started it: a drain lets it finish within the graceful timeout, and one
// still running near the end is answered with an error event, so that a
// resumed client always ends with an answer.
//
// notifications/cancelled for a call running on another worker is recorded
// in the store (store.CancelCall), which running calls of legacy sessions
// read every cancelPoll from the near cache.
//
// Stateless (2026-07-28) requests and /rpc never touch any of it.

// eventBackend keeps resumable streams' events and cross-worker
// cancellations (*store.Store).
type eventBackend interface {
	AppendStreamEvent(ctx context.Context, stream string, ev store.StreamEvent, until time.Time) error
	StreamEvents(ctx context.Context, stream string, after, limit int) ([]store.StreamEvent, bool, error)
	CancelCall(ctx context.Context, key string, until time.Time) error
	CallCancelled(ctx context.Context, key string) (bool, error)
}

const (
	streamRetention = 5 * time.Minute        // events are kept this long after a stream's latest
	resumePoll      = 200 * time.Millisecond // a resumed stream's look at the store for new events
	resumeBatch     = 100                    // events read at a time
	resumeGrace     = 30 * time.Second       // past FEDERATION_TIMEOUT, a resumed stream gives up on its call
	cancelPoll      = 250 * time.Millisecond // a running call's look for a cancellation from another worker
	persistAfter    = 200 * time.Millisecond // a resumable call still running this long records its events
	resumeWait      = time.Second            // how long a resumption waits for a stream not recorded yet
	storeOpTimeout  = 2 * time.Second
	// shutdownMargin: a drain cancels the calls still running this long
	// before its graceful deadline, so that their error events are recorded
	// before the process exits.
	shutdownMargin   = time.Second
	standalonePrefix = "g" // the stream ids of GET streams, which have no events to resume
)

var (
	errShutdown   = errors.New("the worker is stopping")
	errClientGone = errors.New("the client closed its stream")
	errCancelled  = errors.New("cancelled by the client")
)

// --- A call's run -------------------------------------------------------------------

// callRun is a streamed call: its events in order, recorded in the store
// when its stream is resumable (key set), and followed by the stream that
// started it for as long as that lasts.
type callRun struct {
	s      *Server
	sc     *streamCall
	ctx    context.Context
	cancel context.CancelCauseFunc
	stream string // the event ids' stream; "": no ids (before 2025-11-25, and 2026-07-28)
	key    string // in the store: "<session> <stream>"; "": not resumable

	mu       sync.Mutex
	events   [][]byte // compact JSON-RPC messages; event n is events[n-1]
	ended    bool
	finalSeq int           // the seq of the last event, once emitted
	changed  chan struct{} // 1-buffered: something new since the last look

	// Recording (key set): the opening record and the events so far are
	// written at once by persist, the later ones by emit as they come.
	// persistMu orders the two.
	persistMu sync.Mutex
	persisted bool
	opening   []byte
	timer     *time.Timer
}

// launch starts the call of sc in its own goroutine.
func (s *Server) launch(sc *streamCall) *callRun {
	ctx, cancel := context.WithCancelCause(s.life)
	run := &callRun{s: s, sc: sc, ctx: ctx, cancel: cancel, changed: make(chan struct{}, 1)}
	if sc.rev == rev20251125 {
		run.stream = newStreamID()
		if s.events != nil && sc.sid != "" {
			run.key = sc.sid + " " + run.stream
			run.opening = fmt.Appendf(nil, `{"id":%s,"started":%d}`, trimValue(sc.id), time.Now().UnixMilli())
			run.timer = time.AfterFunc(persistAfter, run.persistRunning)
		}
	}
	done := s.calls.add(sc.key, func() { cancel(errCancelled) })
	var stopWatch func() = func() {}
	if sc.sid != "" {
		stopWatch = s.watchCancel(ctx, storeCancelKey([]byte(sc.sid), sc.id), cancel)
	}
	s.running.Add(1)
	go func() {
		defer s.running.Done()
		defer done()
		defer cancel(nil)
		defer stopWatch()
		s.runCall(run)
	}()
	return run
}

// record writes ev to the store, logging a failure (the stream goes on).
func (run *callRun) record(ev store.StreamEvent) error {
	ctx, cancel := context.WithTimeout(context.Background(), storeOpTimeout)
	defer cancel()
	err := run.s.events.AppendStreamEvent(ctx, run.key, ev, time.Now().Add(streamRetention))
	if err != nil {
		run.s.log.Warn("MCP stream event not recorded: a client that loses this stream cannot resume it",
			zap.Int("seq", ev.Seq), zap.Error(err))
	}
	return err
}

// persist records the opening record and the events so far, once; the
// events after it are recorded by emit. A failure leaves the stream
// without resumption (logged by record).
func (run *callRun) persist() {
	run.persistMu.Lock()
	defer run.persistMu.Unlock()
	if run.key == "" || run.persisted {
		return
	}
	run.persisted = true
	if run.record(store.StreamEvent{Seq: 0, Data: run.opening}) != nil {
		return
	}
	run.mu.Lock()
	events, finalSeq := run.events, run.finalSeq
	run.mu.Unlock()
	for i, data := range events {
		if run.record(store.StreamEvent{Seq: i + 1, Data: data, Final: i+1 == finalSeq}) != nil {
			return
		}
	}
}

// persistRunning is persist for the timer: a call that has ended by then
// needs nothing recorded, unless its stream fails (followRun).
func (run *callRun) persistRunning() {
	run.mu.Lock()
	ended := run.ended
	run.mu.Unlock()
	if !ended {
		run.persist()
	}
}

// emit adds an event: msg (compacted; nil: the call ended unanswered, which
// records an empty last event so that resumed streams end too). Only the
// call's goroutine emits, so the store gets events in order.
func (run *callRun) emit(msg []byte, final bool) {
	var data []byte
	if msg != nil {
		var b bytes.Buffer
		if json.Compact(&b, msg) != nil {
			if !final {
				return
			}
		} else {
			data = b.Bytes()
		}
	}
	run.persistMu.Lock()
	run.mu.Lock()
	seq := len(run.events) + 1
	run.mu.Unlock()
	if run.persisted {
		_ = run.record(store.StreamEvent{Seq: seq, Data: data, Final: final})
	}
	run.mu.Lock()
	run.events = append(run.events, data)
	run.ended = run.ended || final
	if final {
		run.finalSeq = seq
	}
	run.mu.Unlock()
	run.persistMu.Unlock()
	run.signal()
}

// end marks the run over (also when it emitted no last event).
func (run *callRun) end() {
	if run.timer != nil {
		run.timer.Stop()
	}
	run.mu.Lock()
	run.ended = true
	run.mu.Unlock()
	run.signal()
}

func (run *callRun) signal() {
	select {
	case run.changed <- struct{}{}:
	default:
	}
}

// since returns the events after the first n, and whether the run is over.
func (run *callRun) since(n int) ([][]byte, bool) {
	run.mu.Lock()
	defer run.mu.Unlock()
	return run.events[n:], run.ended
}

// --- Cancellation across workers -------------------------------------------------

// storeCancelKey names a legacy session's call in the store: a hash, since
// client ids may be long.
func storeCancelKey(sid, id []byte) string {
	h := sha256.New()
	h.Write(sid)
	h.Write([]byte{0})
	h.Write(trimValue(id))
	return hex.EncodeToString(h.Sum(nil))
}

// cancelElsewhere records notifications/cancelled of a call that does not
// run in this worker, for the worker that runs it (watchCancel).
func (s *Server) cancelElsewhere(sid, id []byte) {
	if s.events == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), storeOpTimeout)
	defer cancel()
	until := time.Now().Add(s.federationTimeout() + time.Minute)
	if err := s.events.CancelCall(ctx, storeCancelKey(sid, id), until); err != nil {
		s.log.Warn("MCP cancellation not recorded for other workers", zap.Error(err))
	}
}

// watchCancel cancels ctx's call (cancel) when a cancellation of key is
// recorded by another worker; the returned func stops watching.
func (s *Server) watchCancel(ctx context.Context, key string, cancel context.CancelCauseFunc) (stop func()) {
	if s.events == nil {
		return func() {}
	}
	quit := make(chan struct{})
	go func() {
		tick := time.NewTicker(cancelPoll)
		defer tick.Stop()
		for {
			select {
			case <-quit:
				return
			case <-ctx.Done():
				return
			case <-tick.C:
				if gone, err := s.events.CallCancelled(ctx, key); err == nil && gone {
					cancel(errCancelled)
					return
				}
			}
		}
	}()
	return sync.OnceFunc(func() { close(quit) })
}

// --- Stopping -----------------------------------------------------------------------

// Drain tells the server that its process stops by deadline: resumable and
// GET streams end at once with a retry hint (their clients resume on
// another worker), and calls still running shutdownMargin before the
// deadline are cancelled and answered with an error event. Streams that
// cannot be resumed go on: the drain waits for them.
func (s *Server) Drain(deadline time.Time) {
	s.drainOnce.Do(func() {
		close(s.draining)
		stopAt := deadline.Add(-shutdownMargin)
		if left := time.Until(deadline); left < 2*shutdownMargin {
			stopAt = time.Now().Add(left / 2)
		}
		time.AfterFunc(time.Until(stopAt), func() { s.stopLife(errShutdown) })
	})
}

// Close waits for the calls still running, whose streams may have been
// handed off, to record their last event. Without Drain, they run to their
// end (FEDERATION_TIMEOUT bounds them).
func (s *Server) Close() { s.running.Wait() }

// --- GET /mcp ------------------------------------------------------------------------

// serveGet answers GET /mcp of a legacy session: with Last-Event-ID, the
// resumption of a call's stream; without, the session's standing stream,
// which carries nothing yet but keep-alive comments (the gateway sends no
// server-initiated messages) and ends, with a retry hint, when the worker
// stops.
func (s *Server) serveGet(ctx *fasthttp.RequestCtx, sid []byte, rev revision) {
	if !acceptsSSE(ctx) {
		writeDetail(ctx, fasthttp.StatusNotAcceptable, "Not Acceptable: GET /mcp answers text/event-stream, which the client must accept")
		return
	}
	last := ctx.Request.Header.Peek("Last-Event-ID")
	if len(last) == 0 || bytes.HasPrefix(last, []byte(standalonePrefix)) {
		s.standingStream(ctx, string(sid), rev)
		return
	}
	stream, after, ok := parseEventID(last)
	if !ok || rev != rev20251125 {
		mcpError(ctx, fasthttp.StatusBadRequest, rev, codeInvalidRequest,
			fmt.Sprintf("Bad Request: Last-Event-ID %q names no stream of this session", last))
		return
	}
	key := string(sid) + " " + stream
	sctx, cancel := context.WithTimeout(ctx, storeOpTimeout)
	head, found, err := s.events.StreamEvents(sctx, key, -1, 1)
	cancel()
	// A call records its events once it has run persistAfter, or as its
	// stream fails: a client quicker than that finds them a moment later.
	for wait := time.Now().Add(resumeWait); err == nil && !found && time.Now().Before(wait); {
		time.Sleep(resumePoll)
		sctx, cancel := context.WithTimeout(ctx, storeOpTimeout)
		head, found, err = s.events.StreamEvents(sctx, key, -1, 1)
		cancel()
	}
	if err != nil {
		s.mcpStoreError(ctx, rev, "resuming an MCP stream", err)
		return
	}
	if !found || len(head) == 0 || head[0].Seq != 0 {
		mcpError(ctx, fasthttp.StatusBadRequest, rev, codeInvalidRequest,
			fmt.Sprintf("Bad Request: Last-Event-ID %q names no stream of this session (or it expired)", last))
		return
	}
	if after >= 1 {
		// The id of the stream's last event (its response, or the error of
		// a call that ended unanswered): nothing follows, and the client
		// has it all. 204, not a stream that would wait for more: an SDK
		// that counts only a result as the end (the TypeScript SDK 1.x)
		// resumes again after an error, and would loop.
		sctx, cancel := context.WithTimeout(ctx, storeOpTimeout)
		last, _, err := s.events.StreamEvents(sctx, key, after-1, 1)
		cancel()
		if err == nil && len(last) == 1 && last[0].Seq == after && last[0].Final {
			ctx.SetStatusCode(fasthttp.StatusNoContent)
			return
		}
	}
	var opening struct {
		ID      json.RawMessage `json:"id"`
		Started int64           `json:"started"`
	}
	_ = json.Unmarshal(head[0].Data, &opening)
	giveUp := time.UnixMilli(opening.Started).Add(s.federationTimeout() + resumeGrace)
	s.noteStreams(1)
	sseHeaders(ctx)
	ctx.SetBodyStreamWriter(func(w *bufio.Writer) {
		defer s.noteStreams(-1)
		s.followStored(w, key, stream, after, opening.ID, giveUp)
	})
}

// parseEventID splits "<stream>-<n>".
func parseEventID(id []byte) (string, int, bool) {
	i := bytes.LastIndexByte(id, '-')
	if i != 2*streamEventIDBytes {
		return "", 0, false
	}
	if _, err := hex.DecodeString(string(id[:i])); err != nil {
		return "", 0, false
	}
	n, err := strconv.Atoi(string(id[i+1:]))
	if err != nil || n < 0 {
		return "", 0, false
	}
	return string(id[:i]), n, true
}

// followStored writes the recorded events of the stream after the event
// after, then those recorded later, until its last one. If none comes by
// giveUp, the worker running the call is gone (killed): the client gets an
// error response, not a stream that never ends.
func (s *Server) followStored(w *bufio.Writer, key, stream string, after int, id json.RawMessage, giveUp time.Time) {
	ev := &eventWriter{w: w, stream: stream}
	keepAlive := time.NewTicker(keepAliveEvery)
	defer keepAlive.Stop()
	poll := time.NewTicker(resumePoll)
	defer poll.Stop()
	for {
		ctx, cancel := context.WithTimeout(context.Background(), storeOpTimeout)
		evs, _, err := s.events.StreamEvents(ctx, key, after, resumeBatch)
		cancel()
		if err != nil {
			s.log.Warn("resumed MCP stream: reading its events", zap.Error(err))
		}
		for _, e := range evs {
			ev.send(e.Seq, e.Data)
			after = e.Seq
			if e.Final {
				return
			}
		}
		if ev.failed {
			return
		}
		if time.Now().After(giveUp) {
			if len(id) > 0 {
				ev.send(after+1, appendError(nil, id, codeInternalError,
					"Internal error: the call's worker stopped before the upstream answered; the call may be retried"))
			}
			return
		}
		if len(evs) == resumeBatch {
			continue
		}
		select {
		case <-poll.C:
		case <-keepAlive.C:
			ev.write([]byte(":\n\n"))
		case <-s.draining:
			ev.write(retryHint)
			return
		}
	}
}

// standingStream is GET /mcp without Last-Event-ID: the session's stream of
// server-initiated messages, the updates of the resources it subscribed to
// (subscriptions.go) and keep-alive comments. 2025-11-25 primes it with an
// id of a stream whose events are not kept, so that a client reconnecting
// with it gets a new one.
func (s *Server) standingStream(ctx *fasthttp.RequestCtx, sid string, rev revision) {
	stream := ""
	if rev == rev20251125 {
		stream = standalonePrefix + newStreamID()
	}
	s.noteStreams(1)
	sseHeaders(ctx)
	ctx.SetBodyStreamWriter(func(w *bufio.Writer) {
		defer s.noteStreams(-1)
		updates := make(chan []byte, 16)
		refresh, stop := s.followSubscriptions(sid, updates)
		defer stop()
		ev := &eventWriter{w: w, stream: stream}
		ev.open(stream)
		refresh()
		keepAlive := time.NewTicker(keepAliveEvery)
		defer keepAlive.Stop()
		poll := time.NewTicker(subsPoll)
		defer poll.Stop()
		seq := 0
		for !ev.failed {
			select {
			case note := <-updates:
				seq++
				ev.send(seq, note)
			case <-poll.C:
				refresh()
			case <-keepAlive.C:
				ev.write([]byte(":\n\n"))
			case <-s.draining:
				ev.write(retryHint)
				return
			}
		}
	})
}
