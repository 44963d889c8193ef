package upstream

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

// wireRequest is what a fake upstream saw of one request.
type wireRequest struct {
	header http.Header
	body   map[string]json.RawMessage
	params map[string]json.RawMessage
	meta   map[string]json.RawMessage
}

func (w wireRequest) method() string {
	var m string
	json.Unmarshal(w.body["method"], &m)
	return m
}

// fakeUpstream records every request and answers it with answer.
type fakeUpstream struct {
	mu   sync.Mutex
	seen []wireRequest
	srv  *httptest.Server
}

func newFakeUpstream(t *testing.T, answer func(w http.ResponseWriter, r wireRequest)) *fakeUpstream {
	f := &fakeUpstream{}
	f.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		raw, _ := io.ReadAll(r.Body)
		req := wireRequest{header: r.Header.Clone()}
		json.Unmarshal(raw, &req.body)
		json.Unmarshal(req.body["params"], &req.params)
		json.Unmarshal(req.params["_meta"], &req.meta)
		f.mu.Lock()
		f.seen = append(f.seen, req)
		f.mu.Unlock()
		answer(w, req)
	}))
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fakeUpstream) methods() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var ms []string
	for _, r := range f.seen {
		ms = append(ms, r.method())
	}
	return ms
}

func (f *fakeUpstream) last(method string) wireRequest {
	f.mu.Lock()
	defer f.mu.Unlock()
	for i := len(f.seen) - 1; i >= 0; i-- {
		if f.seen[i].method() == method {
			return f.seen[i]
		}
	}
	return wireRequest{}
}

func answerJSON(w http.ResponseWriter, r wireRequest, result string) {
	w.Header().Set("Content-Type", "application/json")
	fmt.Fprintf(w, `{"jsonrpc":"2.0","id":%s,"result":%s}`, r.body["id"], result)
}

// An upstream whose server/discover lists 2026-07-28 gets a 2026-07-28
// client's requests in that form: no initialize and no session; the
// revision, the client's capabilities, information, log level and progress
// token in _meta; the standard headers, the mirrored argument headers; a
// retry's inputResponses and requestState; and its input_required result
// comes back as it is. The gateway's own listing takes the same form.
func TestModernUpstream(t *testing.T) {
	f := newFakeUpstream(t, func(w http.ResponseWriter, r wireRequest) {
		switch r.method() {
		case "server/discover":
			answerJSON(w, r, `{"supportedVersions":["2026-07-28","2025-11-25"],"capabilities":{"tools":{},"prompts":{}},`+
				`"_meta":{"io.modelcontextprotocol/serverInfo":{"name":"modern","version":"9"}}}`)
		case "tools/list":
			answerJSON(w, r, `{"tools":[{"name":"ask","inputSchema":{"type":"object"}}],"resultType":"complete"}`)
		case "tools/call":
			if r.params["inputResponses"] == nil {
				answerJSON(w, r, `{"resultType":"input_required","inputRequests":{"user_name":{"method":"elicitation/create","params":{}}},"requestState":"s1"}`)
				return
			}
			answerJSON(w, r, `{"content":[{"type":"text","text":"hello"}],"resultType":"complete"}`)
		default:
			w.WriteHeader(http.StatusBadRequest)
		}
	})
	c := New(Server{Name: "modern", URL: f.srv.URL + "/mcp", Timeout: 5 * time.Second}, nil)
	ctx := context.Background()

	tools, err := c.ListTools(ctx)
	if err != nil || len(tools) != 1 || tools[0].Name != "ask" {
		t.Fatalf("tools/list: %+v, %v", tools, err)
	}
	if offers, known := c.Offers("prompts"); !offers || !known {
		t.Errorf("Offers(prompts) = %v, %v: server/discover's capabilities are what initialize would tell", offers, known)
	}
	if info := c.Info(); info.Name != "modern" || info.Protocol != ModernVersion {
		t.Errorf("Info: %+v", info)
	}

	m := &Modern{Capabilities: json.RawMessage(`{"elicitation":{}}`), ClientInfo: json.RawMessage(`{"name":"client","version":"2"}`),
		LogLevel: "warning", Header: http.Header{"Mcp-Param-Region": {"eu"}}}
	res, err := c.CallTool(WithModern(ctx, m), "ask", json.RawMessage(`{"region":"eu"}`), "p1", nil)
	if err != nil || !strings.Contains(string(res), `"resultType":"input_required"`) || !strings.Contains(string(res), `"requestState":"s1"`) {
		t.Fatalf("first round: %s, %v", res, err)
	}
	first := f.last("tools/call")
	for k, want := range map[string]string{"MCP-Protocol-Version": ModernVersion, "Mcp-Method": "tools/call", "Mcp-Name": "ask",
		"Mcp-Param-Region": "eu", "Mcp-Session-Id": ""} {
		if got := first.header.Get(k); got != want {
			t.Errorf("header %s: %q, want %q", k, got, want)
		}
	}
	for k, want := range map[string]string{metaProtocolVersion: `"2026-07-28"`, metaClientCapabilities: `{"elicitation":{}}`,
		metaClientInfo: `{"name":"client","version":"2"}`, metaLogLevel: `"warning"`, "progressToken": `"p1"`} {
		if got := string(first.meta[k]); got != want {
			t.Errorf("_meta %s: %s, want %s", k, got, want)
		}
	}

	m2 := *m
	m2.InputResponses, m2.RequestState = json.RawMessage(`{"user_name":{"action":"accept","content":{"name":"Alice"}}}`), json.RawMessage(`"s1"`)
	res, err = c.CallTool(WithModern(ctx, &m2), "ask", nil, nil, nil)
	if err != nil || !strings.Contains(string(res), "hello") {
		t.Fatalf("retry: %s, %v", res, err)
	}
	retry := f.last("tools/call")
	if string(retry.params["requestState"]) != `"s1"` || !strings.Contains(string(retry.params["inputResponses"]), "Alice") {
		t.Errorf("the retry's params were not passed on: %v", retry.params)
	}
	if _, ok := retry.meta["progressToken"]; ok {
		t.Errorf("a progress token nobody asked for: %s", retry.meta["progressToken"])
	}
	if got := strings.Join(f.methods(), " "); got != "server/discover tools/list tools/call tools/call" {
		t.Errorf("requests: %s (asked once, no initialize)", got)
	}
}

// An upstream that does not list 2026-07-28, or answers server/discover
// with an error, serves a 2026-07-28 client in its session, as before. One
// that declares logging has its session's level set to debug: the gateway
// filters log messages per client, and a server sends none before a level
// is set.
func TestLegacyUpstreamForModernClient(t *testing.T) {
	for _, discover := range []string{
		`{"jsonrpc":"2.0","id":%s,"error":{"code":-32601,"message":"Method not found"}}`,
		`{"jsonrpc":"2.0","id":%s,"result":{"supportedVersions":["2025-11-25"],"capabilities":{}}}`,
	} {
		f := newFakeUpstream(t, func(w http.ResponseWriter, r wireRequest) {
			w.Header().Set("Content-Type", "application/json")
			switch r.method() {
			case "server/discover":
				w.WriteHeader(http.StatusBadRequest)
				fmt.Fprintf(w, discover, r.body["id"])
			case "initialize":
				w.Header().Set("Mcp-Session-Id", "s")
				answerJSON(w, r, `{"protocolVersion":"2025-11-25","capabilities":{"tools":{},"logging":{}},"serverInfo":{"name":"old","version":"1"}}`)
			case "notifications/initialized":
				w.WriteHeader(http.StatusAccepted)
			default:
				answerJSON(w, r, `{"content":[]}`)
			}
		})
		c := New(Server{Name: "old", URL: f.srv.URL, Timeout: 5 * time.Second}, nil)
		m := &Modern{Capabilities: json.RawMessage(`{}`)}
		for range 2 {
			if _, err := c.CallTool(WithModern(context.Background(), m), "t", nil, nil, nil); err != nil {
				t.Fatal(err)
			}
		}
		if got := strings.Join(f.methods(), " "); got != "server/discover initialize notifications/initialized logging/setLevel tools/call tools/call" {
			t.Errorf("requests: %s", got)
		}
		if level := f.last("logging/setLevel").params["level"]; string(level) != `"debug"` {
			t.Errorf("logging/setLevel %s", level)
		}
		call := f.last("tools/call")
		if call.header.Get("Mcp-Session-Id") != "s" || call.header.Get("MCP-Protocol-Version") != "2025-11-25" || call.meta[metaProtocolVersion] != nil {
			t.Errorf("not the session's form: %v %v", call.header, call.meta)
		}
	}
}

// A probe that gets no answer is not taken for one: the next call asks
// again.
func TestModernProbeNotAnsweredIsAskedAgain(t *testing.T) {
	f := newFakeUpstream(t, func(w http.ResponseWriter, r wireRequest) {
		answerJSON(w, r, `{"supportedVersions":["2026-07-28"],"capabilities":{"tools":{}}}`)
	})
	url := f.srv.URL
	f.srv.Close()
	c := New(Server{Name: "later", URL: url, Timeout: 2 * time.Second}, nil)
	if _, err := c.speaksModern(context.Background()); err == nil {
		t.Fatal("no error from a closed server")
	}
	if c.modernKnown {
		t.Fatal("a failed probe was kept")
	}
}

func TestHeaderValue(t *testing.T) {
	for in, want := range map[string]string{
		"eu":               "eu",
		"two words":        "two words",
		"":                 "",
		" lead":            "=?base64?IGxlYWQ=?=",
		"trail ":           "=?base64?dHJhaWwg?=",
		"café":             "=?base64?Y2Fmw6k=?=",
		"=?base64?abc?=":   "=?base64?PT9iYXNlNjQ/YWJjPz0=?=",
		"line\nbreak":      "=?base64?bGluZQpicmVhaw==?=",
		"test://static/ok": "test://static/ok",
	} {
		if got := HeaderValue(in); got != want {
			t.Errorf("HeaderValue(%q) = %q, want %q", in, got, want)
		}
	}
}

// A server that leaves server/discover unanswered is an older one once
// the probe's time is up: its calls go on in its session, and it is not
// asked again.
func TestModernProbeUnansweredIsNo(t *testing.T) {
	defer func(d time.Duration) { probeTimeout = d }(probeTimeout)
	probeTimeout = 200 * time.Millisecond
	f := newFakeUpstream(t, func(w http.ResponseWriter, r wireRequest) {
		switch r.method() {
		case "server/discover":
			time.Sleep(400 * time.Millisecond)
		case "initialize":
			answerJSON(w, r, `{"protocolVersion":"2025-11-25","capabilities":{"tools":{}},"serverInfo":{"name":"old","version":"1"}}`)
		case "notifications/initialized":
			w.WriteHeader(http.StatusAccepted)
		default:
			answerJSON(w, r, `{"tools":[]}`)
		}
	})
	c := New(Server{Name: "quiet", URL: f.srv.URL, Timeout: 10 * time.Second}, nil)
	for range 2 {
		if _, err := c.ListTools(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	if got := strings.Join(f.methods(), " "); got != "server/discover initialize notifications/initialized tools/list tools/list" {
		t.Errorf("requests: %s", got)
	}
}
