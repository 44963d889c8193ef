package rpc

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"reflect"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mcpgateway/mcpgateway/internal/mcptest"
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

// promptUpstream is a small upstream with a resource (NAME://doc), a
// template (NAME://t/{id}) and the prompts p1 and only-NAME; its
// prompts/get and resources/read answer with its name.
func promptUpstream(t *testing.T, name string) string {
	fake := &mcptest.Server{Session: name + "-session", Capabilities: `{"resources":{},"prompts":{}}`, Handle: func(_ *http.Request, method string, params json.RawMessage) string {
		var p struct{ URI, Name string }
		json.Unmarshal(params, &p)
		switch method {
		case "resources/list":
			return `{"resources":[{"uri":"` + name + `://doc","name":"doc"}]}`
		case "resources/templates/list":
			return `{"resourceTemplates":[{"uriTemplate":"` + name + `://t/{id}","name":"t"}]}`
		case "resources/read":
			return fmt.Sprintf(`{"contents":[{"uri":%q,"text":"from %s"}]}`, p.URI, name)
		case "prompts/list":
			return `{"prompts":[{"name":"p1"},{"name":"only-` + name + `"}]}`
		case "prompts/get":
			return fmt.Sprintf(`{"messages":[{"role":"user","content":{"type":"text","text":"prompt %s of %s"}}]}`, p.Name, name)
		case "completion/complete":
			return fmt.Sprintf(`{"completion":{"values":[%q]}}`, name+" "+string(params))
		}
		return ""
	}}
	srv := httptest.NewServer(fake)
	t.Cleanup(srv.Close)
	return srv.URL + "/mcp"
}

// serversGatewaysFake stores virtual servers and upstreams.
type serversGatewaysFake struct {
	*serversFake
	gatewaysFake
}

// A server's resources, templates and prompts: a whole upstream's, or
// named ones of several; listed, read and got only on the server, under
// the names its clients expect, and nothing else; capabilities declared
// only when it has some; unknown names refused by the admin API.
func TestVirtualServerResourcesAndPrompts(t *testing.T) {
	reads := new(atomic.Int32)
	down := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "down", http.StatusServiceUnavailable)
	}))
	t.Cleanup(down.Close)
	fb := newFakeBackend()
	schema := json.RawMessage(`{"type":"object"}`)
	fb.setTools([]store.Tool{
		{Name: "a-echo", InputSchema: schema, Enabled: true, Gateway: "a", UpstreamName: "echo"},
		{Name: "c-echo", InputSchema: schema, Enabled: true, Gateway: "c", UpstreamName: "echo"},
		{Name: "convert_time", InputSchema: schema, Enabled: true},
	})
	b := serversGatewaysFake{
		&serversFake{allToolsFake: allToolsFake{fb}, servers: map[string]store.Server{}},
		gatewaysFake{fb, []store.Gateway{
			{Name: "a", URL: resourceUpstream(t, "a", reads, 0), Enabled: true},
			{Name: "b", URL: resourceUpstream(t, "b", reads, 0), Enabled: true},
			{Name: "c", URL: promptUpstream(t, "c"), Enabled: true},
			{Name: "down", URL: down.URL, Enabled: true},
			{Name: "off", URL: down.URL, Enabled: false},
		}},
	}
	o := testOptions()
	o.FederationTimeout = 10 * time.Second
	s, err := New(o, b)
	if err != nil {
		t.Fatal(err)
	}
	tok := mint(t, nil)
	admin := func(method, path, body string) result {
		return call(s, method, path, body, "Authorization", "Bearer "+tok)
	}

	// Admin: everything unknown named, each kind apart.
	r := admin("PUT", "/admin/servers/x", `{"tools":["nope"],"gateways":["a","nobody"],
		"prompts":["a-p1","a-zzz","x-p1","noseparator","off-p9","down-p"],
		"resources":["a://one","a://t/{id}","a://t/77","c://t/{id}","a://none","z://{x}"]}`)
	if want := "Unknown tools: nope; unknown gateways: nobody; unknown prompts: a-zzz, x-p1, noseparator; unknown resources: a://none, z://{x}"; r.status != 400 || !strings.Contains(string(r.body), want) {
		t.Fatalf("unknown names: %d %s; want %q", r.status, r.body, want)
	}
	for id, body := range map[string]string{
		"one":   `{"name":"A","gateways":["a"]}`,
		"mixed": `{"prompts":["a-p1","c-p1","c-only-c"],"resources":["b://one","c://t/{id}"],"tools":["convert_time"]}`,
		"tools": `{"tools":["a-echo","c-echo"]}`,
	} {
		if r := admin("PUT", "/admin/servers/"+id, body); r.status != 200 {
			t.Fatalf("put %s: %d %s", id, r.status, r.body)
		}
	}
	if r := admin("GET", "/admin/servers/mixed", ""); !strings.Contains(string(r.body), `"tools":["convert_time"],"resources":["b://one","c://t/{id}"],"prompts":["a-p1","c-p1","c-only-c"],"gateways":[]`) {
		t.Errorf("get: %d %s", r.status, r.body)
	}

	session := func(id string) (func(body string) result, string) {
		h := []string{"Authorization", "Bearer " + tok, "Accept", "application/json, text/event-stream"}
		r := call(s, "POST", "/servers/"+id+"/mcp", mcpInit, h...)
		if r.status != 200 {
			t.Fatalf("initialize %s: %d %s", id, r.status, r.body)
		}
		h = append(h, "Mcp-Session-Id", r.header("Mcp-Session-Id"))
		return func(body string) result { return call(s, "POST", "/servers/"+id+"/mcp", body, h...) }, string(r.body)
	}
	list := func(post func(string) result, method, member string) string {
		t.Helper()
		var resp struct{ Result map[string]json.RawMessage }
		body := post(`{"jsonrpc":"2.0","id":1,"method":"` + method + `"}`).body
		if err := json.Unmarshal(body, &resp); err != nil || resp.Result[member] == nil {
			t.Fatalf("%s: %v %s", method, err, body)
		}
		return string(resp.Result[member])
	}
	read := func(post func(string) result, uri string) string {
		return string(post(`{"jsonrpc":"2.0","id":2,"method":"resources/read","params":{"uri":"` + uri + `"}}`).body)
	}
	get := func(post func(string) result, name string) string {
		return string(post(`{"jsonrpc":"2.0","id":3,"method":"prompts/get","params":{"name":"` + name + `"}}`).body)
	}

	// A whole upstream, one-to-one: its tools, resources, templates and
	// prompts under its own names, as it lists them; nothing of another.
	post, init := session("one")
	if !strings.Contains(init, `"capabilities":{"completions":{},"prompts":{"listChanged":false},"resources":{"subscribe":true,"listChanged":false},"tools":{"listChanged":false}}`) {
		t.Errorf("initialize: %s", init)
	}
	if got := toolNames(t, post(`{"jsonrpc":"2.0","id":1,"method":"tools/list"}`).body); !reflect.DeepEqual(got, []string{"echo"}) {
		t.Errorf("tools/list: %v", got)
	}
	if got := list(post, "resources/list", "resources"); got != `[{"uri":"a://one","name":"one","mimeType":"text/plain"}]` {
		t.Errorf("resources/list: %s", got)
	}
	if got := list(post, "resources/templates/list", "resourceTemplates"); got != `[{"uriTemplate":"a://t/{id}","name":"t"}]` {
		t.Errorf("resources/templates/list: %s", got)
	}
	if got := list(post, "prompts/list", "prompts"); got != `[{"name":"p1","arguments":[{"name":"city","required":true}]},{"name":"p2","description":"second page"}]` {
		t.Errorf("prompts/list: %s", got)
	}
	for _, uri := range []string{"a://one", "a://t/42"} {
		if got := read(post, uri); !strings.Contains(got, `"text":"from a"`) {
			t.Errorf("read %s: %s", uri, got)
		}
	}
	if got := read(post, "b://one"); !strings.Contains(got, `"code":-32002,"message":"Resource not found: b://one"`) {
		t.Errorf("read of another upstream's: %s", got)
	}
	if got := get(post, "p1"); !strings.Contains(got, "prompt p1 of a") {
		t.Errorf("get p1: %s", got)
	}
	if got := get(post, "a-p1"); !strings.Contains(got, `"code":-32602,"message":"Unknown prompt: a-p1"`) {
		t.Errorf("get by the gateway's name: %s", got)
	}

	// Named ones of several upstreams: c's p1 and a's p1 keep the
	// gateway's names; a template of c serves its URIs, not c's others.
	post, init = session("mixed")
	if got := list(post, "prompts/list", "prompts"); got != `[{"arguments":[{"name":"city","required":true}],"name":"a-p1"},{"name":"c-p1"},{"name":"only-c"}]` {
		t.Errorf("prompts/list: %s", got)
	}
	if got := list(post, "resources/list", "resources"); got != `[{"uri":"b://one","name":"one","mimeType":"text/plain"}]` {
		t.Errorf("resources/list: %s", got)
	}
	if got := list(post, "resources/templates/list", "resourceTemplates"); got != `[{"uriTemplate":"c://t/{id}","name":"t"}]` {
		t.Errorf("resources/templates/list: %s", got)
	}
	for name, want := range map[string]string{"c-p1": "prompt p1 of c", "only-c": "prompt only-c of c", "a-p1": "prompt p1 of a"} {
		if got := get(post, name); !strings.Contains(got, want) {
			t.Errorf("get %s: %s", name, got)
		}
	}
	for _, name := range []string{"p1", "p2", "a-p2", "c-only-c"} {
		if got := get(post, name); !strings.Contains(got, "Unknown prompt: "+name) {
			t.Errorf("get %s (not the server's, or not by that name): %s", name, got)
		}
	}
	if got := read(post, "c://t/5"); !strings.Contains(got, "from c") {
		t.Errorf("read by the server's template: %s", got)
	}
	for _, uri := range []string{"c://doc", "c://t/5/6", "a://one", "a://t/1"} {
		if got := read(post, uri); !strings.Contains(got, "Resource not found: "+uri) {
			t.Errorf("read %s outside the server: %s", uri, got)
		}
	}
	if !strings.Contains(init, `"capabilities":{"completions":{},"prompts":{"listChanged":false},"resources":{"subscribe":true,"listChanged":false},"tools":`) {
		t.Errorf("initialize: %s", init)
	}
	complete := func(ref string) string {
		return string(post(`{"jsonrpc":"2.0","id":4,"method":"completion/complete","params":{"ref":` + ref + `,"argument":{"name":"x","value":"1"}}}`).body)
	}
	for ref, want := range map[string]string{
		`{"type":"ref/prompt","name":"only-c"}`:      `c {\"argument\":{\"name\":\"x\",\"value\":\"1\"},\"ref\":{\"name\":\"only-c\",\"type\":\"ref/prompt\"}}`,
		`{"type":"ref/prompt","name":"c-p1"}`:        `\"name\":\"p1\"`,
		`{"type":"ref/resource","uri":"c://t/{id}"}`: `\"uri\":\"c://t/{id}\"`,
		`{"type":"ref/prompt","name":"p1"}`:          "Unknown prompt: p1",
		`{"type":"ref/resource","uri":"a://t/{id}"}`: "Unknown resource template: a://t/{id}",
	} {
		if got := complete(ref); !strings.Contains(got, want) {
			t.Errorf("complete %s: %s; want %s", ref, got, want)
		}
	}

	// Tools only: no resources or prompts declared, and none served.
	post, init = session("tools")
	if !strings.Contains(init, `"capabilities":{"tools":{"listChanged":false}}`) {
		t.Errorf("initialize of a server of tools: %s", init)
	}
	if got := toolNames(t, post(`{"jsonrpc":"2.0","id":1,"method":"tools/list"}`).body); !reflect.DeepEqual(got, []string{"a-echo", "c-echo"}) {
		t.Errorf("tools/list: %v", got)
	}
	if got := list(post, "resources/list", "resources") + list(post, "prompts/list", "prompts"); got != "[][]" {
		t.Errorf("lists of a server of tools: %s", got)
	}
	if got := read(post, "a://one"); !strings.Contains(got, "Resource not found") {
		t.Errorf("read: %s", got)
	}
	r = call(s, "POST", "/servers/tools/mcp", modernBody("server/discover", ""), "Authorization", "Bearer "+tok,
		"Accept", "application/json, text/event-stream", "Mcp-Protocol-Version", "2026-07-28", "Mcp-Method", "server/discover")
	if !strings.Contains(string(r.body), `"capabilities":{"logging":{},"tools":{"listChanged":false}}`) {
		t.Errorf("server/discover of a server of tools: %s", r.body)
	}
	r = call(s, "POST", "/servers/one/mcp", modernBody("prompts/get", `"name":"p1"`), "Authorization", "Bearer "+tok,
		"Accept", "application/json, text/event-stream", "Mcp-Protocol-Version", "2026-07-28", "Mcp-Method", "prompts/get", "Mcp-Name", "p1")
	if !strings.Contains(string(r.body), "prompt p1 of a") {
		t.Errorf("2026-07-28 prompts/get on a server: %s", r.body)
	}
	r = call(s, "POST", "/servers/one/mcp", modernBody("resources/read", `"uri":"b://one"`), "Authorization", "Bearer "+tok,
		"Accept", "application/json, text/event-stream", "Mcp-Protocol-Version", "2026-07-28", "Mcp-Method", "resources/read", "Mcp-Name", "b://one")
	if !strings.Contains(string(r.body), `"code":-32602,"message":"Resource not found: b://one"`) {
		t.Errorf("2026-07-28 resources/read outside the server: %s", r.body)
	}
}

// A template's pattern: literal parts as they are, simple expressions
// within one segment, operators anything.
func TestTemplatePattern(t *testing.T) {
	for _, c := range []struct {
		template, uri string
		match         bool
	}{
		{"a://t/{id}", "a://t/42", true},
		{"a://t/{id}", "a://t/", true},
		{"a://t/{id}", "a://t/4/2", false},
		{"a://t/{id}", "a://u/42", false},
		{"a://t/{id}.txt", "a://t/x.txt", true},
		{"a://t/{id}.txt", "a://t/xytxt", false},
		{"file://{+path}", "file://a/b/c", true},
		{"a://s{?q,r}", "a://s?q=1&r=2", true},
		{"a://{x}/{y}", "a://1/2", true},
		{"broken{", "broken{", true},
	} {
		if got := templatePattern(c.template).MatchString(c.uri); got != c.match {
			t.Errorf("%s matches %s: %v; want %v", c.template, c.uri, got, c.match)
		}
	}
}
