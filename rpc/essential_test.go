package rpc

import (
	"strings"
	"testing"

	"github.com/valyala/fasthttp"
)

func essentialCtx(method, path, body string, headers ...string) *fasthttp.RequestCtx {
	var req fasthttp.Request
	req.Header.SetMethod(method)
	req.SetRequestURI(path)
	if body != "" {
		req.SetBodyString(body)
		req.Header.SetContentType("application/json")
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	ctx := &fasthttp.RequestCtx{}
	ctx.Init(&req, nil, nil)
	return ctx
}

func TestEssential(t *testing.T) {
	s, _ := newTestServer(t, nil)
	long := `{"jsonrpc":"2.0","id":1,"params":{"pad":"` + strings.Repeat("x", essentialPeek) + `"},"method":"ping"}`
	for _, c := range []struct {
		name, method, path, body string
		headers                  []string
		want                     bool
	}{
		{"initialize", "POST", "/mcp", `{"jsonrpc":"2.0","id":1,"method":"initialize","params":{}}`, nil, true},
		{"ping on /rpc", "POST", "/rpc", `{"jsonrpc":"2.0","id":1,"method":"ping"}`, nil, true},
		{"tools/list", "POST", "/mcp/", `{"jsonrpc":"2.0","id":2,"method":"tools/list"}`, nil, true},
		{"notifications/initialized", "POST", "/mcp", `{"jsonrpc":"2.0","method":"notifications/initialized"}`, nil, true},
		// The upstreams' lists wait on every upstream: not essential.
		{"resources/list", "POST", "/rpc/", `{"jsonrpc":"2.0","id":3,"method":"resources/list"}`, nil, false},
		{"prompts/list", "POST", "/mcp", `{"jsonrpc":"2.0","id":3,"method":"prompts/list"}`, nil, false},
		{"prompts/list header", "POST", "/mcp", `{"jsonrpc":"2.0","id":3,"method":"prompts/list"}`, []string{"Mcp-Method", "prompts/list"}, false},
		{"whitespace everywhere", "POST", "/mcp", " \r\n\t{ \"jsonrpc\" : \"2.0\" ,\n \"method\"\t:\n \"tools/list\" , \"id\" : 7 }\n", nil, true},
		{"escaped method", "POST", "/mcp", `{"jsonrpc":"2.0","id":1,"method":"tools\/list"}`, nil, true},
		{"unicode escapes", "POST", "/mcp", `{"jsonrpc":"2.0","id":1,"\u006dethod":"\u0070ing"}`, nil, true},
		{"method after params", "POST", "/mcp", `{"jsonrpc":"2.0","id":1,"params":{"method":"tools/call","x":["}",{"a":"\"{"}]},"method":"tools/list"}`, nil, true},
		{"tools/call", "POST", "/mcp", `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"convert_time"}}`, nil, false},
		{"bare tool name (the guide's payload)", "POST", "/rpc", seedPayload, nil, false},
		{"method only inside params", "POST", "/mcp", `{"jsonrpc":"2.0","id":1,"params":{"method":"ping"}}`, nil, false},
		{"missing method", "POST", "/mcp", `{"jsonrpc":"2.0","id":1}`, nil, false},
		{"method not a string", "POST", "/mcp", `{"jsonrpc":"2.0","id":1,"method":["ping"]}`, nil, false},
		{"the last duplicate counts", "POST", "/mcp", `{"method":"ping","jsonrpc":"2.0","id":1,"method":"tools/call"}`, nil, false},
		// Not prioritised, though the parser runs ping: the scan ends at the
		// first method that is not essential, which costs a crafted request
		// its priority and nobody else anything.
		{"a method that is not essential ends the scan", "POST", "/mcp", `{"method":"tools/call","jsonrpc":"2.0","id":1,"method":"ping"}`, nil, false},
		{"prefix of a name", "POST", "/mcp", `{"jsonrpc":"2.0","id":1,"method":"pin"}`, nil, false},
		{"longer than a name", "POST", "/mcp", `{"jsonrpc":"2.0","id":1,"method":"pings"}`, nil, false},
		{"escaped control character", "POST", "/mcp", `{"jsonrpc":"2.0","id":1,"method":"ping\n"}`, nil, false},
		{"batch", "POST", "/mcp", `[{"jsonrpc":"2.0","id":1,"method":"ping"}]`, nil, false},
		{"garbage", "POST", "/mcp", `{"method":"ping"`, nil, false},
		{"not JSON", "POST", "/mcp", `method=ping`, nil, false},
		{"unterminated string", "POST", "/mcp", `{"method":"ping}`, nil, false},
		{"trailing comma", "POST", "/mcp", `{"method":"ping",}`, nil, false},
		{"empty body", "POST", "/mcp", ``, nil, false},
		{"empty object", "POST", "/mcp", `{}`, nil, false},
		{"object longer than the peek", "POST", "/mcp", long, nil, false},
		{"header says essential, body agrees", "POST", "/mcp", `{"jsonrpc":"2.0","id":1,"method":"tools/list"}`, []string{"Mcp-Method", "tools/list"}, true},
		{"server/discover (2026-07-28)", "POST", "/mcp", `{"jsonrpc":"2.0","id":1,"method":"server/discover","params":{"_meta":{}}}`,
			[]string{"Mcp-Method", "server/discover", "MCP-Protocol-Version", "2026-07-28"}, true},
		{"header says tools/call", "POST", "/mcp", `{"jsonrpc":"2.0","id":1,"method":"ping"}`, []string{"Mcp-Method", "tools/call"}, false},
		{"header lies", "POST", "/mcp", `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"x"}}`, []string{"Mcp-Method", "ping"}, false},
		{"other path", "POST", "/admin/tools", `{"jsonrpc":"2.0","id":1,"method":"ping"}`, nil, false},
		{"GET /ready (a probe)", "GET", "/ready", ``, nil, true},
		{"HEAD /ready", "HEAD", "/ready", ``, nil, true},
		{"GET /version", "GET", "/version", ``, nil, false},
		{"DELETE /mcp", "DELETE", "/mcp", ``, nil, false},
	} {
		if got := s.Essential(essentialCtx(c.method, c.path, c.body, c.headers...)); got != c.want {
			t.Errorf("%s: Essential = %v, want %v", c.name, got, c.want)
		}
	}
}

// Whatever the bytes, essentialBody stays within the peek and never panics,
// and what it calls essential is a request the JSON-RPC parser would run as
// an essential method.
func FuzzEssentialBody(f *testing.F) {
	for _, s := range []string{`{"method":"ping"}`, `{"a":[{"b":"\""}],"method":"tools\/list"}`, `[`, `{"method":"\u00`, `{"\`,
		`{"jsonrpc":"2.0","id":1,"method":"ping","method":"tools/call"}`, `{"jsonrpc":"2.0","id":1,"\u006dethod":"\u0070ing"}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		if !essentialBody(b) || validate(b) != nil {
			return
		}
		m, perr := parseMessage(trimValue(b))
		if perr != nil {
			return // not a valid request: answered with an error, cheaply
		}
		if !essentialName(m.method) {
			t.Fatalf("essentialBody(%q) = true, but the parser reads the method %q", b, m.method)
		}
	})
}

func TestEssentialAllocatesNothing(t *testing.T) {
	s, _ := newTestServer(t, nil)
	for _, body := range []string{seedPayload, `{"jsonrpc":"2.0","id":1,"method":"tools/list"}`, `{"jsonrpc":"2.0","id":1,"\u006dethod":"tools\/list"}`} {
		ctx := essentialCtx("POST", "/mcp", body, "Mcp-Method", "tools/list")
		if n := testing.AllocsPerRun(100, func() { s.Essential(ctx) }); n != 0 {
			t.Errorf("%.40q: %v allocations", body, n)
		}
	}
}

func BenchmarkEssential(b *testing.B) {
	s, _ := newTestServer(b, nil)
	for _, c := range []struct {
		name string
		ctx  *fasthttp.RequestCtx
	}{
		{"seed_body", essentialCtx("POST", "/rpc", seedPayload)},
		{"tools_list_body", essentialCtx("POST", "/mcp", `{"jsonrpc":"2.0","id":2,"method":"tools/list"}`)},
		{"tools_call_header", essentialCtx("POST", "/mcp", `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"convert_time","arguments":{}}}`, "Mcp-Method", "tools/call")},
		{"tools_list_header", essentialCtx("POST", "/mcp", `{"jsonrpc":"2.0","id":2,"method":"tools/list"}`, "Mcp-Method", "tools/list")},
	} {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				s.Essential(c.ctx)
			}
		})
	}
}
