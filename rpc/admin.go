package rpc

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"strings"

	"github.com/valyala/fasthttp"
	"go.uber.org/zap"

	"github.com/mcpgateway/mcpgateway/internal/gatewayspec"
	"github.com/mcpgateway/mcpgateway/store"
)

// The admin API: a minimal way to change users and tools through any worker
// of any instance (the store makes the change visible to every other worker
// and instance within a second). It is not on the hot path, so it uses
// encoding/json. See docs/rpc.md, "Admin API".
//
//	GET /admin/users/{email}   PUT /admin/users/{email}   {"active":bool,"admin":bool}
//	GET /admin/tools           GET /admin/tools/{name}
//	PUT /admin/tools/{name}    {"description":string,"inputSchema":{...},"enabled":bool,"integration":{"type":"REST",...}}
//	DELETE /admin/tools/{name} a tool of the gateway (not an upstream's)
//	POST /admin/tokens/revoke  {"jti":string,"exp":int,"reason":string} or {"token":string,"reason":string}
//	GET /admin/tokens/revoked/{jti}                                               (revoke.go)
//	GET /admin/gateways        GET, PUT, DELETE /admin/gateways/{name}            (federation.go)
//	GET /admin/servers         GET, PUT, DELETE /admin/servers/{id}               (servers.go)

const adminPrefix = "/admin/"

// allToolsBackend is a Backend that can also read disabled tools. The admin
// API uses it when the Backend offers it (then a partial PUT of a disabled
// tool keeps its fields, and GET lists disabled tools too); Backend.Tool and
// Backend.Tools see enabled tools only.
type allToolsBackend interface {
	// AllTools returns every tool, enabled or not, sorted by name.
	AllTools(ctx context.Context) ([]store.Tool, error)
}

// serveAdmin answers the /admin/ routes. Checks run in this order: route
// (404), method (405), authentication and the admin flag (401/403), the path
// parameter and the body (400/413/415), then the store (404/409/503).
func (s *Server) serveAdmin(ctx *fasthttp.RequestCtx) {
	rest := string(ctx.Path()[len(adminPrefix):]) // fasthttp has decoded and normalised it
	kind, param, hasParam := strings.Cut(rest, "/")
	switch {
	case kind == "tools" && (!hasParam || param == ""):
		if !ctx.IsGet() {
			methodNotAllowed(ctx, "GET")
			return
		}
		if _, ok := s.authorizeAdmin(ctx); ok {
			s.adminListTools(ctx)
		}
	case (kind == "tools" || kind == "users") && param != "":
		_, deletes := s.backend.(toolDeleter)
		deletes = deletes && kind == "tools"
		if !ctx.IsGet() && !ctx.IsPut() && !(deletes && ctx.IsDelete()) {
			if deletes {
				methodNotAllowed(ctx, "GET, PUT, DELETE")
			} else {
				methodNotAllowed(ctx, "GET, PUT")
			}
			return
		}
		admin, ok := s.authorizeAdmin(ctx)
		if !ok {
			return
		}
		if kind == "users" {
			email := normEmail(param)
			if !isEmail(email) || strings.IndexByte(email, '/') >= 0 {
				writeDetail(ctx, fasthttp.StatusBadRequest, "Invalid email address: "+param)
				return
			}
			if ctx.IsGet() {
				s.adminGetUser(ctx, email)
			} else {
				s.adminPutUser(ctx, admin, email)
			}
			return
		}
		if !isToolName(param) {
			writeDetail(ctx, fasthttp.StatusBadRequest,
				"Invalid tool name: use 1 to 128 characters among A-Z a-z 0-9 _ - .")
			return
		}
		switch {
		case ctx.IsGet():
			s.adminGetTool(ctx, param)
		case ctx.IsDelete():
			s.adminDeleteTool(ctx, param)
		default:
			s.adminPutTool(ctx, admin, param)
		}
	case kind == "tokens" && hasParam:
		s.serveTokens(ctx, param)
	case kind == "gateways":
		s.serveGateways(ctx, param) // federation.go
	case kind == "servers":
		s.serveServers(ctx, param) // servers.go
	default:
		writeDetail(ctx, fasthttp.StatusNotFound, "Not Found")
	}
}

var (
	errAdminAnonymous = &authError{fasthttp.StatusForbidden,
		"The admin API is off while authentication is off (AUTH_REQUIRED=false)"}
	errNotAdmin = &authError{fasthttp.StatusForbidden, "Admin privileges required"}
)

// authorizeAdmin lets through a valid token whose user the store knows as an
// active admin. The token's is_admin claim is not enough: the store decides,
// so revoking the flag takes effect as fast as a deactivation does. With
// authentication off the admin API is refused: it must never be anonymous.
func (s *Server) authorizeAdmin(ctx *fasthttp.RequestCtx) (principal, bool) {
	if !s.opt.AuthRequired {
		writeDetail(ctx, errAdminAnonymous.status, errAdminAnonymous.detail)
		return principal{}, false
	}
	p, ok := s.authorize(ctx) // 401s, and refuses an inactive user
	if !ok {
		return principal{}, false
	}
	u, err := s.backend.User(ctx, p.email)
	switch {
	case err == nil && u.Active && u.Admin:
		return p, true
	case err == nil || errors.Is(err, store.ErrNotFound):
		writeDetail(ctx, errNotAdmin.status, errNotAdmin.detail)
	default:
		s.log.Error("admin: looking up the caller", zap.String("email", p.email), zap.Error(err))
		writeDetail(ctx, errAuthBackend.status, errAuthBackend.detail)
	}
	return principal{}, false
}

// --- Users --------------------------------------------------------------------

type userPatch struct {
	Active *bool `json:"active"`
	Admin  *bool `json:"admin"`
}

func (s *Server) adminGetUser(ctx *fasthttp.RequestCtx, email string) {
	u, err := s.backend.User(ctx, email)
	switch {
	case errors.Is(err, store.ErrNotFound):
		writeDetail(ctx, fasthttp.StatusNotFound, "User not found: "+email)
	case err != nil:
		s.storeFailed(ctx, "reading user", err)
	default:
		writeAdminJSON(ctx, fasthttp.StatusOK, u)
	}
}

// adminPutUser creates or updates a user. Omitted fields keep their current
// values; a new user is active and not an admin unless the body says so.
func (s *Server) adminPutUser(ctx *fasthttp.RequestCtx, caller principal, email string) {
	var patch userPatch
	if !s.readAdminBody(ctx, &patch) {
		return
	}
	u, err := s.backend.User(ctx, email)
	created := errors.Is(err, store.ErrNotFound)
	switch {
	case created:
		u = store.User{Email: email, Active: true}
	case err != nil:
		s.storeFailed(ctx, "reading user", err)
		return
	}
	u.Email = email
	if patch.Active != nil {
		u.Active = *patch.Active
	}
	if patch.Admin != nil {
		u.Admin = *patch.Admin
	}
	if email == normEmail(caller.email) && (!u.Active || !u.Admin) {
		writeDetail(ctx, fasthttp.StatusConflict,
			"An admin cannot deactivate or demote their own account: ask another admin")
		return
	}
	if err := s.backend.PutUser(ctx, u); err != nil {
		s.storeFailed(ctx, "writing user", err)
		return
	}
	s.log.Info("admin: user written", zap.String("by", caller.email), zap.String("email", u.Email),
		zap.Bool("active", u.Active), zap.Bool("admin", u.Admin), zap.Bool("created", created))
	status := fasthttp.StatusOK
	if created {
		status = fasthttp.StatusCreated
	}
	writeAdminJSON(ctx, status, u)
}

// --- Tools --------------------------------------------------------------------

type toolPatch struct {
	Description *string         `json:"description"`
	InputSchema json.RawMessage `json:"inputSchema"`
	Enabled     *bool           `json:"enabled"`
	Integration *restSpec       `json:"integration"` // a REST tool's endpoint, replaced whole (rest.go)
}

type toolList struct {
	Tools []store.Tool `json:"tools"`
}

// adminTools lists the tools the admin API can see: every tool when the
// Backend offers AllTools, else the enabled ones.
func (s *Server) adminTools(ctx context.Context) ([]store.Tool, error) {
	if all, ok := s.backend.(allToolsBackend); ok {
		return all.AllTools(ctx)
	}
	return s.backend.Tools(ctx)
}

// adminTool finds one tool, disabled ones included when the Backend can.
func (s *Server) adminTool(ctx context.Context, name string) (store.Tool, error) {
	all, ok := s.backend.(allToolsBackend)
	if !ok {
		return s.backend.Tool(ctx, name)
	}
	tools, err := all.AllTools(ctx)
	if err != nil {
		return store.Tool{}, err
	}
	for _, t := range tools {
		if t.Name == name {
			return t, nil
		}
	}
	return store.Tool{}, store.ErrNotFound
}

func (s *Server) adminListTools(ctx *fasthttp.RequestCtx) {
	tools, err := s.adminTools(ctx)
	if err != nil {
		s.storeFailed(ctx, "listing tools", err)
		return
	}
	public := make([]store.Tool, 0, len(tools)) // tools may be the shared catalogue
	for _, t := range tools {
		public = append(public, publicTool(t))
	}
	writeAdminJSON(ctx, fasthttp.StatusOK, toolList{Tools: public})
}

func (s *Server) adminGetTool(ctx *fasthttp.RequestCtx, name string) {
	t, err := s.adminTool(ctx, name)
	switch {
	case errors.Is(err, store.ErrNotFound):
		writeDetail(ctx, fasthttp.StatusNotFound, "Tool not found: "+name)
	case err != nil:
		s.storeFailed(ctx, "reading tool", err)
	default:
		writeAdminJSON(ctx, fasthttp.StatusOK, publicTool(t))
	}
}

// toolDeleter is a Backend that removes tools (*store.Store).
type toolDeleter interface {
	DeleteTool(ctx context.Context, name string) error
}

// adminDeleteTool removes a tool of the gateway: 204, 404 for none, 409 for
// an upstream's (its upstream's list decides; delete the upstream, or
// disable the tool).
func (s *Server) adminDeleteTool(ctx *fasthttp.RequestCtx, name string) {
	err := s.backend.(toolDeleter).DeleteTool(ctx, name)
	switch {
	case errors.Is(err, store.ErrNotFound):
		writeDetail(ctx, fasthttp.StatusNotFound, "Tool not found: "+name)
	case errors.Is(err, store.ErrUpstreamTool):
		writeDetail(ctx, fasthttp.StatusConflict, "Tool "+name+" belongs to an upstream: DELETE its /admin/gateways/{name}, or PUT it with \"enabled\":false")
	case err != nil:
		s.storeFailed(ctx, "deleting tool", err)
	default:
		ctx.SetStatusCode(fasthttp.StatusNoContent)
	}
}

// adminPutTool creates or updates a tool. Omitted fields keep the values the
// tool has now. A tool the admin API cannot see (unknown, or disabled when
// the Backend lacks AllTools) must be sent with description and inputSchema:
// filling them with defaults could silently wipe a disabled tool's schema.
func (s *Server) adminPutTool(ctx *fasthttp.RequestCtx, caller principal, name string) {
	var patch toolPatch
	if !s.readAdminBody(ctx, &patch) {
		return
	}
	if patch.InputSchema != nil && !isJSONObject(patch.InputSchema) {
		writeDetail(ctx, fasthttp.StatusBadRequest, "Invalid JSON body: inputSchema must be a JSON object")
		return
	}
	if patch.InputSchema != nil {
		if msg := validateHeaderAnnotations(patch.InputSchema); msg != "" {
			writeDetail(ctx, fasthttp.StatusBadRequest, "Invalid inputSchema: "+msg)
			return
		}
	}
	rest, ok := s.restEndpoint(ctx, patch.Integration) // rest.go
	if !ok {
		return
	}
	t, err := s.adminTool(ctx, name)
	created := errors.Is(err, store.ErrNotFound)
	switch {
	case created:
		_, seesAll := s.backend.(allToolsBackend)
		if !seesAll && (patch.Description == nil || patch.InputSchema == nil) {
			writeDetail(ctx, fasthttp.StatusConflict, "Tool "+name+" is unknown or disabled, and the store "+
				"cannot read disabled tools: send description and inputSchema with it")
			return
		}
		t = store.Tool{Name: name, Enabled: true}
	case err != nil:
		s.storeFailed(ctx, "reading tool", err)
		return
	}
	t.Name = name
	if rest != nil {
		if t.Gateway != "" {
			writeDetail(ctx, fasthttp.StatusConflict, "Tool "+name+" is served by gateway "+t.Gateway+": it cannot be a REST tool")
			return
		}
		t.REST = rest
	}
	if patch.Description != nil {
		t.Description = *patch.Description
	}
	if patch.InputSchema != nil {
		t.InputSchema = compactJSON(patch.InputSchema)
	}
	if patch.Enabled != nil {
		t.Enabled = *patch.Enabled
	}
	if len(t.InputSchema) == 0 {
		t.InputSchema = json.RawMessage(`{"type":"object"}`) // what the store writes for an empty one
	}
	if err := s.backend.PutTool(ctx, t); err != nil {
		s.storeFailed(ctx, "writing tool", err)
		return
	}
	s.log.Info("admin: tool written", zap.String("by", caller.email), zap.String("name", t.Name),
		zap.Bool("enabled", t.Enabled), zap.Bool("created", created), zap.Bool("rest", t.REST != nil))
	writeAdminJSON(ctx, fasthttp.StatusOK, publicTool(t))
}

// isToolName allows the characters of MCP's tool-name guidance (2025-11-25)
// that are safe in a path segment.
func isToolName(s string) bool { return gatewayspec.ValidToolName(s) }

// --- Helpers --------------------------------------------------------------------

// readAdminBody decodes a PUT or POST body into v, or answers 413, 415 or 400. The
// body must be one JSON object (valid UTF-8, as on /rpc) with no unknown
// members: a misspelt "enable" must not pass as a no-op.
func (s *Server) readAdminBody(ctx *fasthttp.RequestCtx, v any) bool {
	body, ok := s.checkBody(ctx)
	if !ok {
		return false
	}
	if !isJSON(ctx.Request.Header.ContentType()) {
		writeDetail(ctx, fasthttp.StatusUnsupportedMediaType, "Content-Type must be application/json")
		return false
	}
	if err := validate(body); err != nil {
		writeDetail(ctx, fasthttp.StatusBadRequest, "Invalid JSON body: "+err.Error())
		return false
	}
	if !isJSONObject(body) {
		writeDetail(ctx, fasthttp.StatusBadRequest, "Invalid JSON body: expected an object")
		return false
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	err := dec.Decode(v)
	if err == nil {
		if _, terr := dec.Token(); terr != io.EOF {
			err = errors.New("data after the object")
		}
	}
	if err != nil {
		writeDetail(ctx, fasthttp.StatusBadRequest, "Invalid JSON body: "+strings.TrimPrefix(err.Error(), "json: "))
		return false
	}
	return true
}

func isJSONObject(b []byte) bool {
	b = bytes.TrimSpace(b)
	return len(b) >= 2 && b[0] == '{'
}

func compactJSON(b []byte) json.RawMessage {
	var out bytes.Buffer
	if err := json.Compact(&out, b); err != nil {
		return json.RawMessage(b)
	}
	return json.RawMessage(out.Bytes())
}

// normEmail is the store's normalisation: addresses are case-insensitive.
func normEmail(e string) string { return strings.ToLower(strings.TrimSpace(e)) }

func writeAdminJSON(ctx *fasthttp.RequestCtx, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil { // store types always encode; keep the answer JSON regardless
		writeDetail(ctx, fasthttp.StatusInternalServerError, "Internal Server Error")
		return
	}
	ctx.Response.Header.Set("Cache-Control", "no-store")
	writeJSON(ctx, status, b)
}

func (s *Server) storeFailed(ctx *fasthttp.RequestCtx, what string, err error) {
	s.log.Error("admin: "+what, zap.Error(err))
	writeDetail(ctx, fasthttp.StatusServiceUnavailable, "Store unavailable")
}
