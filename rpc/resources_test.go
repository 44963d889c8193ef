package rpc

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mcpgateway/mcpgateway/internal/mcptest"
	"github.com/mcpgateway/mcpgateway/store"
)

// gatewaysFake is a fakeBackend that keeps several upstreams.
type gatewaysFake struct {
	*fakeBackend
	gateways []store.Gateway
}

func (f gatewaysFake) Gateways(ctx context.Context, key []byte) ([]store.Gateway, error) {
	return f.gateways, nil
}

func (f gatewaysFake) Gateway(ctx context.Context, name string, key []byte) (store.Gateway, error) {
	for _, g := range f.gateways {
		if g.Name == name {
			return g, nil
		}
	}
	return store.Gateway{}, store.ErrNotFound
}

func (f gatewaysFake) PutGateway(ctx context.Context, g store.Gateway, tools []store.Tool, key []byte) error {
	return nil
}

func (f gatewaysFake) DeleteGateway(ctx context.Context, name string) error { return nil }

// resourceUpstream is a small upstream with resources and prompts: "a"
// has a resource, a template and two prompts on two pages; "b" a
// resource and no prompts capability. reads counts resources/read.
func resourceUpstream(t *testing.T, name string, reads *atomic.Int32, delay time.Duration) string {
	caps := `{"resources":{}}`
	if name == "a" {
		caps = `{"resources":{},"prompts":{}}`
	}
	fake := &mcptest.Server{Session: name + "-session", Capabilities: caps, Handle: func(_ *http.Request, method string, params json.RawMessage) string {
		var p struct {
			Cursor    string          `json:"cursor"`
			URI       string          `json:"uri"`
			Name      string          `json:"name"`
			Arguments json.RawMessage `json:"arguments"`
		}
		json.Unmarshal(params, &p)
		if strings.HasSuffix(method, "/list") {
			time.Sleep(delay)
		}
		switch {
		case method == "resources/list":
			return fmt.Sprintf(`{"resources":[{"uri":"%s://one","name":"one","mimeType":"text/plain"}]}`, name)
		case method == "resources/templates/list" && name == "a":
			return `{"resourceTemplates":[{"uriTemplate":"a://t/{id}","name":"t"}]}`
		case method == "resources/templates/list":
			return `{"resourceTemplates":[]}`
		case method == "resources/read":
			reads.Add(1)
			return fmt.Sprintf(`{"contents":[{"uri":%q,"text":"from %s"}]}`, p.URI, name)
		case method == "prompts/list" && p.Cursor == "":
			return `{"prompts":[{"name":"p1","arguments":[{"name":"city","required":true}]}],"nextCursor":"2"}`
		case method == "prompts/list":
			return `{"prompts":[{"name":"p2","description":"second page"}]}`
		case method == "prompts/get" && p.Name == "p1" && name == "a":
			text, _ := json.Marshal(fmt.Sprintf("prompt p1 of %s: %s", name, p.Arguments))
			return `{"messages":[{"role":"user","content":{"type":"text","text":` + string(text) + `}}]}`
		}
		return ""
	}}
	srv := httptest.NewServer(fake)
	t.Cleanup(srv.Close)
	return srv.URL + "/mcp"
}

// newResourcesServer serves upstreams a and b, one that is down, and a
// disabled one.
func newResourcesServer(t *testing.T, mod func(o *Options), delayB time.Duration) (s *Server, reads *atomic.Int32) {
	reads = new(atomic.Int32)
	down := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "down", http.StatusServiceUnavailable)
	}))
	t.Cleanup(down.Close)
	b := gatewaysFake{newFakeBackend(), []store.Gateway{
		{Name: "a", URL: resourceUpstream(t, "a", reads, 0), Enabled: true},
		{Name: "b", URL: resourceUpstream(t, "b", reads, delayB), Enabled: true},
		{Name: "down", URL: down.URL, Enabled: true},
		{Name: "off", URL: resourceUpstream(t, "off", reads, 0), Enabled: false},
	}}
	o := testOptions()
	o.FederationTimeout = 10 * time.Second
	if mod != nil {
		mod(&o)
	}
	s, err := New(o, b)
	if err != nil {
		t.Fatal(err)
	}
	return s, reads
}

// The lists of every enabled upstream that offers them, in one page; an
// upstream that is down is left out; prompts namespaced; resources/read
// and prompts/get forwarded to their upstream.
func TestFederatedResourcesAndPrompts(t *testing.T) {
	s, reads := newResourcesServer(t, nil, 0)
	list := func(method, member string) string {
		t.Helper()
		res := rpcResult(t, s, `{"jsonrpc":"2.0","id":1,"method":"`+method+`"}`)
		if _, more := res["nextCursor"]; more {
			t.Errorf("%s: nextCursor %v", method, res["nextCursor"])
		}
		b, _ := json.Marshal(res[member])
		return string(b)
	}
	if got := list("resources/list", "resources"); got != `[{"mimeType":"text/plain","name":"one","uri":"a://one"},{"mimeType":"text/plain","name":"one","uri":"b://one"}]` {
		t.Errorf("resources/list: %s", got)
	}
	if got := list("resources/templates/list", "resourceTemplates"); got != `[{"name":"t","uriTemplate":"a://t/{id}"}]` {
		t.Errorf("resources/templates/list: %s", got)
	}
	if got := list("prompts/list", "prompts"); got != `[{"arguments":[{"name":"city","required":true}],"name":"a-p1"},{"description":"second page","name":"a-p2"}]` {
		t.Errorf("prompts/list (both pages of a; b offers none): %s", got)
	}

	for uri, want := range map[string]string{"a://one": "from a", "b://one": "from b", "a://t/42": "from a"} {
		res := rpcResult(t, s, `{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"uri":"`+uri+`"}}`)
		if b, _ := json.Marshal(res); !strings.Contains(string(b), want) || !strings.Contains(string(b), uri) {
			t.Errorf("resources/read %s: %s", uri, b)
		}
	}
	if n := reads.Load(); n != 3 {
		t.Errorf("%d reads reached the upstreams, want 3", n)
	}
	res := rpcResult(t, s, `{"jsonrpc":"2.0","id":1,"method":"prompts/get","params":{"name":"a-p1","arguments":{"city":"Paris"}}}`)
	if b, _ := json.Marshal(res); !strings.Contains(string(b), `prompt p1 of a: {\"city\":\"Paris\"}`) {
		t.Errorf("prompts/get: %s", b)
	}

	for _, c := range []struct {
		body string
		code int
		msg  string
	}{
		{`{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"uri":"c://nowhere"}}`, codeResourceNotFound, "Resource not found: c://nowhere"},
		{`{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"uri":"off://one"}}`, codeResourceNotFound, "Resource not found: off://one"},
		{`{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{}}`, codeInvalidParams, "Invalid params: resources/read needs a uri (a string)"},
		{`{"jsonrpc":"2.0","id":1,"method":"prompts/get","params":{"name":"zz-p1"}}`, codeInvalidParams, "Unknown prompt: zz-p1"},
		{`{"jsonrpc":"2.0","id":1,"method":"prompts/get","params":{"name":"off-p1"}}`, codeInvalidParams, "Unknown prompt: off-p1"},
		{`{"jsonrpc":"2.0","id":1,"method":"prompts/get","params":{"name":"a-p1","arguments":[1]}}`, codeInvalidParams, "Invalid params: arguments must be an object"},
		{`{"jsonrpc":"2.0","id":1,"method":"prompts/get","params":{"name":"b-p1"}}`, codeMethodNotFound, "Method not found"}, // b's own answer
		{`{"jsonrpc":"2.0","id":1,"method":"prompts/get","params":{"name":"down-p1"}}`, codeInternalError, "upstream down unavailable"},
		{`{"jsonrpc":"2.0","id":1,"method":"prompts/list","params":{"cursor":"x"}}`, codeInvalidParams, "Invalid params: invalid cursor (this list has a single page)"},
	} {
		if code, msg, _ := rpcErr(t, s, c.body); code != c.code || !strings.HasPrefix(msg, c.msg) {
			t.Errorf("%s: %d %q, want %d %q", c.body, code, msg, c.code, c.msg)
		}
	}

	// 2026-07-28: the methods are offered, Mcp-Name mirrors the uri or
	// the name, an unknown resource is -32602, and the results carry
	// caching hints (resources/read's stale at once).
	tok := mint(t, nil)
	r := modernCall(t, s, tok, "resources/read", "a://one", modernBody("resources/read", `"uri":"a://one"`))
	if res := modernResult(t, r); res["ttlMs"] != float64(0) || res["cacheScope"] != "public" || res["resultType"] != "complete" {
		t.Errorf("2026-07-28 resources/read: %s", r.body)
	}
	r = modernCall(t, s, tok, "resources/list", "", modernBody("resources/list", ""))
	if res := modernResult(t, r); res["ttlMs"] != float64(60000) || !strings.Contains(string(r.body), `"b://one"`) {
		t.Errorf("2026-07-28 resources/list: %s", r.body)
	}
	r = modernCall(t, s, tok, "prompts/get", "a-p1", modernBody("prompts/get", `"name":"a-p1","arguments":{"city":"Oslo"}`))
	if modernResult(t, r); !strings.Contains(string(r.body), "Oslo") {
		t.Errorf("2026-07-28 prompts/get: %s", r.body)
	}
	modernErr(t, "unknown resource", modernCall(t, s, tok, "resources/read", "c://x", modernBody("resources/read", `"uri":"c://x"`)), 200, codeInvalidParams, false)
	modernErr(t, "Mcp-Name missing", modernCall(t, s, tok, "prompts/get", "", modernBody("prompts/get", `"name":"a-p1"`)), 400, codeHeaderMismatch, false)
	modernErr(t, "Mcp-Name not the uri", modernCall(t, s, tok, "resources/read", "b://one", modernBody("resources/read", `"uri":"a://one"`)), 400, codeHeaderMismatch, false)
}

// A slow upstream does not hold a list past the request's timeout: it is
// left out, and the others' entries are answered in time.
func TestFederatedListWithinRequestTimeout(t *testing.T) {
	s, _ := newResourcesServer(t, func(o *Options) { o.RequestTimeout = time.Second }, 3*time.Second)
	start := time.Now()
	res := rpcResult(t, s, `{"jsonrpc":"2.0","id":1,"method":"resources/list"}`)
	b, _ := json.Marshal(res)
	if took := time.Since(start); took > time.Second || !strings.Contains(string(b), `"a://one"`) || strings.Contains(string(b), `"b://one"`) {
		t.Errorf("resources/list with b slower than the timeout: %v, %s", took, b)
	}
}
