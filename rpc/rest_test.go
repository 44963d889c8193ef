package rpc

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/mcpgateway/mcpgateway/store"
)

// restEcho is an HTTP endpoint for REST tools: /echo/... answers what it
// received as JSON; the other paths answer other kinds of content.
func restEcho(t *testing.T) *httptest.Server {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		switch {
		case strings.HasPrefix(r.URL.Path, "/echo/"):
			w.Header().Set("Content-Type", "application/json; charset=utf-8")
			json.NewEncoder(w).Encode(map[string]any{"method": r.Method, "path": r.URL.EscapedPath(), "query": r.URL.RawQuery,
				"body": string(body), "key": r.Header.Get("X-Api-Key"), "trace": r.Header.Get("X-Trace"), "type": r.Header.Get("Content-Type")})
		case r.URL.Path == "/list":
			w.Header().Set("Content-Type", "application/json")
			fmt.Fprint(w, `[1,2]`)
		case r.URL.Path == "/text":
			fmt.Fprint(w, "hello")
		case r.URL.Path == "/moved":
			http.Redirect(w, r, "/text", http.StatusFound)
		case r.URL.Path == "/boom":
			http.Error(w, "it broke", http.StatusInternalServerError)
		default:
			http.Error(w, "no such item", http.StatusNotFound)
		}
	}))
	t.Cleanup(srv.Close)
	return srv
}

func TestRESTTools(t *testing.T) {
	srv := restEcho(t)
	s, _ := newTestServer(t, func(o *Options) { o.UpstreamKey = store.SecretKey("rest test") })
	put := func(name, integration string) result {
		t.Helper()
		return adminCall(t, s, "PUT", "/admin/tools/"+name, `{"description":"d","inputSchema":{"type":"object"},"integration":`+integration+`}`)
	}
	r := put("items", `{"type":"REST","request_type":"post","url":"`+srv.URL+`/echo/items/{id}?v=1","query":["q"],
		"headers":{"X-Trace":"t1"},"auth_type":"authheaders","auth_header_key":"X-Api-Key","auth_header_value":"k-s3cret"}`)
	if r.status != 200 || strings.Contains(string(r.body), "s3cret") || strings.Contains(string(r.body), "sealed") ||
		!strings.Contains(string(r.body), `"authHeaderName":"X-Api-Key"`) {
		t.Fatalf("register: %d %s", r.status, r.body)
	}
	if r := adminCall(t, s, "GET", "/admin/tools", ""); strings.Contains(string(r.body), "sealed") || !strings.Contains(string(r.body), "/echo/items/{id}") {
		t.Errorf("list: %s", r.body)
	}
	for name, integration := range map[string]string{
		"GET": `{"type":"REST","url":"` + srv.URL + `/list"}`, "TEXT": `{"type":"REST","url":"` + srv.URL + `/text"}`,
		"MOVED": `{"type":"REST","url":"` + srv.URL + `/moved"}`, "BOOM": `{"type":"REST","url":"` + srv.URL + `/boom"}`,
		"MISSING": `{"type":"REST","url":"` + srv.URL + `/nothing/{id}"}`, "DOWN": `{"type":"REST","url":"http://127.0.0.1:1/x"}`,
		"DEL": `{"type":"REST","request_type":"DELETE","url":"` + srv.URL + `/echo/{id}","body":["why"]}`,
	} {
		if r := put(name, integration); r.status != 200 {
			t.Fatalf("register %s: %d %s", name, r.status, r.body)
		}
	}
	callTool := func(name, args string) map[string]any {
		t.Helper()
		return rpcResult(t, s, `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"`+name+`","arguments":`+args+`}}`)
	}

	// Path (escaped), query (an array repeated), body (the rest, for a POST), headers, credential.
	res := callTool("items", `{"id":"a/b c","q":["x","y"],"n":3,"flag":true}`)
	sc, _ := res["structuredContent"].(map[string]any)
	want := map[string]any{"method": "POST", "path": "/echo/items/a%2Fb%20c", "query": "q=x&q=y&v=1",
		"body": `{"flag":true,"n":3}`, "key": "k-s3cret", "trace": "t1", "type": "application/json"}
	if fmt.Sprint(sc) != fmt.Sprint(want) {
		t.Errorf("structuredContent %v, want %v", sc, want)
	}
	if text, isErr := toolText(t, res); isErr || !strings.Contains(text, `"path":"/echo/items/a%2Fb%20c"`) {
		t.Errorf("text %q, isError %v", text, isErr)
	}
	// The tool named as the method; a DELETE sends its body arguments only.
	r = rpc(t, s, `{"jsonrpc":"2.0","id":2,"method":"DEL","params":{"id":"7","why":"old","force":1}}`)
	if !strings.Contains(string(r.body), `"body":"{\"why\":\"old\"}"`) || !strings.Contains(string(r.body), `"query":"force=1"`) {
		t.Errorf("DELETE: %s", r.body)
	}
	// A GET sends the arguments as the query; a JSON array is wrapped.
	if res := callTool("GET", `{"limit":5}`); fmt.Sprint(res["structuredContent"]) != "map[result:[1 2]]" {
		t.Errorf("a JSON array: %v", res)
	}
	if res := callTool("TEXT", `{}`); res["structuredContent"] != nil {
		t.Errorf("text answered as structured: %v", res)
	} else if text, isErr := toolText(t, res); text != "hello" || isErr {
		t.Errorf("text: %q %v", text, isErr)
	}
	for _, c := range []struct{ tool, args, text string }{
		{"MISSING", `{"id":"1"}`, "HTTP 404 Not Found: no such item"},
		{"BOOM", `{}`, "HTTP 500 Internal Server Error: it broke"},
		{"MOVED", `{}`, "HTTP 302 Found"},
		{"items", `{"q":"x"}`, `REST tool items: argument "id" is required, as a string or number, for the URL path`},
		{"items", `{"id":".."}`, `REST tool items: argument "id" is required`},
		{"DOWN", `{}`, "REST tool DOWN: the endpoint did not answer: "},
	} {
		text, isErr := toolText(t, callTool(c.tool, c.args))
		if !isErr || !strings.HasPrefix(text, c.text) {
			t.Errorf("%s %s: %q, isError %v; want %q", c.tool, c.args, text, isErr, c.text)
		}
	}

	// Refused registrations.
	for _, c := range []struct{ integration, detail string }{
		{`{"type":"MCP","url":"` + srv.URL + `"}`, `Invalid integration: integration type "MCP"`},
		{`{"type":"REST","url":"ftp://x/y"}`, "Invalid integration: url must be an http"},
		{`{"type":"REST","url":"http://{host}/y"}`, "Invalid integration: url: {placeholders} may stand in the path only"},
		{`{"type":"REST","url":"http://h/y?a={a}"}`, "Invalid integration: url: {placeholders} may stand in the path only"},
		{`{"type":"REST","url":"http://h/{a"}`, "Invalid integration: url: a { without"},
		{`{"type":"REST","url":"http://h/y","body":["a"]}`, "Invalid integration: a GET request has no body"},
		{`{"type":"REST","request_type":"TRACE","url":"http://h/y"}`, `Invalid integration: request_type "TRACE"`},
		{`{"type":"REST","url":"http://h/{a}","query":["a"]}`, `Invalid integration: argument "a" is mapped twice`},
		{`{"type":"REST","url":"http://h/y","headers":{"Bad Name":"v"}}`, `Invalid integration: header "Bad Name"`},
		{`{"type":"REST","url":"http://h/y","auth_type":"bearer"}`, "Invalid integration: auth_type bearer needs auth_token"},
	} {
		expectDetail(t, put("bad", c.integration), 400, c.detail)
	}
	// Credentials need AUTH_ENCRYPTION_SECRET.
	plain, _ := newTestServer(t, nil)
	expectDetail(t, adminCall(t, plain, "PUT", "/admin/tools/x", `{"integration":{"type":"REST","url":"http://h/y","auth_type":"bearer","auth_token":"t"}}`),
		400, "Invalid integration: credentials of upstreams are stored encrypted")
}

// An endpoint that keeps failing opens its origin's circuit: after five
// failures in a row, calls of its REST tools are refused at once without
// reaching it, and /metrics counts the open circuit; another origin's
// tools are unaffected.
func TestRESTToolCircuitBreaker(t *testing.T) {
	var hits atomic.Int32
	failing := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		http.Error(w, "down for maintenance", http.StatusServiceUnavailable)
	}))
	t.Cleanup(failing.Close)
	fine := restEcho(t)
	s, _ := newTestServer(t, nil)
	for name, url := range map[string]string{"a": failing.URL + "/a", "b": failing.URL + "/b/{id}", "ok": fine.URL + "/text"} {
		if r := adminCall(t, s, "PUT", "/admin/tools/"+name, `{"description":"d","inputSchema":{"type":"object"},"integration":{"type":"REST","url":"`+url+`"}}`); r.status != 200 {
			t.Fatalf("register %s: %d %s", name, r.status, r.body)
		}
	}
	call := func(name string) (string, bool) {
		return toolText(t, rpcResult(t, s, `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"`+name+`","arguments":{"id":"1"}}}`))
	}
	for i := range 5 {
		name := []string{"a", "b"}[i%2] // one origin: the tools share its circuit
		if text, isErr := call(name); !isErr || !strings.Contains(text, "HTTP 503") {
			t.Fatalf("call %d: %q %v", i, text, isErr)
		}
	}
	if text, isErr := call("a"); !isErr || !strings.Contains(text, "failed repeatedly") || hits.Load() != 5 {
		t.Fatalf("after 5 failures: %q %v, %d requests reached the endpoint", text, isErr, hits.Load())
	}
	if s.UpstreamsOpen() != 1 {
		t.Errorf("UpstreamsOpen() = %d, want 1", s.UpstreamsOpen())
	}
	if text, isErr := call("ok"); isErr || text != "hello" {
		t.Errorf("another origin: %q %v", text, isErr)
	}
}
