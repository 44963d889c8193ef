package rpc

import (
	"bytes"
	"errors"
	"fmt"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/mcpgateway/mcpgateway/store"
)

// protocolVersions are the MCP revisions the gateway speaks, newest first.
// initialize echoes the client's version when it is listed here and answers
// the newest otherwise (MCP lifecycle, version negotiation).
var protocolVersions = []string{"2025-11-25", "2025-06-18", "2025-03-26", "2024-11-05"}

// supportedVersion returns the listed version equal to v (no allocation).
func supportedVersion(v []byte) (string, bool) {
	for _, pv := range protocolVersions {
		if string(v) == pv {
			return pv, true
		}
	}
	return "", false
}

// invoke runs one method and appends its result value to out.
func (s *Server) invoke(ctx *fasthttp.RequestCtx, m *message, buf *buffers, out []byte) ([]byte, *rpcError) {
	switch string(m.method) {
	case "initialize":
		return s.initialize(m.params, out)
	case "ping":
		return append(out, "{}"...), nil
	case "tools/list":
		return s.toolsList(ctx, out)
	case "tools/call":
		return s.toolsCall(ctx, m.params, buf, out)
	}
	if bytes.HasPrefix(m.method, []byte("notifications/")) {
		// Notifications (initialized, cancelled, ...) need no action here.
		// Sent as a request by mistake, they get an empty result.
		return append(out, "{}"...), nil
	}
	return s.bareTool(ctx, m, buf, out)
}

func (s *Server) initialize(params []byte, out []byte) ([]byte, *rpcError) {
	version := protocolVersions[0]
	if params != nil {
		if params[0] != '{' {
			return out, &rpcError{codeInvalidParams, "Invalid params: initialize params must be an object"}
		}
		for it := objectMembers(params); ; {
			k, v, ok := it.next()
			if !ok {
				break
			}
			if !keyIs(k, "protocolVersion") {
				continue
			}
			if v[0] != '"' {
				return out, &rpcError{codeInvalidParams, "Invalid params: protocolVersion must be a string"}
			}
			if pv, ok := supportedVersion(unquote(v)); ok {
				version = pv
			}
		}
	}
	out = append(out, `{"protocolVersion":`...)
	out = appendString(out, version)
	out = append(out, `,"capabilities":{"tools":{"listChanged":false}},"serverInfo":{"name":"`+serverName+`","version":`...)
	out = appendString(out, s.opt.Version)
	return append(out, "}}"...), nil
}

// fallbackSchema stands in for a stored input schema that is missing or not
// valid JSON, so that one bad row cannot make tools/list invalid JSON.
const fallbackSchema = `{"type":"object"}`

func (s *Server) toolsList(ctx *fasthttp.RequestCtx, out []byte) ([]byte, *rpcError) {
	tools, err := s.backend.Tools(ctx)
	if err != nil {
		return out, s.storeError(ctx, "listing tools", err)
	}
	out = append(out, `{"tools":[`...)
	n := 0
	for i := range tools {
		t := &tools[i]
		if !t.Enabled {
			continue
		}
		if n > 0 {
			out = append(out, ',')
		}
		n++
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
		out = append(out, '}')
	}
	return append(out, "]}"...), nil
}

// toolsCall runs tools/call. An unknown or disabled tool is a protocol
// error, -32602 "Unknown tool: NAME", as in the MCP specification's example;
// a tool that runs and fails answers a result with isError.
func (s *Server) toolsCall(ctx *fasthttp.RequestCtx, params []byte, buf *buffers, out []byte) ([]byte, *rpcError) {
	if params == nil || params[0] != '{' {
		return out, &rpcError{codeInvalidParams, "Invalid params: tools/call params must be an object with a name"}
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
				return out, &rpcError{codeInvalidParams, "Invalid params: name must be a string"}
			}
			name, hasName = unquote(v), true
		case "arguments":
			switch v[0] {
			case '{':
				args = v
			case 'n':
				args = nil
			default:
				return out, &rpcError{codeInvalidParams, "Invalid params: arguments must be an object"}
			}
		}
	}
	if !hasName {
		return out, &rpcError{codeInvalidParams, "Invalid params: name is required"}
	}
	tool, found, rerr := s.findTool(ctx, name)
	if rerr != nil {
		return out, rerr
	}
	if !found {
		return out, &rpcError{codeInvalidParams, "Unknown tool: " + string(name)}
	}
	if rerr := s.rateLimit(tool, buf); rerr != nil {
		return out, rerr
	}
	return s.runTool(tool, args, requestTime(ctx), buf, out), nil
}

// bareTool runs a tool named as the method itself, its arguments as params:
// the form of the tuning guide's hey payload.
func (s *Server) bareTool(ctx *fasthttp.RequestCtx, m *message, buf *buffers, out []byte) ([]byte, *rpcError) {
	tool, found, rerr := s.findTool(ctx, m.method)
	if rerr != nil {
		return out, rerr
	}
	if !found {
		return out, &rpcError{codeMethodNotFound, "Method not found: " + string(m.method)}
	}
	if m.params != nil && m.params[0] != '{' {
		return out, &rpcError{codeInvalidParams, "Invalid params: the arguments of tool " + tool + " must be an object"}
	}
	if rerr := s.rateLimit(tool, buf); rerr != nil {
		return out, rerr
	}
	return s.runTool(tool, m.params, requestTime(ctx), buf, out), nil
}

// findTool asks the Backend whether name is a known, enabled tool.
func (s *Server) findTool(ctx *fasthttp.RequestCtx, name []byte) (string, bool, *rpcError) {
	n := toolName(name)
	t, err := s.backend.Tool(ctx, n)
	switch {
	case err == nil:
		return n, t.Enabled, nil
	case errors.Is(err, store.ErrNotFound):
		return n, false, nil
	default:
		return n, false, s.storeError(ctx, "looking up tool "+n, err)
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

// runTool runs a built-in tool and appends its CallToolResult.
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
	out = append(out, `}],"isError":`...)
	out = appendBool(out, failed)
	return append(out, '}')
}
