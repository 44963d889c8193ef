package rpc

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
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

	"github.com/mcpgateway/mcpgateway/store"
)

const mcpInit = `{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}`

// sessionVersions are the revisions initialize negotiates, newest first.
var sessionVersions = []string{"2025-11-25", "2025-06-18", "2025-03-26"}

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

// newMCPServers returns n Servers over one Backend that keeps tombstones:
// n worker processes (or instances) sharing a store.
func newMCPServers(t *testing.T, n int) ([]*Server, *revokingFake) {
	t.Helper()
	b := newRevokingFake()
	servers := make([]*Server, n)
	for i := range servers {
		s, err := New(testOptions(), b)
		if err != nil {
			t.Fatal(err)
		}
		servers[i] = s
	}
	return servers, b
}

// mcpDelete ends session sid.
func mcpDelete(s *Server, tok, sid string) result {
	return call(s, "DELETE", "/mcp", "", "Authorization", "Bearer "+tok, "Mcp-Session-Id", sid)
}

func TestMCPSessionLifecycle(t *testing.T) {
	s, _ := newRevokingServer(t, nil)
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
	// No batches in 2025-06-18 (they are tested for 2025-03-26 in
	// TestMCPRevisionPerRequest).
	r = mcpCall(t, s, tok, sid, `[{"jsonrpc":"2.0","id":3,"method":"ping"}]`)
	if r.status != 400 || !strings.Contains(string(r.body), "no JSON-RPC batches") {
		t.Fatalf("batch: %d %s", r.status, r.body)
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
	if r := mcpDelete(s, other, sid); r.status != 404 {
		t.Errorf("DELETE of someone else's session: %d", r.status)
	}
	if r := mcpDelete(s, tok, sid); r.status != 204 {
		t.Fatalf("DELETE: %d %s", r.status, r.body)
	}
	if r := mcpCall(t, s, tok, sid, ping); r.status != 404 {
		t.Errorf("ended session: %d", r.status)
	}
	if r := mcpDelete(s, tok, sid); r.status != 404 {
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
	s, _ := newRevokingServer(t, nil)
	tok := mint(t, nil)
	sid := mcpInitialize(t, s, tok) // 2025-06-18

	r := call(s, "GET", "/mcp", "", "Authorization", "Bearer "+tok, "Accept", "text/event-stream")
	if r.status != 405 || r.header("Allow") != "POST, DELETE" || !strings.Contains(string(r.body), "no standing SSE stream") {
		t.Errorf("GET: %d %q %s", r.status, r.header("Allow"), r.body)
	}
	if r := call(s, "PUT", "/mcp", ""); r.status != 405 {
		t.Errorf("PUT: %d", r.status)
	}
	// (2026-07-28 is served, without a session: mcp_modern_test.go.)
	for _, v := range []string{"1999-01-01", "2024-11-05", "2025-06-18 "} {
		r = mcpCall(t, s, tok, sid, ping, "MCP-Protocol-Version", v)
		if r.status != 400 || !strings.Contains(string(r.body), "unsupported MCP-Protocol-Version") {
			t.Errorf("protocol version %q: %d %s", v, r.status, r.body)
		}
	}
	// A served version that is not the session's is accepted, and the
	// session's rules apply: a batch (2025-03-26 only) is still refused.
	for _, v := range sessionVersions {
		r := mcpCall(t, s, tok, sid, ping, "MCP-Protocol-Version", v)
		if r.status != 200 || !strings.Contains(string(r.body), `"result":{}`) {
			t.Errorf("protocol version %s in a 2025-06-18 session: %d %s", v, r.status, r.body)
		}
	}
	if r := mcpCall(t, s, tok, sid, "["+ping+"]", "MCP-Protocol-Version", "2025-03-26"); r.status != 400 {
		t.Errorf("a batch in a 2025-06-18 session, sent as 2025-03-26: %d %s", r.status, r.body)
	}

	// JSON-RPC by the rules of the session's revision (2025-06-18: errors
	// without an id carry "id":null).
	for _, tc := range []struct {
		name, body string
		status     int
		want       string
	}{
		{"null id", `{"jsonrpc":"2.0","id":null,"method":"ping"}`, 400,
			`{"jsonrpc":"2.0","id":null,"error":{"code":-32600,"message":"Invalid Request: id must be a string or an integer"}}`},
		{"fractional id", `{"jsonrpc":"2.0","id":1.5,"method":"ping"}`, 400, `"code":-32600`},
		{"exponent id", `{"jsonrpc":"2.0","id":1e3,"method":"ping"}`, 400, `"code":-32600`},
		{"object id", `{"jsonrpc":"2.0","id":{},"method":"ping"}`, 400, `"code":-32600`},
		{"invalid, no id", `{"jsonrpc":"2.0","method":5}`, 400, `{"jsonrpc":"2.0","id":null,"error":{"code":-32600`},
		{"notification with bad params", `{"jsonrpc":"2.0","method":"notifications/initialized","params":5}`, 400, `"code":-32602`},
		{"invalid, with an id", `{"jsonrpc":"2.0","id":7,"method":5}`, 200, `{"jsonrpc":"2.0","id":7,"error":{"code":-32600`},
		{"negative integer id", `{"jsonrpc":"2.0","id":-7,"method":"ping"}`, 200, `{"jsonrpc":"2.0","id":-7,"result":{}}`},
		{"string id", `{"jsonrpc":"2.0","id":"1.5","method":"ping"}`, 200, `{"jsonrpc":"2.0","id":"1.5","result":{}}`},
		{"response with a null id", `{"jsonrpc":"2.0","id":null,"error":{"code":1,"message":"x"}}`, 202, ``},
		{"batch", `[{"jsonrpc":"2.0","id":1,"method":"ping"}]`, 400, `{"jsonrpc":"2.0","id":null,"error":{"code":-32600,"message":"Invalid Request: MCP 2025-06-18 has no JSON-RPC batches`},
	} {
		r := mcpCall(t, s, tok, sid, tc.body, "MCP-Protocol-Version", "2025-06-18")
		if r.status != tc.status || !strings.Contains(string(r.body), tc.want) {
			t.Errorf("%s: %d %s", tc.name, r.status, r.body)
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
	// Two Servers with the same secret and one store stand for two worker
	// processes (or instances).
	servers, _ := newMCPServers(t, 2)
	a, b := servers[0], servers[1]
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
	// DELETE on a ends the session on b too: a tombstone in the store.
	if r := mcpDelete(a, tok, sid); r.status != 204 {
		t.Fatalf("DELETE on a: %d %s", r.status, r.body)
	}
	for _, s := range servers {
		if r := mcpCall(t, s, tok, sid, ping); r.status != 404 {
			t.Errorf("ended on a, used: %d", r.status)
		}
	}
	if r := mcpDelete(b, tok, sid); r.status != 404 {
		t.Errorf("DELETE on b after a: %d", r.status)
	}
}

// Without tombstones a session could be ended in one process only, so
// DELETE is refused, as the specification allows.
func TestMCPDeleteWithoutTombstones(t *testing.T) {
	s, _ := newTestServer(t, nil)
	tok := mint(t, nil)
	sid := mcpInitialize(t, s, tok)
	if r := mcpDelete(s, tok, sid); r.status != 405 || r.header("Allow") != "POST" {
		t.Errorf("DELETE: %d %q", r.status, r.header("Allow"))
	}
	if r := mcpCall(t, s, tok, sid, ping); r.status != 200 {
		t.Errorf("session after a refused DELETE: %d", r.status)
	}
}

// sessionStoreDown fails the session tombstone lookups and writes only.
type sessionStoreDown struct{ *revokingFake }

func (f sessionStoreDown) IsRevoked(ctx context.Context, kind, id string) (bool, error) {
	if kind == store.RevokedSession {
		return false, fmt.Errorf("tombstone: %w", store.ErrUnavailable)
	}
	return f.revokingFake.IsRevoked(ctx, kind, id)
}

func (f sessionStoreDown) Revoke(ctx context.Context, r store.Revocation) error {
	return fmt.Errorf("tombstone: %w", store.ErrUnavailable)
}

func TestMCPSessionStoreDown(t *testing.T) {
	s, err := New(testOptions(), sessionStoreDown{newRevokingFake()})
	if err != nil {
		t.Fatal(err)
	}
	tok := mint(t, nil)
	sid := mcpInitialize(t, s, tok)
	for _, r := range []result{mcpCall(t, s, tok, sid, ping), mcpDelete(s, tok, sid)} {
		if r.status != 503 || r.header("Retry-After") == "" || !strings.Contains(string(r.body), `"code":-32000`) {
			t.Errorf("store down: %d %q %s", r.status, r.header("Retry-After"), r.body)
		}
	}
}

// TestMCPRevisionPerRequest: initialize negotiates a session revision and
// the session id records it; each request gets its session's rules.
func TestMCPRevisionPerRequest(t *testing.T) {
	s, _ := newRevokingServer(t, nil)
	tok := mint(t, nil)
	initAt := func(v string) (string, string) {
		t.Helper()
		r := mcpCall(t, s, tok, "", `{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"`+v+`","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}`)
		sid := r.header("Mcp-Session-Id")
		if r.status != 200 || len(sid) != sessionIDLen {
			t.Fatalf("initialize at %s: %d %q %s", v, r.status, sid, r.body)
		}
		res, _ := r.obj(t)["result"].(map[string]any)
		got, _ := res["protocolVersion"].(string)
		sess, ok := s.sessions.decode([]byte(sid), testEmail, time.Now())
		if !ok || sess.rev.String() != got {
			t.Fatalf("initialize at %s: answered %s, session %v", v, got, sess.rev)
		}
		return sid, got
	}
	for v, want := range map[string]string{
		"2025-11-25": "2025-11-25", "2025-06-18": "2025-06-18", "2025-03-26": "2025-03-26",
		// Only session revisions are negotiated.
		"2026-07-28": "2025-11-25", "1999-01-01": "2025-11-25", "2024-11-05": "2025-11-25",
	} {
		if _, got := initAt(v); got != want {
			t.Errorf("initialize asking %s: got %s, want %s", v, got, want)
		}
	}
	// initialize with params it refuses opens no session.
	if r := mcpCall(t, s, tok, "", `{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":1}}`); r.status != 200 || r.header("Mcp-Session-Id") != "" {
		t.Errorf("refused initialize: %d %q", r.status, r.header("Mcp-Session-Id"))
	}
	// Nor does one with an id MCP does not allow.
	if r := mcpCall(t, s, tok, "", `{"jsonrpc":"2.0","id":null,"method":"initialize"}`); r.status != 400 || r.header("Mcp-Session-Id") != "" {
		t.Errorf("initialize with a null id: %d %q", r.status, r.header("Mcp-Session-Id"))
	}

	// Without the header, the session's revision applies: errors without
	// an id are in its form, and batches are refused unless it is 2025-03-26.
	const invalid = `{"jsonrpc":"2.0","method":5}`
	batch := `[{"jsonrpc":"2.0","id":3,"method":"ping"},{"jsonrpc":"2.0","method":"notifications/initialized"},` + mcpInit + `]`
	sid06, _ := initAt("2025-06-18")
	if r := mcpCall(t, s, tok, sid06, invalid); r.status != 400 || r.obj(t)["id"] != nil || !strings.Contains(string(r.body), `"id":null`) {
		t.Errorf("2025-06-18, invalid message: %d %s", r.status, r.body)
	}
	if r := mcpCall(t, s, tok, sid06, batch); r.status != 400 {
		t.Errorf("2025-06-18, batch: %d %s", r.status, r.body)
	}
	sid11, _ := initAt("2025-11-25")
	for _, body := range []string{invalid, batch, `{"jsonrpc":"2.0","id":null,"method":"ping"}`} {
		r := mcpCall(t, s, tok, sid11, body)
		if _, hasID := r.obj(t)["id"]; r.status != 400 || hasID {
			t.Errorf("2025-11-25, %s: %d %s", body, r.status, r.body)
		}
	}
	sid0326, _ := initAt("2025-03-26")
	r := mcpCall(t, s, tok, sid0326, batch)
	if r.status != 200 || !strings.HasPrefix(string(r.body), `[{"jsonrpc":"2.0","id":3,"result":{}},`) ||
		!strings.Contains(string(r.body), "initialize must not be part of a batch") {
		t.Errorf("2025-03-26, batch: %d %s", r.status, r.body)
	}
	// A 2025-03-26 batch still follows MCP's id rules.
	r = mcpCall(t, s, tok, sid0326, `[{"jsonrpc":"2.0","id":null,"method":"ping"},{"jsonrpc":"2.0","id":2.5,"method":"ping"}]`)
	if r.status != 200 || strings.Count(string(r.body), `{"jsonrpc":"2.0","id":null,"error":{"code":-32600`) != 2 {
		t.Errorf("2025-03-26, batch with bad ids: %d %s", r.status, r.body)
	}

	// Transport errors before the session is known: the header's revision,
	// else 2025-03-26 ("id":null); an unknown header, the newest form.
	if r := mcpCall(t, s, tok, "", ping, "MCP-Protocol-Version", "2025-11-25"); r.status != 400 || strings.Contains(string(r.body), `"id"`) {
		t.Errorf("no session, 2025-11-25: %d %s", r.status, r.body)
	}
	if r := mcpCall(t, s, tok, "nonsense", ping); r.status != 404 || !strings.Contains(string(r.body), `"id":null`) {
		t.Errorf("unknown session, no header: %d %s", r.status, r.body)
	}
	if r := mcpCall(t, s, tok, sid11, ping, "MCP-Protocol-Version", "2099-01-01"); r.status != 400 || strings.Contains(string(r.body), `"id"`) {
		t.Errorf("2099-01-01 header: %d %s", r.status, r.body)
	}

	// An id of the v1 form (no revision) is not a session any more.
	if r := mcpCall(t, s, tok, sessionV1(testSecret, testEmail, time.Now()), ping); r.status != 404 {
		t.Errorf("v1 session id: %d %s", r.status, r.body)
	}

	// /rpc needs no header, but one that is sent must be served (2026-07-28
	// included: /rpc stays plain JSON-RPC whatever the revision named).
	for v, want := range map[string]int{"": 200, "2025-06-18": 200, "2025-11-25": 200, "1999-01-01": 400, "2026-07-28": 200} {
		h := []string{"Authorization", "Bearer " + tok}
		if v != "" {
			h = append(h, "MCP-Protocol-Version", v)
		}
		r := call(s, "POST", "/rpc", ping, h...)
		if r.status != want || (want == 400 && !strings.HasPrefix(string(r.body), `{"jsonrpc":"2.0","id":null,"error":{"code":-32600,"message":"Bad Request: unsupported MCP-Protocol-Version`)) {
			t.Errorf("/rpc with MCP-Protocol-Version %q: %d %s", v, r.status, r.body)
		}
	}
}

// sessionV1 makes an id as the gateway issued them before sessions recorded
// their revision.
func sessionV1(secret, subject string, now time.Time) string {
	k := hmac.New(sha256.New, []byte(secret))
	k.Write([]byte("mcpgateway/mcp-session/v1"))
	var raw [40]byte
	binary.BigEndian.PutUint64(raw[16:24], uint64(now.Unix()))
	m := hmac.New(sha256.New, k.Sum(nil))
	m.Write(raw[:24])
	m.Write([]byte(subject))
	copy(raw[24:], m.Sum(nil))
	return base64.RawURLEncoding.EncodeToString(raw[:])
}

// The /rpc hot path allocates nothing, with or without MCP-Protocol-Version:
// the tuning guide's payload and the MCP guide's (a tool called by name).
func TestRPCHotPathAllocs(t *testing.T) {
	s, _ := newTestServer(t, nil)
	const guide = `{"jsonrpc":"2.0","id":1,"method":"get_system_time","params":{"timezone":"UTC"}}`
	for _, tc := range []struct{ payload, header string }{
		{seedPayload, ""}, {seedPayload, "2025-11-25"}, {guide, ""}, {guide, "2025-06-18"},
	} {
		payload, header := tc.payload, tc.header
		var req fasthttp.Request
		req.Header.SetMethod("POST")
		req.SetRequestURI("/rpc")
		req.Header.SetContentType("application/json")
		req.Header.Set("Authorization", "Bearer "+mint(t, nil))
		if header != "" {
			req.Header.Set("MCP-Protocol-Version", header)
		}
		req.SetBodyString(payload)
		var ctx fasthttp.RequestCtx
		ctx.Init(&req, nil, nil)
		s.Handler(&ctx) // warm: token verified once, zones loaded
		if ctx.Response.StatusCode() != 200 {
			t.Fatalf("status %d: %s", ctx.Response.StatusCode(), ctx.Response.Body())
		}
		if n := testing.AllocsPerRun(200, func() { ctx.Response.Reset(); s.Handler(&ctx) }); n != 0 {
			t.Errorf("%.40s, MCP-Protocol-Version %q: %v allocations per request", payload, header, n)
		}
	}
}

func TestMCPSessionExpiry(t *testing.T) {
	ss, _ := newSessions(testSecret, "")
	now := time.Now()
	id := []byte(ss.issue(testEmail, rev20250618, now))
	valid := func(id []byte, subject string, at time.Time) bool {
		_, ok := ss.decode(id, subject, at)
		return ok
	}
	if sess, ok := ss.decode(id, testEmail, now.Add(sessionLifetime-time.Second)); !ok || sess.rev != rev20250618 ||
		sess.expires.Unix() != now.Add(sessionLifetime+time.Second).Unix() {
		t.Errorf("session before its lifetime: %v %+v", ok, sess)
	}
	if valid(id, testEmail, now.Add(sessionLifetime+time.Second)) {
		t.Error("session valid after its lifetime")
	}
	if valid(id, testEmail, now.Add(-2*sessionClockSkew)) {
		t.Error("session issued in the future accepted")
	}
	if valid(id, "", now) {
		t.Error("session valid for another subject")
	}
	// Non-canonical base64 (other trailing bits) is not an alias.
	alias := append([]byte(nil), id...)
	alias[len(alias)-1] ^= 1
	if valid(alias, testEmail, now) {
		t.Error("alias of a session id accepted")
	}
	// The mac covers the revision: another revision byte is a forgery.
	raw, _ := sessionEncoding.DecodeString(string(id))
	raw[24] = byte(rev20251125)
	if valid([]byte(sessionEncoding.EncodeToString(raw)), testEmail, now) {
		t.Error("session with a changed revision accepted")
	}
	// Without a secret ids still work in the process that issued them.
	anon, _ := newSessions("", "")
	if _, ok := anon.decode([]byte(anon.issue("", revNewestSession, now)), "", now); !ok {
		t.Error("per-process key")
	}
	// During a key rotation ids of the previous key still pass; ids of the
	// new key do not pass the previous key alone.
	rotated, _ := newSessions("a-new-secret-key-that-is-long-enough", testSecret)
	if sess, ok := rotated.decode(id, testEmail, now); !ok || sess.rev != rev20250618 {
		t.Error("id of the previous key during a rotation")
	}
	if valid([]byte(rotated.issue(testEmail, rev20250618, now)), testEmail, now) {
		t.Error("id of the new key accepted by the previous key")
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
// records what happened: "METHOD host Mcp-Method status" ("-" for no
// Mcp-Method), and how many responses carried an Mcp-Session-Id.
type roundTripper struct {
	token string
	hosts []string
	next  atomic.Uint64

	mu         sync.Mutex
	log        []string
	sessionIDs int
}

func (rt *roundTripper) RoundTrip(req *http.Request) (*http.Response, error) {
	req = req.Clone(req.Context())
	req.Header.Set("Authorization", "Bearer "+rt.token)
	host := rt.hosts[int(rt.next.Add(1))%len(rt.hosts)]
	req.URL.Host = host
	req.Host = host
	method := req.Header.Get("Mcp-Method")
	if method == "" {
		method = "-"
	}
	resp, err := http.DefaultTransport.RoundTrip(req)
	rt.mu.Lock()
	defer rt.mu.Unlock()
	if err != nil {
		rt.log = append(rt.log, fmt.Sprintf("%s %s %s: %v", req.Method, host, method, err))
		return resp, err
	}
	rt.log = append(rt.log, fmt.Sprintf("%s %s %s %d", req.Method, host, method, resp.StatusCode))
	if resp.Header.Get("Mcp-Session-Id") != "" {
		rt.sessionIDs++
	}
	return resp, err
}

func (rt *roundTripper) requests() string {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	return strings.Join(rt.log, "\n")
}

func (rt *roundTripper) count() int {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	return len(rt.log)
}

// sdkConnect connects the official Go SDK's client to two "worker
// processes" over one store: its consecutive requests alternate.
// version is the revision it asks for ("": the SDK's newest).
func sdkConnect(t *testing.T, ctx context.Context, version string) (*mcp.ClientSession, *roundTripper, []*Server) {
	t.Helper()
	servers, _ := newMCPServers(t, 2)
	var hosts []string
	for _, s := range servers {
		hosts = append(hosts, strings.TrimSuffix(strings.TrimPrefix(serve(t, s), "http://"), "/mcp"))
	}
	rt := &roundTripper{token: mint(t, nil), hosts: hosts}
	client := mcp.NewClient(&mcp.Implementation{Name: "rpc-test", Version: "1.0.0"}, nil)
	transport := &mcp.StreamableClientTransport{Endpoint: "http://" + hosts[0] + "/mcp", HTTPClient: &http.Client{Transport: rt}, MaxRetries: -1}
	session, err := client.Connect(ctx, transport, &mcp.ClientSessionOptions{ProtocolVersion: version})
	if err != nil {
		t.Fatalf("connect: %v\n%s", err, rt.requests())
	}
	init := session.InitializeResult()
	if init.ServerInfo == nil || init.ServerInfo.Name != "mcpgateway" || init.ServerInfo.Version != "1.2.3-test" || init.Capabilities.Tools == nil {
		t.Errorf("initialize or discover result: %+v", init)
	}
	return session, rt, servers
}

// sdkListAndCall lists the tools and calls them: a success, a tool error
// and an unknown tool.
func sdkListAndCall(t *testing.T, ctx context.Context, session *mcp.ClientSession, rt *roundTripper) {
	t.Helper()
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
}

// TestMCPGoSDKClient: the official Go SDK (v1.8.0) in both eras.
func TestMCPGoSDKClient(t *testing.T) {
	// By default the SDK probes server/discover at 2026-07-28 and, answered,
	// stays stateless: no initialize, no session id, no GET or DELETE. It
	// keeps tools/list for the ttlMs of the result.
	t.Run("2026-07-28", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		session, rt, _ := sdkConnect(t, ctx, "")
		if v := session.InitializeResult().ProtocolVersion; v != "2026-07-28" || session.ID() != "" {
			t.Fatalf("revision %s, session id %q\n%s", v, session.ID(), rt.requests())
		}
		sdkListAndCall(t, ctx, session, rt)
		n := rt.count()
		if _, err := session.ListTools(ctx, nil); err != nil || rt.count() != n {
			t.Errorf("second tools/list within ttlMs: %v, %d requests more", err, rt.count()-n)
		}
		// ping was removed in 2026-07-28: 404, -32601.
		if err := session.Ping(ctx, nil); err == nil || !strings.Contains(err.Error(), "Method not found: ping") {
			t.Errorf("ping: %v", err)
		}
		if err := session.Close(); err != nil {
			t.Errorf("close: %v", err)
		}

		log := rt.requests()
		t.Logf("requests:\n%s", log)
		lines := strings.Split(log, "\n")
		if !strings.Contains(lines[0], " server/discover 200") {
			t.Errorf("first request: %s", lines[0])
		}
		for _, line := range lines {
			if !strings.HasPrefix(line, "POST ") || strings.Contains(line, " initialize ") || strings.Contains(line, " - ") {
				t.Errorf("not a stateless request: %s", line)
			}
		}
		if rt.sessionIDs != 0 {
			t.Errorf("%d responses carried an Mcp-Session-Id", rt.sessionIDs)
		}
		for _, h := range rt.hosts {
			if !strings.Contains(log, "POST "+h+" ") {
				t.Errorf("no request reached %s", h)
			}
		}
	})

	// Asked for 2025-11-25, it initializes a session, which works on both
	// servers, and its DELETE ends it on both.
	t.Run("2025-11-25", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		session, rt, servers := sdkConnect(t, ctx, "2025-11-25")
		if v := session.InitializeResult().ProtocolVersion; v != "2025-11-25" || session.ID() == "" {
			t.Fatalf("revision %s, session id %q\n%s", v, session.ID(), rt.requests())
		}
		sdkListAndCall(t, ctx, session, rt)
		if err := session.Ping(ctx, nil); err != nil {
			t.Errorf("ping: %v", err)
		}
		sid := session.ID()
		if err := session.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
		// The SDK's DELETE ended the session on both servers.
		for _, s := range servers {
			if r := mcpCall(t, s, rt.token, sid, ping); r.status != 404 {
				t.Errorf("session after Close: %d %s", r.status, r.body)
			}
		}

		log := rt.requests()
		t.Logf("requests:\n%s", log)
		for _, want := range []string{" 405", "DELETE "} {
			if !strings.Contains(log, want) {
				t.Errorf("expected %q among the requests", want)
			}
		}
		for _, h := range rt.hosts {
			if !strings.Contains(log, "POST "+h+" ") {
				t.Errorf("no request reached %s", h)
			}
		}
		for _, line := range strings.Split(log, "\n") {
			if strings.HasPrefix(line, "POST") && strings.HasSuffix(line, " 404") {
				t.Errorf("a session was not recognised: %s", line)
			}
			if strings.HasPrefix(line, "DELETE") && !strings.HasSuffix(line, " 204") {
				t.Errorf("the session was not ended: %s", line)
			}
		}
	})
}
