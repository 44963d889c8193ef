package rpc

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
	"github.com/valyala/fasthttp"
)

const mcpInit = `{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}`

// mcpCall posts to /mcp with a token and the given session id ("" for none).
func mcpCall(t *testing.T, s *Server, tok, sid, body string, headers ...string) result {
	t.Helper()
	h := append([]string{"Authorization", "Bearer " + tok, "Accept", "application/json, text/event-stream"}, headers...)
	if sid != "" {
		h = append(h, "Mcp-Session-Id", sid)
	}
	return call(s, "POST", "/mcp", body, h...)
}

func mcpInitialize(t *testing.T, s *Server, tok string) string {
	t.Helper()
	r := mcpCall(t, s, tok, "", mcpInit)
	sid := r.header("Mcp-Session-Id")
	if r.status != 200 || len(sid) != sessionIDLen {
		t.Fatalf("initialize: %d, session id %q: %s", r.status, sid, r.body)
	}
	return sid
}

func TestMCPSessionLifecycle(t *testing.T) {
	s, _ := newTestServer(t, nil)
	tok := mint(t, nil)
	sid := mcpInitialize(t, s, tok)
	if sid2 := mcpInitialize(t, s, tok); sid2 == sid {
		t.Fatal("two initializes got the same session id")
	}
	for _, c := range sid {
		if c < 0x21 || c > 0x7e {
			t.Fatalf("session id has a non-visible character: %q", sid)
		}
	}

	// The initialized notification: 202, no body.
	r := mcpCall(t, s, tok, sid, `{"jsonrpc":"2.0","method":"notifications/initialized"}`, "MCP-Protocol-Version", "2025-06-18")
	if r.status != 202 || len(r.body) != 0 {
		t.Fatalf("initialized: %d %q", r.status, r.body)
	}
	// A JSON-RPC response from the client: 202.
	if r := mcpCall(t, s, tok, sid, `{"jsonrpc":"2.0","id":"s1","result":{}}`); r.status != 202 {
		t.Fatalf("client response: %d", r.status)
	}
	// Requests in the session.
	r = mcpCall(t, s, tok, sid, `{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"convert_time","arguments":{"source_timezone":"Europe/Berlin","target_timezone":"Europe/Dublin","time":"09:00"}}}`,
		"MCP-Protocol-Version", "2025-06-18")
	if r.status != 200 || r.header("Content-Type") != "application/json" || !strings.Contains(string(r.body), `\"time_difference\":\"-1.0h\"`) {
		t.Fatalf("tools/call: %d %s", r.status, r.body)
	}
	// Batches work (2025-03-26), but initialize may not be batched.
	r = mcpCall(t, s, tok, sid, `[{"jsonrpc":"2.0","id":3,"method":"ping"},`+mcpInit+`]`)
	if !strings.Contains(string(r.body), `{"jsonrpc":"2.0","id":3,"result":{}}`) || !strings.Contains(string(r.body), "initialize must not be part of a batch") {
		t.Fatalf("batch: %s", r.body)
	}

	// Missing session: 400. Unknown, tampered: 404.
	for _, tc := range []struct {
		sid    string
		status int
		code   float64
	}{
		{"", 400, codeInvalidRequest},
		{"nonsense", 404, codeSessionNotFound},
		{strings.Repeat("A", sessionIDLen), 404, codeSessionNotFound},
		{tamper(sid), 404, codeSessionNotFound},
	} {
		r := mcpCall(t, s, tok, tc.sid, ping)
		if r.status != tc.status || r.obj(t)["error"].(map[string]any)["code"] != tc.code {
			t.Errorf("session %q: %d %s", tc.sid, r.status, r.body)
		}
	}

	// Another user cannot use the session.
	other := mint(t, func(r *TokenRequest) { r.Email = "other@example.com" })
	if r := mcpCall(t, s, other, sid, ping); r.status != 404 {
		t.Errorf("someone else's session: %d", r.status)
	}

	// DELETE ends it.
	if r := call(s, "DELETE", "/mcp", "", "Authorization", "Bearer "+tok); r.status != 400 {
		t.Errorf("DELETE without a session: %d", r.status)
	}
	if r := call(s, "DELETE", "/mcp", "", "Authorization", "Bearer "+tok, "Mcp-Session-Id", sid); r.status != 204 {
		t.Fatalf("DELETE: %d %s", r.status, r.body)
	}
	if r := mcpCall(t, s, tok, sid, ping); r.status != 404 {
		t.Errorf("ended session: %d", r.status)
	}
	if r := call(s, "DELETE", "/mcp", "", "Authorization", "Bearer "+tok, "Mcp-Session-Id", sid); r.status != 404 {
		t.Errorf("DELETE twice: %d", r.status)
	}
}

// tamper changes one character in the middle of an id.
func tamper(id string) string {
	b := []byte(id)
	if b[20] == 'A' {
		b[20] = 'B'
	} else {
		b[20] = 'A'
	}
	return string(b)
}

func TestMCPTransportErrors(t *testing.T) {
	s, _ := newTestServer(t, nil)
	tok := mint(t, nil)
	sid := mcpInitialize(t, s, tok)

	r := call(s, "GET", "/mcp", "", "Authorization", "Bearer "+tok, "Accept", "text/event-stream")
	if r.status != 405 || r.header("Allow") != "POST, DELETE" || !strings.Contains(string(r.body), "no SSE stream") {
		t.Errorf("GET: %d %q %s", r.status, r.header("Allow"), r.body)
	}
	if r := call(s, "PUT", "/mcp", ""); r.status != 405 {
		t.Errorf("PUT: %d", r.status)
	}
	r = mcpCall(t, s, tok, sid, ping, "MCP-Protocol-Version", "1999-01-01")
	if r.status != 400 || !strings.Contains(string(r.body), "unsupported MCP-Protocol-Version") {
		t.Errorf("bad protocol version: %d %s", r.status, r.body)
	}
	for _, v := range protocolVersions {
		if r := mcpCall(t, s, tok, sid, ping, "MCP-Protocol-Version", v); r.status != 200 {
			t.Errorf("protocol version %s: %d", v, r.status)
		}
	}
	r = call(s, "POST", "/mcp", mcpInit, "Authorization", "Bearer "+tok, "Accept", "text/html")
	if r.status != 406 {
		t.Errorf("Accept text/html: %d", r.status)
	}
	if r := call(s, "POST", "/mcp", mcpInit, "Authorization", "Bearer "+tok); r.status != 200 {
		t.Errorf("no Accept: %d", r.status)
	}
	r = mcpCall(t, s, tok, sid, `{"jsonrpc":`)
	if r.status != 400 || r.obj(t)["error"].(map[string]any)["code"] != float64(codeParseError) {
		t.Errorf("parse error: %d %s", r.status, r.body)
	}
	// An initialize that is a notification does not open a session.
	if r := mcpCall(t, s, tok, "", `{"jsonrpc":"2.0","method":"initialize"}`); r.status != 400 || r.header("Mcp-Session-Id") != "" {
		t.Errorf("initialize without id: %d", r.status)
	}
}

func TestMCPSessionsAcrossProcesses(t *testing.T) {
	// Two Servers with the same secret stand for two worker processes.
	a, _ := newTestServer(t, nil)
	b, _ := newTestServer(t, nil)
	c, _ := newTestServer(t, func(o *Options) { o.JWTSecretKey = "a-different-secret" })
	tok := mint(t, nil)
	sid := mcpInitialize(t, a, tok)
	if r := mcpCall(t, b, tok, sid, ping); r.status != 200 {
		t.Errorf("session from a on b: %d %s", r.status, r.body)
	}
	tokC, _ := MintToken(TokenRequest{Email: testEmail, Secret: "a-different-secret", Expires: time.Hour})
	if r := mcpCall(t, c, tokC, sid, ping); r.status != 404 {
		t.Errorf("session checked with another secret: %d", r.status)
	}
	// DELETE is recorded where it was received only (documented).
	call(a, "DELETE", "/mcp", "", "Authorization", "Bearer "+tok, "Mcp-Session-Id", sid)
	if r := mcpCall(t, a, tok, sid, ping); r.status != 404 {
		t.Errorf("ended on a, used on a: %d", r.status)
	}
}

func TestMCPSessionExpiry(t *testing.T) {
	ss, _ := newSessions(testSecret, "")
	now := time.Now()
	id := []byte(ss.issue(testEmail, now))
	if !ss.valid(id, testEmail, now.Add(sessionLifetime-time.Second)) {
		t.Error("session invalid before its lifetime")
	}
	if ss.valid(id, testEmail, now.Add(sessionLifetime+time.Second)) {
		t.Error("session valid after its lifetime")
	}
	if ss.valid(id, testEmail, now.Add(-2*sessionClockSkew)) {
		t.Error("session issued in the future accepted")
	}
	if ss.valid(id, "", now) {
		t.Error("session valid for another subject")
	}
	// Non-canonical base64 (other trailing bits) is not an alias.
	alias := append([]byte(nil), id...)
	alias[len(alias)-1] ^= 1
	if ss.valid(alias, testEmail, now) {
		t.Error("alias of a session id accepted")
	}
	// Without a secret ids still work in the process that issued them.
	anon, _ := newSessions("", "")
	if !anon.valid([]byte(anon.issue("", now)), "", now) {
		t.Error("per-process key")
	}
}

func TestMCPEndedSessionsBounded(t *testing.T) {
	ss, _ := newSessions(testSecret, "")
	now := time.Now()
	for i := 0; i < maxEndedSessions+10; i++ {
		ss.end([]byte(ss.issue(testEmail, now)), now)
	}
	if n := len(ss.ended); n > maxEndedSessions {
		t.Errorf("%d ended sessions kept, limit %d", n, maxEndedSessions)
	}
}

func TestMCPAuthOff(t *testing.T) {
	s, _ := newTestServer(t, func(o *Options) { o.AuthRequired = false })
	r := call(s, "POST", "/mcp", mcpInit)
	sid := r.header("Mcp-Session-Id")
	if r.status != 200 || sid == "" {
		t.Fatalf("initialize: %d", r.status)
	}
	if r := call(s, "POST", "/mcp", ping, "Mcp-Session-Id", sid); r.status != 200 {
		t.Errorf("ping: %d %s", r.status, r.body)
	}
}

// --- The official MCP Go SDK against a real server ---------------------------------

// serve runs Handler on a 127.0.0.1 listener until the test ends.
func serve(t *testing.T, s *Server) string {
	t.Helper()
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &fasthttp.Server{Handler: s.Handler, MaxRequestBodySize: s.opt.MaxRequestBodySize}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Shutdown() })
	return "http://" + ln.Addr().String() + "/mcp"
}

// roundTripper adds the bearer token, spreads requests over several
// endpoints (as the kernel spreads connections over worker processes) and
// records what happened.
type roundTripper struct {
	token string
	hosts []string
	next  atomic.Uint64

	mu  sync.Mutex
	log []string
}

func (rt *roundTripper) RoundTrip(req *http.Request) (*http.Response, error) {
	req = req.Clone(req.Context())
	req.Header.Set("Authorization", "Bearer "+rt.token)
	host := rt.hosts[int(rt.next.Add(1))%len(rt.hosts)]
	req.URL.Host = host
	req.Host = host
	resp, err := http.DefaultTransport.RoundTrip(req)
	rt.mu.Lock()
	defer rt.mu.Unlock()
	if err != nil {
		rt.log = append(rt.log, fmt.Sprintf("%s %s: %v", req.Method, host, err))
	} else {
		rt.log = append(rt.log, fmt.Sprintf("%s %s %d", req.Method, host, resp.StatusCode))
	}
	return resp, err
}

func (rt *roundTripper) requests() string {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	return strings.Join(rt.log, "\n")
}

func TestMCPGoSDKClient(t *testing.T) {
	// Two "worker processes": the SDK's consecutive requests alternate.
	s1, _ := newTestServer(t, nil)
	s2, _ := newTestServer(t, nil)
	u1, u2 := serve(t, s1), serve(t, s2)
	host := func(u string) string { return strings.TrimSuffix(strings.TrimPrefix(u, "http://"), "/mcp") }
	rt := &roundTripper{token: mint(t, nil), hosts: []string{host(u1), host(u2)}}

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	client := mcp.NewClient(&mcp.Implementation{Name: "rpc-test", Version: "1.0.0"}, nil)
	transport := &mcp.StreamableClientTransport{Endpoint: u1, HTTPClient: &http.Client{Transport: rt}, MaxRetries: -1}
	session, err := client.Connect(ctx, transport, nil)
	if err != nil {
		t.Fatalf("connect: %v\n%s", err, rt.requests())
	}
	if session.ID() == "" {
		t.Error("no session id")
	}
	init := session.InitializeResult()
	if init.ServerInfo.Name != "mcpgateway" || init.ServerInfo.Version != "1.2.3-test" || init.Capabilities.Tools == nil {
		t.Errorf("initialize result: %+v", init)
	}

	tools, err := session.ListTools(ctx, nil)
	if err != nil {
		t.Fatalf("list tools: %v\n%s", err, rt.requests())
	}
	var names []string
	for _, tool := range tools.Tools {
		names = append(names, tool.Name)
	}
	if strings.Join(names, ",") != "convert_time,get_system_time,remote_tool" {
		t.Errorf("tools: %v", names)
	}

	res, err := session.CallTool(ctx, &mcp.CallToolParams{Name: "convert_time", Arguments: map[string]any{
		"source_timezone": "Europe/Berlin", "target_timezone": "Europe/Dublin", "time": "09:00",
	}})
	if err != nil {
		t.Fatalf("call tool: %v\n%s", err, rt.requests())
	}
	if res.IsError || len(res.Content) != 1 {
		t.Fatalf("result: %+v", res)
	}
	text := res.Content[0].(*mcp.TextContent).Text
	var conv conversion
	if err := json.Unmarshal([]byte(text), &conv); err != nil || conv.TimeDifference != "-1.0h" {
		t.Errorf("convert_time: %s", text)
	}

	res, err = session.CallTool(ctx, &mcp.CallToolParams{Name: "convert_time", Arguments: map[string]any{
		"source_timezone": "Europe/Berlin", "target_timezone": "Mars/Base", "time": "09:00",
	}})
	if err != nil || !res.IsError || res.Content[0].(*mcp.TextContent).Text != `invalid target_timezone "Mars/Base": unknown time zone` {
		t.Errorf("failing tool: %v %+v", err, res)
	}
	if _, err := session.CallTool(ctx, &mcp.CallToolParams{Name: "no_such_tool"}); err == nil || !strings.Contains(err.Error(), "Unknown tool: no_such_tool") {
		t.Errorf("unknown tool: %v", err)
	}
	if err := session.Ping(ctx, nil); err != nil {
		t.Errorf("ping: %v", err)
	}
	if err := session.Close(); err != nil {
		t.Errorf("close: %v", err)
	}

	log := rt.requests()
	t.Logf("requests:\n%s", log)
	for _, want := range []string{" 405", "DELETE "} {
		if !strings.Contains(log, want) {
			t.Errorf("expected %q among the requests", want)
		}
	}
	if strings.Contains(log, "POST "+host(u1)) == false || strings.Contains(log, "POST "+host(u2)) == false {
		t.Error("requests did not reach both servers")
	}
	for _, line := range strings.Split(log, "\n") {
		if strings.HasPrefix(line, "POST") && strings.HasSuffix(line, " 404") {
			t.Errorf("a session was not recognised: %s", line)
		}
	}
}
