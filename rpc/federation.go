package rpc

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/valyala/fasthttp"
	"go.uber.org/zap"

	"github.com/mcpgateway/mcpgateway/internal/gatewayspec"
	"github.com/mcpgateway/mcpgateway/store"
	"github.com/mcpgateway/mcpgateway/upstream"
)

// Federation: tools of upstream MCP servers served as the gateway's own
// (docs/federation.md). An upstream is registered through the admin API
// (PUT /admin/gateways/{name}): the worker that receives it connects, lists
// its tools and stores them under namespaced names (<gateway><separator>
// <tool>), so that every worker and instance lists them from the catalogue
// it already caches. A tools/call of one is forwarded by the worker that
// receives it, over that worker's own connection pool to the upstream
// (upstream.Client: session, timeout, circuit breaker).

// gatewayBackend is a Backend that keeps upstreams (the store does).
type gatewayBackend interface {
	Gateways(ctx context.Context, key []byte) ([]store.Gateway, error)
	Gateway(ctx context.Context, name string, key []byte) (store.Gateway, error)
	PutGateway(ctx context.Context, g store.Gateway, tools []store.Tool, key []byte) error
	DeleteGateway(ctx context.Context, name string) error
}

// upstreamRecheck is how long a worker uses an upstream's record before it
// reads it again: a changed URL or credential reaches every worker within it.
const upstreamRecheck = 5 * time.Second

// upstreams are this worker's clients of the registered upstreams.
type upstreams struct {
	mu      sync.Mutex
	clients map[string]*upstreamEntry
}

type upstreamEntry struct {
	record  store.Gateway
	client  *upstream.Client
	checked time.Time
}

// upstreamServer describes a registered upstream to its client.
func (s *Server) upstreamServer(g store.Gateway) upstream.Server {
	h := http.Header{}
	if g.AuthHeaderName != "" {
		h.Set(g.AuthHeaderName, g.AuthHeaderValue)
	}
	return upstream.Server{Name: g.Name, URL: g.URL, Transport: g.Transport, Header: h, Timeout: s.opt.FederationTimeout}
}

// upstreamClient returns this worker's client of a registered upstream.
func (s *Server) upstreamClient(ctx context.Context, name string) (*upstream.Client, error) {
	gb, ok := s.backend.(gatewayBackend)
	if !ok {
		return nil, errors.New("this backend keeps no upstreams")
	}
	u := &s.upstreams
	u.mu.Lock()
	e := u.clients[name]
	u.mu.Unlock()
	if e != nil && time.Since(e.checked) < upstreamRecheck {
		return e.client, nil
	}
	g, err := gb.Gateway(ctx, name, s.opt.UpstreamKey)
	switch {
	case errors.Is(err, store.ErrNotFound):
		// Deleted: its client goes with it.
		u.mu.Lock()
		if cur := u.clients[name]; cur != nil {
			delete(u.clients, name)
			go cur.client.Close(context.Background())
		}
		u.mu.Unlock()
		return nil, err
	case err != nil && e != nil:
		return e.client, nil // the store is out: keep what worked
	case err != nil:
		return nil, err
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	if cur := u.clients[name]; cur != nil && cur.record == g {
		cur.checked = time.Now()
		return cur.client, nil
	}
	if u.clients == nil {
		u.clients = map[string]*upstreamEntry{}
	}
	if old := u.clients[name]; old != nil {
		go old.client.Close(context.Background())
	}
	e = &upstreamEntry{record: g, client: upstream.New(s.upstreamServer(g), nil), checked: time.Now()}
	u.clients[name] = e
	return e.client, nil
}

// UpstreamEvent is what Options.OnUpstream counts.
type UpstreamEvent int

const (
	UpstreamAnswered    UpstreamEvent = iota // the upstream answered (a result or a JSON-RPC error)
	UpstreamFailed                           // it did not: refused, timed out, broke the stream
	UpstreamCircuitOpen                      // refused at once: its circuit is open
	UpstreamBusy                             // refused at once: its in-flight limit is reached (503)
)

func (s *Server) noteUpstream(e UpstreamEvent) {
	if s.opt.OnUpstream != nil {
		s.opt.OnUpstream(e)
	}
}

// UpstreamsOpen counts the upstreams (and REST origins) whose circuit this
// worker holds open.
func (s *Server) UpstreamsOpen() int {
	n := s.restCircuitsOpen()
	u := &s.upstreams
	u.mu.Lock()
	defer u.mu.Unlock()
	for _, e := range u.clients {
		if e.client.Breaker().State() != upstream.Closed {
			n++
		}
	}
	return n
}

// callUpstream forwards a tools/call of an upstream's tool and appends the
// upstream's result as it is. A JSON-RPC error of the upstream is passed on;
// an upstream that cannot be reached is a tool error (isError), as a failed
// built-in call is, so that the model sees it.
//
// buf carries the call's own context (a client gone, a cancellation), the
// client's progress token and where the upstream's notifications go
// (mcp_stream.go); all unset, the call is the request's.
func (s *Server) callUpstream(ctx *fasthttp.RequestCtx, tool store.Tool, args []byte, buf *buffers, out []byte) ([]byte, *rpcError) {
	c, err := s.upstreamClient(ctx, tool.Gateway)
	var res json.RawMessage
	if err == nil {
		callCtx := buf.upstreamContext(ctx, buf.callContext(ctx))
		if !buf.rev.modern() {
			if h := paramHeaders(tool.InputSchema, args); h != nil { // mcp_modern.go
				callCtx = upstream.WithParamHeaders(callCtx, h)
			}
		}
		if buf.onNote == nil { // a JSON answer is a request in flight (resources.go)
			var cancel context.CancelFunc
			callCtx, cancel = s.withinRequest(ctx, callCtx)
			defer cancel()
		}
		res, err = c.CallTool(callCtx, tool.UpstreamName, json.RawMessage(args), buf.progressToken, buf.onNote)
		if err == nil && !buf.rev.modern() && inputRequired(res) {
			res, err = s.fulfilInputs(callCtx, c, tool, args, buf, res) // mcp_relay.go
			if rerr, ok := err.(*rpcError); ok {
				return out, rerr // the client's side of the rounds failed
			}
		}
	}
	out, rerr, failure := s.upstreamAnswer(ctx, tool.Gateway, res, err, out, zap.String("tool", tool.UpstreamName))
	if failure == "" {
		return out, rerr
	}
	buf.text = append(buf.text[:0], failure...)
	out = append(out, `{"content":[{"type":"text","text":`...)
	out = appendString(out, buf.text)
	return append(out, `}],"isError":true}`...), nil
}

// upstreamAnswer appends the result of a request forwarded to an upstream,
// or passes on its JSON-RPC error, its busy refusal (a 503 for a single
// message) or the client's cancellation. Otherwise the upstream failed:
// that is counted and logged (once a second at most), and failure says so
// for the caller to answer in its form (a tool error for tools/call).
func (s *Server) upstreamAnswer(ctx *fasthttp.RequestCtx, gateway string, res json.RawMessage, err error, out []byte,
	fields ...zap.Field) (_ []byte, _ *rpcError, failure string) {
	var rpcErr *upstream.RPCError
	switch {
	case errors.Is(err, context.Canceled):
		// The client cancelled it, or went away: says nothing of the
		// upstream, and nobody reads the answer.
		return out, &rpcError{code: codeInternalError, msg: "Request cancelled"}, ""
	case err == nil:
		s.noteUpstream(UpstreamAnswered)
		return append(out, res...), nil, ""
	case errors.As(err, &rpcErr):
		s.noteUpstream(UpstreamAnswered)
		rerr := &rpcError{code: rpcErr.Code, msg: rpcErr.Message}
		if d := trimValue(rpcErr.Data); len(d) > 0 && validate(d) == nil {
			rerr.data = bytes.Clone(d)
		}
		if rpcErr.Code == codeMissingCapability {
			// A 2026-07-28 upstream's refusal of what the client did not
			// declare: 400 over HTTP, as the upstream answered it.
			ctx.SetUserValue(badRequestKey{}, true)
		}
		return out, rerr, ""
	case errors.Is(err, upstream.ErrBusy):
		// Backpressure, as the worker's in-flight limit refuses: a 503
		// with Retry-After for a single message, counted as refused.
		s.noteUpstream(UpstreamBusy)
		ctx.SetUserValue(unavailableKey{}, true)
		return out, &rpcError{code: codeUnavailable, msg: "Upstream " + gateway + " busy: too many calls in flight; retry shortly"}, ""
	case errors.Is(err, upstream.ErrOpen):
		s.noteUpstream(UpstreamCircuitOpen)
	default:
		s.noteUpstream(UpstreamFailed)
	}
	s.upstreamErrors.log(s.log, "upstream call failed", append(fields, zap.String("gateway", gateway), zap.Error(err))...)
	failure = "upstream " + gateway + " unavailable"
	switch {
	case errors.Is(err, upstream.ErrOpen):
		failure += ": it failed repeatedly; retry later"
	case errors.Is(err, context.DeadlineExceeded):
		failure = "upstream " + gateway + " did not answer in time"
	}
	return out, nil, failure
}

// --- Admin: /admin/gateways -------------------------------------------------

// gatewayView is a gateway as the admin API shows it: never its credential.
type gatewayView struct {
	store.Gateway
	Tools   []string `json:"tools,omitempty"`
	Skipped []string `json:"skipped,omitempty"` // upstream tools whose names cannot be served
}

func (s *Server) serveGateways(ctx *fasthttp.RequestCtx, name string) {
	gb, ok := s.backend.(gatewayBackend)
	if !ok {
		writeDetail(ctx, fasthttp.StatusNotFound, "Not Found")
		return
	}
	admin, ok := s.authorizeAdminItem(ctx, name) // servers.go
	if !ok {
		return
	}
	if name == "" {
		all, err := gb.Gateways(ctx, nil)
		if s.adminFound(ctx, err, "list gateways", "") {
			writeAdminJSON(ctx, fasthttp.StatusOK, all)
		}
		return
	}
	if !gatewayspec.ValidName(name, s.opt.ToolNameSeparator) {
		writeDetail(ctx, fasthttp.StatusBadRequest,
			"Invalid gateway name: use 1 to 128 characters among A-Z a-z 0-9 _ - . without the tool name separator "+s.opt.ToolNameSeparator)
		return
	}
	switch {
	case ctx.IsGet():
		g, err := gb.Gateway(ctx, name, nil)
		if s.adminFound(ctx, err, "get gateway", "Gateway not found: "+name) {
			writeAdminJSON(ctx, fasthttp.StatusOK, g)
		}
	case ctx.IsDelete():
		if err := gb.DeleteGateway(ctx, name); s.adminFound(ctx, err, "delete gateway", "Gateway not found: "+name) {
			s.log.Info("admin: gateway deleted", zap.String("by", admin.email), zap.String("gateway", name))
			ctx.SetStatusCode(fasthttp.StatusNoContent)
		}
	default:
		s.adminPutGateway(ctx, gb, admin, name)
	}
}

// adminPutGateway registers an upstream: it must answer, and its tools
// join the catalogue in the same step.
func (s *Server) adminPutGateway(ctx *fasthttp.RequestCtx, gb gatewayBackend, admin principal, name string) {
	var in gatewayspec.Spec
	if !s.readAdminBody(ctx, &in) {
		return
	}
	if in.Name != "" && in.Name != name {
		writeDetail(ctx, fasthttp.StatusBadRequest, "name in the body differs from the path's: "+in.Name)
		return
	}
	in.Name = name
	g, err := s.checkGateway(in)
	if err != nil {
		writeDetail(ctx, fasthttp.StatusBadRequest, err.Error())
		return
	}
	view, err := s.registerGateway(ctx, gb, g)
	var down *upstreamDown
	switch {
	case errors.As(err, &down):
		s.log.Warn("admin: gateway did not answer", zap.String("gateway", name), zap.Error(err))
		writeDetail(ctx, fasthttp.StatusBadGateway, "The upstream did not answer tools/list: "+down.err.Error())
		return
	case errors.Is(err, store.ErrConflict):
		writeDetail(ctx, fasthttp.StatusConflict, strings.TrimPrefix(err.Error(), "put gateway "+name+": "))
		return
	case err != nil:
		s.storeFailed(ctx, "put gateway", err)
		return
	}
	s.log.Info("admin: gateway registered", zap.String("by", admin.email), zap.String("gateway", name),
		zap.String("url", g.URL), zap.Int("tools", len(view.Tools)), zap.Int("skipped", len(view.Skipped)))
	writeAdminJSON(ctx, fasthttp.StatusOK, view)
}

// upstreamDown is a registration the upstream did not answer.
type upstreamDown struct{ err error }

func (e *upstreamDown) Error() string { return "the upstream did not answer: " + e.err.Error() }

// registerGateway connects to an upstream, lists its tools, and stores it
// with them in one step.
func (s *Server) registerGateway(ctx context.Context, gb gatewayBackend, g store.Gateway) (gatewayView, error) {
	c := upstream.New(s.upstreamServer(g), nil)
	defer c.Close(context.Background())
	listed, err := c.ListTools(ctx)
	if err != nil {
		return gatewayView{}, &upstreamDown{err}
	}
	view := gatewayView{Gateway: g}
	tools, names, skipped := s.namespacedTools(g.Name, listed)
	view.Tools, view.Skipped = names, skipped
	return view, gb.PutGateway(ctx, g, tools, s.opt.UpstreamKey)
}

// SyncGateways registers the upstreams of GATEWAYS_FILE that the store does
// not hold as written (new ones, or a changed URL or credential); one worker
// of each instance runs it at start and with every refresh, so an upstream
// that was down at start is registered once it answers. Upstreams added
// through the admin API are left alone.
func (s *Server) SyncGateways(ctx context.Context, specs []gatewayspec.Spec) {
	gb, ok := s.backend.(gatewayBackend)
	if !ok {
		return
	}
	for _, spec := range specs {
		g, err := s.checkGateway(spec)
		if err != nil { // the master checked the file: only a changed secret gets here
			s.log.Error("GATEWAYS_FILE: gateway refused", zap.String("gateway", spec.Name), zap.Error(err))
			continue
		}
		if stored, err := gb.Gateway(ctx, g.Name, s.opt.UpstreamKey); err == nil && stored == g {
			continue
		}
		view, err := s.registerGateway(ctx, gb, g)
		if err != nil {
			s.upstreamErrors.log(s.log, "GATEWAYS_FILE: gateway not registered yet", zap.String("gateway", g.Name), zap.Error(err))
			continue
		}
		s.log.Info("GATEWAYS_FILE: gateway registered", zap.String("gateway", g.Name), zap.String("url", g.URL),
			zap.Int("tools", len(view.Tools)), zap.Int("skipped", len(view.Skipped)))
	}
}

// checkGateway turns a spec into the record to store.
func (s *Server) checkGateway(in gatewayspec.Spec) (store.Gateway, error) {
	c, err := in.Check(s.opt.UpstreamKey != nil)
	if err != nil {
		return store.Gateway{}, err
	}
	return store.Gateway{Name: c.Name, URL: c.URL, Transport: c.Transport, Enabled: c.Enabled,
		AuthHeaderName: c.HeaderName, AuthHeaderValue: c.HeaderValue}, nil
}

// namespacedTools turns an upstream's tools into the gateway's: names
// prefixed with the upstream's and the separator; a tool whose name would
// not be a valid tool name is skipped.
func (s *Server) namespacedTools(gateway string, listed []upstream.Tool) (tools []store.Tool, names, skipped []string) {
	for _, t := range listed {
		full := gateway + s.opt.ToolNameSeparator + t.Name
		if !isToolName(full) {
			skipped = append(skipped, t.Name)
			continue
		}
		desc := t.Description
		if desc == "" {
			desc = t.Title
		}
		input := compactJSON(t.InputSchema)
		if len(input) == 0 {
			input = json.RawMessage(`{"type":"object"}`) // what the store keeps for none
		}
		tools = append(tools, store.Tool{Name: full, UpstreamName: t.Name, Description: desc,
			InputSchema: input, OutputSchema: compactJSON(t.OutputSchema), Enabled: true})
		names = append(names, full)
	}
	return tools, names, skipped
}

// RefreshGateways lists the tools of every enabled upstream again and
// stores those whose list changed (HEALTH_CHECK_INTERVAL; one worker of
// each instance runs it). An upstream that does not answer keeps its
// tools: its calls fail on their own, and its circuit opens.
func (s *Server) RefreshGateways(ctx context.Context) (changed int, err error) {
	gb, ok := s.backend.(gatewayBackend)
	if !ok {
		return 0, nil
	}
	all, ok := s.backend.(allToolsBackend)
	if !ok {
		return 0, nil
	}
	// The list without credentials: one upstream whose credential no
	// longer opens must not stop the refresh of the others.
	gateways, err := gb.Gateways(ctx, nil)
	if err != nil {
		return 0, err
	}
	current, err := all.AllTools(ctx)
	if err != nil {
		return 0, err
	}
	for _, listedG := range gateways {
		if !listedG.Enabled {
			continue
		}
		g, err := gb.Gateway(ctx, listedG.Name, s.opt.UpstreamKey)
		if err != nil {
			s.upstreamErrors.log(s.log, "gateway refresh: unreadable", zap.String("gateway", listedG.Name), zap.Error(err))
			continue
		}
		if ok, err := s.refreshGateway(ctx, gb, g, current); err == nil && ok {
			changed++
		}
	}
	return changed, nil
}

// sameTools says whether tools are exactly what the catalogue holds for
// the gateway.
func sameTools(tools, catalogue []store.Tool, gateway string) bool {
	have := map[string]store.Tool{}
	for _, t := range catalogue {
		if t.Gateway == gateway {
			have[t.Name] = t
		}
	}
	if len(have) != len(tools) {
		return false
	}
	for _, t := range tools {
		h, ok := have[t.Name]
		if !ok || h.UpstreamName != t.UpstreamName || h.Description != t.Description ||
			!bytes.Equal(h.InputSchema, t.InputSchema) || !bytes.Equal(h.OutputSchema, t.OutputSchema) {
			return false
		}
	}
	return true
}
