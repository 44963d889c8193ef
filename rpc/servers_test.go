package rpc

import (
	"context"
	"encoding/json"
	"reflect"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/mcpgateway/mcpgateway/store"
)

// serversFake is a Backend that stores virtual servers.
type serversFake struct {
	allToolsFake
	mu      sync.Mutex
	servers map[string]store.Server
}

func (f *serversFake) Servers(ctx context.Context) ([]store.Server, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := []store.Server{}
	for _, v := range f.servers {
		out = append(out, v)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, nil
}

func (f *serversFake) Server(ctx context.Context, id string) (store.Server, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	v, ok := f.servers[id]
	if !ok {
		return store.Server{}, store.ErrNotFound
	}
	return v, nil
}

func (f *serversFake) PutServer(ctx context.Context, v store.Server) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.servers[v.ID] = v
	return nil
}

func (f *serversFake) DeleteServer(ctx context.Context, id string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.servers[id]; !ok {
		return store.ErrNotFound
	}
	delete(f.servers, id)
	return nil
}

// Upstream tools are shown by their upstream's names unless two would be
// shown alike; then those keep the gateway's names.
func TestServerExposedNames(t *testing.T) {
	tools := []store.Tool{
		{Name: "convert_time"},
		{Name: "everything-add", Gateway: "everything", UpstreamName: "add"},
		{Name: "everything-echo", Gateway: "everything", UpstreamName: "echo"},
		{Name: "other-echo", Gateway: "other", UpstreamName: "echo"},
		{Name: "up-convert_time", Gateway: "up", UpstreamName: "convert_time"},
		{Name: "x-everything-add", Gateway: "x", UpstreamName: "everything-add"},
	}
	got := exposedNames(tools)
	// echo clashes, and so does convert_time with the built-in; add and
	// everything-add do not.
	want := []string{"convert_time", "add", "everything-echo", "other-echo", "up-convert_time", "everything-add"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("names = %v; want %v", got, want)
	}
	// A second add: both fall back, and everything-add then clashes with
	// the x tool's upstream name, which falls back in turn.
	tools = append(tools, store.Tool{Name: "y-add", Gateway: "y", UpstreamName: "add"})
	want = []string{"convert_time", "everything-add", "everything-echo", "other-echo", "up-convert_time", "x-everything-add", "y-add"}
	if got := exposedNames(tools); !reflect.DeepEqual(got, want) {
		t.Errorf("names = %v; want %v", got, want)
	}
}

// A server made through the admin API serves its tools only, under the
// names its clients expect, in both eras; the admin routes list, read and
// delete it.
func TestVirtualServer(t *testing.T) {
	fb := newFakeBackend()
	schema := json.RawMessage(`{"type":"object"}`)
	fb.setTools([]store.Tool{
		{Name: "convert_time", InputSchema: schema, Enabled: true},
		{Name: "everything-echo", Description: "Echo", InputSchema: schema, Enabled: true, Gateway: "everything", UpstreamName: "echo"},
		{Name: "get_system_time", InputSchema: schema, Enabled: true},
	})
	b := &serversFake{allToolsFake: allToolsFake{fb}, servers: map[string]store.Server{}}
	s, err := New(testOptions(), b)
	if err != nil {
		t.Fatal(err)
	}
	tok := mint(t, nil)
	admin := func(method, path, body string) result {
		return call(s, method, path, body, "Authorization", "Bearer "+tok)
	}
	if r := admin("PUT", "/admin/servers/time", `{"name":"Time","tools":["get_system_time","nope","everything-echo","gone"]}`); r.status != 400 || !strings.Contains(string(r.body), "Unknown tools: nope, gone") {
		t.Fatalf("unknown tools: %d %s", r.status, r.body)
	}
	if r := admin("PUT", "/admin/servers/time", `{"name":"Time","description":"d","tools":["get_system_time","everything-echo"]}`); r.status != 200 {
		t.Fatalf("put: %d %s", r.status, r.body)
	}
	if r := admin("GET", "/admin/servers", ""); r.status != 200 || !strings.Contains(string(r.body), `"id":"time","name":"Time","description":"d","tools":["get_system_time","everything-echo"]`) {
		t.Fatalf("list: %d %s", r.status, r.body)
	}
	if r := call(s, "POST", "/servers/time/mcp", mcpInit); r.status != 401 {
		t.Errorf("without a token: %d %s", r.status, r.body)
	}
	if r := call(s, "POST", "/servers/nope/mcp", mcpInit, "Authorization", "Bearer "+tok); r.status != 404 {
		t.Errorf("unknown server: %d %s", r.status, r.body)
	}

	// A legacy session on the server's endpoint.
	post := func(sid, body string) result {
		h := []string{"Authorization", "Bearer " + tok, "Accept", "application/json, text/event-stream"}
		if sid != "" {
			h = append(h, "Mcp-Session-Id", sid)
		}
		return call(s, "POST", "/servers/time/mcp", body, h...)
	}
	r := post("", mcpInit)
	sid := r.header("Mcp-Session-Id")
	if r.status != 200 || sid == "" {
		t.Fatalf("initialize: %d %s", r.status, r.body)
	}
	r = post(sid, `{"jsonrpc":"2.0","id":2,"method":"tools/list"}`)
	if got := toolNames(t, r.body); !reflect.DeepEqual(got, []string{"echo", "get_system_time"}) {
		t.Errorf("tools/list on the server: %v (%s)", got, r.body)
	}
	r = post(sid, `{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"get_system_time","arguments":{"timezone":"UTC"}}}`)
	if !strings.Contains(string(r.body), `"isError":false`) {
		t.Errorf("tools/call of the server's tool: %s", r.body)
	}
	for _, name := range []string{"convert_time", "everything-echo"} { // not on the server, or not by that name
		r = post(sid, `{"jsonrpc":"2.0","id":4,"method":"tools/call","params":{"name":"`+name+`","arguments":{}}}`)
		if !strings.Contains(string(r.body), "Unknown tool: "+name) {
			t.Errorf("tools/call %s: %s", name, r.body)
		}
	}
	r = post(sid, `{"jsonrpc":"2.0","id":5,"method":"get_system_time","params":{}}`)
	if !strings.Contains(string(r.body), `"code":-32601`) {
		t.Errorf("a tool as the method: %s", r.body)
	}
	r = post(sid, `{"jsonrpc":"2.0","id":6,"method":"prompts/list"}`)
	if !strings.Contains(string(r.body), `"prompts":[]`) {
		t.Errorf("prompts/list: %s", r.body)
	}

	// The stateless 2026-07-28 path.
	r = call(s, "POST", "/servers/time/mcp", modernBody("tools/list", ""), "Authorization", "Bearer "+tok,
		"Accept", "application/json, text/event-stream", "Mcp-Protocol-Version", "2026-07-28", "Mcp-Method", "tools/list")
	if got := toolNames(t, r.body); !reflect.DeepEqual(got, []string{"echo", "get_system_time"}) {
		t.Errorf("2026-07-28 tools/list on the server: %d %v (%s)", r.status, got, r.body)
	}
	// /mcp still lists every tool.
	r = mcpCall(t, s, tok, mcpInitialize(t, s, tok), `{"jsonrpc":"2.0","id":2,"method":"tools/list"}`)
	if got := toolNames(t, r.body); len(got) != 3 {
		t.Errorf("tools/list on /mcp: %v", got)
	}

	if r := admin("DELETE", "/admin/servers/time", ""); r.status != 204 {
		t.Fatalf("delete: %d %s", r.status, r.body)
	}
	if r := post(sid, `{"jsonrpc":"2.0","id":7,"method":"tools/list"}`); r.status != 404 {
		t.Errorf("deleted server: %d %s", r.status, r.body)
	}
	if r := admin("GET", "/admin/servers/time", ""); r.status != 404 {
		t.Errorf("get deleted: %d %s", r.status, r.body)
	}
}

func toolNames(t *testing.T, body []byte) []string {
	t.Helper()
	var resp struct {
		Result struct {
			Tools []struct{ Name string } `json:"tools"`
		} `json:"result"`
	}
	if err := json.Unmarshal(body, &resp); err != nil {
		t.Fatalf("%v: %s", err, body)
	}
	var names []string
	for _, tl := range resp.Result.Tools {
		names = append(names, tl.Name)
	}
	return names
}
