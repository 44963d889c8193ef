package rpc

import (
	"context"
	"encoding/json"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/valyala/fasthttp"

	"github.com/mcpgateway/mcpgateway/store"
)

const (
	testSecret = "test-secret-key-that-is-long-enough"
	testEmail  = "admin@example.com"
)

// seedPayload is the tuning guide's hey payload (tests/hey/payload.json).
const seedPayload = `{
  "jsonrpc": "2.0",
  "id": 1,
  "method": "convert_time",
  "params": {
    "source_timezone": "Europe/Berlin",
    "target_timezone": "Europe/Dublin",
    "time": "09:00"
  }
}`

// fakeBackend is an in-memory Backend whose behaviour tests can change.
type fakeBackend struct {
	mu      sync.RWMutex
	tools   []store.Tool
	byName  map[string]store.Tool
	users   map[string]store.User
	checks  []store.Check
	toolErr error  // returned by Tools and Tool when set
	userErr error  // returned by User when set
	putErr  error  // returned by PutUser and PutTool when set
	panicIn string // "Tools", "Tool", "User" or "Ready": that method panics

	enabledOnly bool // Tool finds enabled tools only, as *store.Store does
	puts        int  // successful PutUser and PutTool calls
}

func newFakeBackend() *fakeBackend {
	f := &fakeBackend{
		users: map[string]store.User{
			testEmail:              {Email: testEmail, Active: true, Admin: true},
			"inactive@example.com": {Email: "inactive@example.com", Active: false},
		},
		checks: []store.Check{
			{Name: "Database", OK: true, Detail: "sqlite"},
			{Name: "Cache", OK: true, Detail: "memory"},
		},
	}
	f.setTools([]store.Tool{
		{Name: "convert_time", Description: "Convert a time between two IANA time zones",
			InputSchema: json.RawMessage(`{"type":"object","properties":{"source_timezone":{"type":"string"},"target_timezone":{"type":"string"},"time":{"type":"string"}},"required":["source_timezone","target_timezone","time"]}`),
			Enabled:     true},
		{Name: "get_system_time", Description: "Current time in an IANA time zone",
			InputSchema: json.RawMessage(`{"type":"object","properties":{"timezone":{"type":"string"}}}`),
			Enabled:     true},
		{Name: "disabled_tool", Description: "off", InputSchema: json.RawMessage(`{"type":"object"}`), Enabled: false},
		{Name: "remote_tool", Description: "registered, not built in", InputSchema: json.RawMessage(`{"type":"object"}`), Enabled: true},
	})
	return f
}

func (f *fakeBackend) setTools(tools []store.Tool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.tools = tools
	f.byName = map[string]store.Tool{}
	for _, t := range tools {
		f.byName[t.Name] = t
	}
}

func (f *fakeBackend) setUser(u store.User) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.users[u.Email] = u
}

func (f *fakeBackend) set(fn func(f *fakeBackend)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fn(f)
}

func (f *fakeBackend) maybePanic(method string) {
	if f.panicIn == method {
		panic("fake backend: " + method + " exploded")
	}
}

func (f *fakeBackend) Tools(ctx context.Context) ([]store.Tool, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	f.maybePanic("Tools")
	if f.toolErr != nil {
		return nil, f.toolErr
	}
	var out []store.Tool
	for _, t := range f.tools {
		if t.Enabled {
			out = append(out, t)
		}
	}
	return out, nil
}

func (f *fakeBackend) Tool(ctx context.Context, name string) (store.Tool, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	f.maybePanic("Tool")
	if f.toolErr != nil {
		return store.Tool{}, f.toolErr
	}
	t, ok := f.byName[name]
	if !ok || (f.enabledOnly && !t.Enabled) {
		return store.Tool{}, store.ErrNotFound
	}
	return t, nil
}

func (f *fakeBackend) User(ctx context.Context, email string) (store.User, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	f.maybePanic("User")
	if f.userErr != nil {
		return store.User{}, f.userErr
	}
	u, ok := f.users[email]
	if !ok {
		return store.User{}, store.ErrNotFound
	}
	return u, nil
}

func (f *fakeBackend) Ready(ctx context.Context) []store.Check {
	f.mu.RLock()
	defer f.mu.RUnlock()
	f.maybePanic("Ready")
	return f.checks
}

func (f *fakeBackend) PutUser(ctx context.Context, u store.User) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.putErr != nil {
		return f.putErr
	}
	f.users[u.Email] = u
	f.puts++
	return nil
}

func (f *fakeBackend) PutTool(ctx context.Context, t store.Tool) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.putErr != nil {
		return f.putErr
	}
	tools := make([]store.Tool, 0, len(f.tools)+1)
	for _, old := range f.tools {
		if old.Name != t.Name {
			tools = append(tools, old)
		}
	}
	f.tools = append(tools, t)
	f.byName = map[string]store.Tool{}
	for _, t := range f.tools {
		f.byName[t.Name] = t
	}
	f.puts++
	return nil
}

func (f *fakeBackend) DeleteTool(ctx context.Context, name string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	t, ok := f.byName[name]
	switch {
	case !ok:
		return store.ErrNotFound
	case t.Gateway != "":
		return store.ErrUpstreamTool
	}
	tools := make([]store.Tool, 0, len(f.tools))
	for _, old := range f.tools {
		if old.Name != name {
			tools = append(tools, old)
		}
	}
	f.tools = tools
	delete(f.byName, name)
	return nil
}

// allToolsFake is a fakeBackend that can read disabled tools (AllTools).
type allToolsFake struct{ *fakeBackend }

func (f allToolsFake) AllTools(ctx context.Context) ([]store.Tool, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	if f.toolErr != nil {
		return nil, f.toolErr
	}
	return append([]store.Tool(nil), f.tools...), nil
}

func (f *fakeBackend) Dialect() string   { return "sqlite" }
func (f *fakeBackend) CacheType() string { return "memory" }

var errBackendDown = errors.New("backend down")

// testOptions are the gateway's defaults with authentication on.
func testOptions() Options {
	return Options{
		AuthRequired: true,
		JWTSecretKey: testSecret,
		JWTAlgorithm: "HS256",
		JWTAudience:  DefaultAudience,
		JWTIssuer:    DefaultIssuer,
		Version:      "1.2.3-test",
	}
}

func newTestServer(t testing.TB, mod func(o *Options)) (*Server, *fakeBackend) {
	t.Helper()
	o := testOptions()
	if mod != nil {
		mod(&o)
	}
	b := newFakeBackend()
	s, err := New(o, b)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return s, b
}

// mint returns a valid token for testEmail, adjusted by mod.
func mint(t testing.TB, mod func(r *TokenRequest)) string {
	t.Helper()
	r := TokenRequest{Email: testEmail, Expires: time.Hour, Secret: testSecret}
	if mod != nil {
		mod(&r)
	}
	tok, err := MintToken(r)
	if err != nil {
		t.Fatalf("MintToken: %v", err)
	}
	return tok
}

// signClaims signs arbitrary claims, for tokens MintToken would refuse to make.
func signClaims(t testing.TB, method jwt.SigningMethod, key any, claims jwt.MapClaims) string {
	t.Helper()
	tok, err := jwt.NewWithClaims(method, claims).SignedString(key)
	if err != nil {
		t.Fatalf("signing: %v", err)
	}
	return tok
}

// validClaims are the claims of a good token, to be spoiled one at a time.
func validClaims() jwt.MapClaims {
	now := time.Now()
	return jwt.MapClaims{
		"sub": testEmail, "iat": now.Unix(), "exp": now.Add(time.Hour).Unix(),
		"jti": "0b8e7d1c-1111-4222-8333-944455556666", "aud": DefaultAudience, "iss": DefaultIssuer,
	}
}

// result is a response as a test reads it.
type result struct {
	status  int
	body    []byte
	headers *fasthttp.ResponseHeader
}

// header returns a response header's value.
func (r result) header(name string) string { return string(r.headers.Peek(name)) }

// json decodes the body into a generic value.
func (r result) json(t testing.TB) any {
	t.Helper()
	var v any
	if err := json.Unmarshal(r.body, &v); err != nil {
		t.Fatalf("response is not JSON (%v): %q", err, r.body)
	}
	return v
}

// obj decodes the body as a JSON object.
func (r result) obj(t testing.TB) map[string]any {
	t.Helper()
	m, ok := r.json(t).(map[string]any)
	if !ok {
		t.Fatalf("response is not a JSON object: %s", r.body)
	}
	return m
}

// call runs one request through Handler. headers are name, value pairs.
func call(s *Server, method, path, body string, headers ...string) result {
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
	var ctx fasthttp.RequestCtx
	ctx.Init(&req, nil, nil)
	s.Handler(&ctx)
	h := &fasthttp.ResponseHeader{}
	ctx.Response.Header.CopyTo(h)
	return result{status: ctx.Response.StatusCode(), body: append([]byte(nil), ctx.Response.Body()...), headers: h}
}

// rpc posts body to /rpc with a valid token.
func rpc(t testing.TB, s *Server, body string) result {
	t.Helper()
	return call(s, "POST", "/rpc", body, "Authorization", "Bearer "+mint(t, nil))
}

// rpcResult posts one request and returns its "result", failing on errors.
func rpcResult(t testing.TB, s *Server, body string) map[string]any {
	t.Helper()
	r := rpc(t, s, body)
	if r.status != 200 {
		t.Fatalf("status %d: %s", r.status, r.body)
	}
	m := r.obj(t)
	if m["error"] != nil {
		t.Fatalf("unexpected error: %s", r.body)
	}
	res, ok := m["result"].(map[string]any)
	if !ok {
		t.Fatalf("no result object: %s", r.body)
	}
	return res
}

// rpcError posts one request and returns its error code and message.
func rpcErr(t testing.TB, s *Server, body string) (int, string, map[string]any) {
	t.Helper()
	r := rpc(t, s, body)
	m := r.obj(t)
	e, ok := m["error"].(map[string]any)
	if !ok {
		t.Fatalf("no error in response (status %d): %s", r.status, r.body)
	}
	return int(e["code"].(float64)), e["message"].(string), m
}

// toolText returns the text and isError of a tools/call style result.
func toolText(t testing.TB, res map[string]any) (string, bool) {
	t.Helper()
	content, ok := res["content"].([]any)
	if !ok || len(content) != 1 {
		t.Fatalf("content is not one item: %v", res)
	}
	item := content[0].(map[string]any)
	if item["type"] != "text" {
		t.Fatalf("content type %v", item["type"])
	}
	isErr, ok := res["isError"].(bool)
	if !ok {
		t.Fatalf("isError missing: %v", res)
	}
	return item["text"].(string), isErr
}
