package rpc

import (
	"encoding/base64"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/mcpgateway/mcpgateway/store"
)

// toolsPageSize is how many tools one tools/list page holds (MCP
// pagination: the server chooses, and clients must not assume a size).
// 100 entries of a typical schema are tens of kilobytes: a page stays a
// short request on one worker and a response of bounded size, while a
// gateway with up to 100 tools (every deployment today has its two
// built-ins) still answers in one page without nextCursor, as before.
// Listing 1,000 tools takes 10 requests.
const toolsPageSize = 100

// A tools/list cursor is the base64url (unpadded) text of the last name on
// the page before; the next page starts after that name. Names are unique
// and the list is sorted by name, so the cursor stays valid when tools are
// added or removed between pages: no tool is listed twice, and none present
// throughout is skipped. It needs no state on any worker. It is no secret
// either: a forged cursor only chooses where a listing starts.
var cursorEncoding = base64.RawURLEncoding.Strict()

// readCursor returns the name a tools/list request's cursor points after,
// "" for the first page (no params, no cursor, null or "").
func readCursor(params []byte) (string, *rpcError) {
	if params == nil {
		return "", nil
	}
	if params[0] != '{' {
		return "", &rpcError{code: codeInvalidParams, msg: "Invalid params: tools/list params must be an object"}
	}
	var cursor []byte
	for it := objectMembers(params); ; {
		k, v, ok := it.next()
		if !ok {
			break
		}
		if !keyIs(k, "cursor") {
			continue
		}
		switch v[0] {
		case '"':
			cursor = unquote(v)
		case 'n':
			cursor = nil
		default:
			return "", &rpcError{code: codeInvalidParams, msg: "Invalid params: cursor must be a string"}
		}
	}
	if len(cursor) == 0 {
		return "", nil
	}
	name, err := cursorEncoding.AppendDecode(nil, cursor)
	if err != nil || len(name) == 0 || !utf8.Valid(name) {
		return "", &rpcError{code: codeInvalidParams, msg: "Invalid params: invalid cursor"}
	}
	return string(name), nil
}

// appendCursor appends the cursor that continues after the tool name.
func appendCursor(out []byte, name string) []byte {
	out = append(out, '"')
	out = cursorEncoding.AppendEncode(out, []byte(name))
	return append(out, '"')
}

func byName(a, b store.Tool) int { return strings.Compare(a.Name, b.Name) }

// toolsAfter returns the tools named after `after` ("": all of them), in
// name order. Backend.Tools returns them sorted (the store sorts its
// snapshot); from a Backend that does not, a sorted copy, rather than
// pages that repeat or skip tools.
func toolsAfter(tools []store.Tool, after string) []store.Tool {
	if !slices.IsSortedFunc(tools, byName) {
		tools = slices.SortedFunc(slices.Values(tools), byName)
	}
	i, found := slices.BinarySearchFunc(tools, after, func(t store.Tool, name string) int {
		return strings.Compare(t.Name, name)
	})
	if found {
		i++
	}
	return tools[i:]
}
