package rpc

import (
	"context"
	"encoding/json"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/valyala/fasthttp"
	"go.uber.org/zap"

	"github.com/mcpgateway/mcpgateway/upstream"
)

// Resources and prompts of the upstreams (docs/federation.md, "Resources
// and prompts"). Nothing of them is stored: resources/list,
// resources/templates/list and prompts/list ask every enabled upstream
// that declared the capability, concurrently, and answer what came back in
// one page; resources/read and prompts/get are forwarded to the upstream
// that owns the URI or the prompt. Prompts are namespaced as tools are
// (<gateway><separator><name>); resource URIs stay the upstream's own (a
// URI already names its server), so a read finds its owner in the lists,
// which each worker keeps for resourceIndexTTL.

// resourceIndexTTL is how long a worker trusts the URIs it last listed
// before resources/read lists them again (as upstreamRecheck for records).
const resourceIndexTTL = upstreamRecheck

// codeResourceNotFound is resources/read's error for an unknown URI up to
// 2025-11-25; 2026-07-28 answers -32602 instead (SEP-2164).
const codeResourceNotFound = -32002

// federatedList is one of the aggregated list methods.
type federatedList struct {
	capability string // what an upstream declares at initialize to offer it
	member     string // the array of the result
	list       func(*upstream.Client, context.Context) ([]upstream.Entry, error)
}

var (
	resourcesList = federatedList{"resources", "resources", (*upstream.Client).ListResources}
	templatesList = federatedList{"resources", "resourceTemplates", (*upstream.Client).ListResourceTemplates}
	promptsList   = federatedList{"prompts", "prompts", (*upstream.Client).ListPrompts}
)

// federated is a worker's view of the upstreams for resources and prompts.
type federated struct {
	mu      sync.Mutex
	names   []string // the enabled upstreams, sorted
	namesAt time.Time

	index resourceIndex
}

// listed is what one upstream answered to one list method.
type listed struct {
	gateway string
	entries []upstream.Entry
	err     error
}

// withinRequest bounds an upstream exchange that answers in JSON: it must
// end before the worker's watchdog answers 504 in its place, so that the
// client gets the upstream's failure and the upstream call does not
// outlive its request.
func (s *Server) withinRequest(ctx *fasthttp.RequestCtx, callCtx context.Context) (context.Context, context.CancelFunc) {
	if s.opt.RequestTimeout <= 0 {
		return callCtx, func() {}
	}
	margin := min(time.Second, s.opt.RequestTimeout/10)
	return context.WithDeadline(callCtx, requestTime(ctx).Add(s.opt.RequestTimeout-margin))
}

// enabledGateways lists the enabled upstreams, read from the store at most
// every upstreamRecheck; a store that fails keeps the last list.
func (s *Server) enabledGateways(ctx *fasthttp.RequestCtx) ([]string, *rpcError) {
	f := &s.federated
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.namesAt.IsZero() && time.Since(f.namesAt) < upstreamRecheck {
		return f.names, nil
	}
	gb, ok := s.backend.(gatewayBackend)
	if !ok {
		return nil, nil // no upstreams: empty lists
	}
	all, err := gb.Gateways(ctx, nil)
	if err != nil {
		if !f.namesAt.IsZero() {
			return f.names, nil
		}
		return nil, s.storeError(ctx, "listing gateways", err)
	}
	var names []string
	for _, g := range all {
		if g.Enabled {
			names = append(names, g.Name)
		}
	}
	sort.Strings(names)
	f.names, f.namesAt = names, time.Now()
	return names, nil
}

// gather runs each list method on every enabled upstream, concurrently,
// within the request's time: result [i][j] is lists[i] of upstream j.
func (s *Server) gather(ctx *fasthttp.RequestCtx, lists ...*federatedList) ([][]listed, *rpcError) {
	names, rerr := s.enabledGateways(ctx)
	if rerr != nil {
		return nil, rerr
	}
	return s.gatherFrom(ctx, names, lists...), nil
}

// gatherFrom is gather on the named upstreams only (a virtual server's,
// servers.go).
func (s *Server) gatherFrom(ctx *fasthttp.RequestCtx, names []string, lists ...*federatedList) [][]listed {
	callCtx, cancel := s.withinRequest(ctx, ctx)
	defer cancel()
	out := make([][]listed, len(lists))
	var wg sync.WaitGroup
	for i, l := range lists {
		out[i] = make([]listed, len(names))
		for j, name := range names {
			wg.Add(1)
			go func(r *listed) {
				defer wg.Done()
				r.gateway = name
				r.entries, r.err = s.listUpstream(callCtx, name, l)
			}(&out[i][j])
		}
	}
	wg.Wait() // the goroutines use ctx: all must end before the handler does
	return out
}

// listUpstream runs l on one upstream: nothing, and no error, when the
// upstream declared no such capability. A failure is logged (once a
// second at most, as other upstream errors).
func (s *Server) listUpstream(ctx context.Context, name string, l *federatedList) ([]upstream.Entry, error) {
	c, err := s.upstreamClient(ctx, name)
	if err == nil {
		if offers, known := c.Offers(l.capability); known && !offers {
			return nil, nil
		}
		var entries []upstream.Entry
		if entries, err = l.list(c, ctx); err == nil {
			return entries, nil
		}
		if offers, known := c.Offers(l.capability); known && !offers {
			return nil, nil // its first initialize came with this call
		}
	}
	s.upstreamErrors.log(s.log, "upstream list failed: left out", zap.String("gateway", name), zap.String("list", l.member), zap.Error(err))
	return nil, err
}

// listFederated answers resources/list, resources/templates/list or
// prompts/list: every upstream's entries in one page, without nextCursor
// (docs/mcp.md, P5). Prompts are renamed <gateway><separator><name>.
func (s *Server) listFederated(ctx *fasthttp.RequestCtx, l *federatedList, params []byte, out []byte) ([]byte, *rpcError) {
	if rerr := singlePageParams(params); rerr != nil {
		return out, rerr
	}
	lists, rerr := s.gather(ctx, l)
	if rerr != nil {
		return out, rerr
	}
	out = append(out, `{"`...)
	out = append(out, l.member...)
	out = append(out, `":[`...)
	n := 0
	for _, r := range lists[0] {
		for _, e := range r.entries {
			raw := e.Raw
			if l == &promptsList {
				raw = renamed(raw, r.gateway+s.opt.ToolNameSeparator+e.Key)
			}
			if n > 0 {
				out = append(out, ',')
			}
			n++
			out = append(out, compactJSON(raw)...)
		}
	}
	return append(out, "]}"...), nil
}

// singlePageParams checks the params of a list of one page.
func singlePageParams(params []byte) *rpcError {
	if params != nil && params[0] != '{' && params[0] != 'n' {
		return &rpcError{code: codeInvalidParams, msg: "Invalid params: params must be an object"}
	}
	if c := member(params, "cursor"); c != nil && c[0] != 'n' {
		return &rpcError{code: codeInvalidParams, msg: "Invalid params: invalid cursor (this list has a single page)"}
	}
	return nil
}

// renamed is an entry with its name replaced.
func renamed(raw json.RawMessage, name string) json.RawMessage {
	var fields map[string]json.RawMessage
	if json.Unmarshal(raw, &fields) != nil {
		return raw
	}
	fields["name"], _ = json.Marshal(name)
	b, err := json.Marshal(fields)
	if err != nil {
		return raw
	}
	return b
}

// resourcesRead forwards resources/read to the upstream that listed the
// URI, or a template whose literal start it has. An unknown URI is
// -32002 "Resource not found" (-32602 in 2026-07-28); so is, on a virtual
// server's endpoint, a URI the server does not serve (servers.go).
func (s *Server) resourcesRead(ctx *fasthttp.RequestCtx, params []byte, buf *buffers, out []byte) ([]byte, *rpcError) {
	uri := member(params, "uri")
	if uri == nil || uri[0] != '"' {
		return out, &rpcError{code: codeInvalidParams, msg: "Invalid params: resources/read needs a uri (a string)"}
	}
	u := string(unquote(uri))
	gateway, rerr := s.resourceOwner(ctx, u, buf.vs.servesURIFunc(u))
	switch {
	case rerr != nil:
		return out, rerr
	case gateway == "" && buf.rev.modern():
		return out, &rpcError{code: codeInvalidParams, msg: "Resource not found: " + u}
	case gateway == "":
		return out, &rpcError{code: codeResourceNotFound, msg: "Resource not found: " + u}
	}
	return s.forward(ctx, buf, gateway, "resources/read", out, func(c *upstream.Client, callCtx context.Context) (json.RawMessage, error) {
		return c.ReadResource(callCtx, u)
	})
}

// promptsGet forwards prompts/get to the upstream its name starts with;
// on a virtual server's endpoint, to the upstream of the server's prompt
// of that name (servers.go).
func (s *Server) promptsGet(ctx *fasthttp.RequestCtx, params []byte, buf *buffers, out []byte) ([]byte, *rpcError) {
	name, args := member(params, "name"), member(params, "arguments")
	switch {
	case name == nil || name[0] != '"':
		return out, &rpcError{code: codeInvalidParams, msg: "Invalid params: prompts/get needs a name (a string)"}
	case args != nil && args[0] != '{' && args[0] != 'n':
		return out, &rpcError{code: codeInvalidParams, msg: "Invalid params: arguments must be an object"}
	case args != nil && args[0] == 'n':
		args = nil
	}
	gateway, prompt, rerr := s.promptRoute(ctx, buf.vs, string(unquote(name)))
	if rerr != nil {
		return out, rerr
	}
	return s.forward(ctx, buf, gateway, "prompts/get", out, func(c *upstream.Client, callCtx context.Context) (json.RawMessage, error) {
		return c.GetPrompt(callCtx, prompt, json.RawMessage(args))
	})
}

// promptRoute finds the upstream of the prompt a client names full, and
// its name there: on /mcp the gateway's name (<gateway><sep><prompt>), on
// a virtual server's endpoint vs the name the server shows.
func (s *Server) promptRoute(ctx *fasthttp.RequestCtx, vs *serverView, full string) (gateway, prompt string, _ *rpcError) {
	if vs != nil {
		ref, found, rerr := s.serverPrompt(ctx, vs, full)
		if rerr != nil {
			return "", "", rerr
		}
		if !found {
			return "", "", &rpcError{code: codeInvalidParams, msg: "Unknown prompt: " + full}
		}
		return ref.gateway, ref.name, nil
	}
	// Gateway names never hold the separator: the first one ends it.
	g, p, ok := strings.Cut(full, s.opt.ToolNameSeparator)
	names, rerr := s.enabledGateways(ctx)
	if rerr != nil {
		return "", "", rerr
	}
	if i := sort.SearchStrings(names, g); !ok || i == len(names) || names[i] != g {
		return "", "", &rpcError{code: codeInvalidParams, msg: "Unknown prompt: " + full}
	}
	return g, p, nil
}

// forward runs one request on an upstream within the request's time and
// appends its result as it is. The upstream's JSON-RPC errors are passed
// on; an upstream that cannot be reached is -32603 "upstream NAME
// unavailable".
func (s *Server) forward(ctx *fasthttp.RequestCtx, buf *buffers, gateway, method string, out []byte,
	do func(*upstream.Client, context.Context) (json.RawMessage, error)) ([]byte, *rpcError) {
	c, err := s.upstreamClient(ctx, gateway)
	var res json.RawMessage
	if err == nil {
		callCtx, cancel := s.withinRequest(ctx, buf.upstreamContext(ctx, ctx))
		res, err = do(c, callCtx)
		cancel()
	}
	out, rerr, failure := s.upstreamAnswer(ctx, gateway, res, err, out, zap.String("method", method))
	if failure != "" {
		rerr = &rpcError{code: codeInternalError, msg: failure}
	}
	return out, rerr
}

// --- The URI index ------------------------------------------------------------------

// resourceIndex maps resource URIs to the upstream that listed them, as
// a worker last listed them (resources and templates of every upstream).
type resourceIndex struct {
	mu         sync.Mutex
	built      time.Time
	refreshing bool
	last       map[string]upstreamURIs // by gateway: an upstream that fails keeps what it listed
	uris       map[string][]string     // URI → the gateways that list it, in name order
	prefixes   []uriPrefix             // templates' literal starts, longest first
}

type upstreamURIs struct{ uris, prefixes []string }

type uriPrefix struct{ prefix, gateway string }

// resourceOwner returns the upstream that owns uri ("": none): the first,
// in name order, of those that list it (or a template it fits) that accept
// takes (nil: any), so that a virtual server's endpoint reads a URI that
// two upstreams list from the one it serves. The index
// is listed again when older than resourceIndexTTL, by one request while
// the others use the older one; a URI missing from it is not a reason to
// list again (unknown URIs would make every upstream list for each).
func (s *Server) resourceOwner(ctx *fasthttp.RequestCtx, uri string, accept func(gateway string) bool) (string, *rpcError) {
	x := &s.federated.index
	x.mu.Lock()
	refresh := x.built.IsZero() || time.Since(x.built) >= resourceIndexTTL && !x.refreshing
	if refresh {
		x.refreshing = true
	}
	x.mu.Unlock()
	if refresh {
		lists, rerr := s.gather(ctx, &resourcesList, &templatesList)
		x.mu.Lock()
		x.refreshing = false
		if rerr == nil {
			x.rebuild(lists[0], lists[1])
		}
		empty := x.built.IsZero()
		x.mu.Unlock()
		if rerr != nil && empty {
			return "", rerr
		}
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	return x.owner(uri, accept), nil
}

// rebuild makes the index from each upstream's resources and templates;
// x.mu is held.
func (x *resourceIndex) rebuild(resources, templates []listed) {
	last := map[string]upstreamURIs{}
	for i, r := range resources {
		t := templates[i]
		if r.err != nil || t.err != nil {
			if old, ok := x.last[r.gateway]; ok {
				last[r.gateway] = old
			}
			continue
		}
		var u upstreamURIs
		for _, e := range r.entries {
			u.uris = append(u.uris, e.Key)
		}
		for _, e := range t.entries {
			// A template's literal start (up to its first expression)
			// tells its URIs; one that starts with an expression cannot
			// tell one upstream's from another's.
			if p, _, _ := strings.Cut(e.Key, "{"); p != "" {
				u.prefixes = append(u.prefixes, p)
			}
		}
		last[r.gateway] = u
	}
	x.last, x.uris, x.prefixes = last, map[string][]string{}, nil
	// Gateways in name order: the first to list a URI owns it on /mcp.
	gateways := make([]string, 0, len(last))
	for g := range last {
		gateways = append(gateways, g)
	}
	sort.Strings(gateways)
	for _, g := range gateways {
		for _, uri := range last[g].uris {
			if gs := x.uris[uri]; len(gs) == 0 || gs[len(gs)-1] != g {
				x.uris[uri] = append(gs, g)
			}
		}
		for _, p := range last[g].prefixes {
			x.prefixes = append(x.prefixes, uriPrefix{p, g})
		}
	}
	sort.SliceStable(x.prefixes, func(i, j int) bool { return len(x.prefixes[i].prefix) > len(x.prefixes[j].prefix) })
	x.built = time.Now()
}

// owner finds uri's upstream that accept takes (nil: any): listed as it
// is, else by the longest template start; x.mu is held.
func (x *resourceIndex) owner(uri string, accept func(string) bool) string {
	for _, g := range x.uris[uri] {
		if accept == nil || accept(g) {
			return g
		}
	}
	for _, p := range x.prefixes {
		if strings.HasPrefix(uri, p.prefix) && (accept == nil || accept(p.gateway)) {
			return p.gateway
		}
	}
	return ""
}
