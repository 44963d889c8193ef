package rpc

import (
	"bytes"

	"github.com/valyala/fasthttp"
)

// Request priority (worker.App.Essential): a worker that sheds load admits
// essential requests first. For MCP they are the ones that let a client
// connect and discover what it may call (initialize, server/discover, ping,
// tools/list), which are cheap and without which a client cannot start at
// all, before the tool calls that fill the worker.

// essentialMethods are the essential JSON-RPC methods. server/discover is
// 2026-07-28's first request, as initialize is the earlier revisions'.
// resources/list and prompts/list are not: each asks every upstream
// (resources.go:gather) and may wait up to the request's time, like a tool
// call, and a client can start without them.
var essentialMethods = [...]string{
	"initialize", "notifications/initialized", "ping", "server/discover", "tools/list",
}

// headerMethod is MCP 2026-07-28's copy of the JSON-RPC method in a header
// (SEP-2243), there so that intermediaries need not parse bodies.
const headerMethod = "Mcp-Method"

// essentialPeek bounds how much of a body Essential looks at. The requests
// it is after are a few hundred bytes; a longer object is a tool call.
const essentialPeek = 4 << 10

// Essential reports whether a request is essential: an MCP request (POST to
// /rpc or /mcp) whose JSON-RPC method is one of essentialMethods, or a
// readiness probe (GET /ready: a shedding worker must not fail readiness,
// which would take an overloaded fleet out of service at once). Set it as
// the worker's App.Essential.
//
// It runs before admission on every request of a worker that sheds, so it
// never parses: the Mcp-Method header, when present, rules a request out at
// once; otherwise, and to confirm a header that claims an essential method
// (the header is the client's word, and a tool call must not buy priority
// with it), it scans the first essentialPeek bytes of the body for the
// top-level "method" (essentialBody). A batch, a body it cannot read that way,
// a tool call or a bare tool name as the method (the guide's convert_time)
// is not essential. It allocates nothing.
func (s *Server) Essential(ctx *fasthttp.RequestCtx) bool {
	if !ctx.IsPost() {
		return (ctx.IsGet() || ctx.IsHead()) && string(ctx.Path()) == "/ready"
	}
	switch string(ctx.Path()) {
	case "/rpc", "/rpc/", "/mcp", "/mcp/":
	default:
		return false
	}
	if h := ctx.Request.Header.Peek(headerMethod); len(h) > 0 && !essentialName(h) {
		return false
	}
	return essentialBody(ctx.PostBody())
}

// essentialName reports whether name (unquoted) is an essential method.
func essentialName(name []byte) bool {
	for _, m := range essentialMethods {
		if string(name) == m {
			return true
		}
	}
	return false
}

// essentialRaw reports whether the raw JSON string raw (with its quotes) is
// an essential method.
func essentialRaw(raw []byte) bool {
	for _, m := range essentialMethods {
		if jsonStringIs(raw, m) {
			return true
		}
	}
	return false
}

// essentialBody reports whether body is a JSON-RPC request object whose
// top-level "method" is essential, looking at its first essentialPeek bytes
// without parsing it. Of duplicate "method" members the last counts, as in
// parseMessage: so an essential method is only taken once the object has
// ended within the peek, while a method that is not essential ends the scan
// at once (the common case: a tool call is not scanned past its method). A
// batch, no method, a method that is not a string, an object that does not
// end within the peek, or something that is not JSON, is not essential. It
// is bounded by the peek whatever the input, and does not recurse.
func essentialBody(body []byte) bool {
	b := body
	if len(b) > essentialPeek {
		b = b[:essentialPeek]
	}
	i := skipWS(b, 0)
	if i >= len(b) || b[i] != '{' {
		return false
	}
	essential := false
	for i++; ; i++ { // i is past '{' or ','
		if i = skipWS(b, i); i >= len(b) || b[i] != '"' {
			return false // {}, a trailing comma, or not JSON
		}
		ke, ok := peekString(b, i)
		if !ok {
			return false
		}
		key := b[i:ke]
		if i = skipWS(b, ke); i >= len(b) || b[i] != ':' {
			return false
		}
		if i = skipWS(b, i+1); i >= len(b) {
			return false
		}
		ve, ok := peekValue(b, i)
		if !ok {
			return false
		}
		if jsonStringIs(key, "method") {
			if b[i] != '"' || !essentialRaw(b[i:ve]) {
				return false
			}
			essential = true
		}
		if i = skipWS(b, ve); i >= len(b) {
			return false
		}
		switch b[i] {
		case ',':
			continue
		case '}':
			return essential
		}
		return false
	}
}

// peekString returns the offset just past the string at b[i] == '"', and
// false if it does not end within b. A quote ends it unless an odd number of
// backslashes precede it.
func peekString(b []byte, i int) (int, bool) {
	for j := i + 1; j < len(b); {
		k := bytes.IndexByte(b[j:], '"')
		if k < 0 {
			break
		}
		q := j + k
		n := 0
		for p := q - 1; p > i && b[p] == '\\'; p-- {
			n++
		}
		if n%2 == 0 {
			return q + 1, true
		}
		j = q + 1
	}
	return len(b), false
}

// peekValue returns the offset just past the value at b[i], and false if it
// does not end within b. Containers are skipped by counting brackets outside
// strings; scalars run to the next delimiter.
func peekValue(b []byte, i int) (int, bool) {
	switch b[i] {
	case '"':
		return peekString(b, i)
	case '{', '[':
		depth := 0
		for j := i; j < len(b); j++ {
			switch b[j] {
			case '"':
				end, ok := peekString(b, j)
				if !ok {
					return len(b), false
				}
				j = end - 1
			case '{', '[':
				depth++
			case '}', ']':
				if depth--; depth == 0 {
					return j + 1, true
				}
			}
		}
		return len(b), false
	}
	j := i
	for j < len(b) && !isSpace(b[j]) && b[j] != ',' && b[j] != '}' && b[j] != ']' {
		j++
	}
	return j, j < len(b)
}

// jsonStringIs reports whether the raw JSON string raw (with its quotes)
// holds exactly name, an ASCII string, decoding escapes as it goes
// (without allocating): "tools\/list" and "\u0070ing" count.
func jsonStringIs(raw []byte, name string) bool {
	in := raw[1 : len(raw)-1]
	k := 0
	for i := 0; i < len(in); k++ {
		c := in[i]
		if c != '\\' {
			i++
		} else {
			if i+1 >= len(in) {
				return false
			}
			switch e := in[i+1]; e {
			case '"', '\\', '/':
				c = e
				i += 2
			case 'u':
				if i+6 > len(in) {
					return false
				}
				r := 0
				for _, h := range in[i+2 : i+6] {
					if !isHex(h) {
						return false
					}
					r = r<<4 | hexVal(h)
				}
				if r >= 0x80 {
					return false // names are ASCII
				}
				c = byte(r)
				i += 6
			default: // \b \f \n \r \t: in no name
				return false
			}
		}
		if k >= len(name) || name[k] != c {
			return false
		}
	}
	return k == len(name)
}

func hexVal(c byte) int {
	switch {
	case c >= '0' && c <= '9':
		return int(c - '0')
	case c >= 'a' && c <= 'f':
		return int(c-'a') + 10
	}
	return int(c-'A') + 10
}
