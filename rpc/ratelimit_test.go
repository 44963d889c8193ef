package rpc

import (
	"fmt"
	"strings"
	"testing"

	"github.com/mcpgateway/mcpgateway/internal/ratelimit"
)

const callSystemTime = `{"jsonrpc":"2.0","id":%d,"method":"tools/call","params":{"name":"get_system_time","arguments":{"timezone":"UTC"}}}`

func TestRateLimitOffByDefault(t *testing.T) {
	s, _ := newTestServer(t, nil)
	if s.limits != nil {
		t.Fatal("rate limits on by default")
	}
	for i := 0; i < 200; i++ {
		if r := rpc(t, s, fmt.Sprintf(callSystemTime, i)); r.status != 200 {
			t.Fatalf("call %d: %d %s", i, r.status, r.body)
		}
	}
}

func TestToolRateLimit(t *testing.T) {
	s, _ := newTestServer(t, func(o *Options) { o.ToolRateLimit, o.RateLimitBurst = 60, 3 })
	for i := 0; i < 3; i++ {
		if r := rpc(t, s, fmt.Sprintf(callSystemTime, i)); r.status != 200 {
			t.Fatalf("call %d: %d %s", i, r.status, r.body)
		}
	}
	r := rpc(t, s, fmt.Sprintf(callSystemTime, 9))
	if r.status != 429 || r.header("Retry-After") != "1" {
		t.Fatalf("over the limit: %d Retry-After %q %s", r.status, r.header("Retry-After"), r.body)
	}
	e := r.obj(t)["error"].(map[string]any)
	if e["code"].(float64) != codeRateLimited || !strings.Contains(e["message"].(string), "get_system_time") {
		t.Fatalf("error %v", e)
	}
	// The bare form counts on the same bucket; other methods are not limited.
	if r := rpc(t, s, `{"jsonrpc":"2.0","id":1,"method":"get_system_time","params":{}}`); r.status != 429 {
		t.Fatalf("bare tool call: %d %s", r.status, r.body)
	}
	if r := rpc(t, s, `{"jsonrpc":"2.0","id":1,"method":"tools/list"}`); r.status != 200 {
		t.Fatalf("tools/list: %d", r.status)
	}
	// Another tool has its own bucket.
	if r := rpc(t, s, `{"jsonrpc":"2.0","id":1,"method":"convert_time","params":{"source_timezone":"UTC","target_timezone":"UTC","time":"12:00"}}`); r.status != 200 {
		t.Fatalf("other tool: %d %s", r.status, r.body)
	}
}

// TestRateLimitBatch: each call of a batch counts; only the calls over the
// limit get the error, and the batch is answered 200 with Retry-After.
func TestRateLimitBatch(t *testing.T) {
	s, _ := newTestServer(t, func(o *Options) { o.ToolRateLimit, o.RateLimitBurst = 60, 4 })
	var parts []string
	for i := 0; i < 7; i++ {
		parts = append(parts, fmt.Sprintf(callSystemTime, i))
	}
	r := rpc(t, s, "["+strings.Join(parts, ",")+"]")
	if r.status != 200 || r.header("Retry-After") == "" {
		t.Fatalf("batch: %d Retry-After %q", r.status, r.header("Retry-After"))
	}
	ok, limited := 0, 0
	for _, el := range r.json(t).([]any) {
		m := el.(map[string]any)
		if e, isErr := m["error"].(map[string]any); isErr {
			if e["code"].(float64) != codeRateLimited {
				t.Fatalf("error %v", e)
			}
			limited++
		} else {
			ok++
		}
	}
	if ok != 4 || limited != 3 {
		t.Fatalf("%d ran, %d limited; want 4 and 3", ok, limited)
	}
}

func TestUserRateLimit(t *testing.T) {
	s, _ := newTestServer(t, func(o *Options) { o.UserRateLimit, o.ToolRateLimit, o.RateLimitBurst = 60, 60, 2 })
	for i := 0; i < 2; i++ {
		if r := rpc(t, s, fmt.Sprintf(callSystemTime, i)); r.status != 200 {
			t.Fatalf("call %d: %d %s", i, r.status, r.body)
		}
	}
	r := rpc(t, s, fmt.Sprintf(callSystemTime, 3))
	if r.status != 429 || !strings.Contains(string(r.body), "for this user") {
		t.Fatalf("over the user limit: %d %s", r.status, r.body)
	}
}

// TestRateLimitRefund: a call refused by the tool limit leaves the user's
// token in place.
func TestRateLimitRefund(t *testing.T) {
	s, _ := newTestServer(t, func(o *Options) { o.UserRateLimit, o.ToolRateLimit, o.RateLimitBurst = 60, 60, 2 })
	s.limits.tool = ratelimit.PerMinute(60, 1) // one get_system_time, then refusals
	for i := 0; i < 4; i++ {
		want := 429
		if i == 0 {
			want = 200
		}
		if r := rpc(t, s, fmt.Sprintf(callSystemTime, i)); r.status != want || (want == 429 && !strings.Contains(string(r.body), "of tool")) {
			t.Fatalf("call %d: %d %s", i, r.status, r.body)
		}
	}
	// The user spent one token: the refused calls gave theirs back.
	r := rpc(t, s, `{"jsonrpc":"2.0","id":1,"method":"convert_time","params":{"source_timezone":"UTC","target_timezone":"UTC","time":"12:00"}}`)
	if r.status != 200 {
		t.Fatalf("user's second token: %d %s", r.status, r.body)
	}
	if r := rpc(t, s, `{"jsonrpc":"2.0","id":1,"method":"convert_time","params":{"source_timezone":"UTC","target_timezone":"UTC","time":"12:00"}}`); r.status != 429 || !strings.Contains(string(r.body), "for this user") {
		t.Fatalf("user's third call: %d %s", r.status, r.body)
	}
}
