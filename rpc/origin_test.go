package rpc

import (
	"strings"
	"testing"
)

const pingBody = `{"jsonrpc":"2.0","id":1,"method":"ping"}`

// checkForbidden: 403 with a JSON-RPC error without id, naming what was refused.
func checkForbidden(t *testing.T, r result, what string) {
	t.Helper()
	m := r.obj(t)
	e, _ := m["error"].(map[string]any)
	if r.status != 403 || m["jsonrpc"] != "2.0" || m["id"] != nil || e == nil ||
		e["code"] != float64(codeInvalidRequest) || !strings.Contains(e["message"].(string), what) ||
		r.header("Content-Type") != "application/json" {
		t.Errorf("want 403 JSON-RPC error naming %s, got %d %s", what, r.status, r.body)
	}
	if r.header("Access-Control-Allow-Origin") != "" {
		t.Errorf("a refused origin got CORS headers: %q", r.header("Access-Control-Allow-Origin"))
	}
}

func TestOriginNoneAndSameOriginPass(t *testing.T) {
	s, _ := newTestServer(t, nil)
	tok := bearer(mint(t, nil))
	for _, path := range []string{"/rpc", "/mcp"} {
		body := pingBody
		if path == "/mcp" {
			body = `{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}`
		}
		// No Origin (SDKs, curl, hey): passes, no CORS headers.
		r := call(s, "POST", path, body, append(tok, "Host", "gw.example.com:4444")...)
		if r.status != 200 || r.header("Access-Control-Allow-Origin") != "" || r.header("Vary") != "" {
			t.Errorf("%s without Origin: %d %q %s", path, r.status, r.header("Access-Control-Allow-Origin"), r.body)
		}
		// Same origin: Origin's host:port is the Host (any case).
		for _, o := range []string{"https://gw.example.com:4444", "http://GW.example.com:4444"} {
			r = call(s, "POST", path, body, append(tok, "Host", "gw.example.com:4444", "Origin", o)...)
			if r.status != 200 || r.header("Access-Control-Allow-Origin") != "" {
				t.Errorf("%s same origin %s: %d %s", path, o, r.status, r.body)
			}
		}
	}
}

func TestOriginOtherRefused(t *testing.T) {
	s, _ := newTestServer(t, func(o *Options) { o.AllowedOrigins = []string{"https://app.example.com"}; o.CORSEnabled = true })
	tok := bearer(mint(t, nil))
	for _, path := range []string{"/rpc", "/mcp"} {
		for _, o := range []string{"https://evil.example", "http://gw.example.com:4445", "null", "https://app.example.com.evil.example", "http://app.example.com"} {
			r := call(s, "POST", path, pingBody, append(tok, "Host", "gw.example.com:4444", "Origin", o)...)
			checkForbidden(t, r, "Origin")
		}
		// Refused before authentication and before the method check.
		checkForbidden(t, call(s, "POST", path, pingBody, "Host", "gw.example.com", "Origin", "https://evil.example"), "Origin")
		checkForbidden(t, call(s, "GET", path, "", "Host", "gw.example.com", "Origin", "https://evil.example"), "Origin")
		checkForbidden(t, call(s, "OPTIONS", path, "", "Host", "gw.example.com", "Origin", "https://evil.example",
			"Access-Control-Request-Method", "POST"), "Origin")
	}
	// Other routes are not concerned.
	if r := call(s, "GET", "/health", "", "Origin", "https://evil.example"); r.status != 200 {
		t.Errorf("/health with a foreign Origin: %d", r.status)
	}
}

func TestOriginAllowedGetsCORS(t *testing.T) {
	s, _ := newTestServer(t, func(o *Options) {
		o.AllowedOrigins = []string{"https://App.example.com/", "http://localhost:3000"}
		o.CORSEnabled = true
	})
	tok := bearer(mint(t, nil))
	for _, o := range []string{"https://app.example.com", "http://localhost:3000"} {
		r := call(s, "POST", "/rpc", pingBody, append(tok, "Host", "gw.example.com", "Origin", o)...)
		if r.status != 200 || r.header("Access-Control-Allow-Origin") != o || r.header("Vary") != "Origin" ||
			!strings.Contains(r.header("Access-Control-Expose-Headers"), "Mcp-Session-Id") {
			t.Errorf("%s: %d ACAO %q Vary %q Expose %q %s", o, r.status, r.header("Access-Control-Allow-Origin"),
				r.header("Vary"), r.header("Access-Control-Expose-Headers"), r.body)
		}
	}
	// A 401 to an allowed origin carries the header too, so the page can read it.
	r := call(s, "POST", "/mcp", pingBody, "Host", "gw.example.com", "Origin", "https://app.example.com")
	if r.status != 401 || r.header("Access-Control-Allow-Origin") != "https://app.example.com" {
		t.Errorf("401: %d %q", r.status, r.header("Access-Control-Allow-Origin"))
	}

	// CORS off: the origin passes the check, but gets no CORS headers and no preflight.
	off, _ := newTestServer(t, func(o *Options) { o.AllowedOrigins = []string{"https://app.example.com"} })
	r = call(off, "POST", "/rpc", pingBody, append(tok, "Origin", "https://app.example.com")...)
	if r.status != 200 || r.header("Access-Control-Allow-Origin") != "" {
		t.Errorf("CORS off: %d %q", r.status, r.header("Access-Control-Allow-Origin"))
	}
	r = call(off, "OPTIONS", "/rpc", "", "Origin", "https://app.example.com", "Access-Control-Request-Method", "POST")
	if r.status != 405 || r.header("Access-Control-Allow-Origin") != "" {
		t.Errorf("CORS off, preflight: %d %q", r.status, r.header("Access-Control-Allow-Origin"))
	}
}

func TestOriginPreflight(t *testing.T) {
	s, _ := newTestServer(t, func(o *Options) { o.AllowedOrigins = []string{"https://app.example.com"}; o.CORSEnabled = true })
	for path, methods := range map[string]string{"/rpc": "POST, OPTIONS", "/mcp": "POST, DELETE, OPTIONS"} {
		r := call(s, "OPTIONS", path, "", "Origin", "https://app.example.com",
			"Access-Control-Request-Method", "POST", "Access-Control-Request-Headers", "authorization, content-type, mcp-session-id")
		if r.status != 204 || r.header("Access-Control-Allow-Origin") != "https://app.example.com" ||
			r.header("Access-Control-Allow-Methods") != methods || r.header("Vary") != "Origin" ||
			r.header("Access-Control-Max-Age") == "" || len(r.body) != 0 {
			t.Errorf("%s preflight: %d %q %q %q", path, r.status, r.header("Access-Control-Allow-Origin"),
				r.header("Access-Control-Allow-Methods"), r.header("Vary"))
		}
		allow := r.header("Access-Control-Allow-Headers")
		for _, h := range []string{"Authorization", "Content-Type", "Mcp-Session-Id", "Mcp-Protocol-Version"} {
			if !strings.Contains(allow, h) {
				t.Errorf("%s preflight: Access-Control-Allow-Headers %q lacks %s", path, allow, h)
			}
		}
	}
}

func TestOriginStar(t *testing.T) {
	s, _ := newTestServer(t, func(o *Options) { o.AllowedOrigins = []string{"*"}; o.CORSEnabled = true })
	tok := bearer(mint(t, nil))
	for _, o := range []string{"https://anything.example", "null", "http://localhost:5173"} {
		r := call(s, "POST", "/rpc", pingBody, append(tok, "Origin", o)...)
		if r.status != 200 || r.header("Access-Control-Allow-Origin") != o {
			t.Errorf("* and %s: %d %q", o, r.status, r.header("Access-Control-Allow-Origin"))
		}
	}
	r := call(s, "OPTIONS", "/mcp", "", "Origin", "https://anything.example", "Access-Control-Request-Method", "DELETE")
	if r.status != 204 || r.header("Access-Control-Allow-Origin") != "https://anything.example" {
		t.Errorf("* preflight: %d %q", r.status, r.header("Access-Control-Allow-Origin"))
	}
}

// TestLoopbackHost: a loopback-only server refuses a Host that is not
// loopback (DNS rebinding), unless it is an allowed origin's host; a server
// reachable from elsewhere does not look at Host.
func TestLoopbackHost(t *testing.T) {
	loop, _ := newTestServer(t, func(o *Options) {
		o.LoopbackOnly = true
		o.AllowedOrigins = []string{"https://gw.example.com"}
	})
	open, _ := newTestServer(t, nil)
	tok := bearer(mint(t, nil))
	for _, host := range []string{"", "127.0.0.1:4444", "localhost:4444", "LOCALHOST", "[::1]:4444", "127.0.0.2",
		"app.localhost:4444", "gw.example.com", "GW.example.com:443"} {
		h := append(tok, "Host", host)
		if r := call(loop, "POST", "/rpc", pingBody, h...); r.status != 200 {
			t.Errorf("loopback server, Host %q: %d %s", host, r.status, r.body)
		}
	}
	for _, host := range []string{"evil.example:4444", "evil.example", "10.0.0.5:4444", "localhost.evil.example", "[2001:db8::1]:80"} {
		for _, path := range []string{"/rpc", "/mcp"} {
			// The rebinding page is same-origin with itself: Origin == Host.
			checkForbidden(t, call(loop, "POST", path, pingBody, append(tok, "Host", host, "Origin", "http://"+host)...), "Host")
			checkForbidden(t, call(loop, "POST", path, pingBody, append(tok, "Host", host)...), "Host")
		}
		if r := call(open, "POST", "/rpc", pingBody, append(tok, "Host", host)...); r.status != 200 {
			t.Errorf("open server, Host %q: %d", host, r.status)
		}
	}
	if r := call(loop, "GET", "/health", "", "Host", "evil.example"); r.status != 200 {
		t.Errorf("/health on a loopback server with a foreign Host: %d", r.status)
	}
}

func TestHostname(t *testing.T) {
	for in, want := range map[string]string{"a.b:80": "a.b", "a.b": "a.b", "[::1]:80": "::1", "[::1]": "::1", "::1": "::1", "": ""} {
		if got := string(hostname([]byte(in))); got != want {
			t.Errorf("hostname(%q) = %q, want %q", in, got, want)
		}
	}
}

// The check costs nothing measurable for requests without Origin: one
// header lookup (and, on loopback-only servers, a look at Host).
func BenchmarkCheckOriginNoOrigin(b *testing.B) {
	s, _ := newTestServer(b, func(o *Options) { o.LoopbackOnly = true })
	ctx := benchCtx(b, s, "/rpc", "POST", seedPayload)
	ctx.Request.Header.SetHost("127.0.0.1:4444")
	b.ReportAllocs()
	for b.Loop() {
		if !s.checkOrigin(ctx, methodsRPC) {
			b.Fatal("refused")
		}
	}
}

// BenchmarkSeedRequestLoopback is BenchmarkSeedRequest on a loopback-only
// server (Host checked), to compare with it.
func BenchmarkSeedRequestLoopback(b *testing.B) {
	s, _ := newTestServer(b, func(o *Options) { o.LoopbackOnly = true })
	ctx := benchCtx(b, s, "/rpc", "POST", seedPayload)
	ctx.Request.Header.SetHost("127.0.0.1:4444")
	s.Handler(ctx)
	if ctx.Response.StatusCode() != 200 {
		b.Fatalf("status %d: %s", ctx.Response.StatusCode(), ctx.Response.Body())
	}
	b.ReportAllocs()
	for b.Loop() {
		ctx.Response.Reset()
		s.Handler(ctx)
	}
}
