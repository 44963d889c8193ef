package rpc

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/mcpgateway/mcpgateway/store"
)

// manyTools are n enabled tools named tool-000, tool-001, ..., each with a
// disabled neighbour that must never be listed.
func manyTools(n int) []store.Tool {
	var tools []store.Tool
	for i := range n {
		name := fmt.Sprintf("tool-%03d", i)
		tools = append(tools,
			store.Tool{Name: name, Description: "test tool", InputSchema: json.RawMessage(`{"type":"object"}`), Enabled: true},
			store.Tool{Name: name + "-off", InputSchema: json.RawMessage(`{"type":"object"}`), Enabled: false})
	}
	return tools
}

// listPage runs tools/list with the given params ("" for none) and returns
// the names listed and the nextCursor ("" when absent).
func listPage(t *testing.T, s *Server, params string) ([]string, string) {
	t.Helper()
	body := `{"jsonrpc":"2.0","id":1,"method":"tools/list"}`
	if params != "" {
		body = `{"jsonrpc":"2.0","id":1,"method":"tools/list","params":` + params + `}`
	}
	res := rpcResult(t, s, body)
	var names []string
	for _, x := range res["tools"].([]any) {
		names = append(names, x.(map[string]any)["name"].(string))
	}
	next, ok := res["nextCursor"].(string)
	if _, present := res["nextCursor"]; present && (!ok || next == "") {
		t.Fatalf("nextCursor present but not a non-empty string: %v", res["nextCursor"])
	}
	return names, next
}

func cursorParams(c string) string {
	b, _ := json.Marshal(map[string]string{"cursor": c})
	return string(b)
}

func TestToolsListPages(t *testing.T) {
	s, b := newTestServer(t, nil)
	b.setTools(manyTools(250))

	var all []string
	cursor, pages := "", 0
	for {
		params := ""
		if cursor != "" {
			params = cursorParams(cursor)
		}
		names, next := listPage(t, s, params)
		pages++
		if len(names) != toolsPageSize && next != "" {
			t.Fatalf("page %d: %d tools and a nextCursor", pages, len(names))
		}
		all = append(all, names...)
		if next == "" {
			break
		}
		cursor = next
	}
	want := make([]string, 250)
	for i := range want {
		want[i] = fmt.Sprintf("tool-%03d", i)
	}
	if pages != 3 || !slices.Equal(all, want) {
		t.Fatalf("%d pages; union %v", pages, all)
	}

	// The first page answers the same with no params, empty params, a null
	// or an empty cursor; a cursor past the end is an empty last page.
	first, next := listPage(t, s, "")
	for _, p := range []string{`{}`, `{"cursor":null}`, `{"cursor":""}`, `{"_meta":{"progressToken":1}}`} {
		if names, n := listPage(t, s, p); !slices.Equal(names, first) || n != next {
			t.Errorf("params %s: %d tools, cursor %q", p, len(names), n)
		}
	}
	if names, n := listPage(t, s, cursorParams(cursorEncoding.EncodeToString([]byte("zzz")))); len(names) != 0 || n != "" {
		t.Errorf("past the end: %v %q", names, n)
	}

	// Invalid cursors and params: -32602.
	for _, p := range []string{
		cursorParams("not a cursor!"),
		cursorParams("dG9vbC0wOTk="), // padded
		cursorParams("dG9vbC0wOTl"),  // non-zero trailing bits
		cursorParams(cursorEncoding.EncodeToString([]byte{0xff, 0xfe})),
		`{"cursor":5}`, `{"cursor":{}}`, `[]`,
	} {
		code, msg, _ := rpcErr(t, s, `{"jsonrpc":"2.0","id":1,"method":"tools/list","params":`+p+`}`)
		if code != codeInvalidParams || !strings.HasPrefix(msg, "Invalid params: ") {
			t.Errorf("params %s: %d %q", p, code, msg)
		}
	}
}

// A cursor names the last tool listed, so tools added or removed between
// two pages neither repeat nor hide the others. The additions go through
// the admin API, which the fake Backend appends unsorted.
func TestToolsListCursorAcrossChanges(t *testing.T) {
	s, b := newTestServer(t, nil)
	b.setTools(manyTools(150))
	page1, cursor := listPage(t, s, "")
	if len(page1) != toolsPageSize || page1[99] != "tool-099" || cursor == "" {
		t.Fatalf("page 1: %d tools, last %s, cursor %q", len(page1), page1[len(page1)-1], cursor)
	}
	for _, name := range []string{"tool-050a", "tool-099", "tool-120a", "aaa"} {
		r := adminCall(t, s, "PUT", "/admin/tools/"+name, `{"description":"new","inputSchema":{"type":"object"}}`)
		if r.status != 200 {
			t.Fatalf("PUT %s: %d %s", name, r.status, r.body)
		}
	}
	if r := adminCall(t, s, "PUT", "/admin/tools/tool-100", `{"enabled":false}`); r.status != 200 {
		t.Fatalf("disable tool-100: %d %s", r.status, r.body)
	}
	page2, next := listPage(t, s, cursorParams(cursor))
	want := []string{}
	for i := 101; i < 150; i++ {
		want = append(want, fmt.Sprintf("tool-%03d", i))
		if i == 120 {
			want = append(want, "tool-120a")
		}
	}
	if next != "" || !slices.Equal(page2, want) {
		t.Fatalf("page 2 after changes (cursor %q):\n got %v\nwant %v", next, page2, want)
	}
	// The cursor holds no state: another worker continues the listing.
	other, ob := newTestServer(t, nil)
	ob.setTools(manyTools(150))
	if names, _ := listPage(t, other, cursorParams(cursor)); len(names) != 50 || names[0] != "tool-100" {
		t.Errorf("cursor on another server: %d tools from %v", len(names), names[:1])
	}
}

// Pagination on /mcp: the same cursors, inside a session.
func TestMCPToolsListPages(t *testing.T) {
	s, b := newTestServer(t, nil)
	b.setTools(manyTools(120))
	tok := mint(t, nil)
	sid := mcpInitialize(t, s, tok)
	page := func(params string) map[string]any {
		t.Helper()
		r := mcpCall(t, s, tok, sid, `{"jsonrpc":"2.0","id":2,"method":"tools/list","params":`+params+`}`)
		res, ok := r.obj(t)["result"].(map[string]any)
		if r.status != 200 || !ok {
			t.Fatalf("tools/list %s: %d %s", params, r.status, r.body)
		}
		return res
	}
	res := page(`{}`)
	cursor, _ := res["nextCursor"].(string)
	if n := len(res["tools"].([]any)); n != toolsPageSize || cursor == "" {
		t.Fatalf("page 1: %d tools, cursor %q", n, cursor)
	}
	res = page(cursorParams(cursor))
	if n := len(res["tools"].([]any)); n != 20 || res["nextCursor"] != nil {
		t.Fatalf("page 2: %d tools, cursor %v", n, res["nextCursor"])
	}
	r := mcpCall(t, s, tok, sid, `{"jsonrpc":"2.0","id":3,"method":"tools/list","params":{"cursor":"%%%"}}`)
	if e, _ := r.obj(t)["error"].(map[string]any); r.status != 200 || e == nil || e["code"] != float64(codeInvalidParams) {
		t.Errorf("bad cursor on /mcp: %d %s", r.status, r.body)
	}
}

// The official Go SDK lists every tool across pages (ClientSession.Tools
// follows nextCursor), its consecutive requests alternating between two
// servers, and reads the built-in tools' outputSchema and structuredContent.
func TestMCPGoSDKToolPagesAndStructuredContent(t *testing.T) {
	var urls, hosts []string
	for range 2 {
		s, b := newTestServer(t, nil)
		b.setTools(append(manyTools(250), newFakeBackend().tools...))
		u := serve(t, s)
		urls = append(urls, u)
		hosts = append(hosts, strings.TrimSuffix(strings.TrimPrefix(u, "http://"), "/mcp"))
	}
	rt := &roundTripper{token: mint(t, nil), hosts: hosts}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	client := mcp.NewClient(&mcp.Implementation{Name: "rpc-test", Version: "1.0.0"}, nil)
	transport := &mcp.StreamableClientTransport{Endpoint: urls[0], HTTPClient: &http.Client{Transport: rt}, MaxRetries: -1}
	session, err := client.Connect(ctx, transport, nil)
	if err != nil {
		t.Fatalf("connect: %v\n%s", err, rt.requests())
	}
	defer session.Close()

	first, err := session.ListTools(ctx, nil)
	if err != nil || len(first.Tools) != toolsPageSize || first.NextCursor == "" {
		t.Fatalf("first page: %v", err)
	}
	var names []string
	tools := map[string]*mcp.Tool{}
	for tool, err := range session.Tools(ctx, nil) {
		if err != nil {
			t.Fatalf("listing: %v\n%s", err, rt.requests())
		}
		names = append(names, tool.Name)
		tools[tool.Name] = tool
	}
	if len(names) != 253 || len(tools) != 253 || !slices.IsSorted(names) {
		t.Fatalf("%d tools listed, %d distinct, sorted %v", len(names), len(tools), slices.IsSorted(names))
	}
	for _, name := range []string{"convert_time", "get_system_time", "remote_tool", "tool-000", "tool-249"} {
		if tools[name] == nil {
			t.Errorf("%s not listed", name)
		}
	}
	schema, _ := tools["convert_time"].OutputSchema.(map[string]any)
	if props, _ := schema["properties"].(map[string]any); schema["type"] != "object" || props["time_difference"] == nil {
		t.Errorf("convert_time outputSchema: %v", tools["convert_time"].OutputSchema)
	}
	if tools["remote_tool"].OutputSchema != nil {
		t.Errorf("remote_tool has an outputSchema: %v", tools["remote_tool"].OutputSchema)
	}

	res, err := session.CallTool(ctx, &mcp.CallToolParams{Name: "get_system_time", Arguments: map[string]any{"timezone": "Asia/Tokyo"}})
	if err != nil || res.IsError || len(res.Content) != 1 {
		t.Fatalf("get_system_time: %v %+v", err, res)
	}
	var fromText any
	if err := json.Unmarshal([]byte(res.Content[0].(*mcp.TextContent).Text), &fromText); err != nil {
		t.Fatal(err)
	}
	if sc, ok := res.StructuredContent.(map[string]any); !ok || sc["timezone"] != "Asia/Tokyo" || !equalJSON(sc, fromText) {
		t.Errorf("structuredContent %v, text %v", res.StructuredContent, fromText)
	}
	res, err = session.CallTool(ctx, &mcp.CallToolParams{Name: "get_system_time", Arguments: map[string]any{"zone": "Asia/Tokyo"}})
	if err != nil || !res.IsError || res.StructuredContent != nil ||
		res.Content[0].(*mcp.TextContent).Text != `unknown argument "zone": the arguments are timezone` {
		t.Errorf("unknown argument: %v %+v", err, res)
	}
}

// equalJSON compares two decoded JSON values.
func equalJSON(a, b any) bool {
	x, _ := json.Marshal(a)
	y, _ := json.Marshal(b)
	return string(x) == string(y)
}
