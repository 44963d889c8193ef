package rpc

import (
	"testing"

	"github.com/valyala/fasthttp"
)

// benchCtx builds the seed request (tests/hey/payload.json with a valid
// token), as fasthttp hands it to the handler.
func benchCtx(b *testing.B, s *Server, path, method, body string) *fasthttp.RequestCtx {
	var req fasthttp.Request
	req.Header.SetMethod(method)
	req.SetRequestURI(path)
	req.Header.SetContentType("application/json")
	req.Header.Set("Authorization", "Bearer "+mint(b, nil))
	if body != "" {
		req.SetBodyString(body)
	}
	ctx := &fasthttp.RequestCtx{}
	ctx.Init(&req, nil, nil)
	return ctx
}

// BenchmarkSeedRequest is the whole Handler on the tuning guide's hey
// payload with a JWT check: routing, authentication (cached token, user
// check), JSON-RPC decoding, the convert_time tool and the response.
func BenchmarkSeedRequest(b *testing.B) { benchRequest(b, seedPayload) }

// guidePayload is the MCP guide's request: get_system_time called by name
// as the method, on /rpc.
const guidePayload = `{"jsonrpc":"2.0","id":1,"method":"get_system_time","params":{"timezone":"UTC"}}`

// BenchmarkGuideRequest is the whole Handler on guidePayload.
func BenchmarkGuideRequest(b *testing.B) { benchRequest(b, guidePayload) }

// benchRequest runs the Handler on one POST /rpc body, after a first call
// that verifies the token and loads the time zones.
func benchRequest(b *testing.B, body string) {
	s, _ := newTestServer(b, nil)
	ctx := benchCtx(b, s, "/rpc", "POST", body)
	s.Handler(ctx)
	if ctx.Response.StatusCode() != 200 {
		b.Fatalf("status %d: %s", ctx.Response.StatusCode(), ctx.Response.Body())
	}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		ctx.Response.Reset()
		s.Handler(ctx)
	}
}

// BenchmarkSeedRequestParallel is the same on every core at once (lock and
// cache-line contention).
func BenchmarkSeedRequestParallel(b *testing.B) {
	s, _ := newTestServer(b, nil)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		ctx := benchCtx(b, s, "/rpc", "POST", seedPayload)
		for pb.Next() {
			ctx.Response.Reset()
			s.Handler(ctx)
		}
	})
}

// BenchmarkSeedRequestNoAuth is the seed request with AUTH_REQUIRED=false.
func BenchmarkSeedRequestNoAuth(b *testing.B) {
	s, _ := newTestServer(b, func(o *Options) { o.AuthRequired = false })
	ctx := benchCtx(b, s, "/rpc", "POST", seedPayload)
	b.ReportAllocs()
	for b.Loop() {
		ctx.Response.Reset()
		s.Handler(ctx)
	}
}

// BenchmarkTokenVerify is what every request would pay without the token
// cache: a full JWT verification.
func BenchmarkTokenVerify(b *testing.B) {
	s, _ := newTestServer(b, nil)
	tok := mint(b, nil)
	b.ReportAllocs()
	for b.Loop() {
		if _, aerr := s.auth.verify(tok); aerr != nil {
			b.Fatal(aerr.detail)
		}
	}
}

func BenchmarkHealth(b *testing.B) {
	s, _ := newTestServer(b, nil)
	ctx := benchCtx(b, s, "/health", "GET", "")
	b.ReportAllocs()
	for b.Loop() {
		ctx.Response.Reset()
		s.Handler(ctx)
	}
}

func BenchmarkToolsList(b *testing.B) {
	s, _ := newTestServer(b, nil)
	ctx := benchCtx(b, s, "/rpc", "POST", `{"jsonrpc":"2.0","id":1,"method":"tools/list"}`)
	b.ReportAllocs()
	for b.Loop() {
		ctx.Response.Reset()
		s.Handler(ctx)
	}
}

func BenchmarkValidate(b *testing.B) {
	body := []byte(seedPayload)
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		if err := validate(body); err != nil {
			b.Fatal(err)
		}
	}
}
