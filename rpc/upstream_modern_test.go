package rpc

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mcpgateway/mcpgateway/store"
)

// modernUpstream is an upstream that speaks 2026-07-28 only: "need" refuses
// a client without sampling (-32021, 400, with the capability named),
// "ask" asks for input until it gets it, and same://doc, which upstream
// "a" lists too, is read with its own caching hints.
func modernUpstream(t *testing.T, seen *atomic.Value) string {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		raw, _ := io.ReadAll(r.Body)
		var m struct {
			ID     json.RawMessage `json:"id"`
			Method string          `json:"method"`
			Params struct {
				Name           string          `json:"name"`
				InputResponses json.RawMessage `json:"inputResponses"`
				RequestState   string          `json:"requestState"`
			} `json:"params"`
		}
		json.Unmarshal(raw, &m)
		if r.Header.Get("MCP-Protocol-Version") != "2026-07-28" {
			http.Error(w, "2026-07-28 only", http.StatusBadRequest)
			return
		}
		if m.Method == "tools/call" {
			seen.Store(string(raw))
		}
		w.Header().Set("Content-Type", "application/json")
		result := func(res string) { fmt.Fprintf(w, `{"jsonrpc":"2.0","id":%s,"result":%s}`, m.ID, res) }
		switch {
		case m.Method == "server/discover":
			result(`{"supportedVersions":["2026-07-28"],"capabilities":{"tools":{},"resources":{}}}`)
		case m.Method == "tools/list":
			result(`{"tools":[{"name":"need","inputSchema":{"type":"object"}},{"name":"ask","inputSchema":{"type":"object"}}]}`)
		case m.Method == "resources/list":
			result(`{"resources":[{"uri":"same://doc","name":"doc"}]}`)
		case m.Method == "resources/templates/list":
			result(`{"resourceTemplates":[]}`)
		case m.Method == "resources/read":
			result(`{"contents":[{"uri":"same://doc","text":"from m"}],"ttlMs":5000,"cacheScope":"private","resultType":"complete"}`)
		case m.Params.Name == "need":
			w.WriteHeader(http.StatusBadRequest)
			fmt.Fprintf(w, `{"jsonrpc":"2.0","id":%s,"error":{"code":-32021,"message":"Missing required client capability: sampling","data":{"requiredCapabilities":{"sampling":{}}}}}`, m.ID)
		case m.Params.Name == "ask" && m.Params.RequestState == "round1" && strings.Contains(string(m.Params.InputResponses), "Alice"):
			result(`{"content":[{"type":"text","text":"hello Alice"}],"resultType":"complete"}`)
		case m.Params.Name == "ask":
			result(`{"resultType":"input_required","inputRequests":{"user_name":{"method":"elicitation/create","params":{"message":"name?","requestedSchema":{"type":"object"}}}},"requestState":"round1"}`)
		default:
			fmt.Fprintf(w, `{"jsonrpc":"2.0","id":%s,"error":{"code":-32601,"message":"Method not found"}}`, m.ID)
		}
	}))
	t.Cleanup(srv.Close)
	return srv.URL + "/mcp"
}

// A 2026-07-28 client is served by an upstream that speaks 2026-07-28 in
// that form (upstream/modern.go): its capabilities reach the upstream,
// whose refusal comes back with its data and status; an input_required
// result comes back as it is, and the retry goes on with its
// inputResponses and requestState. A URI two upstreams list is read, on a
// virtual server's endpoint, from the one the server serves, with that
// upstream's own caching hints.
func TestModernUpstreamThroughTheGateway(t *testing.T) {
	var seen atomic.Value
	reads := new(atomic.Int32)
	fb := newFakeBackend()
	schema := json.RawMessage(`{"type":"object"}`)
	fb.setTools([]store.Tool{
		{Name: "m-need", InputSchema: schema, Enabled: true, Gateway: "m", UpstreamName: "need"},
		{Name: "m-ask", InputSchema: schema, Enabled: true, Gateway: "m", UpstreamName: "ask"},
		{Name: "m-where", Enabled: true, Gateway: "m", UpstreamName: "where",
			InputSchema: json.RawMessage(`{"type":"object","properties":{"region":{"type":"string","x-mcp-header":"Region"}}}`)},
	})
	b := serversGatewaysFake{
		&serversFake{allToolsFake: allToolsFake{fb}, servers: map[string]store.Server{"onlym": {ID: "onlym", Gateways: []string{"m"}}}},
		gatewaysFake{fb, []store.Gateway{
			{Name: "a", URL: sameDocUpstream(t, reads), Enabled: true},
			{Name: "m", URL: modernUpstream(t, &seen), Enabled: true},
		}},
	}
	o := testOptions()
	o.FederationTimeout = 10 * time.Second
	s, err := New(o, b)
	if err != nil {
		t.Fatal(err)
	}
	tok := mint(t, nil)

	r := modernCall(t, s, tok, "tools/call", "m-need", modernBody("tools/call", `"name":"m-need","arguments":{}`))
	if r.status != 400 || !strings.Contains(string(r.body), `"code":-32021`) ||
		!strings.Contains(string(r.body), `"data":{"requiredCapabilities":{"sampling":{}}}`) {
		t.Errorf("missing capability: %d %s", r.status, r.body)
	}
	if got, _ := seen.Load().(string); !strings.Contains(got, `"io.modelcontextprotocol/clientCapabilities":{}`) {
		t.Errorf("the upstream did not get the client's capabilities: %s", got)
	}

	r = modernCall(t, s, tok, "tools/call", "m-ask", modernBody("tools/call", `"name":"m-ask","arguments":{}`))
	if r.status != 200 || !strings.Contains(string(r.body), `"resultType":"input_required"`) || !strings.Contains(string(r.body), `"requestState":"round1"`) ||
		!strings.Contains(string(r.body), `"user_name":{"method":"elicitation/create"`) {
		t.Fatalf("first round: %d %s", r.status, r.body)
	}
	r = modernCall(t, s, tok, "tools/call", "m-ask", modernBody("tools/call",
		`"name":"m-ask","arguments":{},"inputResponses":{"user_name":{"action":"accept","content":{"name":"Alice"}}},"requestState":"round1"`))
	if r.status != 200 || !strings.Contains(string(r.body), "hello Alice") || !strings.Contains(string(r.body), `"resultType":"complete"`) {
		t.Errorf("retry: %d %s", r.status, r.body)
	}

	// A virtual server's tool, under its own name there, has its
	// Mcp-Param-* headers checked as on /mcp.
	where := modernBody("tools/call", `"name":"where","arguments":{"region":"eu"}`)
	r = call(s, "POST", "/servers/onlym/mcp", where, "Authorization", "Bearer "+tok,
		"MCP-Protocol-Version", "2026-07-28", "Mcp-Method", "tools/call", "Mcp-Name", "where")
	if r.status != 400 || !strings.Contains(string(r.body), `"code":-32020`) {
		t.Errorf("a virtual server's tool without its Mcp-Param-Region: %d %s", r.status, r.body)
	}
	r = call(s, "POST", "/servers/onlym/mcp", where, "Authorization", "Bearer "+tok,
		"MCP-Protocol-Version", "2026-07-28", "Mcp-Method", "tools/call", "Mcp-Name", "where", "Mcp-Param-Region", "eu")
	if strings.Contains(string(r.body), `-32020`) {
		t.Errorf("a virtual server's tool with its Mcp-Param-Region: %d %s", r.status, r.body)
	}

	read := func(path string) string {
		t.Helper()
		r := call(s, "POST", path, modernBody("resources/read", `"uri":"same://doc"`), "Authorization", "Bearer "+tok,
			"MCP-Protocol-Version", "2026-07-28", "Mcp-Method", "resources/read", "Mcp-Name", "same://doc")
		if r.status != 200 {
			t.Fatalf("read on %s: %d %s", path, r.status, r.body)
		}
		return string(r.body)
	}
	if got := read("/mcp"); !strings.Contains(got, "from a") || !strings.Contains(got, `"ttlMs":0`) {
		t.Errorf("/mcp reads from the first upstream by name: %s", got)
	}
	if got := read("/servers/onlym/mcp"); !strings.Contains(got, "from m") || strings.Count(got, `"ttlMs"`) != 1 || !strings.Contains(got, `"ttlMs":5000,"cacheScope":"private"`) {
		t.Errorf("the server's upstream, with its own hints once: %s", got)
	}
}

// sameDocUpstream is a session-revision upstream that lists same://doc.
func sameDocUpstream(t *testing.T, reads *atomic.Int32) string {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var m struct {
			ID     json.RawMessage `json:"id"`
			Method string          `json:"method"`
		}
		json.NewDecoder(r.Body).Decode(&m)
		w.Header().Set("Content-Type", "application/json")
		result := func(res string) { fmt.Fprintf(w, `{"jsonrpc":"2.0","id":%s,"result":%s}`, m.ID, res) }
		switch m.Method {
		case "initialize":
			result(`{"protocolVersion":"2025-11-25","capabilities":{"resources":{}},"serverInfo":{"name":"a","version":"0"}}`)
		case "notifications/initialized":
			w.WriteHeader(http.StatusAccepted)
		case "resources/list":
			result(`{"resources":[{"uri":"same://doc","name":"doc"}]}`)
		case "resources/templates/list":
			result(`{"resourceTemplates":[]}`)
		case "resources/read":
			reads.Add(1)
			result(`{"contents":[{"uri":"same://doc","text":"from a"}]}`)
		default:
			w.WriteHeader(http.StatusBadRequest)
			fmt.Fprintf(w, `{"jsonrpc":"2.0","id":%s,"error":{"code":-32601,"message":"Method not found"}}`, m.ID)
		}
	}))
	t.Cleanup(srv.Close)
	return srv.URL + "/mcp"
}

// A session client of an upstream that speaks only 2026-07-28 is served
// in that form, and the upstream's input_required result is answered for
// it: the input request goes to the client on the call's stream, as the
// requests of session upstreams do, and the call is sent again with the
// client's result and the upstream's requestState. A call answered in
// JSON cannot ask the client anything, and is refused saying why.
func TestSessionClientOfModernOnlyUpstream(t *testing.T) {
	var seen atomic.Value
	fb := newFakeBackend()
	fb.setTools([]store.Tool{{Name: "m-ask", InputSchema: json.RawMessage(`{"type":"object"}`), Enabled: true, Gateway: "m", UpstreamName: "ask"}})
	o := testOptions()
	o.FederationTimeout = 10 * time.Second
	s, url := serveGateway(t, o, gatewaysFake{fb, []store.Gateway{{Name: "m", URL: modernUpstream(t, &seen), Enabled: true}}})
	tok := mint(t, nil)
	sid := session11(t, s)

	resp := postMCP(t, url, `{"jsonrpc":"2.0","id":41,"method":"tools/call","params":{"name":"m-ask","arguments":{}}}`, "Mcp-Session-Id", sid)
	defer resp.Body.Close()
	br := bufio.NewReader(resp.Body)
	evs, _ := readUntil(t, br, `"method":"elicitation/create"`)
	if len(evs) == 0 {
		t.Fatal("no elicitation request on the call's stream")
	}
	var req struct {
		ID     string          `json:"id"`
		Params json.RawMessage `json:"params"`
	}
	if err := json.Unmarshal([]byte(evs[len(evs)-1].data), &req); err != nil || !strings.HasPrefix(req.ID, "gw-") || !strings.Contains(string(req.Params), `"name?"`) {
		t.Fatalf("the input request: %s (%v)", evs[len(evs)-1].data, err)
	}
	if r := mcpCall(t, s, tok, sid, `{"jsonrpc":"2.0","id":"`+req.ID+`","result":{"action":"accept","content":{"name":"Alice"}}}`); r.status != 202 {
		t.Fatalf("the client's response: %d %s", r.status, r.body)
	}
	rest, _ := readUntil(t, br, `"id":41,`)
	if len(rest) == 0 || !strings.Contains(rest[len(rest)-1].data, "hello Alice") || strings.Contains(rest[len(rest)-1].data, "input_required") {
		t.Fatalf("the result: %+v", rest)
	}
	retry, _ := seen.Load().(string)
	for _, want := range []string{`"requestState":"round1"`, `"inputResponses":{"user_name":{"action":"accept","content":{"name":"Alice"}}}`,
		`"io.modelcontextprotocol/clientCapabilities":{"elicitation":{},"roots":{},"sampling":{}}`} {
		if !strings.Contains(retry, want) {
			t.Errorf("the retry upstream lacks %s: %s", want, retry)
		}
	}

	r := call(s, "POST", "/mcp", `{"jsonrpc":"2.0","id":42,"method":"tools/call","params":{"name":"m-ask","arguments":{}}}`,
		"Authorization", "Bearer "+tok, "Accept", "application/json", "Mcp-Session-Id", sid, "MCP-Protocol-Version", "2025-11-25")
	if !strings.Contains(string(r.body), "streamed answer") || strings.Contains(string(r.body), "input_required") {
		t.Errorf("a JSON answer: %d %s", r.status, r.body)
	}
}

// The Mcp-Param-* headers the gateway makes for a session client's call
// to an upstream in the 2026-07-28 form: from the annotated properties,
// nested ones too, primitive values only, Base64 where not plain.
func TestParamHeaders(t *testing.T) {
	schema := []byte(`{"type":"object","properties":{"region":{"type":"string","x-mcp-header":"Region"},` +
		`"count":{"type":"integer","x-mcp-header":"Count"},"flag":{"type":"boolean","x-mcp-header":"Flag"},` +
		`"tags":{"type":"array","x-mcp-header":"Tags"},"plain":{"type":"string"},` +
		`"where":{"type":"object","properties":{"city":{"type":"string","x-mcp-header":"City"}}}}}`)
	h := paramHeaders(schema, []byte(`{"region":"eu","count":3,"flag":true,"tags":["a"],"plain":"x","where":{"city":"Zürich"}}`))
	want := map[string]string{"Mcp-Param-Region": "eu", "Mcp-Param-Count": "3", "Mcp-Param-Flag": "true", "Mcp-Param-City": "=?base64?WsO8cmljaA==?="}
	if len(h) != len(want) {
		t.Errorf("headers: %v", h)
	}
	for k, v := range want {
		if h.Get(k) != v {
			t.Errorf("%s: %q, want %q", k, h.Get(k), v)
		}
	}
	if h := paramHeaders([]byte(`{"type":"object"}`), []byte(`{"region":"eu"}`)); h != nil {
		t.Errorf("no annotations: %v", h)
	}
	if h := paramHeaders(schema, nil); h != nil {
		t.Errorf("no arguments: %v", h)
	}
}
