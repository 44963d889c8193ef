package tests

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/mcpgateway/mcpgateway/internal/mcptest"
)

// logUpstream is an MCP server whose tool "noisy" answers over SSE: a log
// message at info, one at error, then its result.
func logUpstream(t *testing.T) string {
	fake := &mcptest.Server{Session: "logs-session", Handle: func(_ *http.Request, method string, _ json.RawMessage) string {
		if method == "tools/list" {
			return `{"tools":[{"name":"noisy","inputSchema":{"type":"object"}}]}`
		}
		return ""
	}}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		var m struct {
			ID     json.RawMessage `json:"id"`
			Method string          `json:"method"`
		}
		json.Unmarshal(body, &m)
		if m.Method != "tools/call" {
			r.Body = io.NopCloser(strings.NewReader(string(body)))
			fake.ServeHTTP(w, r)
			return
		}
		w.Header().Set("Content-Type", "text/event-stream")
		for _, msg := range []string{
			`{"jsonrpc":"2.0","method":"notifications/message","params":{"level":"info","data":"quiet"}}`,
			`{"jsonrpc":"2.0","method":"notifications/message","params":{"level":"error","data":"loud"}}`,
			fmt.Sprintf(`{"jsonrpc":"2.0","id":%s,"result":{"content":[{"type":"text","text":"done"}]}}`, m.ID),
		} {
			fmt.Fprintf(w, "event: message\ndata: %s\n\n", msg)
		}
	}))
	t.Cleanup(srv.Close)
	return srv.URL + "/mcp"
}

// logging/setLevel in a 2025-06-18 session, through one instance, sets the
// level of the upstream log messages streamed to the session's calls on
// every worker of another instance sharing the store, and a later level set
// there reaches the first instance within the coherence bound.
func TestMCPSessionLogLevelAcrossInstances(t *testing.T) {
	upURL := logUpstream(t)
	acrossInstances(t, func(t *testing.T, b storeSetup, a, other *gateway) {
		tok := a.token()
		if code, body := httpDo(freshClient, "PUT", a.url("/admin/gateways/logs"), tok, `{"url":"`+upURL+`"}`); code != 200 ||
			!strings.Contains(body, `"logs-noisy"`) {
			t.Fatalf("register: %d %s", code, body)
		}
		sid := tokMCPSession(t, a, tok)
		setLevel := func(g *gateway, level string) (int, string) {
			code, body, err := mcpDo(g, "POST", tok, sid, `{"jsonrpc":"2.0","id":3,"method":"logging/setLevel","params":{"level":"`+level+`"}}`)
			if err != nil {
				t.Fatal(err)
			}
			return code, body
		}
		if code, body := setLevel(a, "loud"); code != 200 || !strings.Contains(body, `"code":-32602`) {
			t.Errorf("unknown level: %d %s", code, body)
		}
		if code, body := setLevel(a, "warning"); code != 200 || !strings.Contains(body, `"result":{}`) {
			t.Fatalf("setLevel: %d %s", code, body)
		}
		// call streams logs-noisy in the session through g and reports
		// whether info and error messages came before the result.
		call := func(g *gateway) (info, errs bool, err error) {
			_, body, err := mcpDo(g, "POST", tok, sid, `{"jsonrpc":"2.0","id":4,"method":"tools/call","params":{"name":"logs-noisy","arguments":{}}}`)
			if err == nil && !strings.Contains(body, `"id":4,"result"`) {
				err = fmt.Errorf("no result: %.300s", body)
			}
			return strings.Contains(body, `"level":"info"`), strings.Contains(body, `"level":"error"`), err
		}
		wait := func(g *gateway, wantInfo bool) {
			t.Helper()
			deadline := time.Now().Add(3 * time.Second) // the tool reaching g's workers, then the level
			for {
				info, errs, err := call(g)
				if err == nil && errs && info == wantInfo {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("info %v, error %v, %v; want info %v and error", info, errs, err, wantInfo)
				}
				time.Sleep(50 * time.Millisecond)
			}
			// Then on every worker, on fresh connections.
			if err, n := fanOut(20, 4, func() error {
				info, errs, err := call(g)
				if err == nil && (!errs || info != wantInfo) {
					err = fmt.Errorf("info %v, error %v; want info %v and error", info, errs, wantInfo)
				}
				return err
			}); err != nil {
				t.Errorf("%d of 20 calls: %v", n, err)
			}
		}
		wait(other, false)
		if code, body := setLevel(other, "debug"); code != 200 || !strings.Contains(body, `"result":{}`) {
			t.Fatalf("setLevel through the other instance: %d %s", code, body)
		}
		wait(a, true)
	})
}
