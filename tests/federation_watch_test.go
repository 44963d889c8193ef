package tests

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

// listChangingUpstream is an upstream MCP server whose tool list the test
// changes, announcing it with notifications/tools/list_changed on every
// standing stream (GET) open at the time.
type listChangingUpstream struct {
	mu      sync.Mutex
	tools   []string
	streams []chan string
	opened  chan struct{} // a standing stream was opened
}

func (u *listChangingUpstream) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method == http.MethodGet {
		ch := make(chan string, 4)
		u.mu.Lock()
		u.streams = append(u.streams, ch)
		u.mu.Unlock()
		serveStandingStream(w, r, ch, func() {
			select {
			case u.opened <- struct{}{}:
			default:
			}
		})
		return
	}
	body, _ := io.ReadAll(r.Body)
	var m struct {
		ID     json.RawMessage `json:"id"`
		Method string          `json:"method"`
	}
	json.Unmarshal(body, &m)
	if m.ID == nil {
		w.WriteHeader(http.StatusAccepted)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	switch m.Method {
	case "initialize":
		w.Header().Set("Mcp-Session-Id", "watch")
		fmt.Fprintf(w, `{"jsonrpc":"2.0","id":%s,"result":{"protocolVersion":"2025-11-25","capabilities":{"tools":{"listChanged":true}},"serverInfo":{"name":"w","version":"1"}}}`, m.ID)
	case "tools/list":
		u.mu.Lock()
		var tools []string
		for _, name := range u.tools {
			tools = append(tools, `{"name":"`+name+`","inputSchema":{"type":"object"}}`)
		}
		u.mu.Unlock()
		fmt.Fprintf(w, `{"jsonrpc":"2.0","id":%s,"result":{"tools":[%s]}}`, m.ID, strings.Join(tools, ","))
	default:
		fmt.Fprintf(w, `{"jsonrpc":"2.0","id":%s,"error":{"code":-32601,"message":"no"}}`, m.ID)
	}
}

// serveStandingStream answers a fake upstream's GET: an event stream that
// carries every message sent on ch until the client goes; opened runs once
// the headers are out.
func serveStandingStream(w http.ResponseWriter, r *http.Request, ch <-chan string, opened func()) {
	w.Header().Set("Content-Type", "text/event-stream")
	w.WriteHeader(200)
	w.(http.Flusher).Flush()
	opened()
	for {
		select {
		case msg := <-ch:
			fmt.Fprintf(w, "event: message\ndata: %s\n\n", msg)
			w.(http.Flusher).Flush()
		case <-r.Context().Done():
			return
		}
	}
}

// setTools changes the list and notifies every open standing stream.
func (u *listChangingUpstream) setTools(tools ...string) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.tools = tools
	for _, ch := range u.streams {
		select {
		case ch <- `{"jsonrpc":"2.0","method":"notifications/tools/list_changed"}`:
		default:
		}
	}
}

// Issue 14 item 1: the catalogue is kept fresh by the upstream's
// list-changed notifications, not only by the periodic refresh (here: never
// within the test). A tool the upstream adds is served through the gateway
// a moment after the notification, on every worker.
func TestUpstreamListChangedRefreshesTheCatalogue(t *testing.T) {
	up := &listChangingUpstream{tools: []string{"first"}, opened: make(chan struct{}, 1)}
	srv := httptest.NewServer(up)
	t.Cleanup(srv.Close)
	g := serve(t, []string{"HEALTH_CHECK_INTERVAL=1h"}, "--workers", "2")
	token := g.token()
	if code, body := httpDo(freshClient, "PUT", g.url("/admin/gateways/watched"), token, `{"url":"`+srv.URL+`/mcp"}`); code != 200 ||
		!strings.Contains(body, `"watched-first"`) {
		t.Fatalf("register: %d %s", code, body)
	}
	select {
	case <-up.opened: // slot 0 watches it (within watchEvery of the registration)
	case <-time.After(10 * time.Second):
		t.Fatal("the gateway opened no standing stream to the upstream")
	}
	up.setTools("first", "second")
	list := `{"jsonrpc":"2.0","id":1,"method":"tools/list"}`
	deadline := time.Now().Add(3 * time.Second)
	for {
		ok := true
		for range 4 { // fresh connections: both workers
			_, body := httpDo(freshClient, "POST", g.url("/rpc"), token, list)
			ok = ok && strings.Contains(body, `"watched-second"`)
		}
		if ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the tool the upstream added is not served 3 s after its list_changed notification")
		}
		time.Sleep(100 * time.Millisecond)
	}
	if !strings.Contains(g.Log.String(), "upstream tool list changed (notified)") {
		t.Error("the refresh was not the notified one")
	}
}
