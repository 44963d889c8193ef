package upstream

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/mcpgateway/mcpgateway/internal/mcptest"
)

// ListenOnce passes every message of the standing stream on, in order,
// in the session; an upstream without one (405) is ErrNoStream.
func TestListenOnce(t *testing.T) {
	fake := &mcptest.Server{Session: "s1", Handle: func(*http.Request, string, json.RawMessage) string { return "{}" }}
	withStream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet {
			fake.ServeHTTP(w, r)
			return
		}
		if r.Header.Get("Mcp-Session-Id") != "s1" || r.Header.Get("Accept") != "text/event-stream" {
			http.Error(w, "no session", http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Type", "text/event-stream")
		for i := 1; i <= 2; i++ {
			fmt.Fprintf(w, "id: %d\nevent: message\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/n%d\"}\n\n", i, i)
		}
	}))
	t.Cleanup(withStream.Close)
	c := New(Server{Name: "w", URL: withStream.URL}, nil)
	var got []string
	err := c.ListenOnce(context.Background(), func(msg json.RawMessage) {
		var m struct{ Method string }
		json.Unmarshal(msg, &m)
		got = append(got, m.Method)
	})
	if err != nil || len(got) != 2 || got[0] != "notifications/n1" || got[1] != "notifications/n2" {
		t.Fatalf("ListenOnce: %v, got %v", err, got)
	}

	noStream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet {
			http.Error(w, "no", http.StatusMethodNotAllowed)
			return
		}
		fake.ServeHTTP(w, r)
	}))
	t.Cleanup(noStream.Close)
	c = New(Server{Name: "n", URL: noStream.URL}, nil)
	if err := c.ListenOnce(context.Background(), func(json.RawMessage) {}); !errors.Is(err, ErrNoStream) {
		t.Fatalf("405: %v, want ErrNoStream", err)
	}
	if err := New(Server{Name: "s", URL: noStream.URL, Transport: TransportSSE}, nil).ListenOnce(context.Background(), nil); !errors.Is(err, ErrNoStream) {
		t.Fatalf("sse: %v, want ErrNoStream", err)
	}
}

// A tools/call given up by its caller is cancelled upstream with
// notifications/cancelled naming the call's request id.
func TestCallCancelledUpstream(t *testing.T) {
	called := make(chan json.RawMessage, 1)
	cancelled := make(chan json.RawMessage, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var m struct {
			ID     json.RawMessage `json:"id"`
			Method string          `json:"method"`
			Params json.RawMessage `json:"params"`
		}
		json.NewDecoder(r.Body).Decode(&m)
		switch m.Method {
		case "initialize":
			w.Header().Set("Content-Type", "application/json")
			fmt.Fprintf(w, `{"jsonrpc":"2.0","id":%s,"result":{"protocolVersion":"2025-11-25","capabilities":{},"serverInfo":{"name":"c","version":"1"}}}`, m.ID)
		case "tools/call":
			called <- m.ID
			<-r.Context().Done()
		case "notifications/cancelled":
			cancelled <- m.Params
			w.WriteHeader(http.StatusAccepted)
		default:
			w.WriteHeader(http.StatusAccepted)
		}
	}))
	t.Cleanup(srv.Close)
	c := New(Server{Name: "c", URL: srv.URL}, nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { _, err := c.CallTool(ctx, "slow", nil, nil, nil); done <- err }()
	id := <-called
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("the cancelled call: %v", err)
	}
	select {
	case params := <-cancelled:
		var p struct {
			RequestID json.RawMessage `json:"requestId"`
			Reason    string          `json:"reason"`
		}
		if json.Unmarshal(params, &p) != nil || string(p.RequestID) != string(id) || p.Reason == "" {
			t.Errorf("notifications/cancelled %s, want requestId %s", params, id)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no notifications/cancelled reached the upstream")
	}
}
