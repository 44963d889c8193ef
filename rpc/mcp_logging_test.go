package rpc

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"
)

// levelsFake is a Backend with an upstream (streamBackend) that keeps
// session log levels, as *store.Store does.
type levelsFake struct {
	gatewaysFake
	mu     sync.Mutex
	levels map[string]string
}

func (f *levelsFake) SetSessionLogLevel(ctx context.Context, sid, level string, until time.Time) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.levels[sid] = level
	return nil
}

func (f *levelsFake) SessionLogLevel(ctx context.Context, sid string) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.levels[sid], nil
}

// logging/setLevel in a legacy session, on one of two servers over one
// store (two workers or instances), sets the level of the upstream log
// messages streamed to the session's tool calls on both. initialize
// declares logging; an unknown level gets -32602; /rpc has no sessions and
// no setLevel.
func TestMCPSessionLogLevel(t *testing.T) {
	up := newStreamUpstream(t)
	backend := &levelsFake{gatewaysFake: streamBackend(up), levels: map[string]string{}}
	o := testOptions()
	o.FederationTimeout = 10 * time.Second
	a, urlA := serveGateway(t, o, backend)
	b, urlB := serveGateway(t, o, backend)
	tok := mint(t, nil)
	// messages calls up-notes without a progress token on url and returns
	// the data of its events, or nil when it was answered in JSON.
	messages := func(t *testing.T, url, sid string) []string {
		t.Helper()
		resp := postMCP(t, url, fmt.Sprintf(streamCallBody, "7", "up-notes", ""), "Mcp-Session-Id", sid)
		defer resp.Body.Close()
		<-up.tokens
		if resp.Header.Get("Content-Type") != "text/event-stream" {
			return nil
		}
		var data []string
		for _, ev := range readEvents(t, resp.Body) {
			if ev.data != "" { // not 2025-11-25's priming event
				data = append(data, ev.data)
			}
		}
		return data
	}
	expect := func(t *testing.T, got []string, want ...string) {
		t.Helper()
		if len(got) != len(want) {
			t.Fatalf("%d events, want %d: %q", len(got), len(want), got)
		}
		for i, w := range want {
			if !strings.Contains(got[i], w) {
				t.Errorf("event %d: %s, want %s", i, got[i], w)
			}
		}
	}
	setLevel := func(s *Server, sid, level string) result {
		return mcpCall(t, s, tok, sid, `{"jsonrpc":"2.0","id":2,"method":"logging/setLevel","params":{"level":"`+level+`"}}`)
	}
	for _, rev := range sessionVersions {
		t.Run(rev, func(t *testing.T) {
			r := mcpCall(t, a, tok, "", strings.Replace(mcpInit, "2025-06-18", rev, 1))
			sid := r.header("Mcp-Session-Id")
			if !strings.Contains(string(r.body), `"capabilities":{"completions":{},"logging":{}`) {
				t.Fatalf("initialize declares no logging: %s", r.body)
			}
			// Without a level, no log message: the session's calls stream
			// (an upstream may send them requests, mcp_relay.go) with the
			// response alone.
			expect(t, messages(t, urlB, sid), `"id":7,"result"`)
			r = setLevel(a, sid, "loud")
			if e, _ := r.obj(t)["error"].(map[string]any); r.status != 200 || e["code"] != float64(codeInvalidParams) {
				t.Errorf("unknown level: %d %s", r.status, r.body)
			}
			if r = setLevel(a, sid, "warning"); r.status != 200 || !strings.Contains(string(r.body), `"result":{}`) {
				t.Fatalf("setLevel: %d %s", r.status, r.body)
			}
			expect(t, messages(t, urlB, sid), `"level":"error"`, `"id":7,"result"`)
			if r = setLevel(b, sid, "debug"); r.status != 200 {
				t.Fatalf("setLevel on b: %d %s", r.status, r.body)
			}
			expect(t, messages(t, urlA, sid), `"level":"info"`, `"level":"error"`, `"id":7,"result"`)
			// Another session has no level.
			other := mcpCall(t, b, tok, "", strings.Replace(mcpInit, "2025-06-18", rev, 1)).header("Mcp-Session-Id")
			expect(t, messages(t, urlA, other), `"id":7,"result"`)
		})
	}
	if code, _, _ := rpcErr(t, a, `{"jsonrpc":"2.0","id":1,"method":"logging/setLevel","params":{"level":"info"}}`); code != codeMethodNotFound {
		t.Errorf("/rpc logging/setLevel: %d", code)
	}
}
