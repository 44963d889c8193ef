package rpc

import (
	"bytes"
	"context"
	"errors"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/valyala/fasthttp"
	"go.uber.org/zap"

	"github.com/mcpgateway/mcpgateway/store"
)

// Virtual servers (docs/federation.md, "Virtual servers"): a named set of
// the catalogue's tools served on /servers/{id}/mcp, the MCP transport of
// /mcp with the same revisions and authentication, where tools/list lists
// only the server's tools and tools/call calls only them. An upstream's
// tool is shown under its upstream's own name (echo, not everything-echo)
// unless another tool of the server would be shown under the same name;
// then those keep the gateway's names. A client configured for one
// upstream can thus be pointed at a server of all its tools unchanged.
//
//	GET /admin/servers   GET, PUT, DELETE /admin/servers/{id}   {"name":..., "description":..., "tools":[...]}

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
// name with the gateway's own (for calls).
type serverView struct {
	tools  []store.Tool
	byName map[string]store.Tool
}

// newServerView picks the server's tools from the catalogue (sorted by
// name, enabled only) and names them. A tool of the server that the
// catalogue no longer has, or has disabled, is left out.
func newServerView(def store.Server, catalogue []store.Tool) *serverView {
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
	shown := exposedNames(picked)
	v := &serverView{tools: make([]store.Tool, len(picked)), byName: make(map[string]store.Tool, len(picked))}
	for i, t := range picked {
		v.byName[shown[i]] = t
		t.Name = shown[i]
		v.tools[i] = t
	}
	sort.Slice(v.tools, func(i, j int) bool { return v.tools[i].Name < v.tools[j].Name })
	return v
}

// exposedNames names each tool as a client of the server sees it: an
// upstream's tool by its upstream's name, others by the gateway's. Any
// upstream name shown for two tools falls back to the gateway's names for
// them, again until no name is shown twice; this ends, since the
// gateway's names are unique.
func exposedNames(tools []store.Tool) []string {
	names := make([]string, len(tools))
	for i, t := range tools {
		names[i] = t.Name
		if t.Gateway != "" && t.UpstreamName != "" {
			names[i] = t.UpstreamName
		}
	}
	for {
		count := make(map[string]int, len(names))
		for _, n := range names {
			count[n]++
		}
		changed := false
		for i, n := range names {
			if count[n] > 1 && n != tools[i].Name {
				names[i], changed = tools[i].Name, true
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
	view, err := s.servers.view(ctx, s.backend, sb, id)
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
// endpoint; done is false for those served as on /mcp (initialize, ping,
// server/discover, logging/setLevel, notifications, and tools/call, whose
// lookup is findCallable's). The server has tools only: its resource and prompt
// lists are empty, and a tool is never called as a method.
func (s *Server) invokeOnServer(m *message, buf *buffers, out []byte) ([]byte, *rpcError, bool) {
	switch string(m.method) {
	case "initialize", "ping", "tools/call", "server/discover", "logging/setLevel":
		return out, nil, false
	case "tools/list":
		after, rerr := readCursor(m.params)
		if rerr != nil {
			return out, rerr, true
		}
		return appendToolsPage(out, buf.vs.tools, after), nil, true
	case "resources/list":
		return append(out, `{"resources":[]}`...), nil, true
	case "resources/templates/list":
		return append(out, `{"resourceTemplates":[]}`...), nil, true
	case "prompts/list":
		return append(out, `{"prompts":[]}`...), nil, true
	case "resources/read":
		return out, &rpcError{codeInvalidParams, "Resource not found: this server offers no resources"}, true
	case "prompts/get":
		return out, &rpcError{codeInvalidParams, "Prompt not found: this server offers no prompts"}, true
	}
	if bytes.HasPrefix(m.method, []byte("notifications/")) {
		return out, nil, false
	}
	return out, &rpcError{codeMethodNotFound, "Method not found: " + string(m.method)}, true
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
// serverTTL and making the view again when the catalogue changed (the
// store hands out one shared slice per catalogue, so a new slice is a
// change).
func (c *serverCache) view(ctx context.Context, b Backend, sb serverBackend, id string) (*serverView, error) {
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
		e = &serverEntry{def: def, read: now}
	}
	e = &serverEntry{def: e.def, read: e.read, catalogue: catalogue, view: newServerView(e.def, catalogue)}
	c.mu.Lock()
	if c.m == nil || len(c.m) >= maxCachedServers {
		c.m = make(map[string]*serverEntry)
	}
	c.m[id] = e
	c.mu.Unlock()
	return e.view, nil
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

// adminPutServer creates or replaces a server. Its tools are the gateway's
// names and must all be known (disabled ones too: enabling one later adds
// it to the server); unknown ones are 400, named.
func (s *Server) adminPutServer(ctx *fasthttp.RequestCtx, sb serverBackend, admin principal, id string) {
	var in serverSpec
	if !s.readAdminBody(ctx, &in) {
		return
	}
	tools, err := s.adminTools(ctx)
	if err != nil {
		s.storeFailed(ctx, "listing tools", err)
		return
	}
	known := make(map[string]bool, len(tools))
	for _, t := range tools {
		known[t.Name] = true
	}
	var unknown []string
	for _, name := range in.Tools {
		if !known[name] {
			unknown = append(unknown, name)
		}
	}
	if len(unknown) > 0 {
		writeDetail(ctx, fasthttp.StatusBadRequest, "Unknown tools: "+strings.Join(unknown, ", "))
		return
	}
	v := store.Server{ID: id, Name: in.Name, Description: in.Description, Tools: in.Tools}
	if v.Tools == nil {
		v.Tools = []string{}
	}
	if err := sb.PutServer(ctx, v); err != nil {
		s.storeFailed(ctx, "put server", err)
		return
	}
	s.servers.forget(id)
	s.log.Info("admin: server stored", zap.String("by", admin.email), zap.String("server", id), zap.Int("tools", len(v.Tools)))
	writeAdminJSON(ctx, fasthttp.StatusOK, v)
}
