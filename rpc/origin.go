package rpc

import (
	"bytes"
	"net"
	"strings"

	"github.com/valyala/fasthttp"
)

// Origin and Host checks on /rpc and /mcp (docs/security.md). The MCP
// transport specification says servers MUST validate Origin, to stop DNS
// rebinding: a page on evil.example whose name later resolves to 127.0.0.1
// would otherwise reach a local gateway with the user's browser.
//
//   - no Origin (SDK clients, curl, hey): passes, at the cost of one header
//     lookup, the whole cost on the hot path;
//   - Origin naming the request's own Host (same origin): passes;
//   - Origin in AllowedOrigins, or AllowedOrigins "*": passes, with CORS
//     headers when CORSEnabled;
//   - any other Origin: 403 with a JSON-RPC error.
//
// A server whose every listener is loopback (Options.LoopbackOnly) also
// refuses a Host that is not loopback (nor the host of an allowed origin):
// a rebinding page sends its own name as Host, whatever its Origin.

const (
	corsAllowHeaders  = "Authorization, Content-Type, Accept, Mcp-Session-Id, Mcp-Protocol-Version, Mcp-Method, Mcp-Name, Last-Event-ID"
	corsExposeHeaders = "Mcp-Session-Id, Mcp-Protocol-Version"
	corsMaxAge        = "600"
	methodsRPC        = "POST, OPTIONS"
	methodsMCP        = "POST, DELETE, OPTIONS"
)

// originPolicy is built once by New from the Options.
type originPolicy struct {
	anyOrigin    bool
	origins      map[string]struct{} // lower case, no trailing slash
	hosts        map[string]struct{} // host names of origins: accepted as Host on loopback-only servers
	cors         bool
	loopbackOnly bool
}

func newOriginPolicy(o *Options) originPolicy {
	p := originPolicy{origins: map[string]struct{}{}, hosts: map[string]struct{}{},
		cors: o.CORSEnabled, loopbackOnly: o.LoopbackOnly}
	for _, origin := range o.AllowedOrigins {
		origin = strings.TrimSuffix(strings.ToLower(strings.TrimSpace(origin)), "/")
		if origin == "*" {
			p.anyOrigin = true
			continue
		}
		if origin == "" {
			continue
		}
		p.origins[origin] = struct{}{}
		if _, authority, ok := strings.Cut(origin, "://"); ok {
			p.hosts[string(hostname([]byte(authority)))] = struct{}{}
		}
	}
	return p
}

// checkOrigin runs before anything else on /rpc and /mcp. It returns false
// when it has answered the request itself: a 403, or a CORS preflight.
// methods is the Access-Control-Allow-Methods of the route.
func (s *Server) checkOrigin(ctx *fasthttp.RequestCtx, methods string) bool {
	if s.origin.loopbackOnly && !s.origin.hostAllowed(ctx.Request.Header.Host()) {
		forbidden(ctx, "Forbidden: Host not allowed")
		return false
	}
	origin := ctx.Request.Header.Peek(fasthttp.HeaderOrigin)
	if len(origin) == 0 {
		return true
	}
	return s.checkCrossOrigin(ctx, origin, methods)
}

func (s *Server) checkCrossOrigin(ctx *fasthttp.RequestCtx, origin []byte, methods string) bool {
	p := &s.origin
	if sameOrigin(origin, ctx.Request.Header.Host()) {
		return true
	}
	if !p.anyOrigin && !p.allowed(origin) {
		forbidden(ctx, "Forbidden: Origin not allowed")
		return false
	}
	if !p.cors {
		return true
	}
	h := &ctx.Response.Header
	h.SetBytesV(fasthttp.HeaderAccessControlAllowOrigin, origin)
	h.Add(fasthttp.HeaderVary, fasthttp.HeaderOrigin)
	if ctx.IsOptions() && len(ctx.Request.Header.Peek(fasthttp.HeaderAccessControlRequestMethod)) > 0 {
		h.Set(fasthttp.HeaderAccessControlAllowMethods, methods)
		h.Set(fasthttp.HeaderAccessControlAllowHeaders, corsAllowHeaders)
		h.Set(fasthttp.HeaderAccessControlMaxAge, corsMaxAge)
		ctx.Response.SetStatusCode(fasthttp.StatusNoContent)
		return false
	}
	h.Set(fasthttp.HeaderAccessControlExposeHeaders, corsExposeHeaders)
	return true
}

func (p *originPolicy) allowed(origin []byte) bool {
	if _, ok := p.origins[string(origin)]; ok {
		return true
	}
	_, ok := p.origins[strings.TrimSuffix(strings.ToLower(string(origin)), "/")]
	return ok
}

// hostAllowed: an empty Host (HTTP/1.0), a loopback one, or the host of an
// allowed origin.
func (p *originPolicy) hostAllowed(host []byte) bool {
	if len(host) == 0 {
		return true
	}
	name := hostname(host)
	if isLoopbackName(name) {
		return true
	}
	if _, ok := p.hosts[string(name)]; ok {
		return true
	}
	_, ok := p.hosts[strings.ToLower(string(name))]
	return ok
}

// sameOrigin: the origin's host[:port] is the request's Host.
func sameOrigin(origin, host []byte) bool {
	i := bytes.Index(origin, []byte("://"))
	return i > 0 && len(host) > 0 && bytes.EqualFold(origin[i+3:], host)
}

// hostname strips the port and IPv6 brackets from a Host value.
func hostname(host []byte) []byte {
	if len(host) > 0 && host[0] == '[' {
		if end := bytes.IndexByte(host, ']'); end > 0 {
			return host[1:end]
		}
		return host
	}
	if i := bytes.LastIndexByte(host, ':'); i >= 0 && bytes.IndexByte(host, ':') == i {
		return host[:i]
	}
	return host
}

var (
	nameLocalhost   = []byte("localhost")
	suffixLocalhost = []byte(".localhost")
)

// isLoopbackName: localhost, *.localhost (RFC 6761: browsers resolve it to
// loopback themselves), 127.0.0.0/8 or ::1.
func isLoopbackName(name []byte) bool {
	if string(name) == "127.0.0.1" || bytes.EqualFold(name, nameLocalhost) {
		return true
	}
	if len(name) > len(suffixLocalhost) && bytes.EqualFold(name[len(name)-len(suffixLocalhost):], suffixLocalhost) {
		return true
	}
	ip := net.ParseIP(string(name))
	return ip != nil && ip.IsLoopback()
}

// forbidden answers 403 with a JSON-RPC error without id, the error shape
// of /rpc and /mcp.
func forbidden(ctx *fasthttp.RequestCtx, msg string) {
	writeJSON(ctx, fasthttp.StatusForbidden, appendError(nil, nil, codeInvalidRequest, msg))
}
