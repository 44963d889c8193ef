package rpc

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/mcpgateway/mcpgateway/store"
)

// adminCall sends one admin request with testEmail's token (an admin in the
// fake store) unless headers are given.
func adminCall(t *testing.T, s *Server, method, path, body string, headers ...string) result {
	t.Helper()
	if headers == nil {
		headers = bearer(mint(t, nil))
	}
	return call(s, method, path, body, headers...)
}

// expectDetail checks a {"detail"} refusal.
func expectDetail(t *testing.T, r result, status int, prefix string) {
	t.Helper()
	if r.status != status {
		t.Fatalf("status %d, want %d: %s", r.status, status, r.body)
	}
	if r.header("Content-Type") != "application/json" {
		t.Errorf("Content-Type %q", r.header("Content-Type"))
	}
	d, _ := r.obj(t)["detail"].(string)
	if !strings.HasPrefix(d, prefix) {
		t.Errorf("detail %q, want prefix %q", d, prefix)
	}
}

func decodeUser(t *testing.T, r result) store.User {
	t.Helper()
	var u store.User
	if err := json.Unmarshal(r.body, &u); err != nil {
		t.Fatalf("not a user (%v): %s", err, r.body)
	}
	return u
}

func TestAdminUsers(t *testing.T) {
	s, _ := newTestServer(t, nil)
	expectDetail(t, adminCall(t, s, "GET", "/admin/users/bob@example.com", ""), 404, "User not found: bob@example.com")

	// Create: active by default, not an admin; the address is stored lower-case.
	r := adminCall(t, s, "PUT", "/admin/users/Bob@Example.COM", `{}`)
	if r.status != 201 || decodeUser(t, r) != (store.User{Email: "bob@example.com", Active: true}) {
		t.Fatalf("create: %d %s", r.status, r.body)
	}
	if r.header("Cache-Control") != "no-store" {
		t.Errorf("Cache-Control %q", r.header("Cache-Control"))
	}
	bob := mint(t, func(r *TokenRequest) { r.Email = "bob@example.com" })
	if r := call(s, "POST", "/rpc", ping, bearer(bob)...); r.status != 200 {
		t.Fatalf("bob active: %d %s", r.status, r.body)
	}

	// Update: omitted fields keep their values.
	r = adminCall(t, s, "PUT", "/admin/users/bob@example.com", `{"admin":true}`)
	if r.status != 200 || decodeUser(t, r) != (store.User{Email: "bob@example.com", Active: true, Admin: true}) {
		t.Fatalf("promote: %d %s", r.status, r.body)
	}
	r = adminCall(t, s, "PUT", "/admin/users/bob@example.com", `{"active":false}`)
	if r.status != 200 || decodeUser(t, r) != (store.User{Email: "bob@example.com", Active: false, Admin: true}) {
		t.Fatalf("deactivate: %d %s", r.status, r.body)
	}
	r = adminCall(t, s, "GET", "/admin/users/BOB@example.com", "")
	if r.status != 200 || decodeUser(t, r) != (store.User{Email: "bob@example.com", Active: false, Admin: true}) {
		t.Fatalf("get: %d %s", r.status, r.body)
	}
	expect401(t, call(s, "POST", "/rpc", ping, bearer(bob)...), "User account is inactive")
	// An inactive admin is no admin.
	expect401(t, call(s, "GET", "/admin/tools", "", bearer(bob)...), "User account is inactive")

	// Percent-encoded addresses are decoded.
	if r := adminCall(t, s, "GET", "/admin/users/bob%40example.com", ""); r.status != 200 {
		t.Fatalf("percent-encoded: %d %s", r.status, r.body)
	}

	// No self-lockout.
	for _, body := range []string{`{"active":false}`, `{"admin":false}`} {
		expectDetail(t, adminCall(t, s, "PUT", "/admin/users/"+testEmail, body), 409, "An admin cannot deactivate or demote")
	}
	if r := adminCall(t, s, "PUT", "/admin/users/"+testEmail, `{"active":true,"admin":true}`); r.status != 200 {
		t.Fatalf("no-op PUT of oneself: %d %s", r.status, r.body)
	}
}

func TestAdminAuthorization(t *testing.T) {
	s, b := newTestServer(t, nil)
	b.setUser(store.User{Email: "user@example.com", Active: true})
	b.setUser(store.User{Email: "exadmin@example.com", Active: true, Admin: false})
	tok := func(email string, admin bool) []string {
		return bearer(mint(t, func(r *TokenRequest) { r.Email = email; r.Admin = admin }))
	}
	for _, path := range []string{"/admin/tools", "/admin/users/user@example.com"} {
		r := call(s, "GET", path, "")
		expect401(t, r, "Not authenticated")
		expect401(t, call(s, "GET", path, "", bearer("not.a.jwt")...), "Invalid token")
		expect401(t, call(s, "GET", path, "", tok("inactive@example.com", true)...), "User account is inactive")
		// The store's flag decides, not the token's is_admin claim.
		expectDetail(t, call(s, "GET", path, "", tok("user@example.com", false)...), 403, "Admin privileges required")
		expectDetail(t, call(s, "GET", path, "", tok("exadmin@example.com", true)...), 403, "Admin privileges required")
		expectDetail(t, call(s, "GET", path, "", tok("ghost@example.com", true)...), 403, "Admin privileges required")
		if r := call(s, "GET", path, "", tok(testEmail, false)...); r.status != 200 {
			t.Fatalf("%s as the store's admin: %d %s", path, r.status, r.body)
		}
	}
	// A refused caller changes nothing.
	if r := call(s, "PUT", "/admin/users/user@example.com", `{"admin":true}`, append(tok("user@example.com", true),
		"Content-Type", "application/json")...); r.status != 403 {
		t.Fatalf("self-promotion: %d %s", r.status, r.body)
	}
	if b.puts != 0 {
		t.Fatalf("%d writes by refused callers", b.puts)
	}

	// The store failing while checking the caller is 503.
	b.set(func(f *fakeBackend) { f.userErr = errBackendDown })
	expectDetail(t, adminCall(t, s, "GET", "/admin/tools", ""), 503, "Authentication backend unavailable")
}

// With AUTH_REQUIRED=false the admin API would be anonymous: it is refused.
func TestAdminRefusedWithoutAuthentication(t *testing.T) {
	s, b := newTestServer(t, func(o *Options) { o.AuthRequired = false })
	for _, c := range []struct{ method, path, body string }{
		{"GET", "/admin/tools", ""},
		{"GET", "/admin/users/" + testEmail, ""},
		{"PUT", "/admin/users/eve@example.com", `{"admin":true}`},
		{"PUT", "/admin/tools/convert_time", `{"enabled":false}`},
	} {
		expectDetail(t, adminCall(t, s, c.method, c.path, c.body), 403, "The admin API is off while authentication is off")
	}
	if b.puts != 0 {
		t.Fatalf("%d writes", b.puts)
	}
}

func TestAdminRoutesAndMethods(t *testing.T) {
	s, _ := newTestServer(t, nil)
	for _, p := range []string{"/admin/", "/admin/users", "/admin/users/", "/admin/nope", "/admin/nope/x", "/adminx"} {
		expectDetail(t, adminCall(t, s, "GET", p, ""), 404, "Not Found")
	}
	// The method is checked before authentication, as on the other routes.
	for _, c := range []struct{ method, path, allow string }{
		{"POST", "/admin/tools", "GET"},
		{"PUT", "/admin/tools", "GET"},
		{"DELETE", "/admin/users/bob@example.com", "GET, PUT"},
		{"POST", "/admin/tools/convert_time", "GET, PUT, DELETE"},
	} {
		r := call(s, c.method, c.path, "")
		expectDetail(t, r, 405, "Method Not Allowed")
		if r.header("Allow") != c.allow {
			t.Errorf("%s %s: Allow %q, want %q", c.method, c.path, r.header("Allow"), c.allow)
		}
	}
	if s.Panics() != 0 {
		t.Fatalf("%d panics", s.Panics())
	}
}

func TestAdminBadInput(t *testing.T) {
	s, b := newTestServer(t, func(o *Options) { o.MaxRequestBodySize = 256 })
	for _, c := range []struct {
		path, body string
		status     int
		detail     string
	}{
		{"/admin/users/not-an-email", `{}`, 400, "Invalid email address"},
		{"/admin/users/a@b@example.com", `{}`, 400, "Invalid email address"},
		{"/admin/users/a%20b@example.com", `{}`, 400, "Invalid email address"},
		{"/admin/users/a%2Fb@example.com", `{}`, 400, "Invalid email address"},
		{"/admin/users/bob@example.com", `{"active":`, 400, "Invalid JSON body: unexpected end of JSON input"},
		{"/admin/users/bob@example.com", ``, 400, "Invalid JSON body"},
		{"/admin/users/bob@example.com", `[]`, 400, "Invalid JSON body: expected an object"},
		{"/admin/users/bob@example.com", `null`, 400, "Invalid JSON body: expected an object"},
		{"/admin/users/bob@example.com", `{} {}`, 400, "Invalid JSON body"},
		{"/admin/users/bob@example.com", `{"active":"yes"}`, 400, "Invalid JSON body: cannot unmarshal"},
		{"/admin/users/bob@example.com", `{"actve":true}`, 400, `Invalid JSON body: unknown field "actve"`},
		{"/admin/users/bob@example.com", "{\"x\":\"\xff\"}", 400, "Invalid JSON body: invalid UTF-8"},
		{"/admin/users/bob@example.com", `{"active":true,"pad":"` + strings.Repeat("x", 300) + `"}`, 413, "Request body too large"},
		{"/admin/tools/bad%20name", `{}`, 400, "Invalid tool name"},
		{"/admin/tools/" + strings.Repeat("t", 129), `{}`, 400, "Invalid tool name"},
		{"/admin/tools/convert_time", `{"inputSchema":[1]}`, 400, "Invalid JSON body: inputSchema must be a JSON object"},
		{"/admin/tools/convert_time", `{"inputSchema":null}`, 400, "Invalid JSON body: inputSchema must be a JSON object"},
		{"/admin/tools/convert_time", `{"enabled":1}`, 400, "Invalid JSON body: cannot unmarshal"},
		{"/admin/tools/convert_time", `{"enable":false}`, 400, `Invalid JSON body: unknown field "enable"`},
	} {
		r := adminCall(t, s, "PUT", c.path, c.body, append(bearer(mint(t, nil)), "Content-Type", "application/json")...)
		t.Run(c.path+" "+c.body[:min(len(c.body), 20)], func(t *testing.T) { expectDetail(t, r, c.status, c.detail) })
	}
	r := adminCall(t, s, "PUT", "/admin/users/bob@example.com", `{}`, append(bearer(mint(t, nil)), "Content-Type", "text/plain")...)
	expectDetail(t, r, 415, "Content-Type must be application/json")
	if b.puts != 0 {
		t.Fatalf("%d writes from bad requests", b.puts)
	}
	if s.Panics() != 0 {
		t.Fatalf("%d panics", s.Panics())
	}
}

func decodeTools(t *testing.T, r result) map[string]store.Tool {
	t.Helper()
	if r.status != 200 {
		t.Fatalf("list: %d %s", r.status, r.body)
	}
	var l struct{ Tools []store.Tool }
	if err := json.Unmarshal(r.body, &l); err != nil {
		t.Fatalf("list (%v): %s", err, r.body)
	}
	m := map[string]store.Tool{}
	for _, tool := range l.Tools {
		m[tool.Name] = tool
	}
	return m
}

// With a Backend like *store.Store (Tool and Tools see enabled tools only).
func TestAdminTools(t *testing.T) {
	s, b := newTestServer(t, nil)
	b.set(func(f *fakeBackend) { f.enabledOnly = true })
	before := decodeTools(t, adminCall(t, s, "GET", "/admin/tools", ""))
	ct := before["convert_time"]
	if len(before) != 3 || !ct.Enabled || !strings.Contains(string(ct.InputSchema), "source_timezone") {
		t.Fatalf("list: %v", before)
	}

	// Disable: description and schema are kept.
	r := adminCall(t, s, "PUT", "/admin/tools/convert_time", `{"enabled":false}`)
	var got store.Tool
	if r.status != 200 || json.Unmarshal(r.body, &got) != nil || got.Enabled ||
		got.Description != ct.Description || string(got.InputSchema) != string(ct.InputSchema) {
		t.Fatalf("disable: %d %s", r.status, r.body)
	}
	if code, msg, _ := rpcErr(t, s, seedPayload); code != codeMethodNotFound || msg != "Method not found: convert_time" {
		t.Fatalf("disabled tool still runs: %d %s", code, msg)
	}
	if _, ok := decodeTools(t, adminCall(t, s, "GET", "/admin/tools", ""))["convert_time"]; ok {
		t.Fatal("disabled tool listed (the Backend lists enabled ones only)")
	}
	expectDetail(t, adminCall(t, s, "GET", "/admin/tools/convert_time", ""), 404, "Tool not found: convert_time")

	// Re-enabling a tool the API cannot read must restate it, rather than
	// wipe its schema.
	expectDetail(t, adminCall(t, s, "PUT", "/admin/tools/convert_time", `{"enabled":true}`), 409,
		"Tool convert_time is unknown or disabled")
	full, _ := json.Marshal(map[string]any{"description": ct.Description, "inputSchema": ct.InputSchema, "enabled": true})
	if r := adminCall(t, s, "PUT", "/admin/tools/convert_time", string(full)); r.status != 200 {
		t.Fatalf("re-enable: %d %s", r.status, r.body)
	}
	if res := rpcResult(t, s, seedPayload); res["isError"] != false {
		t.Fatalf("re-enabled tool: %v", res)
	}

	// A new tool; an update of its description only.
	r = adminCall(t, s, "PUT", "/admin/tools/echo.v2", `{"description":"Echo","inputSchema": {"type": "object"}}`)
	if r.status != 200 || string(r.body) != `{"name":"echo.v2","description":"Echo","inputSchema":{"type":"object"},"enabled":true}` {
		t.Fatalf("create: %d %s", r.status, r.body)
	}
	if r := adminCall(t, s, "PUT", "/admin/tools/echo.v2", `{"description":"Echo, better"}`); r.status != 200 ||
		string(r.body) != `{"name":"echo.v2","description":"Echo, better","inputSchema":{"type":"object"},"enabled":true}` {
		t.Fatalf("update: %d %s", r.status, r.body)
	}
	if r := adminCall(t, s, "GET", "/admin/tools/echo.v2", ""); r.status != 200 || !strings.Contains(string(r.body), "Echo, better") {
		t.Fatalf("get: %d %s", r.status, r.body)
	}
	names := rpcResult(t, s, `{"jsonrpc":"2.0","id":1,"method":"tools/list"}`)["tools"].([]any)
	if len(names) != 4 {
		t.Fatalf("tools/list after the changes: %v", names)
	}

	// DELETE removes a tool of the gateway; an upstream's is refused (its
	// upstream's list decides).
	if r := adminCall(t, s, "PUT", "/admin/tools/doomed", `{"description":"d","inputSchema":{"type":"object"}}`); r.status != 200 {
		t.Fatalf("create: %d %s", r.status, r.body)
	}
	if r := adminCall(t, s, "DELETE", "/admin/tools/doomed", ""); r.status != 204 {
		t.Fatalf("delete: %d %s", r.status, r.body)
	}
	expectDetail(t, adminCall(t, s, "DELETE", "/admin/tools/doomed", ""), 404, "Tool not found: doomed")
	if code, _, _ := rpcErr(t, s, `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"doomed"}}`); code != codeInvalidParams && code != codeMethodNotFound {
		t.Errorf("a deleted tool called: %d", code)
	}
	b.set(func(f *fakeBackend) {
		up := store.Tool{Name: "up-x", Gateway: "up", UpstreamName: "x", Enabled: true}
		f.tools, f.byName["up-x"] = append(f.tools, up), up
	})
	expectDetail(t, adminCall(t, s, "DELETE", "/admin/tools/up-x", ""), 409, "Tool up-x belongs to an upstream")

	// The store failing.
	b.set(func(f *fakeBackend) { f.putErr = errBackendDown })
	expectDetail(t, adminCall(t, s, "PUT", "/admin/tools/echo.v2", `{"enabled":false}`), 503, "Store unavailable")
	expectDetail(t, adminCall(t, s, "PUT", "/admin/users/bob@example.com", `{}`), 503, "Store unavailable")
	b.set(func(f *fakeBackend) { f.putErr, f.toolErr = nil, errBackendDown })
	expectDetail(t, adminCall(t, s, "GET", "/admin/tools", ""), 503, "Store unavailable")
	expectDetail(t, adminCall(t, s, "PUT", "/admin/tools/echo.v2", `{"enabled":false}`), 503, "Store unavailable")
}

// With a Backend that also reads disabled tools (AllTools), a partial PUT of
// a disabled tool keeps its fields and the list shows disabled tools.
func TestAdminToolsWithAllTools(t *testing.T) {
	fb := newFakeBackend()
	fb.enabledOnly = true
	s, err := New(testOptions(), allToolsFake{fb})
	if err != nil {
		t.Fatal(err)
	}
	list := decodeTools(t, adminCall(t, s, "GET", "/admin/tools", ""))
	if d, ok := list["disabled_tool"]; !ok || d.Enabled || len(list) != 4 {
		t.Fatalf("list: %v", list)
	}
	r := adminCall(t, s, "PUT", "/admin/tools/disabled_tool", `{"enabled":true}`)
	if r.status != 200 || string(r.body) != `{"name":"disabled_tool","description":"off","inputSchema":{"type":"object"},"enabled":true}` {
		t.Fatalf("re-enable: %d %s", r.status, r.body)
	}
	if r := adminCall(t, s, "GET", "/admin/tools/get_system_time", ""); r.status != 200 {
		t.Fatalf("get: %d %s", r.status, r.body)
	}
	// A new tool may be created with defaults.
	r = adminCall(t, s, "PUT", "/admin/tools/bare", `{}`)
	if r.status != 200 || string(r.body) != `{"name":"bare","description":"","inputSchema":{"type":"object"},"enabled":true}` {
		t.Fatalf("create: %d %s", r.status, r.body)
	}
}
