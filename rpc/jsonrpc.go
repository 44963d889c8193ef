package rpc

import (
	"bytes"
	"fmt"
	"strconv"

	"github.com/valyala/fasthttp"
)

// JSON-RPC 2.0 error codes, and those of MCP.
const (
	codeParseError         = -32700
	codeInvalidRequest     = -32600
	codeMethodNotFound     = -32601
	codeInvalidParams      = -32602
	codeInternalError      = -32603
	codeSessionNotFound    = -32001 // /mcp: unknown or ended Mcp-Session-Id (as the MCP SDKs use)
	codeHeaderMismatch     = -32020 // MCP 2026-07-28: a standard header missing or unequal to the body
	codeMissingCapability  = -32021 // MCP 2026-07-28: MissingRequiredClientCapabilityError (an upstream's)
	codeUnsupportedVersion = -32022 // MCP 2026-07-28: UnsupportedProtocolVersionError
)

// rpcError is a JSON-RPC error object.
type rpcError struct {
	code int
	msg  string
	data []byte // the error's data member (an upstream's, passed on); nil: none
}

// Error makes an rpcError an error where one travels as such (mcp_relay.go).
func (e *rpcError) Error() string { return e.msg }

// transport tells the dispatcher which route a message came through. /mcp
// accepts JSON-RPC responses from the client, keeps initialize unbatched and
// applies the rules of the request's MCP revision (buffers.rev): batches only
// in 2025-03-26, string or integer ids, 400 for what cannot be answered.
// /rpc stays plain, lenient JSON-RPC 2.0 (docs/rpc.md).
type transport uint8

const (
	transportRPC transport = iota
	transportMCP
)

// message is one decoded JSON-RPC message. Its slices point into the body.
type message struct {
	id       []byte // raw JSON id (string, number or null); nil: a notification
	method   []byte // the unquoted method name
	params   []byte // raw params (an object or array); nil when absent or null
	response bool   // a JSON-RPC response (result or error, no method)
	raw      []byte // the whole message, for a response (a relayed request's answer)
}

// checkBody answers 413 when the body is over the limit. The worker's fasthttp
// server enforces the limit too; this check keeps the handler safe on its own.
func (s *Server) checkBody(ctx *fasthttp.RequestCtx) ([]byte, bool) {
	body := ctx.PostBody()
	if len(body) > s.opt.MaxRequestBodySize {
		writeDetail(ctx, fasthttp.StatusRequestEntityTooLarge, fmt.Sprintf(
			"Request body too large: %d bytes (limit %d)", len(body), s.opt.MaxRequestBodySize))
		return nil, false
	}
	return body, true
}

// serveRPC answers POST /rpc.
func (s *Server) serveRPC(ctx *fasthttp.RequestCtx, p principal) {
	if _, ok := checkVersionHeader(ctx, transportRPC); !ok {
		return
	}
	body, ok := s.checkBody(ctx)
	if !ok {
		return
	}
	buf := getBuffers()
	buf.user = p.email
	status, answered := s.process(ctx, body, buf, transportRPC)
	finish(ctx, status, answered, buf.out)
	putBuffers(buf)
}

// finish writes the response built in out. When nothing is to be answered
// (every message was a notification, or a client's response) the status is
// 202 Accepted with no body, as the MCP Streamable HTTP transport requires.
func finish(ctx *fasthttp.RequestCtx, status int, answered bool, out []byte) {
	if !answered {
		ctx.Response.SetStatusCode(fasthttp.StatusAccepted)
		return
	}
	writeJSON(ctx, status, out)
}

// process runs the JSON-RPC payload of one HTTP request. It leaves the
// response body in buf.out and returns the HTTP status, and whether there
// is anything to answer at all.
func (s *Server) process(ctx *fasthttp.RequestCtx, body []byte, buf *buffers, t transport) (status int, answered bool) {
	if err := validate(body); err != nil {
		buf.out = appendError(buf.out[:0], nil, codeParseError, "Parse error: "+err.Error())
		return fasthttp.StatusBadRequest, true
	}
	return s.processValue(ctx, trimValue(body), buf, t)
}

// processValue is process for a body that passed validate, trimmed.
func (s *Server) processValue(ctx *fasthttp.RequestCtx, v []byte, buf *buffers, t transport) (status int, answered bool) {
	if v[0] != '[' {
		m, perr := parse(v, t)
		if t == transportMCP && perr != nil && m.id == nil {
			// Input the server cannot accept and no id to answer: an HTTP
			// error, with an id-less error body (transports, sending
			// messages to the server).
			buf.out = appendIDLessError(buf.out[:0], buf.rev, perr.code, perr.msg)
			return fasthttp.StatusBadRequest, true
		}
		buf.id = m.id
		buf.out = s.reply(ctx, &m, perr, buf, buf.out[:0], t, false)
		return limitedStatus(ctx, buf, unavailableStatus(ctx), false), len(buf.out) > 0
	}
	if t == transportMCP && buf.rev != rev20250326 {
		// Batches were removed in 2025-06-18: the body is one message.
		buf.out = appendIDLessError(buf.out[:0], buf.rev, codeInvalidRequest,
			"Invalid Request: MCP "+buf.rev.String()+" has no JSON-RPC batches (only 2025-03-26 had them)")
		return fasthttp.StatusBadRequest, true
	}

	// A batch: count first, so that an oversized batch runs nothing.
	n := 0
	for it := arrayElements(v); ; n++ {
		if _, ok := it.next(); !ok {
			break
		}
	}
	switch {
	case n == 0:
		buf.out = appendIDLessError(buf.out[:0], buf.rev, codeInvalidRequest, "Invalid Request: empty batch")
		return fasthttp.StatusOK, true
	case n > s.opt.MaxBatchSize:
		buf.out = appendIDLessError(buf.out[:0], buf.rev, codeInvalidRequest, fmt.Sprintf(
			"Invalid Request: batch of %d requests exceeds the limit of %d", n, s.opt.MaxBatchSize))
		return fasthttp.StatusOK, true
	}
	out := append(buf.out[:0], '[')
	replies := 0
	for it := arrayElements(v); ; {
		el, ok := it.next()
		if !ok {
			break
		}
		m, perr := parse(el, t)
		mark := len(out)
		if replies > 0 {
			out = append(out, ',')
		}
		before := len(out)
		out = s.reply(ctx, &m, perr, buf, out, t, true)
		if len(out) == before { // a notification: no reply, drop the comma
			out = out[:mark]
			continue
		}
		replies++
	}
	buf.out = append(out, ']')
	return limitedStatus(ctx, buf, fasthttp.StatusOK, true), replies > 0
}

// reply appends the response to one message (nothing for a notification).
func (s *Server) reply(ctx *fasthttp.RequestCtx, m *message, perr *rpcError, buf *buffers, out []byte, t transport, inBatch bool) []byte {
	if perr != nil {
		// An invalid request is always answered (id-less when it had none);
		// other errors in a notification are not (JSON-RPC 2.0, section 4.1).
		switch {
		case m.id != nil:
			return appendError(out, m.id, perr.code, perr.msg)
		case perr.code == codeInvalidRequest:
			return appendIDLessError(out, buf.rev, perr.code, perr.msg)
		}
		return out
	}
	if m.response {
		if t == transportMCP { // a reply to a server request: accepted, nothing to say
			s.takeReply(m.raw, m.id, buf) // mcp_relay.go
			return out
		}
		return appendError(out, m.id, codeInvalidRequest, "Invalid Request: method is required")
	}
	if t == transportMCP && inBatch && string(m.method) == "initialize" {
		return appendError(out, m.id, codeInvalidRequest, "Invalid Request: initialize must not be part of a batch")
	}
	return s.invokeSafe(ctx, m, buf, out)
}

// invokeSafe runs a method and appends its response. A panic in the method is
// recovered here, so that it costs only this message its answer (-32603)
// and not the other messages of a batch, nor the process.
func (s *Server) invokeSafe(ctx *fasthttp.RequestCtx, m *message, buf *buffers, out []byte) (res []byte) {
	orig, mark := out, len(out)
	defer func() {
		if r := recover(); r != nil {
			s.notePanic(r, ctx)
			res = orig[:mark]
			if m.id != nil {
				res = appendError(res, m.id, codeInternalError, "Internal error")
			}
		}
	}()
	out = appendResultHead(out, m.id)
	start := len(out)
	out, rerr := s.invoke(ctx, m, buf, out)
	if m.id == nil { // a notification: ran for its effect, no reply
		return out[:mark]
	}
	return s.endReply(out, mark, start, m.id, m.method, buf.rev, rerr)
}

// endReply ends the response to request id whose result value was
// appended at out[start:], after a head that began at mark: the error
// instead when there is one, the 2026-07-28 additions for rev.
func (s *Server) endReply(out []byte, mark, start int, id, method []byte, rev revision, rerr *rpcError) []byte {
	switch {
	case rerr != nil && rerr.data != nil:
		out = appendError(out[:mark], id, rerr.code, rerr.msg)
		out = append(out[:len(out)-2], `,"data":`...) // before the error's and the response's braces
		out = append(out, rerr.data...)
		return append(out, "}}"...)
	case rerr != nil:
		return appendError(out[:mark], id, rerr.code, rerr.msg)
	case rev.modern():
		return append(s.completeResult(out, start, method), '}') // mcp_modern.go
	default:
		return append(out, '}')
	}
}

// parse decodes one message that came through t. On /mcp a request id must
// be a string or an integer, never null (MCP base protocol); one that is not
// is unusable, so it is dropped and the error is id-less.
func parse(v []byte, t transport) (message, *rpcError) {
	m, perr := parseMessage(v)
	if t != transportMCP || m.id == nil || m.response || isMCPID(m.id) {
		return m, perr
	}
	m.id = nil
	if perr == nil {
		perr = &rpcError{code: codeInvalidRequest, msg: "Invalid Request: id must be a string or an integer"}
	}
	return m, perr
}

// isMCPID reports whether a raw JSON id is a string or an integer: no null,
// no fraction, no exponent.
func isMCPID(id []byte) bool {
	switch {
	case id[0] == '"':
		return true
	case id[0] != '-' && (id[0] < '0' || id[0] > '9'):
		return false
	}
	return bytes.IndexAny(id, ".eE") < 0
}

// parseMessage decodes one JSON-RPC message from a validated JSON value.
func parseMessage(v []byte) (m message, perr *rpcError) {
	if v[0] != '{' {
		return m, &rpcError{code: codeInvalidRequest, msg: "Invalid Request: a request must be a JSON object"}
	}
	var version, method []byte
	hasMethod, hasResult, badID := false, false, false
	for it := objectMembers(v); ; {
		k, val, ok := it.next()
		if !ok {
			break
		}
		switch string(unquote(k)) {
		case "jsonrpc":
			version = val
		case "method":
			method, hasMethod = val, true
		case "id":
			switch val[0] {
			case '"', 'n', '-', '0', '1', '2', '3', '4', '5', '6', '7', '8', '9':
				m.id, badID = val, false
			default:
				m.id, badID = nil, true
			}
		case "params":
			m.params = val
		case "result", "error":
			hasResult = true
		}
	}
	switch {
	case badID:
		return m, &rpcError{code: codeInvalidRequest, msg: "Invalid Request: id must be a string, a number or null"}
	case version == nil || version[0] != '"' || string(unquote(version)) != "2.0":
		return m, &rpcError{code: codeInvalidRequest, msg: `Invalid Request: jsonrpc must be "2.0"`}
	case !hasMethod && hasResult && m.id != nil:
		m.response, m.raw = true, v
		return m, nil
	case !hasMethod:
		return m, &rpcError{code: codeInvalidRequest, msg: "Invalid Request: method is required"}
	case method[0] != '"':
		return m, &rpcError{code: codeInvalidRequest, msg: "Invalid Request: method must be a string"}
	}
	m.method = unquote(method)
	if m.params != nil {
		switch m.params[0] {
		case '{', '[':
		case 'n':
			m.params = nil // null: as if absent
		default:
			return m, &rpcError{code: codeInvalidParams, msg: "Invalid params: params must be an object or an array"}
		}
	}
	return m, nil
}

// --- Response encoding ------------------------------------------------------------

func appendID(out, id []byte) []byte {
	if id == nil {
		return append(out, "null"...)
	}
	return append(out, id...)
}

// appendResultHead starts a success response; the caller appends the result
// value and the closing brace.
func appendResultHead(out, id []byte) []byte {
	out = append(out, `{"jsonrpc":"2.0","id":`...)
	out = appendID(out, id)
	return append(out, `,"result":`...)
}

func appendError(out, id []byte, code int, msg string) []byte {
	out = append(out, `{"jsonrpc":"2.0","id":`...)
	out = appendID(out, id)
	return appendErrorMember(out, code, msg)
}

// appendIDLessError appends an error whose request id is unknown, in the
// form of revision rev: "id":null, or no id at all (revision.nullID).
func appendIDLessError(out []byte, rev revision, code int, msg string) []byte {
	if rev.nullID() {
		return appendError(out, nil, code, msg)
	}
	return appendErrorMember(append(out, `{"jsonrpc":"2.0"`...), code, msg)
}

// appendErrorMember ends an error response: the error member and the brace.
func appendErrorMember(out []byte, code int, msg string) []byte {
	out = append(out, `,"error":{"code":`...)
	out = strconv.AppendInt(out, int64(code), 10)
	out = append(out, `,"message":`...)
	out = appendString(out, msg)
	return append(out, "}}"...)
}
