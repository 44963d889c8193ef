package rpc

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/mcpgateway/mcpgateway/store"
)

// metaOf is a 2026-07-28 request _meta at protocol version v.
func metaOf(v string) string {
	return `"_meta":{"io.modelcontextprotocol/protocolVersion":"` + v +
		`","io.modelcontextprotocol/clientInfo":{"name":"t","version":"1"},"io.modelcontextprotocol/clientCapabilities":{}}`
}

// modernBody is a 2026-07-28 request with id 7: params are the members
// given ("" for none) and the _meta.
func modernBody(method, params string) string {
	if params != "" {
		params += ","
	}
	return `{"jsonrpc":"2.0","id":7,"method":"` + method + `","params":{` + params + metaOf("2026-07-28") + `}}`
}

// modernCall posts body to /mcp with the standard headers of a 2026-07-28
// request for method, Mcp-Name name ("": none), then headers (a header set
// to "" is as if absent).
func modernCall(t *testing.T, s *Server, tok, method, name, body string, headers ...string) result {
	t.Helper()
	h := []string{"MCP-Protocol-Version", "2026-07-28", "Mcp-Method", method}
	if name != "" {
		h = append(h, "Mcp-Name", name)
	}
	return mcpCall(t, s, tok, "", body, append(h, headers...)...)
}

// modernResult checks a 2026-07-28 success: 200, the id, resultType,
// serverInfo in _meta, no session minted. It returns the result.
func modernResult(t *testing.T, r result) map[string]any {
	t.Helper()
	m := r.obj(t)
	res, ok := m["result"].(map[string]any)
	if r.status != 200 || !ok || m["id"] != float64(7) {
		t.Fatalf("want a result: %d %s", r.status, r.body)
	}
	info, _ := res["_meta"].(map[string]any)["io.modelcontextprotocol/serverInfo"].(map[string]any)
	if res["resultType"] != "complete" || info["name"] != "mcpgateway" || info["version"] != "1.2.3-test" {
		t.Errorf("result without resultType or serverInfo: %s", r.body)
	}
	if r.header("Mcp-Session-Id") != "" {
		t.Errorf("a session id was minted: %s", r.header("Mcp-Session-Id"))
	}
	return res
}

// modernErr checks an error answer: the status, the code, and the id (7,
// or none when noID).
func modernErr(t *testing.T, name string, r result, status, code int, noID bool) map[string]any {
	t.Helper()
	m := r.obj(t)
	e, _ := m["error"].(map[string]any)
	id, hasID := m["id"]
	if r.status != status || e == nil || e["code"] != float64(code) || hasID == noID || (hasID && id != float64(7)) {
		t.Errorf("%s: want %d %d (no id: %v), got %d %s", name, status, code, noID, r.status, r.body)
	}
	return e
}

// TestMCPModernRequests: the checks of a 2026-07-28 request, in order, with
// their statuses and codes, and server/discover.
func TestMCPModernRequests(t *testing.T) {
	s, _ := newTestServer(t, nil)
	tok := mint(t, nil)

	res := modernResult(t, modernCall(t, s, tok, "server/discover", "", modernBody("server/discover", "")))
	got, _ := json.Marshal(res)
	want := `{"_meta":{"io.modelcontextprotocol/serverInfo":{"name":"mcpgateway","version":"1.2.3-test"}},"cacheScope":"public",` +
		`"capabilities":{"completions":{},"logging":{},"prompts":{"listChanged":false},"resources":{"listChanged":false},"tools":{"listChanged":false}},"resultType":"complete",` +
		`"supportedVersions":["2026-07-28","2025-11-25","2025-06-18","2025-03-26"],"ttlMs":60000}`
	if string(got) != want {
		t.Errorf("server/discover\n got %s\nwant %s", got, want)
	}
	// clientInfo is optional; Mcp-Session-Id and Last-Event-ID are ignored.
	noInfo := `{"jsonrpc":"2.0","id":7,"method":"server/discover","params":{"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{"sampling":{}}}}}`
	modernResult(t, modernCall(t, s, tok, "server/discover", "", noInfo, "Mcp-Session-Id", "no-such-session", "Last-Event-ID", "5"))

	discover := func(meta string) string {
		return `{"jsonrpc":"2.0","id":7,"method":"server/discover","params":{` + meta + `}}`
	}
	for _, c := range []struct {
		name, body string
		headers    []string
		status     int
		code       int
	}{
		{"header and _meta differ", discover(metaOf("2099-01-01")), nil, 400, codeHeaderMismatch},
		{"no MCP-Protocol-Version", modernBody("server/discover", ""), []string{"MCP-Protocol-Version", ""}, 400, codeHeaderMismatch},
		{"no _meta", `{"jsonrpc":"2.0","id":7,"method":"server/discover","params":{}}`, nil, 400, codeInvalidParams},
		{"no params", `{"jsonrpc":"2.0","id":7,"method":"server/discover"}`, nil, 400, codeInvalidParams},
		{"no protocolVersion", discover(`"_meta":{"io.modelcontextprotocol/clientCapabilities":{}}`), nil, 400, codeInvalidParams},
		{"no clientCapabilities", discover(`"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28"}`), nil, 400, codeInvalidParams},
		{"clientCapabilities not an object", discover(`"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":[]}`), nil, 400, codeInvalidParams},
	} {
		r := modernCall(t, s, tok, "server/discover", "", c.body, c.headers...)
		modernErr(t, c.name, r, c.status, c.code, false)
	}

	// A version unknown here, in the modern form: UnsupportedProtocolVersion
	// with what is served and what was asked.
	r := mcpCall(t, s, tok, "", discover(metaOf("v999.0.0")), "MCP-Protocol-Version", "v999.0.0", "Mcp-Method", "server/discover")
	e := modernErr(t, "unsupported version", r, 400, codeUnsupportedVersion, false)
	if data, _ := json.Marshal(e["data"]); string(data) != `{"requested":"v999.0.0","supported":["2026-07-28","2025-11-25","2025-06-18","2025-03-26"]}` {
		t.Errorf("unsupported version data: %s", data)
	}

	// Methods 2026-07-28 does not have, or the gateway does not offer: 404.
	for _, method := range []string{"initialize", "ping", "logging/setLevel", "resources/subscribe", "resources/unsubscribe",
		"unknown/method", "notifications/initialized", "convert_time"} {
		modernErr(t, method, modernCall(t, s, tok, method, "", modernBody(method, "")), 404, codeMethodNotFound, false)
	}

	// The method is checked before _meta (the SDKs send ping without it),
	// after the version.
	modernErr(t, "ping without _meta", modernCall(t, s, tok, "ping", "", `{"jsonrpc":"2.0","id":7,"method":"ping"}`), 404, codeMethodNotFound, false)
	r = mcpCall(t, s, tok, "", `{"jsonrpc":"2.0","id":7,"method":"ping","params":{`+metaOf("v9")+`}}`, "MCP-Protocol-Version", "v9", "Mcp-Method", "ping")
	modernErr(t, "ping at an unknown version", r, 400, codeUnsupportedVersion, false)

	// What cannot be a request: 400 without an id.
	for _, c := range []struct{ name, body string }{
		{"parse error", `{"jsonrpc":`},
		{"batch", `[` + modernBody("tools/list", "") + `]`},
		{"null id", `{"jsonrpc":"2.0","id":null,"method":"tools/list","params":{` + metaOf("2026-07-28") + `}}`},
		{"a JSON-RPC response", `{"jsonrpc":"2.0","id":"s1","result":{}}`},
	} {
		r := modernCall(t, s, tok, "tools/list", "", c.body)
		if _, hasID := r.obj(t)["id"]; r.status != 400 || hasID {
			t.Errorf("%s: %d %s", c.name, r.status, r.body)
		}
	}
	// A notification: accepted, nothing to answer.
	if r := modernCall(t, s, tok, "notifications/cancelled", "", `{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":1}}`); r.status != 202 || len(r.body) != 0 {
		t.Errorf("notification: %d %s", r.status, r.body)
	}
	if r := modernCall(t, s, tok, "tools/list", "", modernBody("tools/list", ""), "Accept", "text/html"); r.status != 406 {
		t.Errorf("Accept text/html: %d", r.status)
	}

	// tools/call: a result with resultType and serverInfo, no caching hints;
	// an unknown tool is an error of the method (200).
	res = modernResult(t, modernCall(t, s, tok, "tools/call", "get_system_time", modernBody("tools/call", `"name":"get_system_time","arguments":{"timezone":"UTC"}`)))
	if res["isError"] != false || res["structuredContent"] == nil || res["ttlMs"] != nil {
		t.Errorf("tools/call: %v", res)
	}
	r = modernCall(t, s, tok, "tools/call", "nope", modernBody("tools/call", `"name":"nope"`))
	if e := modernErr(t, "unknown tool", r, 200, codeInvalidParams, false); e != nil && e["message"] != "Unknown tool: nope" {
		t.Errorf("unknown tool: %s", r.body)
	}

	// A legacy header keeps the legacy path, whatever the body says.
	r = mcpCall(t, s, tok, "", modernBody("tools/list", ""), "MCP-Protocol-Version", "2025-11-25")
	if r.status != 400 || !strings.Contains(string(r.body), "Mcp-Session-Id header is required") {
		t.Errorf("2025-11-25 header with modern _meta: %d %s", r.status, r.body)
	}
}

// Modern requests need no state: servers that share nothing (another
// store, no tombstones) serve the same client alike.
func TestMCPModernStateless(t *testing.T) {
	a, _ := newTestServer(t, nil)
	b, _ := newMCPServers(t, 1)
	tok := mint(t, nil)
	for i, s := range []*Server{a, b[0], a, b[0]} {
		res := modernResult(t, modernCall(t, s, tok, "tools/list", "", modernBody("tools/list", "")))
		if n := len(res["tools"].([]any)); n != 3 {
			t.Errorf("request %d: %d tools", i, n)
		}
	}
}

// G6: every page of tools/list carries ttlMs (Options.CacheTTL) and the
// same cacheScope; legacy revisions and /rpc get neither.
func TestMCPModernCachingHints(t *testing.T) {
	s, b := newTestServer(t, func(o *Options) { o.CacheTTL = 5 * time.Second })
	b.setTools(manyTools(120))
	tok := mint(t, nil)
	res := modernResult(t, modernCall(t, s, tok, "tools/list", "", modernBody("tools/list", "")))
	cursor, _ := res["nextCursor"].(string)
	if res["ttlMs"] != float64(5000) || res["cacheScope"] != "public" || cursor == "" {
		t.Fatalf("page 1: ttlMs %v, cacheScope %v, cursor %q", res["ttlMs"], res["cacheScope"], cursor)
	}
	res = modernResult(t, modernCall(t, s, tok, "tools/list", "", modernBody("tools/list", `"cursor":"`+cursor+`"`)))
	if res["ttlMs"] != float64(5000) || res["cacheScope"] != "public" || res["nextCursor"] != nil || len(res["tools"].([]any)) != 20 {
		t.Errorf("page 2: ttlMs %v, cacheScope %v, cursor %v", res["ttlMs"], res["cacheScope"], res["nextCursor"])
	}
	res = modernResult(t, modernCall(t, s, tok, "server/discover", "", modernBody("server/discover", "")))
	if res["ttlMs"] != float64(5000) {
		t.Errorf("server/discover ttlMs %v", res["ttlMs"])
	}

	sid := mcpInitialize(t, s, tok)
	for _, r := range []result{
		mcpCall(t, s, tok, sid, `{"jsonrpc":"2.0","id":2,"method":"tools/list"}`),
		rpc(t, s, `{"jsonrpc":"2.0","id":2,"method":"tools/list"}`),
	} {
		if body := string(r.body); r.status != 200 || strings.Contains(body, "ttlMs") || strings.Contains(body, "resultType") {
			t.Errorf("legacy tools/list: %d %.200s", r.status, body)
		}
	}
	// server/discover is no method of the legacy revisions.
	if code, _, _ := rpcErr(t, s, modernBody("server/discover", "")); code != codeMethodNotFound {
		t.Errorf("server/discover on /rpc: %d", code)
	}
}

// An upstream's result passes with what it has: resultType and _meta are
// added only where missing.
func TestCompleteResult(t *testing.T) {
	s, _ := newTestServer(t, nil)
	meta := string(s.resultMeta)
	for in, want := range map[string]string{
		`{}`:                                 `{"resultType":"complete",` + meta + `}`,
		`{"content":[]}`:                     `{"content":[],"resultType":"complete",` + meta + `}`,
		`{ "a":1 } `:                         `{ "a":1 ,"resultType":"complete",` + meta + `}`,
		`{"_meta":{"x":1},"resultType":"y"}`: `{"_meta":{"x":1},"resultType":"y"}`,
		`[1]`:                                `[1]`,
	} {
		out := s.completeResult([]byte("head:"+in), len("head:"), []byte("tools/call"))
		if string(out) != "head:"+want {
			t.Errorf("%s: got %s", in, out)
		}
	}
}

// G5: Mcp-Method, Mcp-Name and Mcp-Param-* against the body.
func TestMCPModernHeaders(t *testing.T) {
	s, b := newTestServer(t, nil)
	tools := newFakeBackend().tools
	b.setTools(append(tools, store.Tool{Name: "region_tool", Enabled: true, InputSchema: json.RawMessage(`{"type":"object","properties":{
		"region":{"type":"string","x-mcp-header":"Region"},
		"count":{"type":"integer","x-mcp-header":"Count"},
		"opts":{"type":"object","properties":{"deep":{"type":"boolean","x-mcp-header":"Deep"}}},
		"items":{"type":"array","items":{"type":"string","x-mcp-header":"Item"}},
		"bad":{"type":"string","x-mcp-header":"not a token"},
		"query":{"type":"string"}}}`)}))
	tok := mint(t, nil)
	list := modernBody("tools/list", "")
	toolCall := func(name, args string) string {
		return modernBody("tools/call", `"name":"`+name+`","arguments":`+args)
	}
	gst := toolCall("get_system_time", `{}`)
	for _, c := range []struct {
		name          string
		method, mname string // Mcp-Method, Mcp-Name
		body          string
		headers       []string
		ok            bool
	}{
		{"Mcp-Method missing", "", "", list, nil, false},
		{"Mcp-Method of another method", "prompts/list", "", list, nil, false},
		{"Mcp-Method in other case", "TOOLS/LIST", "", list, nil, false},
		{"Mcp-Method with whitespace around", "  tools/list\t", "", list, nil, true},
		{"Mcp-Name not needed", "tools/list", "whatever", list, nil, true},
		{"Mcp-Name missing", "tools/call", "", gst, nil, false},
		{"Mcp-Name of another tool", "tools/call", "convert_time", gst, nil, false},
		{"Mcp-Name with whitespace around", "tools/call", "  get_system_time  ", gst, nil, true},
		{"Mcp-Name in Base64", "tools/call", "=?base64?Z2V0X3N5c3RlbV90aW1l?=", gst, nil, true},
		{"Mcp-Name in bad Base64", "tools/call", "=?base64?Z2V0X3N5c3RlbV90aW1l!?=", gst, nil, false},
		{"Mcp-Name not ASCII", "tools/call", "get_system_tim\xc3\xa9", gst, nil, false},

		{"Mcp-Param as the body", "tools/call", "region_tool", toolCall("region_tool", `{"region":"us-west1","query":"x"}`),
			[]string{"Mcp-Param-Region", "us-west1"}, true},
		{"Mcp-Param name case-insensitive", "tools/call", "region_tool", toolCall("region_tool", `{"region":"us-west1"}`),
			[]string{"mcp-param-region", "us-west1"}, true},
		{"Mcp-Param missing", "tools/call", "region_tool", toolCall("region_tool", `{"region":"us-west1"}`), nil, false},
		{"Mcp-Param different", "tools/call", "region_tool", toolCall("region_tool", `{"region":"us-west1"}`),
			[]string{"Mcp-Param-Region", "eu-west1"}, false},
		{"Mcp-Param without a body value", "tools/call", "region_tool", toolCall("region_tool", `{}`),
			[]string{"Mcp-Param-Region", "us-west1"}, false},
		{"Mcp-Param for a null value: none", "tools/call", "region_tool", toolCall("region_tool", `{"region":null}`), nil, true},
		{"Mcp-Param in Base64", "tools/call", "region_tool", toolCall("region_tool", `{"region":"Hello, 世界"}`),
			[]string{"Mcp-Param-Region", "=?base64?SGVsbG8sIOS4lueVjA==?="}, true},
		{"Mcp-Param in Base64 without padding", "tools/call", "region_tool", toolCall("region_tool", `{"region":"Hello"}`),
			[]string{"Mcp-Param-Region", "=?base64?SGVsbG8?="}, false},
		{"Mcp-Param in Base64 with other characters", "tools/call", "region_tool", toolCall("region_tool", `{"region":"Hello"}`),
			[]string{"Mcp-Param-Region", "=?base64?SGVs!!!bG8=?="}, false},
		{"Mcp-Param without the Base64 suffix is literal", "tools/call", "region_tool", toolCall("region_tool", `{"region":"=?base64?SGVsbG8="}`),
			[]string{"Mcp-Param-Region", "=?base64?SGVsbG8="}, true},
		{"Mcp-Param integer, compared as a number", "tools/call", "region_tool", toolCall("region_tool", `{"count":42}`),
			[]string{"Mcp-Param-Count", "42.0"}, true},
		{"Mcp-Param integer, another number", "tools/call", "region_tool", toolCall("region_tool", `{"count":42}`),
			[]string{"Mcp-Param-Count", "43"}, false},
		{"Mcp-Param nested boolean", "tools/call", "region_tool", toolCall("region_tool", `{"opts":{"deep":true}}`),
			[]string{"Mcp-Param-Deep", "true"}, true},
		{"Mcp-Param nested boolean missing", "tools/call", "region_tool", toolCall("region_tool", `{"opts":{"deep":false}}`), nil, false},
		{"Mcp-Param under items: not an annotation", "tools/call", "region_tool", toolCall("region_tool", `{"items":["a"]}`), nil, true},
		{"Mcp-Param with an invalid name: not an annotation", "tools/call", "region_tool", toolCall("region_tool", `{"bad":"a"}`), nil, true},
	} {
		h := []string{"MCP-Protocol-Version", "2026-07-28", "Mcp-Method", c.method, "Mcp-Name", c.mname}
		r := mcpCall(t, s, tok, "", c.body, append(h, c.headers...)...)
		if c.ok {
			if _, isErr := r.obj(t)["error"]; r.status != 200 || isErr {
				t.Errorf("%s: %d %s", c.name, r.status, r.body)
			}
			continue
		}
		modernErr(t, c.name, r, 400, codeHeaderMismatch, false)
	}

	// /rpc checks none of these headers.
	r := call(s, "POST", "/rpc", ping, "Authorization", "Bearer "+tok, "Mcp-Method", "tools/call", "Mcp-Name", "x")
	if r.status != 200 || !strings.Contains(string(r.body), `"result":{}`) {
		t.Errorf("/rpc with Mcp-Method: %d %s", r.status, r.body)
	}
}
