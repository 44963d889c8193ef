// Package upstream is the gateway's outbound side: a client of one upstream
// MCP server over Streamable HTTP, or over the HTTP+SSE transport of
// 2024-11-05 (sse.go) for older servers (initialize, the session,
// tools/list with its pages, tools/call with the notifications that come
// with its answer), with a timeout and a circuit breaker of its own. It
// knows nothing of worker processes or of the gateway's catalogue: the
// gateway holds one Client per upstream and decides what to call.
package upstream

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mcpgateway/mcpgateway/internal/adaptive"
)

// Versions are the protocol revisions the client offers, newest first: it
// asks for the first and accepts any of them in the answer.
var Versions = []string{"2025-11-25", "2025-06-18", "2025-03-26"}

// Transports an upstream may speak (Server.Transport).
const (
	TransportStreamableHTTP = "streamablehttp" // the default ("" too)
	TransportSSE            = "sse"            // HTTP+SSE of 2024-11-05 (sse.go)
)

// Server describes one upstream MCP server.
type Server struct {
	Name string // the gateway's name for it (logs, errors)
	// URL is its MCP endpoint: for Streamable HTTP the one it is POSTed
	// to (http://host:3001/mcp), for sse the event stream's
	// (http://host:3001/sse).
	URL       string
	Transport string      // TransportStreamableHTTP ("" too) or TransportSSE
	Header    http.Header // sent with every request (Authorization and the like); never logged
	Timeout   time.Duration

	// MaxInFlight is the ceiling of the adaptive limit on concurrent
	// tools/call to this upstream from this client (0: DefaultMaxInFlight).
	MaxInFlight int
}

// DefaultMaxInFlight is the default ceiling of an upstream's in-flight
// calls, per worker.
const DefaultMaxInFlight = 64

// LimitSlack is how much slower than its fastest an upstream's calls may be
// on average before the in-flight limit takes it for a queue
// (adaptive.New): a queue that adds less is not worth refusing calls for.
const LimitSlack = 20 * time.Millisecond

// ErrBusy is a call refused at once: the upstream's in-flight limit is
// reached. The limit adapts to the upstream's latency (TCP Vegas, as the
// worker's --backpressure auto): a 1 ms tool and a 600 s model call do not
// share one number.
var ErrBusy = errors.New("upstream busy: its limit of calls in flight is reached")

// DefaultTimeout bounds one exchange with an upstream when Server.Timeout
// is 0; a call's own context may end it sooner.
const DefaultTimeout = 60 * time.Second

// Client talks to one upstream server. It is safe for concurrent use: calls
// share one session and a pool of keep-alive connections.
type Client struct {
	srv      Server
	http     *http.Client
	breaker  *Breaker
	nextID   atomic.Int64
	limit    *adaptive.Limit
	inFlight atomic.Int64
	base     time.Time // the limit's clock

	mu      sync.Mutex
	ready   bool        // initialized: the session below is the one to use
	session string      // Mcp-Session-Id; "" when the server keeps none
	version string      // the negotiated revision
	sse     *sseSession // the event stream of an sse upstream's session; nil otherwise
	info    ServerInfo

	// Whether the upstream serves 2026-07-28 (modern.go), once asked,
	// and whether it serves nothing older (it refused initialize).
	modernKnown, modern, modernOnly bool
}

// clientInfo is the gateway's identity to its upstreams.
var clientInfo = map[string]string{"name": "mcpgateway", "version": "1"}

// ServerInfo is what initialize told of the upstream.
type ServerInfo struct {
	Name         string          `json:"name"`
	Version      string          `json:"version"`
	Capabilities json.RawMessage `json:"-"`
	Protocol     string          `json:"-"`
}

// Tool is a tool as the upstream lists it; the gateway passes the schemas on
// as they are.
type Tool struct {
	Name         string          `json:"name"`
	Title        string          `json:"title,omitempty"`
	Description  string          `json:"description,omitempty"`
	InputSchema  json.RawMessage `json:"inputSchema,omitempty"`
	OutputSchema json.RawMessage `json:"outputSchema,omitempty"`
	Annotations  json.RawMessage `json:"annotations,omitempty"`
}

// RPCError is a JSON-RPC error the upstream answered: the gateway passes it
// on to its client.
type RPCError struct {
	Code    int             `json:"code"`
	Message string          `json:"message"`
	Data    json.RawMessage `json:"data,omitempty"`
}

func (e *RPCError) Error() string { return fmt.Sprintf("upstream error %d: %s", e.Code, e.Message) }

// StatusError is an HTTP answer that is not a JSON-RPC message.
type StatusError struct {
	Status int
	Body   string // the start of it
}

func (e *StatusError) Error() string {
	return fmt.Sprintf("upstream answered HTTP %d: %s", e.Status, e.Body)
}

// New makes a client; nothing is sent before the first call.
func New(srv Server, transport http.RoundTripper) *Client {
	if srv.Timeout <= 0 {
		srv.Timeout = DefaultTimeout
	}
	if transport == nil {
		transport = NewTransport()
	}
	if srv.MaxInFlight <= 0 {
		srv.MaxInFlight = DefaultMaxInFlight
	}
	return &Client{srv: srv, http: &http.Client{Transport: transport}, breaker: NewBreaker(DefaultBreaker),
		limit: adaptive.New(srv.MaxInFlight, LimitSlack, nil), base: time.Now()}
}

// InFlightLimit is the adaptive limit on concurrent calls in force.
func (c *Client) InFlightLimit() int64 { return c.limit.Current() }

// NewTransport is a pool of keep-alive connections for one upstream.
func NewTransport() *http.Transport {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.MaxIdleConnsPerHost = 64
	t.IdleConnTimeout = 90 * time.Second
	t.ResponseHeaderTimeout = 0 // a tool may take minutes before its first byte; the call's deadline bounds it
	return t
}

// Breaker is the client's circuit breaker (its state for /metrics and /ready).
func (c *Client) Breaker() *Breaker { return c.breaker }

// Info is the upstream's initialize answer; zero before the first call.
func (c *Client) Info() ServerInfo {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.info
}

// Initialize opens a session (or re-opens it): initialize, then the
// initialized notification. Calls do it themselves when needed.
func (c *Client) Initialize(ctx context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.initializeLocked(ctx)
}

func (c *Client) initializeLocked(ctx context.Context) error {
	c.ready, c.session, c.version = false, "", ""
	if c.sse != nil {
		// A new session gets a new event stream: the old one's reader
		// ends, and calls still waiting on it fail.
		c.sse.shut()
		c.sse = nil
	}
	defer func() {
		if !c.ready && c.sse != nil { // opened, then initialize failed
			c.sse.shut()
			c.sse = nil
		}
	}()
	// Over Streamable HTTP the gateway passes the upstream's requests on to
	// its own client (rpc/mcp_relay.go), so it declares what its clients
	// may serve; the sse transport answers them itself (sse.go: answer).
	capabilities := map[string]any{}
	if c.srv.Transport != TransportSSE {
		capabilities = map[string]any{"sampling": map[string]any{}, "elicitation": map[string]any{}, "roots": map[string]any{}}
	}
	params := map[string]any{
		"protocolVersion": Versions[0],
		"capabilities":    capabilities,
		"clientInfo":      clientInfo,
	}
	var res struct {
		ProtocolVersion string          `json:"protocolVersion"`
		Capabilities    json.RawMessage `json:"capabilities"`
		ServerInfo      ServerInfo      `json:"serverInfo"`
	}
	var raw json.RawMessage
	var session string
	accepted := Versions
	switch c.srv.Transport {
	case "", TransportStreamableHTTP:
		r, hdr, err := c.exchange(ctx, "initialize", params, "", "", nil)
		if err != nil {
			return fmt.Errorf("initialize %s: %w", c.srv.Name, err)
		}
		raw, session = r, hdr.Get("Mcp-Session-Id")
	case TransportSSE:
		s, err := c.openSSE(ctx)
		if err != nil {
			return fmt.Errorf("initialize %s: %w", c.srv.Name, err)
		}
		c.sse = s
		if raw, err = s.request(ctx, "initialize", params, nil, nil); err != nil {
			return fmt.Errorf("initialize %s: %w", c.srv.Name, err)
		}
		accepted = sseVersions
	default: // gatewayspec refuses it first
		return fmt.Errorf("initialize %s: transport %q: must be %q or %q", c.srv.Name, c.srv.Transport, TransportStreamableHTTP, TransportSSE)
	}
	if err := json.Unmarshal(raw, &res); err != nil {
		return fmt.Errorf("initialize %s: result: %w", c.srv.Name, err)
	}
	if !slices.Contains(accepted, res.ProtocolVersion) {
		return fmt.Errorf("initialize %s: it speaks protocol %q; the gateway speaks %s", c.srv.Name, res.ProtocolVersion, strings.Join(accepted, ", "))
	}
	var err error
	if c.sse != nil {
		err = c.sse.notify(ctx, "notifications/initialized")
	} else {
		err = c.notify(ctx, "notifications/initialized", session, res.ProtocolVersion)
	}
	if err != nil {
		return fmt.Errorf("initialize %s: %w", c.srv.Name, err)
	}
	c.ready, c.session, c.version = true, session, res.ProtocolVersion
	c.info = res.ServerInfo
	c.info.Capabilities, c.info.Protocol = res.Capabilities, res.ProtocolVersion
	c.askAllLogs(ctx, res.Capabilities)
	return nil
}

// askAllLogs sets the session's log level to debug when the upstream
// declares logging: a server sends no log messages before a level is set
// (the Go SDK's rule), and the gateway filters them for each of its own
// clients by that client's level (rpc/mcp_logging.go). A refusal leaves
// the session as it is.
func (c *Client) askAllLogs(ctx context.Context, capabilities json.RawMessage) {
	var caps map[string]json.RawMessage
	if json.Unmarshal(capabilities, &caps) != nil || caps["logging"] == nil || string(caps["logging"]) == "null" {
		return
	}
	params := map[string]any{"level": "debug"}
	if c.sse != nil {
		c.sse.request(ctx, "logging/setLevel", params, nil, nil)
		return
	}
	c.exchange(ctx, "logging/setLevel", params, c.session, c.version, nil)
}

// ListTools lists every tool of the upstream, page after page (listAll,
// resources.go). Discovery is safe to repeat: a failure is retried once
// after a fresh initialize.
func (c *Client) ListTools(ctx context.Context) ([]Tool, error) {
	items, err := c.listAll(ctx, "tools/list", "tools")
	if err != nil {
		return nil, err
	}
	tools := make([]Tool, len(items))
	for i, raw := range items {
		if err := json.Unmarshal(raw, &tools[i]); err != nil {
			return nil, fmt.Errorf("tools/list %s: result: %w", c.srv.Name, err)
		}
	}
	return tools, nil
}

// CallTool calls a tool with the caller's arguments (a JSON object, or
// empty) and returns the upstream's result as it is. Notifications the
// upstream streams meanwhile (progress, log messages) go to onNote, in
// order, when it is set; progressToken, when set, asks for progress.
// A call is never retried: it may have run.
func (c *Client) CallTool(ctx context.Context, name string, args json.RawMessage, progressToken any, onNote func(json.RawMessage)) (json.RawMessage, error) {
	params := map[string]any{"name": name}
	if len(args) > 0 {
		params["arguments"] = args
	}
	n := c.inFlight.Add(1)
	defer c.inFlight.Add(-1)
	if n > c.limit.Current() {
		return nil, fmt.Errorf("tools/call %s: %w", c.srv.Name, ErrBusy)
	}
	start := time.Since(c.base)
	res, err := c.call(ctx, "tools/call", params, progressToken, onNote, false)
	var rpcErr *RPCError
	if err == nil || errors.As(err, &rpcErr) {
		// Only answers tell the upstream's latency: a refused connection
		// is fast and says nothing of its queue.
		now := time.Since(c.base)
		c.limit.Sample(int64(now), int64(now-start), n)
	}
	return res, err
}

// Close ends the session at the upstream: DELETE, if it has one; for an
// sse upstream, its event stream is closed (the GET ends, and so does the
// goroutine that read it). A later call opens a new session.
func (c *Client) Close(ctx context.Context) error {
	c.mu.Lock()
	session, version, sse := c.session, c.version, c.sse
	c.ready, c.session, c.version, c.sse = false, "", "", nil
	c.mu.Unlock()
	if sse != nil {
		if err := sse.close(ctx); err != nil {
			return fmt.Errorf("end session at %s: %w", c.srv.Name, err)
		}
		return nil
	}
	if session == "" {
		return nil
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodDelete, c.srv.URL, nil)
	if err != nil {
		return err
	}
	c.setHeaders(req, session, version)
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("end session at %s: %w", c.srv.Name, err)
	}
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	return nil
}

// call sends a request in the session, opening it first when there is
// none. A session the upstream no longer knows (404, or 400 to a request
// that carried one), or an sse session whose stream ended before the
// request was sent, is opened again and the request sent once more: it
// was not run. discovery: any failure is retried once.
func (c *Client) call(ctx context.Context, method string, params map[string]any, progressToken any, onNote func(json.RawMessage), discovery bool) (json.RawMessage, error) {
	if !c.breaker.Allow() {
		return nil, fmt.Errorf("%s %s: %w", method, c.srv.Name, ErrOpen)
	}
	res, err := c.callOnce(ctx, method, params, progressToken, onNote)
	var st *StatusError
	if err != nil && ctx.Err() == nil && (discovery || errors.Is(err, errNotSent) || errors.As(err, &st) && (st.Status == 404 || st.Status == 400)) {
		c.mu.Lock()
		c.ready = false                            // the next callOnce initializes again
		c.modernKnown, c.modernOnly = false, false // and asks again which revisions it serves
		c.mu.Unlock()
		res, err = c.callOnce(ctx, method, params, progressToken, onNote)
	}
	var rpcErr *RPCError
	switch {
	case err == nil || errors.As(err, &rpcErr):
		c.breaker.Success() // the upstream answered
	case ctx.Err() != nil && !errors.Is(ctx.Err(), context.DeadlineExceeded):
		// The caller went away: says nothing about the upstream.
		c.breaker.Release()
	default:
		c.breaker.Failure()
	}
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", method, c.srv.Name, err)
	}
	return res, nil
}

func (c *Client) callOnce(ctx context.Context, method string, params map[string]any, progressToken any, onNote func(json.RawMessage)) (json.RawMessage, error) {
	if m := modernOf(ctx); m != nil {
		modern, err := c.speaksModern(ctx)
		if err != nil {
			return nil, err
		}
		if modern {
			return c.modernCall(ctx, m, method, params, progressToken, onNote)
		}
	}
	c.mu.Lock()
	if c.modernOnly {
		c.mu.Unlock()
		return c.modernCall(ctx, sessionClientModern, method, params, progressToken, onNote)
	}
	if !c.ready || c.sse != nil && c.sse.ended() {
		// Under the lock: concurrent first calls open one session, and
		// calls after an sse stream broke open one new stream.
		if err := c.initializeLocked(ctx); err != nil {
			c.mu.Unlock()
			if c.refusedSessions(ctx, err) {
				return c.modernCall(ctx, sessionClientModern, method, params, progressToken, onNote)
			}
			return nil, err
		}
	}
	session, version, sse := c.session, c.version, c.sse
	c.mu.Unlock()
	if sse != nil {
		return sse.request(ctx, method, params, progressToken, onNote)
	}
	if progressToken != nil {
		params["_meta"] = map[string]any{"progressToken": progressToken}
	}
	res, _, err := c.exchange(ctx, method, params, session, version, onNote)
	return res, err
}

// notify sends a notification (no answer but 202).
func (c *Client) notify(ctx context.Context, method, session, version string) error {
	body, _ := json.Marshal(map[string]any{"jsonrpc": "2.0", "method": method})
	resp, err := c.post(ctx, body, session, version, nil)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode/100 != 2 {
		return &StatusError{Status: resp.StatusCode}
	}
	return nil
}

// cancelUpstream sends notifications/cancelled for the request id, in the
// background and bounded: the caller has moved on.
func (c *Client) cancelUpstream(id int64, why error, session, version string) {
	body, _ := json.Marshal(map[string]any{"jsonrpc": "2.0", "method": "notifications/cancelled",
		"params": map[string]any{"requestId": id, "reason": cancelReason(why)}})
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if resp, err := c.post(ctx, body, session, version, nil); err == nil {
			io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
			resp.Body.Close()
		}
	}()
}

// cancelReason says why a call was given up, for notifications/cancelled.
func cancelReason(why error) string {
	if errors.Is(why, context.DeadlineExceeded) {
		return "the gateway's time for the call ran out"
	}
	return "the gateway's client cancelled the call"
}

// requestsAnswered wraps onNote: the upstream's ping is answered here, and
// so is any request when nobody passes requests on (onNote nil: a call
// answered in JSON, or discovery), with "method not found", so that the
// upstream does not wait for an answer that will not come.
func (c *Client) requestsAnswered(ctx context.Context, onNote func(json.RawMessage), session, version string) func(json.RawMessage) {
	return func(msg json.RawMessage) {
		var m struct {
			ID     json.RawMessage `json:"id"`
			Method string          `json:"method"`
		}
		if json.Unmarshal(msg, &m) != nil || m.ID == nil || m.Method == "" || onNote != nil && m.Method != "ping" {
			if onNote != nil {
				onNote(msg)
			}
			return
		}
		reply := map[string]any{"jsonrpc": "2.0", "id": m.ID, "result": map[string]any{}}
		if m.Method != "ping" {
			delete(reply, "result")
			reply["error"] = map[string]any{"code": -32601, "message": "Method not found: " + m.Method + " cannot reach the gateway's client on this call"}
		}
		body, _ := json.Marshal(reply)
		if resp, err := c.post(ctx, body, session, version, nil); err == nil {
			io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
			resp.Body.Close()
		}
	}
}

// maxMessage bounds one JSON-RPC message from an upstream.
const maxMessage = 16 << 20

// exchange posts one request and reads its answer: a JSON body, or an SSE
// stream of messages whose notifications go to onNote until the response
// with the request's id.
func (c *Client) exchange(ctx context.Context, method string, params any, session, version string, onNote func(json.RawMessage)) (json.RawMessage, http.Header, error) {
	ctx, cancel := context.WithTimeout(ctx, c.srv.Timeout)
	defer cancel()
	id := c.nextID.Add(1)
	body, err := json.Marshal(map[string]any{"jsonrpc": "2.0", "id": id, "method": method, "params": params})
	if err != nil {
		return nil, nil, err
	}
	if method == "tools/call" && version != ModernVersion {
		// A call given up (its client cancelled or went away, or the time
		// ran out) is cancelled upstream too: a closed stream is not a
		// cancellation to a 2025-11-25 server, which would go on working.
		// (A 2026-07-28 request is cancelled by closing its stream.)
		defer func() {
			if ctx.Err() != nil {
				c.cancelUpstream(id, ctx.Err(), session, version)
			}
		}()
	}
	var headers func(*http.Request)
	if version == ModernVersion {
		p, _ := params.(map[string]any)
		headers = func(req *http.Request) { modernHeaders(req, method, p, modernOf(ctx)) }
	}
	resp, err := c.post(ctx, body, session, version, headers)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	ct := resp.Header.Get("Content-Type")
	switch {
	case resp.StatusCode/100 == 2 && strings.HasPrefix(ct, "text/event-stream"):
		notes := c.requestsAnswered(ctx, onNote, session, version)
		var pos streamPosition
		res, err := readStream(resp.Body, id, &pos, notes)
		if errors.Is(err, errStreamEnded) && pos.lastID != "" && version != ModernVersion {
			res, err = c.resumeStream(ctx, id, &pos, session, version, notes)
		}
		return res, resp.Header, err
	case strings.HasPrefix(ct, "application/json"):
		raw, err := io.ReadAll(io.LimitReader(resp.Body, maxMessage))
		if err != nil {
			return nil, nil, err
		}
		res, isResponse, err := parseResponse(raw, id)
		if !isResponse && resp.StatusCode/100 != 2 {
			return nil, nil, &StatusError{Status: resp.StatusCode, Body: start(raw)}
		}
		if err != nil && resp.StatusCode/100 != 2 {
			// An error answer with a JSON-RPC body: the status tells
			// a lost session (404) from a bad request. A 2026-07-28
			// request has no session: its error is the answer.
			var rpcErr *RPCError
			if errors.As(err, &rpcErr) && version != ModernVersion && (resp.StatusCode == 404 || resp.StatusCode == 400 && session != "") {
				return nil, nil, &StatusError{Status: resp.StatusCode, Body: rpcErr.Message}
			}
		}
		return res, resp.Header, err
	default:
		raw, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return nil, nil, &StatusError{Status: resp.StatusCode, Body: start(raw)}
	}
}

func (c *Client) post(ctx context.Context, body []byte, session, version string, headers func(*http.Request)) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.srv.URL, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	c.setHeaders(req, session, version)
	if headers != nil {
		headers(req)
	}
	return c.http.Do(req)
}

func (c *Client) setHeaders(req *http.Request, session, version string) {
	for k, v := range c.srv.Header {
		req.Header[k] = v
	}
	if session != "" {
		req.Header.Set("Mcp-Session-Id", session)
	}
	if version != "" {
		req.Header.Set("MCP-Protocol-Version", version)
	}
}

// parseResponse reads a JSON-RPC response to the request id: its result,
// or its error as an *RPCError. isResponse is false when raw is not one.
func parseResponse(raw []byte, id int64) (res json.RawMessage, isResponse bool, err error) {
	var m struct {
		ID     json.RawMessage `json:"id"`
		Result json.RawMessage `json:"result"`
		Error  *RPCError       `json:"error"`
	}
	if err := json.Unmarshal(raw, &m); err != nil {
		return nil, false, fmt.Errorf("not a JSON-RPC message: %w", err)
	}
	if m.Error == nil && m.Result == nil {
		return nil, false, errors.New("not a JSON-RPC response")
	}
	if string(m.ID) != strconv.FormatInt(id, 10) && m.Error == nil {
		return nil, true, fmt.Errorf("response to id %s, want %d", m.ID, id)
	}
	if m.Error != nil {
		return nil, true, m.Error
	}
	return m.Result, true, nil
}

// errStreamEnded is an SSE answer that ended before the response.
var errStreamEnded = errors.New("the event stream ended without the response")

// readStream reads an SSE answer: each event's data is one JSON-RPC
// message; notifications and requests go to onNote, the response to id
// ends it. pos, when set, keeps the last event id and retry hint seen.
func readStream(r io.Reader, id int64, pos *streamPosition, onNote func(json.RawMessage)) (json.RawMessage, error) {
	var res json.RawMessage
	var resErr error
	answered := false
	err := scanEvents(r, pos, func(msg []byte) bool {
		if v, isResponse, err := parseResponse(msg, id); isResponse {
			res, resErr, answered = v, err, true
			return false
		}
		if onNote != nil {
			onNote(json.RawMessage(bytes.Clone(msg)))
		}
		return true
	})
	switch {
	case answered:
		return res, resErr
	case err != nil:
		return nil, fmt.Errorf("read the event stream: %w", err)
	}
	return nil, errStreamEnded
}

// streamPosition is where an SSE answer stands: the id of its last event
// (a priming event with no data counts) and the server's retry hint.
type streamPosition struct {
	lastID, eventID string
	retry           time.Duration
}

// scanEvents reads an SSE stream and calls each with the data of every
// event (one JSON-RPC message) until it returns false or the stream ends.
// pos, when set, follows id: and retry:; event: and comments need nothing.
func scanEvents(r io.Reader, pos *streamPosition, each func(data []byte) bool) error {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), maxMessage)
	var data []byte
	for sc.Scan() {
		line := sc.Bytes()
		switch {
		case len(line) == 0: // the end of an event
			if pos != nil && pos.eventID != "" {
				pos.lastID, pos.eventID = pos.eventID, ""
			}
			if len(data) == 0 {
				continue
			}
			if !each(data) {
				return nil
			}
			data = data[:0]
		case bytes.HasPrefix(line, []byte("data:")):
			if len(data) > 0 {
				data = append(data, '\n')
			}
			data = append(data, bytes.TrimPrefix(bytes.TrimPrefix(line, []byte("data:")), []byte(" "))...)
		case pos != nil && bytes.HasPrefix(line, []byte("id:")):
			pos.eventID = string(bytes.TrimPrefix(bytes.TrimPrefix(line, []byte("id:")), []byte(" ")))
		case pos != nil && bytes.HasPrefix(line, []byte("retry:")):
			if ms, err := strconv.Atoi(string(bytes.TrimSpace(line[len("retry:"):]))); err == nil && ms >= 0 {
				pos.retry = time.Duration(ms) * time.Millisecond
			}
		}
	}
	return sc.Err()
}

func start(b []byte) string {
	s := strings.TrimSpace(string(b))
	if len(s) > 200 {
		s = s[:200] + "…"
	}
	return s
}
