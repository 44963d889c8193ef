package rpc

import (
	"bytes"
	"context"
	"encoding/base64"
	"fmt"
	"net/http"
	"strconv"
	"strings"

	"github.com/valyala/fasthttp"

	"github.com/mcpgateway/mcpgateway/store"
	"github.com/mcpgateway/mcpgateway/upstream"
)

// The modern era of MCP (2026-07-28, docs/mcp.md section 1): every request
// carries its revision, in the MCP-Protocol-Version header and in
// params._meta, and is served on its own. There is no initialize and no
// session: Mcp-Session-Id and Last-Event-ID are ignored and none is minted,
// so any worker of any instance serves any request with no shared state.
// The legacy revisions keep their sessions (mcp.go); a dual-era server tells
// the two apart per request.

const (
	headerName        = "Mcp-Name"   // params.name or params.uri, mirrored (SEP-2243)
	headerParamPrefix = "Mcp-Param-" // an argument annotated with x-mcp-header, mirrored

	metaProtocolVersion    = "io.modelcontextprotocol/protocolVersion"
	metaClientCapabilities = "io.modelcontextprotocol/clientCapabilities"
	metaClientInfo         = "io.modelcontextprotocol/clientInfo"
)

// modernRequest reports whether a POST to /mcp belongs to the modern era:
// its MCP-Protocol-Version is 2026-07-28, or it names no revision served
// here (none, or one unknown) while params._meta carries a protocolVersion.
// Such a request without the header is refused for lacking it, and one at an
// unknown version gets that era's UnsupportedProtocolVersion error. A
// request with a legacy header is legacy, whatever its body says, and costs
// nothing here.
func (s *Server) modernRequest(ctx *fasthttp.RequestCtx) bool {
	switch rev := parseRevision(ctx.Request.Header.Peek(headerProtocolVersion)); {
	case rev.modern():
		return true
	case rev != revNone:
		return false
	}
	body := ctx.PostBody()
	if len(body) > s.opt.MaxRequestBodySize || validate(body) != nil {
		return false // the legacy path answers 413 or the parse error
	}
	return member(member(member(trimValue(body), "params"), "_meta"), metaProtocolVersion) != nil
}

// serveModern answers a modern request. Its checks come in the order of
// docs/mcp.md (G4, G5), each error carrying the request's id:
//
//  1. the body parses, and is one request (400, no id);
//  2. MCP-Protocol-Version is sent and equals _meta's protocolVersion
//     (400, -32020 HeaderMismatch);
//  3. the version is served (400, -32022 with data.supported and requested);
//  4. the method is one of this revision's that the gateway offers
//     (404, -32601): initialize, ping, logging/setLevel and the others are not;
//  5. _meta has protocolVersion and clientCapabilities (400, -32602);
//  6. Mcp-Method, and Mcp-Name for tools/call, equal the body (400, -32020);
//  7. for tools/call, the Mcp-Param-* headers the tool's input schema asks
//     for equal the arguments (400, -32020).
//
// A notification is accepted (202) without these checks: the revision
// defines none over HTTP, nor header rules for them.
func (s *Server) serveModern(ctx *fasthttp.RequestCtx, p principal) {
	body, ok := s.mcpBody(ctx)
	if !ok {
		return
	}
	buf := getBuffers()
	defer putBuffers(buf)
	buf.user, buf.rev, buf.vs = p.email, rev20260728, serverOf(ctx)
	if err := validate(body); err != nil {
		modernError(ctx, buf, fasthttp.StatusBadRequest, nil, &rpcError{code: codeParseError, msg: "Parse error: " + err.Error()})
		return
	}
	v := trimValue(body)
	if v[0] == '[' {
		modernError(ctx, buf, fasthttp.StatusBadRequest, nil,
			&rpcError{code: codeInvalidRequest, msg: "Invalid Request: MCP 2026-07-28 has no JSON-RPC batches"})
		return
	}
	m, perr := parse(v, transportMCP)
	switch {
	case perr != nil:
		modernError(ctx, buf, fasthttp.StatusBadRequest, m.id, perr)
		return
	case m.response:
		modernError(ctx, buf, fasthttp.StatusBadRequest, nil,
			&rpcError{code: codeInvalidRequest, msg: "Invalid Request: a client sends no JSON-RPC responses in MCP 2026-07-28"})
		return
	case m.id == nil:
		ctx.Response.SetStatusCode(fasthttp.StatusAccepted)
		return
	}
	if status, rerr := s.checkModern(ctx, &m); rerr != nil {
		modernError(ctx, buf, status, m.id, rerr)
		return
	}
	buf.id, buf.sse, buf.params = m.id, acceptsSSE(ctx), m.params
	buf.out = s.invokeSafe(ctx, &m, buf, buf.out[:0])
	if buf.stream != nil {
		s.startStream(ctx, buf.stream) // mcp_stream.go
		return
	}
	status := unavailableStatus(ctx)
	if ctx.UserValue(badRequestKey{}) != nil {
		status = fasthttp.StatusBadRequest
	}
	writeJSON(ctx, limitedStatus(ctx, buf, status, false), buf.out)
}

// modernError answers a request refused before its method ran: with its id
// when it has a usable one, else without (2026-07-28 has no "id":null). The
// msg of a -32022 error is the version requested.
func modernError(ctx *fasthttp.RequestCtx, buf *buffers, status int, id []byte, rerr *rpcError) {
	switch {
	case id == nil:
		buf.out = appendIDLessError(buf.out[:0], rev20260728, rerr.code, rerr.msg)
	case rerr.code == codeUnsupportedVersion:
		buf.out = appendUnsupportedVersion(buf.out[:0], id, rerr.msg)
	default:
		buf.out = appendError(buf.out[:0], id, rerr.code, rerr.msg)
	}
	writeJSON(ctx, status, buf.out)
}

// checkModern runs checks 2 to 7 of serveModern. It returns the HTTP
// status and the error of the first that fails (see modernError).
func (s *Server) checkModern(ctx *fasthttp.RequestCtx, m *message) (int, *rpcError) {
	meta := member(m.params, "_meta")
	version := member(meta, metaProtocolVersion)
	header := ctx.Request.Header.Peek(headerProtocolVersion)
	switch {
	case len(header) == 0:
		return fasthttp.StatusBadRequest, &rpcError{code: codeHeaderMismatch, msg: "Header mismatch: the MCP-Protocol-Version header is required"}

	case version != nil && (version[0] != '"' || string(unquote(version)) != string(header)):
		return fasthttp.StatusBadRequest, &rpcError{code: codeHeaderMismatch, msg: fmt.Sprintf(
			"Header mismatch: MCP-Protocol-Version header value %q does not match _meta %s %s", header, metaProtocolVersion, version)}

	case !parseRevision(header).modern():
		return fasthttp.StatusBadRequest, &rpcError{code: codeUnsupportedVersion, msg: string(header)}
	}

	// Methods first: one this revision lacks has no params to check (the
	// SDKs send ping, removed in 2026-07-28, without _meta).
	switch string(m.method) {
	case "server/discover", "tools/list", "tools/call",
		"resources/list", "resources/templates/list", "resources/read", "prompts/list", "prompts/get", // the upstreams' (resources.go)
		"completion/complete": // the upstreams' (completion.go)
	default:
		return fasthttp.StatusNotFound, &rpcError{code: codeMethodNotFound, msg: "Method not found: " + string(m.method)}
	}

	switch caps := member(meta, metaClientCapabilities); {
	case meta == nil || meta[0] != '{':
		return fasthttp.StatusBadRequest, &rpcError{code: codeInvalidParams, msg: "Invalid params: params._meta is required, with " + metaProtocolVersion + " and " + metaClientCapabilities}

	case version == nil:
		return fasthttp.StatusBadRequest, &rpcError{code: codeInvalidParams, msg: "Invalid params: _meta " + metaProtocolVersion + " is required"}
	case caps == nil || caps[0] != '{':
		return fasthttp.StatusBadRequest, &rpcError{code: codeInvalidParams, msg: "Invalid params: _meta " + metaClientCapabilities + " is required (an object)"}
	}
	if level := member(meta, metaLogLevel); level != nil && logLevel(level) < 0 {
		return fasthttp.StatusBadRequest, &rpcError{code: codeInvalidParams, msg: fmt.Sprintf(
			"Invalid params: _meta %s %s is not a log level (%s)", metaLogLevel, level, strings.Join(logLevels[:], ", "))}

	}

	if rerr := checkStandardHeaders(ctx, m); rerr != nil {
		return fasthttp.StatusBadRequest, rerr
	}
	if string(m.method) == "tools/call" {
		if rerr := s.checkParamHeaders(ctx, m.params); rerr != nil {
			return fasthttp.StatusBadRequest, rerr
		}
	}
	return fasthttp.StatusOK, nil
}

// --- Standard headers (SEP-2243) --------------------------------------------------

// checkStandardHeaders compares Mcp-Method with the method, and Mcp-Name
// with params.name for tools/call and prompts/get, params.uri for
// resources/read. Values are case-sensitive; surrounding whitespace is not
// part of them.
func checkStandardHeaders(ctx *fasthttp.RequestCtx, m *message) *rpcError {
	method := trimValue(ctx.Request.Header.Peek(headerMethod))
	switch {
	case len(method) == 0:
		return &rpcError{code: codeHeaderMismatch, msg: "Header mismatch: the Mcp-Method header is required"}
	case string(method) != string(m.method):
		return &rpcError{code: codeHeaderMismatch, msg: fmt.Sprintf(
			"Header mismatch: Mcp-Method header value %q does not match body value %q", method, m.method)}

	}
	switch string(m.method) {
	case "tools/call", "prompts/get":
		return checkMirrored(headerName, ctx.Request.Header.Peek(headerName), member(m.params, "name"))
	case "resources/read":
		return checkMirrored(headerName, ctx.Request.Header.Peek(headerName), member(m.params, "uri"))
	}
	return nil
}

// checkParamHeaders checks the Mcp-Param-{Name} headers of a tools/call:
// each property of the tool's input schema annotated with x-mcp-header
// whose argument is present needs its header, equal to the argument, and
// one whose argument is absent none. An unknown tool is left to toolsCall.
func (s *Server) checkParamHeaders(ctx *fasthttp.RequestCtx, params []byte) *rpcError {
	name := member(params, "name")
	if name == nil || name[0] != '"' {
		return nil
	}
	var t store.Tool
	var err error
	if vs := serverOf(ctx); vs != nil { // a virtual server's own names (servers.go)
		var ok bool
		if t, ok = vs.byName[string(unquote(name))]; !ok {
			return nil
		}
	} else {
		t, err = s.backend.Tool(ctx, string(unquote(name)))
	}
	schema := trimValue(t.InputSchema)
	if err != nil || !t.Enabled || validate(schema) != nil {
		return nil // toolsCall answers, from its own lookup
	}
	return walkParamHeaders(schema, member(params, "arguments"), ctx, nil)
}

// walkParamHeaders walks the properties of schema, and of its nested
// object properties, beside the arguments object args (nil: none), for the
// ones annotated with x-mcp-header. Only chains of properties keys are
// followed: an annotation anywhere else makes the tool invalid for clients,
// which then do not call it. With ctx, each annotated argument is checked
// against its Mcp-Param-* header (the first mismatch is returned); with
// out, the header is made from the argument (primitive values only).
func walkParamHeaders(schema, args []byte, ctx *fasthttp.RequestCtx, out *http.Header) *rpcError {
	props := member(schema, "properties")
	if props == nil || props[0] != '{' {
		return nil
	}
	for it := objectMembers(props); ; {
		k, prop, ok := it.next()
		if !ok {
			return nil
		}
		if prop[0] != '{' {
			continue
		}
		arg := member(args, string(unquote(k)))
		if h := member(prop, "x-mcp-header"); h != nil && h[0] == '"' && isToken(unquote(h)) {
			name := headerParamPrefix + string(unquote(h))
			if ctx != nil {
				if rerr := checkMirrored(name, ctx.Request.Header.Peek(name), arg); rerr != nil {
					return rerr
				}
			}
			if out != nil && arg != nil && arg[0] != '{' && arg[0] != '[' && arg[0] != 'n' {
				value := string(arg) // a number, true or false, as written
				if arg[0] == '"' {
					value = string(unquote(arg))
				}
				if *out == nil {
					*out = http.Header{}
				}
				out.Set(name, upstream.HeaderValue(value))
			}
		}
		if rerr := walkParamHeaders(prop, arg, ctx, out); rerr != nil {
			return rerr
		}
	}
}

// paramHeaders makes the Mcp-Param-* headers that the x-mcp-header
// annotations of schema ask for from the arguments args (nil: none), for
// a client that sent none: a session client's call that reaches an
// upstream in the 2026-07-28 form.
func paramHeaders(schema, args []byte) http.Header {
	if !bytes.Contains(schema, []byte("x-mcp-header")) {
		return nil // the common case, at the cost of a scan
	}
	schema, args = trimValue(schema), trimValue(args)
	if validate(schema) != nil || validate(args) != nil {
		return nil
	}
	var h http.Header
	walkParamHeaders(schema, args, nil, &h)
	return h
}

// checkMirrored compares the header name, whose value is header, with the
// body value it mirrors (raw JSON; nil or null: absent). The header is
// trimmed, must be visible ASCII, and is decoded when it has the form
// =?base64?...?=. Numbers compare numerically (42 and 42.0 are equal).
func checkMirrored(name string, header, body []byte) *rpcError {
	header = trimValue(header)
	if body != nil && body[0] == 'n' {
		body = nil
	}
	switch {
	case len(header) == 0 && body == nil:
		return nil
	case len(header) == 0:
		return &rpcError{code: codeHeaderMismatch, msg: "Header mismatch: the " + name + " header is required: the body has its value"}
	case body == nil:
		return &rpcError{code: codeHeaderMismatch, msg: "Header mismatch: " + name + " header sent, but the body has no value for it"}
	}
	for _, c := range header {
		if (c < 0x20 || c > 0x7e) && c != '\t' {
			return &rpcError{code: codeHeaderMismatch, msg: "Header mismatch: " + name + " header value has invalid characters"}
		}
	}
	value, ok := decodeHeaderValue(header)
	if !ok {
		return &rpcError{code: codeHeaderMismatch, msg: "Header mismatch: " + name + " header value is not valid Base64"}
	}
	if !sameValue(value, body) {
		return &rpcError{code: codeHeaderMismatch, msg: fmt.Sprintf(
			"Header mismatch: %s header value %q does not match body value %s", name, header, body)}

	}
	return nil
}

const (
	base64Prefix = "=?base64?"
	base64Suffix = "?="
)

// headerBase64 is the strict standard alphabet with padding: a value with
// missing padding or other characters is refused (SEP-2243's test cases).
var headerBase64 = base64.StdEncoding.Strict()

// decodeHeaderValue decodes a value of the form =?base64?...?=; any other
// value is itself.
func decodeHeaderValue(v []byte) ([]byte, bool) {
	if len(v) < len(base64Prefix)+len(base64Suffix) ||
		!bytes.HasPrefix(v, []byte(base64Prefix)) || !bytes.HasSuffix(v, []byte(base64Suffix)) {
		return v, true
	}
	dec, err := headerBase64.AppendDecode(nil, v[len(base64Prefix):len(v)-len(base64Suffix)])
	return dec, err == nil
}

// sameValue reports whether a header value equals the raw JSON body value.
// Only primitives can be mirrored: an object or an array never equals.
func sameValue(h, body []byte) bool {
	switch body[0] {
	case '"':
		return string(h) == string(unquote(body))
	case 't', 'f':
		return string(h) == string(body)
	case '{', '[':
		return false
	}
	hv, err := strconv.ParseFloat(string(h), 64)
	if err != nil {
		return false
	}
	bv, err := strconv.ParseFloat(string(body), 64)
	return err == nil && hv == bv
}

// isToken reports whether name is an HTTP field-name token (RFC 9110, 1*tchar).
func isToken(name []byte) bool {
	if len(name) == 0 {
		return false
	}
	for _, c := range name {
		switch {
		case c >= '0' && c <= '9', c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z':
		case bytes.IndexByte([]byte("!#$%&'*+-.^_`|~"), c) >= 0:
		default:
			return false
		}
	}
	return true
}

// --- Results ------------------------------------------------------------------------

// encodeModern encodes once what 2026-07-28 results carry.
func (s *Server) encodeModern() {
	b := []byte(`"_meta":{"io.modelcontextprotocol/serverInfo":{"name":"` + serverName + `","version":`)
	b = appendString(b, s.opt.Version)
	s.resultMeta = append(b, "}}"...)

	// "public": the list is the same for every user (access is still
	// checked on every request). It must become "private", on every page,
	// if tools are ever filtered per user.
	b = append([]byte(nil), `"ttlMs":`...)
	b = strconv.AppendInt(b, s.opt.CacheTTL.Milliseconds(), 10)
	s.cacheHints = append(b, `,"cacheScope":"public"`...)

	b = append([]byte(nil), `{"supportedVersions":`...)
	b = appendStrings(b, protocolVersions)
	s.discoverResult = append(b, `,"capabilities":`+modernCapabilities+`}`...)
}

// completeResult adds to the result object at out[start:] what 2026-07-28
// asks of it: "resultType":"complete" and the server's identity in _meta on
// every result, unless the result has them already (an upstream's, passed
// on as it is), and the caching hints on the cacheable ones (the lists,
// every page, server/discover and resources/read).
func (s *Server) completeResult(out []byte, start int, method []byte) []byte {
	res := trimValue(out[start:])
	if len(res) < 2 || res[0] != '{' {
		return out
	}
	n, hasType, hasMeta, hasHints := 0, false, false, false
	for it := objectMembers(res); ; n++ {
		k, _, ok := it.next()
		if !ok {
			break
		}
		hasType = hasType || keyIs(k, "resultType")
		hasMeta = hasMeta || keyIs(k, "_meta")
		hasHints = hasHints || keyIs(k, "ttlMs") || keyIs(k, "cacheScope")
	}
	out = out[:start+bytes.LastIndexByte(out[start:], '}')] // reopen the object
	if !hasType {
		out = appendMember(out, &n, []byte(`"resultType":"complete"`))
	}
	if !hasMeta {
		out = appendMember(out, &n, s.resultMeta)
	}
	switch string(method) {
	case "tools/list", "server/discover", "resources/list", "resources/templates/list", "prompts/list":
		out = appendMember(out, &n, s.cacheHints)
	case "resources/read":
		// An upstream's content: its own hints when it gave them (a
		// 2026-07-28 upstream), else stale at once (the spec's default),
		// since the gateway cannot tell its freshness.
		if !hasHints {
			out = appendMember(out, &n, []byte(`"ttlMs":0,"cacheScope":"public"`))
		}
	}
	return append(out, '}')
}

// appendMember appends encoded members to an object that has n so far.
func appendMember(out []byte, n *int, members []byte) []byte {
	if *n > 0 {
		out = append(out, ',')
	}
	*n++
	return append(out, members...)
}

// appendUnsupportedVersion appends the UnsupportedProtocolVersionError of
// a request for version requested: the versions served, newest first.
func appendUnsupportedVersion(out, id []byte, requested string) []byte {
	out = appendError(out, id, codeUnsupportedVersion, "Unsupported protocol version: "+requested)
	out = append(out[:len(out)-2], `,"data":{"supported":`...) // before the error's and the response's braces
	out = appendStrings(out, protocolVersions)
	out = append(out, `,"requested":`...)
	out = appendString(out, requested)
	return append(out, "}}}"...)
}

// member returns the raw value of obj's member name (the last one, as
// parseMessage reads duplicates), or nil when it has none or obj, a
// validated value or nil, is not an object.
func member(obj []byte, name string) []byte {
	if len(obj) == 0 || obj[0] != '{' {
		return nil
	}
	var val []byte
	for it := objectMembers(obj); ; {
		k, v, ok := it.next()
		if !ok {
			return val
		}
		if keyIs(k, name) {
			val = v
		}
	}
}

// --- Upstreams that speak 2026-07-28 -----------------------------------------------

// upstreamContext is callCtx, marked for the upstream client when the
// request is a 2026-07-28 one: an upstream that speaks that revision gets
// the request in its form, with the client's capabilities, log level and
// mirrored argument headers, and a multi-round-trip retry's inputResponses
// and requestState (upstream/modern.go). An older upstream gets it in the
// worker's session with it, as a legacy client's.
func (b *buffers) upstreamContext(ctx *fasthttp.RequestCtx, callCtx context.Context) context.Context {
	if b.modern == nil && b.params != nil {
		b.modern = newModern(ctx, b.params)
	}
	if b.modern == nil {
		return callCtx
	}
	return upstream.WithModern(callCtx, b.modern)
}

// newModern copies out of a 2026-07-28 request what goes on upstream.
func newModern(ctx *fasthttp.RequestCtx, params []byte) *upstream.Modern {
	meta := member(params, "_meta")
	m := &upstream.Modern{
		Capabilities:   bytes.Clone(member(meta, metaClientCapabilities)),
		ClientInfo:     bytes.Clone(member(meta, metaClientInfo)),
		InputResponses: bytes.Clone(member(params, "inputResponses")),
		RequestState:   bytes.Clone(member(params, "requestState")),
	}
	if level := member(meta, metaLogLevel); level != nil && level[0] == '"' {
		m.LogLevel = string(unquote(level))
	}
	// The Mcp-Param-* headers were checked against the arguments, which go
	// upstream as they are: they mirror them there too.
	ctx.Request.Header.VisitAll(func(k, v []byte) {
		if len(k) > len(headerParamPrefix) && strings.EqualFold(string(k[:len(headerParamPrefix)]), headerParamPrefix) {
			if m.Header == nil {
				m.Header = http.Header{}
			}
			m.Header.Add(string(k), string(v))
		}
	})
	return m
}
