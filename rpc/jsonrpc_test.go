package rpc

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/mcpgateway/mcpgateway/store"
)

func TestSeedPayload(t *testing.T) {
	s, _ := newTestServer(t, nil)
	r := rpc(t, s, seedPayload)
	if r.status != 200 || r.header("Content-Type") != "application/json" {
		t.Fatalf("status %d, content type %q", r.status, r.header("Content-Type"))
	}
	m := r.obj(t)
	if m["jsonrpc"] != "2.0" || m["id"] != 1.0 {
		t.Fatalf("envelope: %s", r.body)
	}
	text, isErr := toolText(t, m["result"].(map[string]any))
	if isErr {
		t.Fatalf("tool failed: %s", text)
	}
	var out conversion
	if err := json.Unmarshal([]byte(text), &out); err != nil {
		t.Fatalf("tool text is not JSON: %q", text)
	}
	if out.TimeDifference != "-1.0h" {
		t.Errorf("time_difference %q, want -1.0h (Berlin and Dublin are an hour apart all year)", out.TimeDifference)
	}
	if !strings.Contains(text, `"timezone":"Europe/Berlin"`) || !strings.Contains(text, `T09:00:00+0`) {
		t.Errorf("source: %s", text)
	}
	if !strings.Contains(text, `T08:00:00+0`) {
		t.Errorf("target should read 08:00: %s", text)
	}
}

func TestHeyPayloadFile(t *testing.T) {
	// The benchmark's payload is the file tests/hey.sh sends.
	b, err := os.ReadFile("../tests/hey/payload.json")
	if err != nil {
		t.Fatal(err)
	}
	if strings.TrimSpace(string(b)) != seedPayload {
		t.Errorf("tests/hey/payload.json differs from seedPayload:\n%s", b)
	}
	s, _ := newTestServer(t, nil)
	if text, isErr := toolText(t, rpcResult(t, s, string(b))); isErr {
		t.Errorf("payload: %s", text)
	}
}

func TestInitialize(t *testing.T) {
	s, _ := newTestServer(t, nil)
	for _, v := range sessionVersions {
		res := rpcResult(t, s, `{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"`+v+`","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}`)
		if res["protocolVersion"] != v {
			t.Errorf("asked %s, got %v", v, res["protocolVersion"])
		}
	}
	for _, body := range []string{
		`{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"1999-01-01"}}`,
		`{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2026-07-28"}}`,
		`{"jsonrpc":"2.0","id":1,"method":"initialize","params":{}}`,
		`{"jsonrpc":"2.0","id":1,"method":"initialize"}`,
		`{"jsonrpc":"2.0","id":1,"method":"initialize","params":null}`,
	} {
		res := rpcResult(t, s, body)
		if res["protocolVersion"] != sessionVersions[0] {
			t.Errorf("%s: got %v, want the newest %s", body, res["protocolVersion"], sessionVersions[0])
		}
	}
	res := rpcResult(t, s, `{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18"}}`)
	got, _ := json.Marshal(res)
	want := `{"capabilities":{"completions":{},"prompts":{"listChanged":false},"resources":{"listChanged":false,"subscribe":true},"tools":{"listChanged":false}},"protocolVersion":"2025-06-18","serverInfo":{"name":"mcpgateway","version":"1.2.3-test"}}`
	if string(got) != want {
		t.Errorf("initialize result\n got %s\nwant %s", got, want)
	}
	for _, body := range []string{
		`{"jsonrpc":"2.0","id":1,"method":"initialize","params":[]}`,
		`{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":20250618}}`,
	} {
		if code, _, _ := rpcErr(t, s, body); code != codeInvalidParams {
			t.Errorf("%s: code %d, want -32602", body, code)
		}
	}
}

func TestPing(t *testing.T) {
	s, _ := newTestServer(t, nil)
	r := rpc(t, s, `{"jsonrpc":"2.0","id":"p1","method":"ping"}`)
	if string(r.body) != `{"jsonrpc":"2.0","id":"p1","result":{}}` {
		t.Fatalf("ping: %s", r.body)
	}
}

func TestToolsList(t *testing.T) {
	s, b := newTestServer(t, nil)
	res := rpcResult(t, s, `{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{}}`)
	tools := res["tools"].([]any)
	var names []string
	for _, x := range tools {
		tool := x.(map[string]any)
		names = append(names, tool["name"].(string))
		if _, ok := tool["inputSchema"].(map[string]any); !ok {
			t.Errorf("%v: inputSchema is not an object", tool["name"])
		}
		if _, ok := tool["description"].(string); !ok {
			t.Errorf("%v: no description", tool["name"])
		}
		if _, ok := tool["enabled"]; ok {
			t.Errorf("%v: store-only field leaked", tool["name"])
		}
		// Only the built-in tools declare what they return (TestStructuredContent).
		if _, ok := tool["outputSchema"].(map[string]any); ok != (tool["name"] != "remote_tool") {
			t.Errorf("%v: outputSchema %v", tool["name"], tool["outputSchema"])
		}
	}
	if got := strings.Join(names, ","); got != "convert_time,get_system_time,remote_tool" {
		t.Errorf("tools %s", got)
	}

	// Read from the Backend on every call, robust to a bad schema, and in
	// name order even from a Backend that does not sort.
	b.setTools([]store.Tool{
		{Name: "x<y", Description: "quote \" and \n", InputSchema: json.RawMessage(`{broken`), Enabled: true},
		{Name: "empty", InputSchema: nil, Enabled: true},
	})
	r := rpc(t, s, `{"jsonrpc":"2.0","id":1,"method":"tools/list"}`)
	want := `{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"empty","description":"","inputSchema":{"type":"object"}},{"name":"x\u003cy","description":"quote \" and \n","inputSchema":{"type":"object"}}]}}`
	if string(r.body) != want {
		t.Errorf("tools/list\n got %s\nwant %s", r.body, want)
	}

	b.set(func(f *fakeBackend) { f.toolErr = errBackendDown })
	if code, msg, _ := rpcErr(t, s, `{"jsonrpc":"2.0","id":1,"method":"tools/list"}`); code != codeInternalError || msg != "Internal error" {
		t.Errorf("backend failure: %d %q", code, msg)
	}
}

func TestToolsCall(t *testing.T) {
	s, _ := newTestServer(t, nil)
	res := rpcResult(t, s, `{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"convert_time","arguments":{"source_timezone":"UTC","target_timezone":"Asia/Kolkata","time":"2025-01-15T12:00:00Z"}}}`)
	text, isErr := toolText(t, res)
	if isErr || !strings.Contains(text, `"time_difference":"+5.5h"`) || !strings.Contains(text, `2025-01-15T17:30:00+05:30`) {
		t.Fatalf("convert_time: %v %s", isErr, text)
	}
	res = rpcResult(t, s, `{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"get_system_time"}}`)
	if text, isErr := toolText(t, res); isErr || !strings.Contains(text, `"timezone":"UTC"`) {
		t.Fatalf("get_system_time: %s", text)
	}
	// A registered tool without an implementation fails as a tool.
	res = rpcResult(t, s, `{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"remote_tool","arguments":{}}}`)
	if text, isErr := toolText(t, res); !isErr || !strings.Contains(text, "remote_tool") {
		t.Fatalf("remote_tool: %v %s", isErr, text)
	}
	// A tool that fails answers a result with isError naming the field.
	res = rpcResult(t, s, `{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"convert_time","arguments":{"source_timezone":"UTC","target_timezone":"Mars/Base","time":"09:00"}}}`)
	if text, isErr := toolText(t, res); !isErr || text != `invalid target_timezone "Mars/Base": unknown time zone` {
		t.Fatalf("bad zone: %v %q", isErr, text)
	}

	for _, tc := range []struct {
		params string
		code   int
		msg    string
	}{
		{`{"name":"nope","arguments":{}}`, codeInvalidParams, "Unknown tool: nope"},
		{`{"name":"disabled_tool"}`, codeInvalidParams, "Unknown tool: disabled_tool"},
		{`{"arguments":{}}`, codeInvalidParams, "Invalid params: name is required"},
		{`{"name":5}`, codeInvalidParams, "Invalid params: name must be a string"},
		{`{"name":"convert_time","arguments":[1]}`, codeInvalidParams, "Invalid params: arguments must be an object"},
		{`{"name":"convert_time","arguments":"x"}`, codeInvalidParams, "Invalid params: arguments must be an object"},
		{`[]`, codeInvalidParams, "Invalid params: tools/call params must be an object with a name"},
	} {
		code, msg, m := rpcErr(t, s, `{"jsonrpc":"2.0","id":3,"method":"tools/call","params":`+tc.params+`}`)
		if code != tc.code || msg != tc.msg || m["id"] != 3.0 {
			t.Errorf("%s: %d %q (id %v), want %d %q", tc.params, code, msg, m["id"], tc.code, tc.msg)
		}
	}
	if code, _, _ := rpcErr(t, s, `{"jsonrpc":"2.0","id":3,"method":"tools/call"}`); code != codeInvalidParams {
		t.Errorf("no params: %d", code)
	}
}

func TestBareToolMethod(t *testing.T) {
	s, b := newTestServer(t, nil)
	res := rpcResult(t, s, `{"jsonrpc":"2.0","id":1,"method":"get_system_time","params":{"timezone":"Asia/Tokyo"}}`)
	if text, isErr := toolText(t, res); isErr || !strings.Contains(text, "+09:00") {
		t.Fatalf("get_system_time: %s", text)
	}
	res = rpcResult(t, s, `{"jsonrpc":"2.0","id":1,"method":"get_system_time"}`)
	if text, _ := toolText(t, res); !strings.Contains(text, `"timezone":"UTC"`) {
		t.Fatalf("default zone: %s", text)
	}
	for _, tc := range []struct {
		body string
		code int
		msg  string
	}{
		{`{"jsonrpc":"2.0","id":1,"method":"no_such_tool","params":{}}`, codeMethodNotFound, "Method not found: no_such_tool"},
		{`{"jsonrpc":"2.0","id":1,"method":"disabled_tool","params":{}}`, codeMethodNotFound, "Method not found: disabled_tool"},
		{`{"jsonrpc":"2.0","id":1,"method":"resources/subscribe"}`, codeMethodNotFound, "Method not found: resources/subscribe"},
		{`{"jsonrpc":"2.0","id":1,"method":""}`, codeMethodNotFound, "Method not found: "},
		{`{"jsonrpc":"2.0","id":1,"method":"convert_time","params":["Europe/Berlin"]}`, codeInvalidParams, "Invalid params: the arguments of tool convert_time must be an object"},
	} {
		if code, msg, _ := rpcErr(t, s, tc.body); code != tc.code || msg != tc.msg {
			t.Errorf("%s: %d %q, want %d %q", tc.body, code, msg, tc.code, tc.msg)
		}
	}
	b.set(func(f *fakeBackend) { f.toolErr = errBackendDown })
	if code, _, _ := rpcErr(t, s, seedPayload); code != codeInternalError {
		t.Errorf("backend failure: %d", code)
	}
}

func TestNotifications(t *testing.T) {
	s, _ := newTestServer(t, nil)
	for _, body := range []string{
		`{"jsonrpc":"2.0","method":"notifications/initialized"}`,
		`{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":1}}`,
		`{"jsonrpc":"2.0","method":"no_such_method"}`,                 // errors in notifications are not answered
		`{"jsonrpc":"2.0","method":"tools/call","params":{"name":5}}`, // nor are bad params
		`{"jsonrpc":"2.0","method":"ping","params":7}`,
		`{"jsonrpc":"2.0","method":"convert_time","params":{"source_timezone":"UTC","target_timezone":"UTC","time":"09:00"}}`,
		`[{"jsonrpc":"2.0","method":"notifications/initialized"},{"jsonrpc":"2.0","method":"ping"}]`,
	} {
		r := rpc(t, s, body)
		if r.status != 202 || len(r.body) != 0 {
			t.Errorf("%s: status %d body %q, want 202 and no body", body, r.status, r.body)
		}
	}
	// A notification method sent as a request gets an empty result.
	if r := rpc(t, s, `{"jsonrpc":"2.0","id":2,"method":"notifications/initialized"}`); string(r.body) != `{"jsonrpc":"2.0","id":2,"result":{}}` {
		t.Errorf("notification with id: %s", r.body)
	}
}

func TestBatch(t *testing.T) {
	s, _ := newTestServer(t, nil)
	r := rpc(t, s, `[
		{"jsonrpc":"2.0","id":1,"method":"ping"},
		{"jsonrpc":"2.0","method":"notifications/initialized"},
		{"jsonrpc":"2.0","id":"two","method":"nope"},
		1,
		{"jsonrpc":"2.0","id":3,"method":"get_system_time","params":{"timezone":"UTC"}}
	]`)
	if r.status != 200 {
		t.Fatalf("status %d", r.status)
	}
	arr, ok := r.json(t).([]any)
	if !ok || len(arr) != 4 {
		t.Fatalf("want 4 replies (the notification has none): %s", r.body)
	}
	ids := []any{1.0, "two", nil, 3.0}
	for i, x := range arr {
		if x.(map[string]any)["id"] != ids[i] {
			t.Errorf("reply %d has id %v, want %v", i, x.(map[string]any)["id"], ids[i])
		}
	}
	if e := arr[2].(map[string]any)["error"].(map[string]any); e["code"] != -32600.0 {
		t.Errorf("element 1 (a number): %v", e)
	}

	// The specification's example: every element of [1,2,3] is invalid.
	r = rpc(t, s, `[1,2,3]`)
	if string(r.body) != `[{"jsonrpc":"2.0","id":null,"error":{"code":-32600,"message":"Invalid Request: a request must be a JSON object"}},{"jsonrpc":"2.0","id":null,"error":{"code":-32600,"message":"Invalid Request: a request must be a JSON object"}},{"jsonrpc":"2.0","id":null,"error":{"code":-32600,"message":"Invalid Request: a request must be a JSON object"}}]` {
		t.Errorf("[1,2,3]: %s", r.body)
	}

	// Empty batch: one error, not an array.
	if code, msg, _ := rpcErr(t, s, ` [ ] `); code != codeInvalidRequest || msg != "Invalid Request: empty batch" {
		t.Errorf("empty batch: %d %q", code, msg)
	}

	// Limit: 100 pass, 101 are refused whole.
	batch := func(n int) string {
		parts := make([]string, n)
		for i := range parts {
			parts[i] = fmt.Sprintf(`{"jsonrpc":"2.0","id":%d,"method":"ping"}`, i)
		}
		return "[" + strings.Join(parts, ",") + "]"
	}
	if arr, ok := rpc(t, s, batch(100)).json(t).([]any); !ok || len(arr) != 100 {
		t.Errorf("batch of 100 not answered in full")
	}
	code, msg, _ := rpcErr(t, s, batch(101))
	if code != codeInvalidRequest || msg != "Invalid Request: batch of 101 requests exceeds the limit of 100" {
		t.Errorf("batch of 101: %d %q", code, msg)
	}
	s2, _ := newTestServer(t, func(o *Options) { o.MaxBatchSize = 2 })
	if code, _, _ := rpcErr(t, s2, batch(3)); code != codeInvalidRequest {
		t.Errorf("MaxBatchSize 2: %d", code)
	}
}

func TestRequestErrors(t *testing.T) {
	s, _ := newTestServer(t, nil)
	deep := func(n int) string { return strings.Repeat("[", n) + strings.Repeat("]", n) }
	for _, tc := range []struct {
		name, body string
		status     int
		code       int
		msg        string // prefix
		id         any
	}{
		{"invalid JSON", `{"jsonrpc":"2.0",`, 400, codeParseError, "Parse error: unexpected end of JSON input", nil},
		{"empty body", ``, 400, codeParseError, "Parse error", nil},
		{"trailing data", `{"jsonrpc":"2.0","id":1,"method":"ping"} x`, 400, codeParseError, "Parse error: invalid character after top-level value", nil},
		{"invalid UTF-8", "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"p\xffing\"}", 400, codeParseError, "Parse error: invalid UTF-8 in string", nil},
		{"too deep", `{"jsonrpc":"2.0","id":1,"method":"ping","params":` + deep(64) + `}`, 400, codeParseError, "Parse error: JSON nested deeper than 64 levels", nil},
		{"very deep", deep(500_000), 400, codeParseError, "Parse error: JSON nested deeper than 64 levels", nil},
		{"not an object", `"ping"`, 200, codeInvalidRequest, "Invalid Request: a request must be a JSON object", nil},
		{"no jsonrpc", `{"id":1,"method":"ping"}`, 200, codeInvalidRequest, `Invalid Request: jsonrpc must be "2.0"`, 1.0},
		{"jsonrpc 1.0", `{"jsonrpc":"1.0","id":1,"method":"ping"}`, 200, codeInvalidRequest, `Invalid Request: jsonrpc must be "2.0"`, 1.0},
		{"jsonrpc number", `{"jsonrpc":2.0,"id":1,"method":"ping"}`, 200, codeInvalidRequest, `Invalid Request: jsonrpc must be "2.0"`, 1.0},
		{"no method", `{"jsonrpc":"2.0","id":1}`, 200, codeInvalidRequest, "Invalid Request: method is required", 1.0},
		{"no method, no id", `{"jsonrpc":"2.0"}`, 200, codeInvalidRequest, "Invalid Request: method is required", nil},
		{"method number", `{"jsonrpc":"2.0","id":1,"method":1}`, 200, codeInvalidRequest, "Invalid Request: method must be a string", 1.0},
		{"id object", `{"jsonrpc":"2.0","id":{"a":1},"method":"ping"}`, 200, codeInvalidRequest, "Invalid Request: id must be a string, a number or null", nil},
		{"id array", `{"jsonrpc":"2.0","id":[1],"method":"ping"}`, 200, codeInvalidRequest, "Invalid Request: id must be a string, a number or null", nil},
		{"id bool", `{"jsonrpc":"2.0","id":true,"method":"ping"}`, 200, codeInvalidRequest, "Invalid Request: id must be a string, a number or null", nil},
		{"params string", `{"jsonrpc":"2.0","id":1,"method":"ping","params":"x"}`, 200, codeInvalidParams, "Invalid params: params must be an object or an array", 1.0},
		{"params number", `{"jsonrpc":"2.0","id":1,"method":"convert_time","params":5}`, 200, codeInvalidParams, "Invalid params", 1.0},
		{"a response on /rpc", `{"jsonrpc":"2.0","id":1,"result":{}}`, 200, codeInvalidRequest, "Invalid Request: method is required", 1.0},
		{"unknown method", `{"jsonrpc":"2.0","id":1,"method":"foo/bar"}`, 200, codeMethodNotFound, "Method not found: foo/bar", 1.0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := rpc(t, s, tc.body)
			if r.status != tc.status {
				t.Errorf("status %d, want %d", r.status, tc.status)
			}
			m := r.obj(t)
			e, _ := m["error"].(map[string]any)
			if e == nil || e["code"] != float64(tc.code) || !strings.HasPrefix(e["message"].(string), tc.msg) {
				t.Errorf("got %s, want %d %q", r.body, tc.code, tc.msg)
			}
			if id, ok := m["id"]; !ok || id != tc.id {
				t.Errorf("id %v, want %v", m["id"], tc.id)
			}
		})
	}
	// Depth 64 itself is fine.
	r := rpc(t, s, `{"jsonrpc":"2.0","id":1,"method":"ping","params":`+deep(63)+`}`)
	if string(r.body) != `{"jsonrpc":"2.0","id":1,"result":{}}` {
		t.Errorf("depth 64: %s", r.body)
	}
}

func TestIDsEchoed(t *testing.T) {
	s, _ := newTestServer(t, nil)
	for _, id := range []string{`1`, `-0.5e10`, `12345678901234567890123`, `"abc"`, `"a\"b\u00e9"`, `null`, `""`} {
		r := rpc(t, s, `{"jsonrpc":"2.0","id":`+id+`,"method":"ping"}`)
		if want := `{"jsonrpc":"2.0","id":` + id + `,"result":{}}`; string(r.body) != want {
			t.Errorf("id %s: got %s", id, r.body)
		}
	}
}

func TestEscapedKeysAndStrings(t *testing.T) {
	s, _ := newTestServer(t, nil)
	// Keys and values written with escapes mean the same as without.
	res := rpcResult(t, s, `{"\u006asonrpc":"2\u002e0","id":1,"\u006dethod":"get_system_\u0074ime","params":{"time\u007aone":"Europe\/Paris"}}`)
	if text, isErr := toolText(t, res); isErr || !strings.Contains(text, `"timezone":"Europe/Paris"`) {
		t.Fatalf("escaped request: %s", text)
	}
	// Keys are case-sensitive.
	if code, _, _ := rpcErr(t, s, `{"jsonrpc":"2.0","id":1,"Method":"ping"}`); code != codeInvalidRequest {
		t.Errorf("Method: %d", code)
	}
	// A method name with odd characters comes back as valid JSON.
	r := rpc(t, s, `{"jsonrpc":"2.0","id":1,"method":"<\ud800>\u2028\n"}`)
	if !json.Valid(r.body) || !strings.Contains(string(r.body), "Method not found: \\u003c\ufffd\\u003e\\u2028\\n") {
		t.Errorf("odd method echo: %s", r.body)
	}
}

func TestPanicInMethod(t *testing.T) {
	var hooked atomic.Int64
	s, b := newTestServer(t, func(o *Options) { o.OnPanic = func() { hooked.Add(1) } })
	b.set(func(f *fakeBackend) { f.panicIn = "Tools" })
	code, msg, _ := rpcErr(t, s, `{"jsonrpc":"2.0","id":9,"method":"tools/list"}`)
	if code != codeInternalError || msg != "Internal error" || s.Panics() != 1 {
		t.Fatalf("panic: %d %q, panics %d", code, msg, s.Panics())
	}
	// In a batch only the panicking message loses its answer.
	r := rpc(t, s, `[{"jsonrpc":"2.0","id":1,"method":"tools/list"},{"jsonrpc":"2.0","id":2,"method":"ping"},{"jsonrpc":"2.0","method":"tools/list"}]`)
	want := `[{"jsonrpc":"2.0","id":1,"error":{"code":-32603,"message":"Internal error"}},{"jsonrpc":"2.0","id":2,"result":{}}]`
	if string(r.body) != want || s.Panics() != 3 {
		t.Fatalf("batch with panics (%d):\n got %s\nwant %s", s.Panics(), r.body, want)
	}
	if hooked.Load() != 3 {
		t.Fatalf("OnPanic called %d times, want 3", hooked.Load())
	}
}

func TestErrorsIsNotFound(t *testing.T) {
	// The Backend may wrap ErrNotFound.
	s, b := newTestServer(t, nil)
	b.set(func(f *fakeBackend) { f.toolErr = fmt.Errorf("tool lookup: %w", store.ErrNotFound) })
	if code, _, _ := rpcErr(t, s, `{"jsonrpc":"2.0","id":1,"method":"foo"}`); code != codeMethodNotFound {
		t.Errorf("wrapped ErrNotFound: %d", code)
	}
	if !errors.Is(fmt.Errorf("x: %w", store.ErrNotFound), store.ErrNotFound) {
		t.Fatal("sanity")
	}
}
