package upstream

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"time"
)

// The stateless revision of MCP (2026-07-28): no initialize and no session;
// every request carries its revision, the client's capabilities and log
// level in params._meta, and the MCP-Protocol-Version, Mcp-Method and
// Mcp-Name headers. A client of the gateway that speaks it is served by an
// upstream that speaks it in the same way, request for request: the
// upstream sees that client's capabilities (and refuses what needs one the
// client lacks), and its multi-round-trip results (resultType
// "input_required", with inputRequests and requestState) go back to the
// client as they are, the client's retry (inputResponses, requestState)
// going on to the upstream. Clients of the session revisions keep the
// upstream session of client.go, where the upstream's requests are relayed.

// ModernVersion is the stateless revision.
const ModernVersion = "2026-07-28"

const (
	metaProtocolVersion    = "io.modelcontextprotocol/protocolVersion"
	metaClientCapabilities = "io.modelcontextprotocol/clientCapabilities"
	metaClientInfo         = "io.modelcontextprotocol/clientInfo"
	metaLogLevel           = "io.modelcontextprotocol/logLevel"
)

// Modern is what a 2026-07-28 request of the gateway's client passes on to
// the upstream. Carried in the context (WithModern), so that every call of
// the client (tools, resources, prompts, completion) takes it the same way.
type Modern struct {
	Capabilities json.RawMessage // the client's clientCapabilities ({} when none)
	ClientInfo   json.RawMessage // the client's clientInfo, if it sent one
	LogLevel     string          // the client's logLevel, if it asked for log messages
	// InputResponses and RequestState are a multi-round-trip retry's
	// params, passed on as they are (nil: absent).
	InputResponses json.RawMessage
	RequestState   json.RawMessage
	// Header holds the Mcp-Param-* headers that mirror arguments the
	// tool's input schema annotates with x-mcp-header (SEP-2243).
	Header http.Header
}

type modernKey struct{}

// WithModern marks ctx as a 2026-07-28 request: calls made with it go to an
// upstream that speaks that revision in its form, and to the session of an
// older upstream otherwise.
func WithModern(ctx context.Context, m *Modern) context.Context {
	return context.WithValue(ctx, modernKey{}, m)
}

func modernOf(ctx context.Context) *Modern {
	m, _ := ctx.Value(modernKey{}).(*Modern)
	return m
}

// speaksModern says whether the upstream serves 2026-07-28, asking it once
// with server/discover: an answer listing it in supportedVersions is yes,
// any other answer (an error, a 400 of a server that knows no such
// revision, a result without it) is no. Only a failure to get an answer
// is an error, and is asked again next time. Concurrent first calls may
// each ask: the question changes nothing.
func (c *Client) speaksModern(ctx context.Context) (bool, error) {
	if c.srv.Transport == TransportSSE {
		return false, nil
	}
	c.mu.Lock()
	known, modern := c.modernKnown, c.modern
	c.mu.Unlock()
	if known {
		return modern, nil
	}
	params := map[string]any{"_meta": map[string]any{
		metaProtocolVersion:    ModernVersion,
		metaClientCapabilities: map[string]any{},
		metaClientInfo:         clientInfo,
	}}
	pctx, cancel := context.WithTimeout(ctx, min(c.srv.Timeout, probeTimeout))
	raw, _, err := c.exchange(pctx, "server/discover", params, "", ModernVersion, nil)
	cancel()
	var rpcErr *RPCError
	var status *StatusError
	var res struct {
		SupportedVersions []string                   `json:"supportedVersions"`
		Capabilities      json.RawMessage            `json:"capabilities"`
		Meta              map[string]json.RawMessage `json:"_meta"`
	}
	switch {
	case err == nil:
		json.Unmarshal(raw, &res)
		modern = slices.Contains(res.SupportedVersions, ModernVersion)
	case errors.As(err, &rpcErr) || errors.As(err, &status):
		modern = false // an answer, if not one of 2026-07-28
	case errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil:
		// Connected, but no answer to a method it does not know: an
		// older server that leaves those unanswered.
		modern = false
	default:
		return false, fmt.Errorf("server/discover %s: %w", c.srv.Name, err)
	}
	c.mu.Lock()
	c.modernKnown, c.modern = true, modern
	if modern && c.info.Protocol == "" {
		// What initialize would have told, for an upstream that may
		// never get one (Offers).
		json.Unmarshal(res.Meta["io.modelcontextprotocol/serverInfo"], &c.info)
		c.info.Capabilities, c.info.Protocol = res.Capabilities, ModernVersion
	}
	c.mu.Unlock()
	return modern, nil
}

// probeTimeout bounds the server/discover question: a server that
// leaves unknown methods unanswered must not hold every first call for the
// upstream's whole timeout.
var probeTimeout = 5 * time.Second

// sessionClientModern is what a request of a session client carries to
// an upstream that speaks only 2026-07-28: the capabilities the gateway
// declares to session upstreams (it passes their requests on, and the
// multi-round-trip results of this one, rpc/mcp_relay.go), every log
// message (it filters them per client), and no client information of
// the client's own.
var sessionClientModern = &Modern{
	Capabilities: json.RawMessage(`{"elicitation":{},"roots":{},"sampling":{}}`),
	LogLevel:     "debug",
}

// SessionRetry is what the retry of a multi-round-trip request carries
// for a session client: the inputs the client gave and the upstream's
// requestState.
func SessionRetry(inputResponses, requestState json.RawMessage) *Modern {
	m := *sessionClientModern
	m.InputResponses, m.RequestState = inputResponses, requestState
	return &m
}

// refusedSessions reports whether initErr, initialize's failure, is the
// answer of an upstream that serves only 2026-07-28: then calls of session
// clients go to it in that form (sessionClientModern), from now on.
func (c *Client) refusedSessions(ctx context.Context, initErr error) bool {
	var rpcErr *RPCError
	var status *StatusError
	if !errors.As(initErr, &rpcErr) && !errors.As(initErr, &status) {
		return false // not an answer: it is down
	}
	if modern, err := c.speaksModern(ctx); err != nil || !modern {
		return false
	}
	c.mu.Lock()
	c.modernOnly = true
	c.mu.Unlock()
	return true
}

// modernCall sends a request in the 2026-07-28 form, with what m carries.
func (c *Client) modernCall(ctx context.Context, m *Modern, method string, params map[string]any, progressToken any,
	onNote func(json.RawMessage)) (json.RawMessage, error) {
	if modernOf(ctx) != m {
		ctx = WithModern(ctx, m) // for the headers (exchange)
	}
	modernParams(m, params, progressToken)
	res, _, err := c.exchange(ctx, method, params, "", ModernVersion, onNote)
	return res, err
}

// modernParams adds to params what a 2026-07-28 request carries: _meta
// with the revision, the client's capabilities, information and log
// level, and the progress token; a retry's inputResponses and
// requestState.
func modernParams(m *Modern, params map[string]any, progressToken any) {
	caps := m.Capabilities
	if len(caps) == 0 {
		caps = json.RawMessage(`{}`)
	}
	meta := map[string]any{metaProtocolVersion: ModernVersion, metaClientCapabilities: caps, metaClientInfo: clientInfo}
	if len(m.ClientInfo) > 0 {
		meta[metaClientInfo] = m.ClientInfo
	}
	if m.LogLevel != "" {
		meta[metaLogLevel] = m.LogLevel
	}
	if progressToken != nil {
		meta["progressToken"] = progressToken
	}
	params["_meta"] = meta
	if len(m.InputResponses) > 0 {
		params["inputResponses"] = m.InputResponses
	}
	if len(m.RequestState) > 0 {
		params["requestState"] = m.RequestState
	}
}

// modernHeaders are the SEP-2243 headers of a 2026-07-28 request: the
// method, the name or URI it is about, and the mirrored arguments.
func modernHeaders(req *http.Request, method string, params map[string]any, m *Modern) {
	req.Header.Set("Mcp-Method", method)
	switch method {
	case "tools/call", "prompts/get":
		if name, ok := params["name"].(string); ok {
			req.Header.Set("Mcp-Name", HeaderValue(name))
		}
	case "resources/read":
		if uri, ok := params["uri"].(string); ok {
			req.Header.Set("Mcp-Name", HeaderValue(uri))
		}
	}
	if m != nil {
		for k, v := range m.Header {
			req.Header[k] = v
		}
	}
	for k, v := range paramHeadersOf(req.Context()) {
		req.Header[k] = v
	}
}

type paramHeadersKey struct{}

// WithParamHeaders gives the Mcp-Param-* headers of a call made for a
// client that sent none (a session client): the gateway makes them from
// the tool's schema and the arguments, for an upstream that serves the
// call in the 2026-07-28 form. A 2026-07-28 client's own go in Modern.
func WithParamHeaders(ctx context.Context, h http.Header) context.Context {
	return context.WithValue(ctx, paramHeadersKey{}, h)
}

func paramHeadersOf(ctx context.Context) http.Header {
	h, _ := ctx.Value(paramHeadersKey{}).(http.Header)
	return h
}

// HeaderValue is s as a header mirroring a body value (SEP-2243): as it is
// when it is visible ASCII (spaces inside allowed), else in the form
// =?base64?...?=, which is also used for a value that would read as one.
func HeaderValue(s string) string {
	plain := s != "" && s[0] != ' ' && s[len(s)-1] != ' ' && !(len(s) > 1 && s[:2] == "=?")
	for i := 0; plain && i < len(s); i++ {
		plain = s[i] >= 0x20 && s[i] <= 0x7e
	}
	if plain || s == "" {
		return s
	}
	return "=?base64?" + base64.StdEncoding.EncodeToString([]byte(s)) + "?="
}
