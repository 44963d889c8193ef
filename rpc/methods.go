package rpc

import (
	"bytes"
	"errors"
	"fmt"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/mcpgateway/mcpgateway/store"
)

// invoke runs one method and appends its result value to out.
func (s *Server) invoke(ctx *fasthttp.RequestCtx, m *message, buf *buffers, out []byte) ([]byte, *rpcError) {
	if buf.vs != nil { // on a virtual server's endpoint (servers.go)
		if out, rerr, done := s.invokeOnServer(ctx, m, buf, out); done {
			return out, rerr
		}
	}
	switch string(m.method) {
	case "initialize":
		return s.initialize(m.params, out)
	case "ping":
		return append(out, "{}"...), nil
	case "tools/list":
		return s.toolsList(ctx, m.params, out)
	case "tools/call":
		return s.toolsCall(ctx, m.params, buf, out)
	case "server/discover":
		if buf.rev.modern() { // a method of 2026-07-28 only
			return append(out, s.discoverResult...), nil
		}
	case "resources/list": // the upstreams' resources and prompts (resources.go)
		return s.listFederated(ctx, &resourcesList, m.params, out)
	case "resources/templates/list":
		return s.listFederated(ctx, &templatesList, m.params, out)
	case "resources/read":
		return s.resourcesRead(ctx, m.params, buf, out)
	case "prompts/list":
		return s.listFederated(ctx, &promptsList, m.params, out)
	case "prompts/get":
		return s.promptsGet(ctx, m.params, buf, out)
	case "resources/subscribe", "resources/unsubscribe": // legacy sessions (subscriptions.go)
		return s.subscribeMethod(ctx, m.params, buf, string(m.method) == "resources/subscribe", out)
	case "completion/complete": // the upstreams' completions (completion.go)
		return s.complete(ctx, buf, m.params, out)
	case "logging/setLevel":
		if buf.sid != nil && s.levels != nil { // legacy sessions only (mcp_logging.go)
			return s.setLevel(ctx, m.params, buf, out)
		}
	}
	if bytes.HasPrefix(m.method, []byte("notifications/")) {
		if string(m.method) == noteCancelled {
			s.cancelled(m.params, buf) // mcp_stream.go
		}
		// Other notifications (initialized, ...) need no action here.
		// Sent as a request by mistake, they get an empty result.
		return append(out, "{}"...), nil
	}
	return s.bareTool(ctx, m, buf, out)
}

// initialize answers the negotiated revision (mcp.go:negotiate). On /mcp
// the same revision is recorded in the session id that serveMCP issues.
func (s *Server) initialize(params []byte, out []byte) ([]byte, *rpcError) {
	rev, rerr := negotiate(params)
	if rerr != nil {
		return out, rerr
	}
	out = append(out, `{"protocolVersion":`...)
	out = appendString(out, rev.String())
	if s.levels != nil { // logging/setLevel is offered (mcp_logging.go)
		out = append(out, `,"capabilities":`+sessionLoggingCapabilities...)
	} else {
		out = append(out, `,"capabilities":`+serverCapabilities...)
	}
	out = append(out, `,"serverInfo":{"name":"`+serverName+`","version":`...)
	out = appendString(out, s.opt.Version)
	return append(out, "}}"...), nil
}

// serverCapabilities are what initialize declares: tools, and the
// upstreams' prompts and resources (resources.go), subscriptions to the
// resources (subscriptions.go) and completions (completion.go), with no
// list_changed notifications. prompts and resources are declared always,
// not only while an upstream offers them: the answer stays a constant, and
// a session opened before an upstream is registered still sees its
// resources and prompts (capabilities cannot change within a session);
// with none, the lists are empty.
const serverCapabilities = `{"completions":{},"prompts":{"listChanged":false},"resources":{"subscribe":true,"listChanged":false},"tools":{"listChanged":false}}`

// sessionLoggingCapabilities are initialize's when the Backend keeps
// session log levels (and subscriptions): serverCapabilities and logging.
const sessionLoggingCapabilities = `{"completions":{},"logging":{},"prompts":{"listChanged":false},"resources":{"subscribe":true,"listChanged":false},"tools":{"listChanged":false}}`

// modernCapabilities are server/discover's: 2026-07-28 requests may carry a
// logLevel, and then get an upstream's log messages on their stream
// (mcp_stream.go), which needs logging declared. Legacy sessions set theirs
// with logging/setLevel: initialize declares the same when the Backend
// keeps session levels (mcp_logging.go).
const modernCapabilities = `{"completions":{},"logging":{},"prompts":{"listChanged":false},"resources":{"listChanged":false},"tools":{"listChanged":false}}`

// fallbackSchema stands in for a stored input schema that is missing or not
// valid JSON, so that one bad row cannot make tools/list invalid JSON.
const fallbackSchema = `{"type":"object"}`

// toolsList answers one page of tools/list: at most toolsPageSize tools
// named after the cursor's (pagination.go), and nextCursor when more follow.
func (s *Server) toolsList(ctx *fasthttp.RequestCtx, params []byte, out []byte) ([]byte, *rpcError) {
	after, rerr := readCursor(params)
	if rerr != nil {
		return out, rerr
	}
	tools, err := s.backend.Tools(ctx)
	if err != nil {
		return out, s.storeError(ctx, "listing tools", err)
	}
	return appendToolsPage(out, tools, after), nil
}

// appendToolsPage appends the page of tools (sorted by name) that follows
// the cursor's name: the gateway's catalogue, or a virtual server's.
func appendToolsPage(out []byte, tools []store.Tool, after string) []byte {
	tools = toolsAfter(tools, after)
	out = append(out, `{"tools":[`...)
	n, last := 0, ""
	for i := range tools {
		t := &tools[i]
		if !t.Enabled {
			continue
		}
		if n == toolsPageSize { // and this one is the next page's first
			out = append(out, `],"nextCursor":`...)
			out = appendCursor(out, last)
			return append(out, '}')
		}
		if n > 0 {
			out = append(out, ',')
		}
		n, last = n+1, t.Name
		out = append(out, `{"name":`...)
		out = appendString(out, t.Name)
		out = append(out, `,"description":`...)
		out = appendString(out, t.Description)
		out = append(out, `,"inputSchema":`...)
		if schema := trimValue(t.InputSchema); len(schema) > 0 && schema[0] == '{' && validate(schema) == nil {
			out = append(out, schema...)
		} else {
			out = append(out, fallbackSchema...)
		}
		if schema := outputSchema(t.Name); schema != "" && t.Gateway == "" { // a built-in's (a virtual server may show an upstream's tool under a built-in's name)
			out = append(out, `,"outputSchema":`...)
			out = append(out, schema...)
		} else if schema := trimValue(t.OutputSchema); len(schema) > 0 && schema[0] == '{' && validate(schema) == nil {
			out = append(out, `,"outputSchema":`...)
			out = append(out, schema...) // an upstream's, as it lists it
		}
		out = append(out, '}')
	}
	return append(out, "]}"...)
}

// toolsCall runs tools/call. An unknown or disabled tool is a protocol
// error, -32602 "Unknown tool: NAME", as in the MCP specification's example;
// a tool that runs and fails answers a result with isError.
func (s *Server) toolsCall(ctx *fasthttp.RequestCtx, params []byte, buf *buffers, out []byte) ([]byte, *rpcError) {
	if params == nil || params[0] != '{' {
		return out, &rpcError{code: codeInvalidParams, msg: "Invalid params: tools/call params must be an object with a name"}
	}
	var name, args []byte
	hasName := false
	for it := objectMembers(params); ; {
		k, v, ok := it.next()
		if !ok {
			break
		}
		switch string(unquote(k)) {
		case "name":
			if v[0] != '"' {
				return out, &rpcError{code: codeInvalidParams, msg: "Invalid params: name must be a string"}
			}
			name, hasName = unquote(v), true
		case "arguments":
			switch v[0] {
			case '{':
				args = v
			case 'n':
				args = nil
			default:
				return out, &rpcError{code: codeInvalidParams, msg: "Invalid params: arguments must be an object"}
			}
		}
	}
	if !hasName {
		return out, &rpcError{code: codeInvalidParams, msg: "Invalid params: name is required"}
	}
	tool, t, found, rerr := s.findCallable(ctx, buf, name) // servers.go
	if rerr != nil {
		return out, rerr
	}
	if !found {
		return out, &rpcError{code: codeInvalidParams, msg: "Unknown tool: " + string(name)}
	}
	if rerr := s.rateLimit(tool, buf); rerr != nil {
		return out, rerr
	}
	if t.Gateway != "" {
		if s.deferToStream(ctx, t, params, args, buf) {
			return out, nil // answered over SSE (mcp_stream.go)
		}
		return s.callUpstreamCancellable(ctx, t, args, buf, out)
	}
	if t.REST != nil {
		return s.callREST(ctx, t, args, buf, out) // rest.go
	}
	return s.runTool(tool, args, requestTime(ctx), buf, out), nil
}

// bareTool runs a tool named as the method itself, its arguments as params:
// the form of the tuning guide's hey payload.
func (s *Server) bareTool(ctx *fasthttp.RequestCtx, m *message, buf *buffers, out []byte) ([]byte, *rpcError) {
	tool, t, found, rerr := s.findTool(ctx, m.method)
	if rerr != nil {
		return out, rerr
	}
	if !found {
		return out, &rpcError{code: codeMethodNotFound, msg: "Method not found: " + string(m.method)}
	}
	if m.params != nil && m.params[0] != '{' {
		return out, &rpcError{code: codeInvalidParams, msg: "Invalid params: the arguments of tool " + tool + " must be an object"}
	}
	if rerr := s.rateLimit(tool, buf); rerr != nil {
		return out, rerr
	}
	if t.Gateway != "" {
		return s.callUpstream(ctx, t, m.params, buf, out)
	}
	if t.REST != nil {
		return s.callREST(ctx, t, m.params, buf, out) // rest.go
	}
	return s.runTool(tool, m.params, requestTime(ctx), buf, out), nil
}

// findTool asks the Backend whether name is a known, enabled tool.
func (s *Server) findTool(ctx *fasthttp.RequestCtx, name []byte) (string, store.Tool, bool, *rpcError) {
	n := toolName(name)
	t, err := s.backend.Tool(ctx, n)
	switch {
	case err == nil:
		return n, t, t.Enabled, nil
	case errors.Is(err, store.ErrNotFound):
		return n, t, false, nil
	default:
		return n, t, false, s.storeError(ctx, "looking up tool "+n, err)
	}
}

// toolName turns the name into a string, without allocating for the
// built-in tools (the Backend lookup needs a string; this is the hot path).
func toolName(name []byte) string {
	switch string(name) {
	case toolConvertTime:
		return toolConvertTime
	case toolGetSystemTime:
		return toolGetSystemTime
	}
	return string(name)
}

// runTool runs a built-in tool and appends its CallToolResult. A success of
// a tool with an outputSchema carries its JSON twice: as structuredContent,
// and as the text block that clients older than structured content read
// (MCP tools, "Structured Content").
func (s *Server) runTool(name string, args []byte, now time.Time, buf *buffers, out []byte) []byte {
	text, failed := buf.text[:0], false
	switch name {
	case toolConvertTime:
		text, failed = s.convertTime(args, now, text)
	case toolGetSystemTime:
		text, failed = s.getSystemTime(args, now, text)
	default:
		// Registered in the store but not built into this gateway.
		text, failed = fmt.Appendf(text, "tool %q has no implementation in this gateway", name), true
	}
	buf.text = text
	out = append(out, `{"content":[{"type":"text","text":`...)
	out = appendString(out, text)
	out = append(out, `}]`...)
	if !failed && outputSchema(name) != "" {
		out = append(out, `,"structuredContent":`...)
		out = append(out, text...)
	}
	out = append(out, `,"isError":`...)
	out = appendBool(out, failed)
	return append(out, '}')
}
