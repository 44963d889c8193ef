package upstream

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// The HTTP+SSE transport of MCP 2024-11-05, for servers that predate
// Streamable HTTP. The client opens one long-lived GET of the server's URL
// (Accept: text/event-stream); the server's first event, "endpoint", names
// the URI to which the client POSTs each of its messages (the answer to a
// POST is only 202 or 200: it carries nothing); every message of the server,
// responses included, comes as a "message" event on the stream.
//
// So one session of an sse upstream is one GET, read by one goroutine
// (sseSession.read) that hands each response to the call that waits for its
// id, and each progress notification to the call whose token it carries. The
// session is the Client's, as a Streamable HTTP session is: every client of
// the gateway served by this worker shares it. The Client's breaker, limit,
// timeout and retries apply unchanged: a call is callOnce, which opens the
// session (the GET, then initialize) when there is none or its stream has
// ended; a stream that ends fails the calls that wait on it (failures the
// breaker counts); the next call opens a new one. Nothing reconnects in the
// background: an idle upstream that went away costs nothing.

// sseVersions are the revisions an sse upstream may answer to initialize:
// the client offers the newest (Versions[0]) and, as the TypeScript and
// Python SDKs' sse clients do, takes what the server answers, 2024-11-05
// included.
var sseVersions = append(slices.Clone(Versions), "2024-11-05")

// sseEndpointWait bounds the wait for the endpoint event after the GET is
// sent (Server.Timeout, if less): a server that answers the GET and names
// no endpoint must not hold the call (and the Client's lock) for long.
const sseEndpointWait = 10 * time.Second

// sseNoteQueue is how many progress notifications of one call wait for its
// caller; past it they are dropped, so that a caller that does not keep up
// never stalls the stream the other calls' answers come on.
const sseNoteQueue = 256

// errNotSent is a request not sent because its session's stream had
// ended: call sends it once more in a new session.
var errNotSent = errors.New("the session's event stream ended before the request was sent")

// errStreamClosed: the client closed the stream (Close, or a new session).
var errStreamClosed = errors.New("the session's event stream was closed")

// sseSession is one session of an sse upstream: its event stream and the
// calls waiting for an answer on it.
type sseSession struct {
	c        *Client
	endpoint string          // where messages are POSTed; same origin as Server.URL
	ctx      context.Context // the GET's; cancelled by shut
	stop     context.CancelFunc
	closed   atomic.Bool   // shut was called: the stream's end is ours
	done     chan struct{} // closed when the stream has ended and its reader returned
	err      error         // why it ended; written before done is closed

	mu      sync.Mutex
	pending map[int64]*sseCall // by JSON-RPC id
}

// sseCall is a request waiting for its response on the stream.
type sseCall struct {
	token json.RawMessage      // the caller's progressToken, put back into its notifications; nil: none asked
	notes chan json.RawMessage // its progress notifications, in order
	resp  chan json.RawMessage // its response, once
}

// openSSE opens the event stream of a new session and waits for its
// endpoint event; a goroutine then reads the stream until it ends or the
// session is shut.
func (c *Client) openSSE(ctx context.Context) (*sseSession, error) {
	base, err := url.Parse(c.srv.URL)
	if err != nil {
		return nil, fmt.Errorf("open the event stream: %w", err)
	}
	// The GET lives as long as the session, beyond the call that opens
	// it: a context of its own, cancelled by shut (Close, a new session,
	// a failed start).
	streamCtx, stopStream := context.WithCancel(context.Background())
	req, err := http.NewRequestWithContext(streamCtx, http.MethodGet, c.srv.URL, nil)
	if err != nil {
		stopStream()
		return nil, fmt.Errorf("open the event stream: %w", err)
	}
	c.setHeaders(req, "", "") // the credential; the session is in the endpoint's URL
	req.Header.Set("Accept", "text/event-stream")
	req.Header.Set("Cache-Control", "no-cache")

	// Until the endpoint event, the opening call's context and a bound
	// end the GET too.
	wait := min(sseEndpointWait, c.srv.Timeout)
	var timedOut atomic.Bool
	timer := time.AfterFunc(wait, func() { timedOut.Store(true); stopStream() })
	stopOnCaller := context.AfterFunc(ctx, stopStream)
	endpoint, events, body, err := c.sseConnect(req, base)
	stopOnCaller()
	timer.Stop()
	if streamCtx.Err() != nil { // one of the two ended it, maybe just after the event
		switch {
		case timedOut.Load():
			err = fmt.Errorf("no endpoint event within %v", wait)
		case ctx.Err() != nil:
			err = ctx.Err()
		}
	}
	if err != nil {
		if body != nil {
			body.Close()
		}
		stopStream()
		return nil, fmt.Errorf("open the event stream: %w", err)
	}
	s := &sseSession{c: c, endpoint: endpoint, ctx: streamCtx, stop: stopStream,
		done: make(chan struct{}), pending: map[int64]*sseCall{}}
	go s.read(events, body)
	return s, nil
}

// sseConnect sends the GET and reads the stream up to its endpoint event.
// body is the stream, to close, also when err is set.
func (c *Client) sseConnect(req *http.Request, base *url.URL) (endpoint string, events *eventReader, body io.ReadCloser, err error) {
	resp, err := c.http.Do(req)
	if err != nil {
		return "", nil, nil, err
	}
	if resp.StatusCode != http.StatusOK {
		raw, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return "", nil, resp.Body, &StatusError{Status: resp.StatusCode, Body: start(raw)}
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/event-stream") {
		return "", nil, resp.Body, fmt.Errorf("the answer to GET is %q, not an event stream: is the URL the sse endpoint?", ct)
	}
	events = newEventReader(resp.Body)
	for {
		event, data, err := events.next()
		if err != nil {
			return "", nil, resp.Body, fmt.Errorf("the stream ended before its endpoint event: %w", err)
		}
		if event != "endpoint" {
			continue // a message before the endpoint answers nothing of ours
		}
		endpoint, err := resolveEndpoint(base, string(data))
		return endpoint, events, resp.Body, err
	}
}

// resolveEndpoint resolves the endpoint event's URI against the stream's
// URL. One on another origin is refused: the upstream's credential goes
// with every POST, and must reach only the server it was registered for.
func resolveEndpoint(base *url.URL, data string) (string, error) {
	ref, err := url.Parse(strings.TrimSpace(data))
	if err != nil {
		return "", fmt.Errorf("endpoint %q: %w", data, err)
	}
	u := base.ResolveReference(ref)
	if origin(u) != origin(base) {
		return "", fmt.Errorf("endpoint %q: refused, it is not on the origin of %s", data, origin(base))
	}
	return u.String(), nil
}

// origin is scheme://host:port, the port explicit.
func origin(u *url.URL) string {
	scheme := strings.ToLower(u.Scheme)
	port := u.Port()
	if port == "" {
		port = map[string]string{"http": "80", "https": "443"}[scheme]
	}
	return scheme + "://" + net.JoinHostPort(strings.ToLower(u.Hostname()), port)
}

// read reads the stream to its end, routing each message.
func (s *sseSession) read(events *eventReader, body io.ReadCloser) {
	var err error
	for err == nil {
		var event string
		var data []byte
		if event, data, err = events.next(); err == nil && event == "message" {
			s.route(data)
		}
	}
	body.Close()
	switch {
	case s.closed.Load():
		err = errStreamClosed
	case errors.Is(err, io.EOF):
		err = errors.New("the upstream ended the session's event stream")
	default:
		err = fmt.Errorf("the session's event stream broke: %w", err)
	}
	s.err = err
	close(s.done)
}

// route hands a message of the stream to the call it is for: a response
// to the call with its id, a progress notification to the call whose token
// it carries. Requests of the server are answered. Other notifications
// (log messages, list changes) name no call: the session is shared by every
// client of the worker, so they could belong to any of them, and are
// dropped.
func (s *sseSession) route(msg []byte) {
	var m struct {
		ID     json.RawMessage `json:"id"`
		Method string          `json:"method"`
		Params json.RawMessage `json:"params"`
	}
	if json.Unmarshal(msg, &m) != nil {
		return // not a JSON-RPC message: nothing waits for it
	}
	hasID := len(m.ID) > 0 && string(m.ID) != "null"
	switch {
	case m.Method == "" && hasID: // a response
		id, err := strconv.ParseInt(string(m.ID), 10, 64)
		if err != nil {
			return
		}
		s.mu.Lock()
		call := s.pending[id]
		delete(s.pending, id) // a second response to the id finds nothing
		s.mu.Unlock()
		if call != nil {
			call.resp <- msg // never blocks: buffered, and sent once
		}
	case m.Method == "notifications/progress":
		var p struct {
			Token json.RawMessage `json:"progressToken"`
		}
		json.Unmarshal(m.Params, &p)
		id, err := strconv.ParseInt(string(p.Token), 10, 64)
		if err != nil {
			return
		}
		s.mu.Lock()
		call := s.pending[id]
		s.mu.Unlock()
		if call == nil || call.token == nil {
			return
		}
		if note := withToken(msg, call.token); note != nil {
			select {
			case call.notes <- note:
			default: // the caller does not keep up: progress is dropped, the stream goes on
			}
		}
	case m.Method != "" && hasID:
		s.answer(m.ID, m.Method)
	}
}

// withToken is a progress notification with the caller's own token in
// place of the one the upstream was given (the call's id).
func withToken(msg, token json.RawMessage) json.RawMessage {
	var m, params map[string]json.RawMessage
	if json.Unmarshal(msg, &m) != nil || json.Unmarshal(m["params"], &params) != nil || params == nil {
		return nil
	}
	params["progressToken"] = token
	m["params"], _ = json.Marshal(params)
	out, err := json.Marshal(m)
	if err != nil {
		return nil
	}
	return out
}

// answer answers a request of the server: ping, so that a server that
// checks its client keeps the session; anything else (sampling,
// elicitation, roots: capabilities the gateway does not declare) with
// "method not found", so that the server does not wait for an answer.
// It runs on the reader: requests of the server are rare, and the POST is
// bounded.
func (s *sseSession) answer(id json.RawMessage, method string) {
	msg := map[string]any{"jsonrpc": "2.0", "id": id}
	if method == "ping" {
		msg["result"] = map[string]any{}
	} else {
		msg["error"] = map[string]any{"code": -32601, "message": "Method not found: the gateway does not serve " + method + " to upstreams"}
	}
	body, _ := json.Marshal(msg)
	ctx, cancel := context.WithTimeout(s.ctx, 5*time.Second)
	defer cancel()
	s.post(ctx, body) // best effort: a server that misses it times its request out
}

// request sends a request in the session and waits for its response on
// the stream, passing its progress notifications to onNote meanwhile, on
// the caller's goroutine and in order. The exchange is bounded by the
// upstream's timeout, as a Streamable HTTP one is.
func (s *sseSession) request(ctx context.Context, method string, params map[string]any, progressToken any, onNote func(json.RawMessage)) (json.RawMessage, error) {
	ctx, cancel := context.WithTimeout(ctx, s.c.srv.Timeout)
	defer cancel()
	id := s.c.nextID.Add(1)
	call := &sseCall{resp: make(chan json.RawMessage, 1)}
	if progressToken != nil {
		tok, err := json.Marshal(progressToken)
		if err != nil {
			return nil, fmt.Errorf("progress token: %w", err)
		}
		// The upstream is given the call's id as the token: one stream
		// carries the progress of every call of the session, from every
		// client of the worker, and their own tokens may be the same.
		call.token, call.notes = tok, make(chan json.RawMessage, sseNoteQueue)
		params = maps.Clone(params)
		params["_meta"] = map[string]any{"progressToken": id}
	}
	body, err := json.Marshal(map[string]any{"jsonrpc": "2.0", "id": id, "method": method, "params": params})
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	if s.ended() {
		s.mu.Unlock()
		return nil, errNotSent
	}
	s.pending[id] = call // before the POST: the response may come before the POST's answer
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.pending, id)
		s.mu.Unlock()
	}()
	if err := s.post(ctx, body); err != nil {
		return nil, err
	}
	answered := func(raw json.RawMessage) (json.RawMessage, error) {
		for { // the notifications queued before the response come first
			select {
			case note := <-call.notes:
				if onNote != nil {
					onNote(note)
				}
			default:
				res, _, err := parseResponse(raw, id)
				return res, err
			}
		}
	}
	for {
		select {
		case note := <-call.notes: // nil without a token: never ready
			if onNote != nil {
				onNote(note)
			}
		case raw := <-call.resp:
			return answered(raw)
		case <-s.done:
			select {
			case raw := <-call.resp: // it came just before the end
				return answered(raw)
			default:
				return nil, s.err
			}
		case <-ctx.Done():
			if method == "tools/call" { // given up: cancelled upstream too, as over Streamable HTTP
				s.cancelRequest(id, ctx.Err())
			}
			return nil, ctx.Err()
		}
	}
}

// cancelRequest sends notifications/cancelled for the request id, in the
// background and bounded.
func (s *sseSession) cancelRequest(id int64, why error) {
	body, _ := json.Marshal(map[string]any{"jsonrpc": "2.0", "method": "notifications/cancelled",
		"params": map[string]any{"requestId": id, "reason": cancelReason(why)}})
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		s.post(ctx, body)
	}()
}

// notify sends a notification in the session, bounded by the timeout.
func (s *sseSession) notify(ctx context.Context, method string) error {
	ctx, cancel := context.WithTimeout(ctx, s.c.srv.Timeout)
	defer cancel()
	body, _ := json.Marshal(map[string]any{"jsonrpc": "2.0", "method": method})
	return s.post(ctx, body)
}

// post sends one message to the endpoint; its answer is an
// acknowledgement (202 Accepted, or 200), whose body is read and dropped.
func (s *sseSession) post(ctx context.Context, body []byte) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.endpoint, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	// The credential only: the endpoint's URL names the session, and a
	// 2024-11-05 server knows no MCP-Protocol-Version header (a strict
	// one refuses a revision it does not speak).
	s.c.setHeaders(req, "", "")
	resp, err := s.c.http.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode/100 != 2 {
		return &StatusError{Status: resp.StatusCode, Body: start(raw)}
	}
	return nil
}

// ended reports whether the stream has ended.
func (s *sseSession) ended() bool {
	select {
	case <-s.done:
		return true
	default:
		return false
	}
}

// shut ends the stream; its reader returns soon after, and the calls
// waiting on it fail with errStreamClosed.
func (s *sseSession) shut() {
	s.closed.Store(true)
	s.stop()
}

// close shuts the stream and waits for its reader to return.
func (s *sseSession) close(ctx context.Context) error {
	s.shut()
	select {
	case <-s.done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("close the event stream: %w", ctx.Err())
	}
}

// eventReader reads the events of a text/event-stream.
type eventReader struct{ sc *bufio.Scanner }

func newEventReader(r io.Reader) *eventReader {
	sc := bufio.NewScanner(r) // lines end in LF, CRLF (its CR dropped) or, rarely, CR alone: not handled
	sc.Buffer(make([]byte, 64<<10), maxMessage)
	return &eventReader{sc: sc}
}

// next returns the next event with data: its type ("message" when it names
// none) and its data lines joined. Comments (keep-alives), id and retry
// lines, and events without data are skipped. err is io.EOF at the end.
func (r *eventReader) next() (event string, data []byte, err error) {
	hasData := false
	for r.sc.Scan() {
		line := r.sc.Bytes()
		if len(line) == 0 { // the end of an event
			if hasData {
				if event == "" {
					event = "message"
				}
				return event, data, nil
			}
			event = ""
			continue
		}
		field, value, _ := bytes.Cut(line, []byte(":"))
		value = bytes.TrimPrefix(value, []byte(" "))
		switch string(field) {
		case "event":
			event = string(value)
		case "data":
			if hasData {
				data = append(data, '\n')
			}
			data, hasData = append(data, value...), true
		}
		// "" (a comment), id and retry: nothing to do; a server's stream
		// is not resumed (a new session is opened instead).
	}
	if err := r.sc.Err(); err != nil {
		return "", nil, err
	}
	return "", nil, io.EOF
}
