package rpc

import (
	"context"
	"fmt"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/mcpgateway/mcpgateway/store"
)

func TestHealth(t *testing.T) {
	s, b := newTestServer(t, nil)
	b.set(func(f *fakeBackend) { f.panicIn = "Ready" }) // /health must not touch the backend
	r := call(s, "GET", "/health", "")
	if r.status != 200 || string(r.body) != `{"status":"healthy"}` || r.header("Content-Type") != "application/json" {
		t.Fatalf("health: %d %q %q", r.status, r.body, r.header("Content-Type"))
	}
	if r := call(s, "HEAD", "/health", ""); r.status != 200 {
		t.Errorf("HEAD /health: %d", r.status)
	}
	r = call(s, "POST", "/health", "")
	if r.status != 405 || r.header("Allow") != "GET, HEAD" || r.obj(t)["detail"] != "Method Not Allowed" {
		t.Errorf("POST /health: %d %q %s", r.status, r.header("Allow"), r.body)
	}
	if s.Panics() != 0 {
		t.Error("/health called the backend")
	}
}

// Without Options.Readiness (one process) /ready runs the Backend's checks
// (at most once a second: CheckBackend runs them now) and only the database
// decides: a degraded cache is reported, never a 503. The details say what
// failed, never how (the driver's text stays in the log).
func TestReady(t *testing.T) {
	s, b := newTestServer(t, nil)
	items := `"status_items":[{"name":"Database","ok":true,"detail":"sqlite"},{"name":"Cache","ok":true,"detail":"memory"}]`
	r := call(s, "GET", "/ready", "")
	want := `{"status":"ready","database":{"status":"ok","age_seconds":0.000},"reasons":[],"cache":{"status":"ok","detail":"memory"},` + items + `}`
	if r.status != 200 || string(r.body) != want || r.header("Cache-Control") != "no-store" {
		t.Fatalf("ready: %d %s", r.status, r.body)
	}
	b.set(func(f *fakeBackend) {
		f.checks = []store.Check{{Name: "Database", OK: true, Detail: "sqlite"}, {Name: "Cache", OK: false, Detail: "redis: connection refused"}}
	})
	s.CheckBackend(context.Background())
	r = call(s, "GET", "/ready", "")
	want = `{"status":"ready","database":{"status":"ok","age_seconds":0.000},"reasons":[],"cache":{"status":"degraded","detail":"redis: unreachable"},` +
		`"status_items":[{"name":"Database","ok":true,"detail":"sqlite"},{"name":"Cache","ok":false,"detail":"redis: unreachable"}]}`
	if r.status != 200 || string(r.body) != want {
		t.Fatalf("degraded cache: %d %s", r.status, r.body)
	}
	b.set(func(f *fakeBackend) {
		f.checks = []store.Check{{Name: "Database", OK: false, Detail: "sqlite: disk I/O error"}, {Name: "Cache", OK: true, Detail: "memory"}}
	})
	s.CheckBackend(context.Background())
	r = call(s, "GET", "/ready", "")
	want = `{"status":"unready","database":{"status":"failed","age_seconds":0.000},"reasons":["the latest database check failed"],"cache":{"status":"ok","detail":"memory"},` +
		`"status_items":[{"name":"Database","ok":false,"detail":"sqlite: unreachable"},{"name":"Cache","ok":true,"detail":"memory"}]}`
	if r.status != 503 || string(r.body) != want {
		t.Fatalf("database down: %d %s", r.status, r.body)
	}
	if r := call(s, "PUT", "/ready", ""); r.status != 405 {
		t.Errorf("PUT /ready: %d", r.status)
	}
}

// With Options.Readiness the embedding server decides (the whole server's
// view), /ready never touches the Backend, and the cache is the one the
// last CheckBackend saw.
func TestReadyFromTheEmbeddingServer(t *testing.T) {
	var ready atomic.Bool
	s, b := newTestServer(t, func(o *Options) {
		o.Readiness = func(b []byte) ([]byte, bool) {
			if ready.Load() {
				return append(b, `"status":"ready","workers":{"ready":2,"target":2}`...), true
			}
			return append(b, `"status":"unready","reasons":["no worker is ready"]`...), false
		}
	})
	b.set(func(f *fakeBackend) { f.panicIn = "Ready" })
	r := call(s, "GET", "/ready", "")
	if want := `{"status":"unready","reasons":["no worker is ready"],"cache":{"status":"unknown"},"status_items":[]}`; r.status != 503 || string(r.body) != want {
		t.Fatalf("before a check: %d %s", r.status, r.body)
	}
	b.set(func(f *fakeBackend) {
		f.panicIn = ""
		f.checks = []store.Check{{Name: "Database", OK: false, Detail: "postgresql: connection refused"}, {Name: "Cache", OK: false, Detail: "redis: i/o timeout"}}
	})
	if ok, detail := s.CheckBackend(context.Background()); ok || detail != "postgresql: connection refused" {
		t.Fatalf("CheckBackend: %v %q", ok, detail)
	}
	b.set(func(f *fakeBackend) { f.panicIn = "Ready" })
	ready.Store(true)
	r = call(s, "GET", "/ready", "")
	want := `{"status":"ready","workers":{"ready":2,"target":2},"cache":{"status":"degraded","detail":"redis: unreachable"},` +
		`"status_items":[{"name":"Database","ok":false,"detail":"postgresql: unreachable"},{"name":"Cache","ok":false,"detail":"redis: unreachable"}]}`
	if r.status != 200 || string(r.body) != want {
		t.Fatalf("the embedding server says ready: %d %s", r.status, r.body)
	}
	if s.Panics() != 0 {
		t.Error("/ready called the Backend")
	}
	b.set(func(f *fakeBackend) {
		f.panicIn = ""
		f.checks = []store.Check{{Name: "Database", OK: true, Detail: "postgresql"}, {Name: "Cache", OK: true, Detail: "redis 127.0.0.1:6379"}}
	})
	if ok, _ := s.CheckBackend(context.Background()); !ok {
		t.Fatal("CheckBackend: database reported failed")
	}
	if r := call(s, "GET", "/ready", ""); !strings.Contains(string(r.body), `"cache":{"status":"ok","detail":"redis"}`) {
		t.Fatalf("after a good check: %d %s", r.status, r.body)
	}
}

func TestVersion(t *testing.T) {
	s, _ := newTestServer(t, nil)
	r := call(s, "GET", "/version", "", bearer(mint(t, nil))...)
	m := r.obj(t)
	if r.status != 200 || m["name"] != "mcpgateway" || m["version"] != "1.2.3-test" || m["go_version"] != runtime.Version() ||
		m["database"] != "sqlite" || m["cache"] != "memory" {
		t.Fatalf("version: %d %s", r.status, r.body)
	}
	if !strings.Contains(string(r.body), `"mcp_protocol_versions":["2026-07-28","2025-11-25","2025-06-18","2025-03-26"]`) {
		t.Errorf("MCP revisions: %s", r.body)
	}
	if r := call(s, "POST", "/version", "", bearer(mint(t, nil))...); r.status != 405 {
		t.Errorf("POST /version: %d", r.status)
	}
}

func TestNotFoundAndMethods(t *testing.T) {
	s, _ := newTestServer(t, nil)
	for _, path := range []string{"/", "/rpcx", "/admin", "/rpc/extra", "/metrics"} {
		r := call(s, "GET", path, "")
		if r.status != 404 || r.obj(t)["detail"] != "Not Found" || r.header("Content-Type") != "application/json" {
			t.Errorf("%s: %d %s", path, r.status, r.body)
		}
	}
	for _, method := range []string{"GET", "PUT", "DELETE", "PATCH"} {
		r := call(s, method, "/rpc", "")
		if r.status != 405 || r.header("Allow") != "POST" || r.obj(t)["detail"] != "Method Not Allowed" {
			t.Errorf("%s /rpc: %d %q %s", method, r.status, r.header("Allow"), r.body)
		}
	}
	// Paths are cleaned as fasthttp does: /rpc/../rpc is /rpc.
	if r := rpc(t, s, ping); r.status != 200 {
		t.Errorf("POST /rpc: %d", r.status)
	}
}

func TestBodyTooLarge(t *testing.T) {
	s, _ := newTestServer(t, func(o *Options) { o.MaxRequestBodySize = 100 })
	body := `{"jsonrpc":"2.0","id":1,"method":"ping","params":{"pad":"` + strings.Repeat("x", 100) + `"}}`
	for _, path := range []string{"/rpc", "/mcp"} {
		r := call(s, "POST", path, body, bearer(mint(t, nil))...)
		if r.status != 413 || r.header("Content-Type") != "application/json" ||
			r.obj(t)["detail"] != "Request body too large: 160 bytes (limit 100)" {
			t.Errorf("%s: %d %s", path, r.status, r.body)
		}
	}
	if r := call(s, "POST", "/rpc", ping, bearer(mint(t, nil))...); r.status != 200 {
		t.Errorf("small body: %d", r.status)
	}
}

func TestPanicRecovery(t *testing.T) {
	core, logs := observer.New(zapcore.ErrorLevel)
	s, b := newTestServer(t, func(o *Options) { o.Logger = zap.New(core) })

	// Outside a JSON-RPC method: a 500 in the route's own error form.
	b.set(func(f *fakeBackend) { f.panicIn = "Ready" })
	r := call(s, "GET", "/ready", "")
	if r.status != 500 || r.obj(t)["detail"] != "Internal Server Error" || r.header("Content-Type") != "application/json" {
		t.Fatalf("/ready panic: %d %s", r.status, r.body)
	}
	b.set(func(f *fakeBackend) { f.panicIn = "User" }) // panics during authentication of /rpc
	r = call(s, "POST", "/rpc", ping, bearer(mint(t, nil))...)
	if r.status != 500 || string(r.body) != `{"jsonrpc":"2.0","id":null,"error":{"code":-32603,"message":"Internal error"}}` {
		t.Fatalf("/rpc panic before dispatch: %d %s", r.status, r.body)
	}
	// A virtual server's MCP endpoint answers in JSON-RPC's form too.
	vs, err := New(testOptions(), &serversFake{allToolsFake: allToolsFake{b}, servers: map[string]store.Server{}})
	if err != nil {
		t.Fatal(err)
	}
	r = call(vs, "POST", "/servers/x/mcp", ping, bearer(mint(t, nil))...)
	if r.status != 500 || string(r.body) != `{"jsonrpc":"2.0","id":null,"error":{"code":-32603,"message":"Internal error"}}` {
		t.Fatalf("/servers/x/mcp panic before dispatch: %d %s", r.status, r.body)
	}
	// Inside a method: -32603 for that message, HTTP 200.
	b.set(func(f *fakeBackend) { f.panicIn = "Tool" })
	r = call(s, "POST", "/rpc", seedPayload, bearer(mint(t, nil))...)
	if r.status != 200 || string(r.body) != `{"jsonrpc":"2.0","id":1,"error":{"code":-32603,"message":"Internal error"}}` {
		t.Fatalf("method panic: %d %s", r.status, r.body)
	}
	if s.Panics() != 3 || vs.Panics() != 1 {
		t.Errorf("Panics() = %d and %d, want 3 and 1", s.Panics(), vs.Panics())
	}
	entries := logs.All()
	if len(entries) != 3 {
		t.Fatalf("%d log entries, want 3", len(entries))
	}
	for _, e := range entries {
		fields := e.ContextMap()
		stack, _ := fields["stack"].(string)
		if !strings.Contains(fmt.Sprint(fields["panic"]), "exploded") || !strings.Contains(stack, "maybePanic") {
			t.Errorf("log entry lacks the panic or its stack: %v", fields)
		}
		if strings.Contains(string(r.body), "maybePanic") {
			t.Error("stack leaked into the response")
		}
	}
	// The server goes on serving.
	b.set(func(f *fakeBackend) { f.panicIn = "" })
	if r := call(s, "POST", "/rpc", seedPayload, bearer(mint(t, nil))...); r.status != 200 {
		t.Errorf("after panics: %d", r.status)
	}
}
