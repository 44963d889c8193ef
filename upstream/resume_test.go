package upstream

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

// A 2025-11-25 upstream that ends the stream of a call before its
// response (SEP-1699) is resumed: GET with Last-Event-ID after its retry
// hint, as often as it ends it, and every notification and the response
// reach the caller once and in order.
func TestResumeEndedStream(t *testing.T) {
	var mu sync.Mutex
	var resumedFrom []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var m struct {
			ID     json.RawMessage `json:"id"`
			Method string          `json:"method"`
		}
		json.NewDecoder(r.Body).Decode(&m)
		event := func(id, data string) {
			fmt.Fprintf(w, "id: %s\nretry: 20\ndata: %s\n\n", id, data)
			w.(http.Flusher).Flush()
		}
		switch {
		case r.Method == http.MethodGet:
			last := r.Header.Get("Last-Event-ID")
			mu.Lock()
			resumedFrom = append(resumedFrom, last+" "+r.Header.Get("Mcp-Session-Id"))
			mu.Unlock()
			w.Header().Set("Content-Type", "text/event-stream")
			switch last {
			case "c-0":
				event("c-1", `{"jsonrpc":"2.0","method":"notifications/progress","params":{"progressToken":"t","progress":1}}`)
			case "c-1":
				event("c-2", `{"jsonrpc":"2.0","method":"notifications/progress","params":{"progressToken":"t","progress":2}}`)
				event("c-3", `{"jsonrpc":"2.0","id":2,"result":{"content":[{"type":"text","text":"done"}]}}`)
			default:
				w.WriteHeader(http.StatusNotFound)
			}
		case m.Method == "initialize":
			w.Header().Set("Content-Type", "application/json")
			w.Header().Set("Mcp-Session-Id", "sess")
			fmt.Fprintf(w, `{"jsonrpc":"2.0","id":%s,"result":{"protocolVersion":"2025-11-25","capabilities":{"tools":{}},"serverInfo":{"name":"r","version":"1"}}}`, m.ID)
		case strings.HasPrefix(m.Method, "notifications/"):
			w.WriteHeader(http.StatusAccepted)
		case m.Method == "tools/call":
			w.Header().Set("Content-Type", "text/event-stream")
			fmt.Fprint(w, "id: c-0\nretry: 20\ndata:\n\n") // priming, then the stream ends
		default:
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusBadRequest)
			fmt.Fprintf(w, `{"jsonrpc":"2.0","id":%s,"error":{"code":-32601,"message":"Method not found"}}`, m.ID)
		}
	}))
	defer srv.Close()
	c := New(Server{Name: "r", URL: srv.URL, Timeout: 5 * time.Second}, nil)
	var notes []string
	res, err := c.CallTool(context.Background(), "slow", nil, "t", func(n json.RawMessage) { notes = append(notes, string(n)) })
	if err != nil || !strings.Contains(string(res), "done") {
		t.Fatalf("call: %s, %v", res, err)
	}
	if len(notes) != 2 || !strings.Contains(notes[0], `"progress":1`) || !strings.Contains(notes[1], `"progress":2`) {
		t.Errorf("notifications: %q", notes)
	}
	if got := strings.Join(resumedFrom, ", "); got != "c-0 sess, c-1 sess" {
		t.Errorf("resumed from: %s", got)
	}

	// A resumption the server refuses fails the call, naming it.
	srv.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet {
			w.WriteHeader(http.StatusMethodNotAllowed)
			return
		}
		w.Header().Set("Content-Type", "text/event-stream")
		fmt.Fprint(w, "id: x-0\ndata:\n\n")
	})
	if _, err := c.CallTool(context.Background(), "slow", nil, nil, nil); err == nil || !strings.Contains(err.Error(), "resume the event stream after x-0") {
		t.Errorf("refused resumption: %v", err)
	}
}
