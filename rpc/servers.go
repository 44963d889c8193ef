package rpc

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"reflect"
	"regexp"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/valyala/fasthttp"
	"go.uber.org/zap"

	"github.com/mcpgateway/mcpgateway/store"
)

// Virtual servers (docs/federation.md, "Virtual servers"): a named set of
// the catalogue's tools, the upstreams' resources and prompts, and whole
// upstreams (everything each offers), served on /servers/{id}/mcp, the MCP
// transport of /mcp with the same revisions and authentication, where the
// lists list only the server's tools, resources, templates and prompts,
// and only those are called, read and got. An upstream's tool or prompt
// is shown under its upstream's own name (echo, not everything-echo)
// unless another of the server's would be shown under the same name; then
// those keep the gateway's names. Resource URIs are the upstream's own
// everywhere. A client configured for one upstream can thus be pointed at
// a server of that whole upstream unchanged.
//
//	GET /admin/servers   GET, PUT, DELETE /admin/servers/{id}
//	{"name":..., "description":..., "tools":[...], "resources":[...], "prompts":[...], "gateways":[...]}

const serversPrefix = "/servers/"

// serverBackend is a Backend that stores virtual servers (*store.Store).
// Without it, /servers/ and /admin/servers answer 404.
type serverBackend interface {
	Servers(ctx context.Context) ([]store.Server, error)
	Server(ctx context.Context, id string) (store.Server, error)
	PutServer(ctx context.Context, v store.Server) error
	DeleteServer(ctx context.Context, id string) error
}

// serverView is what a virtual server's endpoint serves: its tools, each a
// copy of the catalogue's with Name the name its clients see, sorted by
// that name (tools/list pages are name ranges), and the same tools by that
// name with the gateway's own (for calls); what it serves of the
// upstreams' resources and prompts, which are not stored but listed
// (resources.go), so the view holds the rules that pick them.
type serverView struct {
	tools  []store.Tool
	byName map[string]store.Tool

	whole     map[string]bool           // upstreams served whole (Gateways)
	uris      map[string]bool           // resources named by URI
	templates map[string]*regexp.Regexp // templates named, each with the URIs it makes
	prompts   map[string]bool           // prompts named, by the gateway's names
	promptsOf map[string]bool           // upstreams of those, and the whole ones

	hasResources, hasPrompts bool // declared at initialize and server/discover

	named promptIndex // the prompts as last listed, by shown name
}

// promptIndex is a server's prompts as a worker last listed them, by the
// names its clients see: prompts/get finds its prompt there.
type promptIndex struct {
	mu     sync.Mutex
	built  time.Time
	byName map[string]promptRef
}

// promptRef is a prompt of an upstream, by the upstream's own name.
type promptRef struct{ gateway, name string }

// newServerView picks the server's tools from the catalogue (sorted by
// name, enabled only): those it names and those of its whole upstreams;
// and names them. A tool of the server that the catalogue no longer has,
// or has disabled, is left out. sep is the tool name separator, which
// ends a prompt's upstream name.
func newServerView(def store.Server, catalogue []store.Tool, sep string) *serverView {
	v := &serverView{
		whole: setOf(def.Gateways), uris: map[string]bool{}, templates: map[string]*regexp.Regexp{},
		prompts: setOf(def.Prompts), promptsOf: setOf(def.Gateways),
		hasResources: len(def.Resources) > 0 || len(def.Gateways) > 0,
		hasPrompts:   len(def.Prompts) > 0 || len(def.Gateways) > 0,
	}
	for _, r := range def.Resources {
		if isTemplate(r) {
			v.templates[r] = templatePattern(r)
		} else {
			v.uris[r] = true
		}
	}
	for _, p := range def.Prompts {
		if g, _, ok := strings.Cut(p, sep); ok {
			v.promptsOf[g] = true
		}
	}
	var picked []store.Tool
	seen := make(map[string]bool, len(def.Tools))
	for _, name := range def.Tools {
		i := sort.Search(len(catalogue), func(i int) bool { return catalogue[i].Name >= name })
		if seen[name] || i == len(catalogue) || catalogue[i].Name != name || !catalogue[i].Enabled {
			continue
		}
		seen[name] = true
		picked = append(picked, catalogue[i])
	}
	if len(v.whole) > 0 {
		for _, t := range catalogue {
			if t.Gateway != "" && v.whole[t.Gateway] && t.Enabled && !seen[t.Name] {
				seen[t.Name] = true
				picked = append(picked, t)
			}
		}
	}
	shown := exposedNames(picked)
	v.tools, v.byName = make([]store.Tool, len(picked)), make(map[string]store.Tool, len(picked))
	for i, t := range picked {
		v.byName[shown[i]] = t
		t.Name = shown[i]
		v.tools[i] = t
	}
	sort.Slice(v.tools, func(i, j int) bool { return v.tools[i].Name < v.tools[j].Name })
	return v
}

func setOf(list []string) map[string]bool {
	m := make(map[string]bool, len(list))
	for _, x := range list {
		m[x] = true
	}
	return m
}

// servesURI reports whether the server serves a resource of gateway's:
// the upstream is served whole, or the URI is named, or one of the
// server's templates makes it.
func (v *serverView) servesURI(gateway, uri string) bool {
	if v.whole[gateway] || v.uris[uri] {
		return true
	}
	for _, re := range v.templates {
		if re.MatchString(uri) {
			return true
		}
	}
	return false
}

// servesURIFunc is servesURI of uri as resourceOwner's filter: nil (any
// upstream) when there is no server (/mcp).
func (v *serverView) servesURIFunc(uri string) func(gateway string) bool {
	if v == nil {
		return nil
	}
	return func(gateway string) bool { return v.servesURI(gateway, uri) }
}

// servesAnyFunc is servesURIFunc, a template of uri's upstream counting too
// (completion, subscriptions).
func (v *serverView) servesAnyFunc(uri string) func(gateway string) bool {
	if v == nil {
		return nil
	}
	return func(gateway string) bool { return v.servesURI(gateway, uri) || v.servesTemplate(gateway, uri) }
}

// servesTemplate reports whether the server serves a template of gateway's.
func (v *serverView) servesTemplate(gateway, template string) bool {
	return v.whole[gateway] || v.templates[template] != nil
}

// isTemplate tells a URI template from a URI: braces are not allowed in a
// URI (RFC 3986), and every template expression has them.
func isTemplate(s string) bool { return strings.ContainsRune(s, '{') }

// templatePattern matches the URIs a template (RFC 6570) makes: its
// literal parts as they are; a simple expression ({id}, {a,b}) any text
// without / ? #; an expression with an operator ({+path}, {/seg},
// {?q}) any text.
func templatePattern(t string) *regexp.Regexp {
	var b strings.Builder
	b.WriteByte('^')
	for {
		i := strings.IndexByte(t, '{')
		j := strings.IndexByte(t[max(i, 0):], '}')
		if i < 0 || j < 0 {
			break
		}
		b.WriteString(regexp.QuoteMeta(t[:i]))
		if expr := t[i+1 : i+j]; expr != "" && strings.ContainsRune("+#./;?&", rune(expr[0])) {
			b.WriteString(".*")
		} else {
			b.WriteString("[^/?#]*")
		}
		t = t[i+j+1:]
	}
	b.WriteString(regexp.QuoteMeta(t))
	b.WriteByte('$')
	return regexp.MustCompile(b.String())
}

// exposedNames names each tool as a client of the server sees it: an
// upstream's tool by its upstream's name, others by the gateway's.
func exposedNames(tools []store.Tool) []string {
	full, own := make([]string, len(tools)), make([]string, len(tools))
	for i, t := range tools {
		full[i], own[i] = t.Name, t.Name
		if t.Gateway != "" && t.UpstreamName != "" {
			own[i] = t.UpstreamName
		}
	}
	return uniqueNames(full, own)
}

// uniqueNames names each of a server's tools or prompts by its own name
// (the upstream's) unless that would show a name twice: any own name
// shown for two falls back to the gateway's names (full) for them, again
// until no name is shown twice; this ends, since the gateway's names are
// unique.
func uniqueNames(full, own []string) []string {
	names := append([]string(nil), own...)
	for {
		count := make(map[string]int, len(names))
		for _, n := range names {
			count[n]++
		}
		changed := false
		for i, n := range names {
			if count[n] > 1 && n != full[i] {
				names[i], changed = full[i], true
			}
		}
		if !changed {
			return names
		}
	}
}

// --- Serving ----------------------------------------------------------------

// serverKey holds the request's *serverView (a fasthttp user value) from
// serveServerMCP to the transport's buffers (serverOf).
type serverKey struct{}

// serverOf returns the virtual server of this request, nil on /mcp.
func serverOf(ctx *fasthttp.RequestCtx) *serverView {
	v, _ := ctx.UserValue(serverKey{}).(*serverView)
	return v
}

// serveServerMCP serves /servers/{id}/mcp: the caller is authenticated
// first (an unknown id must not be told apart from a known one without a
// token), then the server is found (404 when there is none), then the
// request goes through the /mcp transport (serveMCP, which authorizes
// again from its token cache) with the server's view in its buffers.
func (s *Server) serveServerMCP(ctx *fasthttp.RequestCtx) {
	id, rest, _ := strings.Cut(string(ctx.Path()[len(serversPrefix):]), "/")
	sb, ok := s.backend.(serverBackend)
	if !ok || (rest != "mcp" && rest != "mcp/") || !isToolName(id) {
		writeDetail(ctx, fasthttp.StatusNotFound, "Not Found")
		return
	}
	if !s.checkOrigin(ctx, methodsMCP) {
		return
	}
	if _, ok := s.authorize(ctx); !ok {
		return
	}
	view, err := s.servers.view(ctx, s.backend, sb, id, s.opt.ToolNameSeparator)
	switch {
	case errors.Is(err, store.ErrNotFound):
		writeDetail(ctx, fasthttp.StatusNotFound, "Server not found: "+id)
		return
	case err != nil:
		s.mcpStoreError(ctx, revNewest, "reading virtual server "+id, err)
		return
	}
	ctx.SetUserValue(serverKey{}, view)
	s.serveMCP(ctx)
}

// invokeOnServer answers the methods that differ on a virtual server's
// endpoint; done is false for those served as on /mcp (ping,
// logging/setLevel, notifications, and tools/call, whose lookup is
// findCallable's). A tool is never called as a method there. Everything
// of resources, prompts and completion answers only what the server
// serves, and anything else as it answers an unknown one.
func (s *Server) invokeOnServer(ctx *fasthttp.RequestCtx, m *message, buf *buffers, out []byte) ([]byte, *rpcError, bool) {
	vs := buf.vs
	switch string(m.method) {
	case "ping", "tools/call", "logging/setLevel", "resources/subscribe", "resources/unsubscribe":
		return out, nil, false // subscriptions check the server's URIs (subscriptions.go)
	case "initialize":
		out, rerr := s.initializeServer(vs, m.params, out)
		return out, rerr, true
	case "server/discover":
		if !buf.rev.modern() {
			return out, nil, false
		}
		out = append(out, `{"supportedVersions":`...)
		out = appendStrings(out, protocolVersions)
		out = append(out, `,"capabilities":`...)
		out = vs.appendCapabilities(out, true, false)
		return append(out, '}'), nil, true
	case "tools/list":
		after, rerr := readCursor(m.params)
		if rerr != nil {
			return out, rerr, true
		}
		return appendToolsPage(out, vs.tools, after), nil, true
	case "resources/list":
		out, rerr := s.listOnServer(ctx, vs, &resourcesList, m.params, out)
		return out, rerr, true
	case "resources/templates/list":
		out, rerr := s.listOnServer(ctx, vs, &templatesList, m.params, out)
		return out, rerr, true
	case "prompts/list":
		out, rerr := s.listOnServer(ctx, vs, &promptsList, m.params, out)
		return out, rerr, true
	case "resources/read":
		out, rerr := s.resourcesRead(ctx, m.params, buf, out)
		return out, rerr, true
	case "prompts/get":
		out, rerr := s.promptsGet(ctx, m.params, buf, out)
		return out, rerr, true
	case "completion/complete": // legacy sessions only, as on /mcp (mcp_modern.go)
		out, rerr := s.complete(ctx, buf, m.params, out)
		return out, rerr, true
	}
	if bytes.HasPrefix(m.method, []byte("notifications/")) {
		return out, nil, false
	}
	return out, &rpcError{code: codeMethodNotFound, msg: "Method not found: " + string(m.method)}, true
}

// initializeServer is initialize on a server's endpoint: as on /mcp
// (methods.go:initialize), with the server's capabilities.
func (s *Server) initializeServer(vs *serverView, params []byte, out []byte) ([]byte, *rpcError) {
	rev, rerr := negotiate(params)
	if rerr != nil {
		return out, rerr
	}
	out = append(out, `{"protocolVersion":`...)
	out = appendString(out, rev.String())
	out = append(out, `,"capabilities":`...)
	out = vs.appendCapabilities(out, s.levels != nil, true)
	out = append(out, `,"serverInfo":{"name":"`+serverName+`","version":`...)
	out = appendString(out, s.opt.Version)
	return append(out, "}}"...), nil
}

// appendCapabilities appends what the server declares: those of /mcp
// (serverCapabilities, modernCapabilities), with resources and prompts
// only when it has some (named, or of a whole upstream), and completions
// with them in a session. They follow from the server's definition alone,
// so that every worker declares the same.
func (v *serverView) appendCapabilities(out []byte, logging, session bool) []byte {
	out = append(out, '{')
	if v.hasPrompts || v.hasResources {
		out = append(out, `"completions":{},`...)
	}
	if logging {
		out = append(out, `"logging":{},`...)
	}
	if v.hasPrompts {
		out = append(out, `"prompts":{"listChanged":false},`...)
	}
	if v.hasResources && session {
		out = append(out, `"resources":{"subscribe":true,"listChanged":false},`...)
	} else if v.hasResources {
		out = append(out, `"resources":{"listChanged":false},`...)
	}
	return append(out, `"tools":{"listChanged":false}}`...)
}

// serverUpstreams are the enabled upstreams that may hold what the server
// serves of a list: its whole upstreams, and for prompts those of its
// named prompts; for resources and templates, every upstream when it
// names some (a URI does not name its upstream).
func (s *Server) serverUpstreams(ctx *fasthttp.RequestCtx, vs *serverView, l *federatedList) ([]string, *rpcError) {
	switch {
	case l == &promptsList && !vs.hasPrompts, l != &promptsList && !vs.hasResources:
		return nil, nil
	}
	all, rerr := s.enabledGateways(ctx)
	if rerr != nil || l != &promptsList && (len(vs.uris) > 0 || len(vs.templates) > 0) {
		return all, rerr
	}
	want := vs.whole
	if l == &promptsList {
		want = vs.promptsOf
	}
	var names []string
	for _, g := range all {
		if want[g] {
			names = append(names, g)
		}
	}
	return names, nil
}

// listOnServer answers resources/list, resources/templates/list or
// prompts/list on a server's endpoint: the entries of its upstreams that
// it serves, in one page, as the upstreams listed them; prompts under the
// names its clients see.
func (s *Server) listOnServer(ctx *fasthttp.RequestCtx, vs *serverView, l *federatedList, params []byte, out []byte) ([]byte, *rpcError) {
	if rerr := singlePageParams(params); rerr != nil {
		return out, rerr
	}
	var entries []json.RawMessage
	if l == &promptsList {
		prompts, rerr := s.serverPrompts(ctx, vs)
		if rerr != nil {
			return out, rerr
		}
		entries = prompts
	} else {
		names, rerr := s.serverUpstreams(ctx, vs, l)
		if rerr != nil {
			return out, rerr
		}
		for _, r := range s.gatherFrom(ctx, names, l)[0] {
			for _, e := range r.entries {
				if l == &templatesList && vs.servesTemplate(r.gateway, e.Key) || l == &resourcesList && vs.servesURI(r.gateway, e.Key) {
					entries = append(entries, e.Raw)
				}
			}
		}
	}
	out = append(out, `{"`...)
	out = append(out, l.member...)
	out = append(out, `":[`...)
	for i, raw := range entries {
		if i > 0 {
			out = append(out, ',')
		}
		out = append(out, compactJSON(raw)...)
	}
	return append(out, "]}"...), nil
}

// serverPrompts lists the server's prompts, each named as its clients see
// it (uniqueNames), and keeps them by that name for prompts/get.
func (s *Server) serverPrompts(ctx *fasthttp.RequestCtx, vs *serverView) ([]json.RawMessage, *rpcError) {
	names, rerr := s.serverUpstreams(ctx, vs, &promptsList)
	if rerr != nil {
		return nil, rerr
	}
	sep := s.opt.ToolNameSeparator
	var refs []promptRef
	var raws []json.RawMessage
	var full, own []string
	for _, r := range s.gatherFrom(ctx, names, &promptsList)[0] {
		for _, e := range r.entries {
			if name := r.gateway + sep + e.Key; vs.whole[r.gateway] || vs.prompts[name] {
				refs, raws = append(refs, promptRef{r.gateway, e.Key}), append(raws, e.Raw)
				full, own = append(full, name), append(own, e.Key)
			}
		}
	}
	shown := uniqueNames(full, own)
	byName := make(map[string]promptRef, len(shown))
	for i, name := range shown {
		byName[name] = refs[i]
		if name != own[i] {
			raws[i] = renamed(raws[i], name)
		}
	}
	x := &vs.named
	x.mu.Lock()
	x.byName, x.built = byName, time.Now()
	x.mu.Unlock()
	return raws, nil
}

// serverPrompt finds the server's prompt that its clients call name: in
// the prompts last listed, listed again when older than resourceIndexTTL
// (a name missing from them is not a reason to list again).
func (s *Server) serverPrompt(ctx *fasthttp.RequestCtx, vs *serverView, name string) (promptRef, bool, *rpcError) {
	x := &vs.named
	x.mu.Lock()
	fresh := !x.built.IsZero() && time.Since(x.built) < resourceIndexTTL
	x.mu.Unlock()
	if !fresh {
		if _, rerr := s.serverPrompts(ctx, vs); rerr != nil {
			return promptRef{}, false, rerr
		}
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	ref, ok := x.byName[name]
	return ref, ok, nil
}

// findCallable finds the tool a tools/call names: in the catalogue, or on
// a virtual server's endpoint among the server's tools by the names its
// clients see. The name returned is the gateway's (rate limits, built-ins).
func (s *Server) findCallable(ctx *fasthttp.RequestCtx, buf *buffers, name []byte) (string, store.Tool, bool, *rpcError) {
	if buf.vs == nil {
		return s.findTool(ctx, name)
	}
	t, ok := buf.vs.byName[string(name)]
	return t.Name, t, ok, nil
}

// --- The per-worker cache -----------------------------------------------------

// serverTTL is how long a worker serves a virtual server's definition
// before reading it again: a change made through any worker or instance
// reaches every worker within it. The tools themselves come from the
// catalogue the store caches, so they follow its coherence bound.
const serverTTL = 500 * time.Millisecond

// maxCachedServers bounds the cache; past it the cache starts over.
const maxCachedServers = 1024

type serverCache struct {
	mu sync.Mutex
	m  map[string]*serverEntry
}

// serverEntry is immutable once cached: a change makes a new one.
type serverEntry struct {
	def       store.Server
	read      time.Time    // when def was read
	catalogue []store.Tool // the catalogue view was made from
	view      *serverView
}

// view returns the server's view, reading its definition again after
// serverTTL and making the view again when the definition or the
// catalogue changed (the store hands out one shared slice per catalogue,
// so a new slice is a change).
func (c *serverCache) view(ctx context.Context, b Backend, sb serverBackend, id, sep string) (*serverView, error) {
	catalogue, err := b.Tools(ctx)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	c.mu.Lock()
	e := c.m[id]
	c.mu.Unlock()
	if e != nil && now.Sub(e.read) < serverTTL && sameSlice(e.catalogue, catalogue) {
		return e.view, nil
	}
	if e == nil || now.Sub(e.read) >= serverTTL {
		def, err := sb.Server(ctx, id)
		if err != nil {
			return nil, err
		}
		if e != nil && sameSlice(e.catalogue, catalogue) && reflect.DeepEqual(def, e.def) {
			// Unchanged: the view goes on, with the prompts it listed.
			e = &serverEntry{def: def, read: now, catalogue: catalogue, view: e.view}
			c.put(id, e)
			return e.view, nil
		}
		e = &serverEntry{def: def, read: now}
	}
	e = &serverEntry{def: e.def, read: e.read, catalogue: catalogue, view: newServerView(e.def, catalogue, sep)}
	c.put(id, e)
	return e.view, nil
}

func (c *serverCache) put(id string, e *serverEntry) {
	c.mu.Lock()
	if c.m == nil || len(c.m) >= maxCachedServers {
		c.m = make(map[string]*serverEntry)
	}
	c.m[id] = e
	c.mu.Unlock()
}

// forget drops a server this worker changed, so that it serves the change
// at once.
func (c *serverCache) forget(id string) {
	c.mu.Lock()
	delete(c.m, id)
	c.mu.Unlock()
}

func sameSlice(a, b []store.Tool) bool {
	return len(a) == len(b) && (len(a) == 0 || &a[0] == &b[0])
}

// --- Admin API ----------------------------------------------------------------

// serverSpec is the body of PUT /admin/servers/{id}.
type serverSpec struct {
	Name        string   `json:"name"`
	Description string   `json:"description"`
	Tools       []string `json:"tools"`
	Resources   []string `json:"resources"`
	Prompts     []string `json:"prompts"`
	Gateways    []string `json:"gateways"`
}

func (s *Server) serveServers(ctx *fasthttp.RequestCtx, id string) {
	sb, ok := s.backend.(serverBackend)
	if !ok {
		writeDetail(ctx, fasthttp.StatusNotFound, "Not Found")
		return
	}
	admin, ok := s.authorizeAdminItem(ctx, id)
	if !ok {
		return
	}
	if id == "" {
		all, err := sb.Servers(ctx)
		if s.adminFound(ctx, err, "list servers", "") {
			writeAdminJSON(ctx, fasthttp.StatusOK, all)
		}
		return
	}
	if !isToolName(id) {
		writeDetail(ctx, fasthttp.StatusBadRequest, "Invalid server id: use 1 to 128 characters among A-Z a-z 0-9 _ - .")
		return
	}
	switch {
	case ctx.IsGet():
		v, err := sb.Server(ctx, id)
		if s.adminFound(ctx, err, "get server", "Server not found: "+id) {
			writeAdminJSON(ctx, fasthttp.StatusOK, v)
		}
	case ctx.IsDelete():
		err := sb.DeleteServer(ctx, id)
		s.servers.forget(id)
		if s.adminFound(ctx, err, "delete server", "Server not found: "+id) {
			s.log.Info("admin: server deleted", zap.String("by", admin.email), zap.String("server", id))
			ctx.SetStatusCode(fasthttp.StatusNoContent)
		}
	default:
		s.adminPutServer(ctx, sb, admin, id)
	}
}

// authorizeAdminItem checks the method of a collection's route (GET of
// the list; GET, PUT or DELETE of an item), then the caller (an admin).
func (s *Server) authorizeAdminItem(ctx *fasthttp.RequestCtx, item string) (principal, bool) {
	switch {
	case item == "" && !ctx.IsGet():
		methodNotAllowed(ctx, "GET")
		return principal{}, false
	case item != "" && !ctx.IsGet() && !ctx.IsPut() && !ctx.IsDelete():
		methodNotAllowed(ctx, "GET, PUT, DELETE")
		return principal{}, false
	}
	return s.authorizeAdmin(ctx)
}

// adminFound reports whether a store call succeeded, else answers 404
// with notFound for ErrNotFound, or the store's failure.
func (s *Server) adminFound(ctx *fasthttp.RequestCtx, err error, what, notFound string) bool {
	switch {
	case err == nil:
		return true
	case errors.Is(err, store.ErrNotFound) && notFound != "":
		writeDetail(ctx, fasthttp.StatusNotFound, notFound)
	default:
		s.storeFailed(ctx, what, err)
	}
	return false
}

// adminPutServer creates or replaces a server. What it names must be
// known, else 400 naming every unknown one (serverUnknowns).
func (s *Server) adminPutServer(ctx *fasthttp.RequestCtx, sb serverBackend, admin principal, id string) {
	var in serverSpec
	if !s.readAdminBody(ctx, &in) {
		return
	}
	v := store.Server{ID: id, Name: in.Name, Description: in.Description,
		Tools: in.Tools, Resources: in.Resources, Prompts: in.Prompts, Gateways: in.Gateways}
	unknown, err := s.serverUnknowns(ctx, v)
	if err != nil {
		s.storeFailed(ctx, "checking the server's tools and upstreams", err)
		return
	}
	if unknown != "" {
		writeDetail(ctx, fasthttp.StatusBadRequest, unknown)
		return
	}
	for _, l := range []*[]string{&v.Tools, &v.Resources, &v.Prompts, &v.Gateways} {
		if *l == nil {
			*l = []string{}
		}
	}
	if err := sb.PutServer(ctx, v); err != nil {
		s.storeFailed(ctx, "put server", err)
		return
	}
	s.servers.forget(id)
	s.log.Info("admin: server stored", zap.String("by", admin.email), zap.String("server", id), zap.Int("tools", len(v.Tools)),
		zap.Int("resources", len(v.Resources)), zap.Int("prompts", len(v.Prompts)), zap.Strings("gateways", v.Gateways))
	writeAdminJSON(ctx, fasthttp.StatusOK, v)
}

// serverUnknowns names what a server's definition names that is unknown
// ("Unknown tools: a, b; unknown prompts: c"), "" when all is known:
//   - tools: the catalogue's (disabled ones too: enabled later, served);
//   - gateways: registered upstreams (disabled ones too);
//   - prompts: <gateway><sep><prompt> of a registered upstream that lists
//     it now; one whose upstream is disabled or does not answer is taken
//     on its upstream's name (it is served once listed);
//   - resources: URIs that an enabled upstream lists now, or that a listed
//     template makes, and templates that one lists now.
func (s *Server) serverUnknowns(ctx *fasthttp.RequestCtx, v store.Server) (string, error) {
	var parts []string
	add := func(what string, unknown []string) {
		if len(unknown) > 0 {
			parts = append(parts, "unknown "+what+": "+strings.Join(unknown, ", "))
		}
	}
	tools, err := s.adminTools(ctx)
	if err != nil {
		return "", err
	}
	known := make(map[string]bool, len(tools))
	for _, t := range tools {
		known[t.Name] = true
	}
	add("tools", missing(v.Tools, known))

	registered, enabled := map[string]bool{}, map[string]bool{}
	if len(v.Gateways)+len(v.Prompts)+len(v.Resources) > 0 {
		if gb, ok := s.backend.(gatewayBackend); ok {
			all, err := gb.Gateways(ctx, nil)
			if err != nil {
				return "", err
			}
			for _, g := range all {
				registered[g.Name], enabled[g.Name] = true, g.Enabled
			}
		}
	}
	add("gateways", missing(v.Gateways, registered))

	if len(v.Prompts) > 0 {
		var ask []string // the enabled upstreams of the prompts, once each
		for _, p := range v.Prompts {
			if g, _, _ := strings.Cut(p, s.opt.ToolNameSeparator); enabled[g] && !slices.Contains(ask, g) {
				ask = append(ask, g)
			}
		}
		listedOrUnasked := map[string]bool{}
		for _, p := range v.Prompts {
			if g, _, ok := strings.Cut(p, s.opt.ToolNameSeparator); ok && registered[g] && !enabled[g] {
				listedOrUnasked[p] = true
			}
		}
		for _, r := range s.gatherFrom(ctx, ask, &promptsList)[0] {
			if r.err != nil {
				for _, p := range v.Prompts {
					if strings.HasPrefix(p, r.gateway+s.opt.ToolNameSeparator) {
						listedOrUnasked[p] = true
					}
				}
			}
			for _, e := range r.entries {
				listedOrUnasked[r.gateway+s.opt.ToolNameSeparator+e.Key] = true
			}
		}
		add("prompts", missing(v.Prompts, listedOrUnasked))
	}

	if len(v.Resources) > 0 {
		var ask []string
		for g, on := range enabled {
			if on {
				ask = append(ask, g)
			}
		}
		sort.Strings(ask)
		lists := s.gatherFrom(ctx, ask, &resourcesList, &templatesList)
		listed := map[string]bool{}
		var patterns []*regexp.Regexp
		for i := range lists[0] {
			for _, e := range lists[0][i].entries {
				listed[e.Key] = true
			}
			for _, e := range lists[1][i].entries {
				listed[e.Key] = true
				patterns = append(patterns, templatePattern(e.Key))
			}
		}
		var unknown []string
		for _, r := range v.Resources {
			if !listed[r] && (isTemplate(r) || !slices.ContainsFunc(patterns, func(re *regexp.Regexp) bool { return re.MatchString(r) })) {
				unknown = append(unknown, r)
			}
		}
		add("resources", unknown)
	}
	if len(parts) == 0 {
		return "", nil
	}
	msg := strings.Join(parts, "; ")
	return "U" + msg[1:], nil
}

// missing are the names of list that known does not have, in order.
func missing(list []string, known map[string]bool) []string {
	var out []string
	for _, x := range list {
		if !known[x] {
			out = append(out, x)
		}
	}
	return out
}
