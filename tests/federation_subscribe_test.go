package tests

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// subscribableUpstream is an upstream MCP server with one resource whose
// updates it sends, on each session's standing stream (GET), to the
// sessions that subscribed to it.
type subscribableUpstream struct {
	mu       sync.Mutex
	sessions int
	streams  map[string]chan string // by session
	subs     map[string]bool        // session+" "+uri
	changed  chan string            // "subscribe <uri>" or "unsubscribe <uri>"
}

func (u *subscribableUpstream) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	sid := r.Header.Get("Mcp-Session-Id")
	if r.Method == http.MethodGet {
		ch := make(chan string, 8)
		u.mu.Lock()
		u.streams[sid] = ch
		u.mu.Unlock()
		serveStandingStream(w, r, ch, func() {})
		return
	}
	body, _ := io.ReadAll(r.Body)
	var m struct {
		ID     json.RawMessage `json:"id"`
		Method string          `json:"method"`
		Params struct {
			URI string `json:"uri"`
		} `json:"params"`
	}
	json.Unmarshal(body, &m)
	if m.ID == nil {
		w.WriteHeader(http.StatusAccepted)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	result := `{}`
	switch m.Method {
	case "initialize":
		u.mu.Lock()
		u.sessions++
		w.Header().Set("Mcp-Session-Id", fmt.Sprintf("s%d", u.sessions))
		u.mu.Unlock()
		result = `{"protocolVersion":"2025-11-25","capabilities":{"resources":{"subscribe":true}},"serverInfo":{"name":"subs","version":"1"}}`
	case "tools/list":
		result = `{"tools":[]}`
	case "resources/list":
		result = `{"resources":[{"uri":"test://watched","name":"watched"}]}`
	case "resources/templates/list":
		result = `{"resourceTemplates":[]}`
	case "resources/subscribe", "resources/unsubscribe":
		u.mu.Lock()
		u.subs[sid+" "+m.Params.URI] = m.Method == "resources/subscribe"
		u.mu.Unlock()
		u.changed <- strings.TrimPrefix(m.Method, "resources/") + " " + m.Params.URI
	default:
		fmt.Fprintf(w, `{"jsonrpc":"2.0","id":%s,"error":{"code":-32601,"message":"no"}}`, m.ID)
		return
	}
	fmt.Fprintf(w, `{"jsonrpc":"2.0","id":%s,"result":%s}`, m.ID, result)
}

// update sends notifications/resources/updated of uri to its subscribers.
func (u *subscribableUpstream) update(uri string) {
	u.mu.Lock()
	defer u.mu.Unlock()
	for sid, ch := range u.streams {
		if u.subs[sid+" "+uri] {
			ch <- `{"jsonrpc":"2.0","method":"notifications/resources/updated","params":{"uri":"` + uri + `"}}`
		}
	}
}

// Issue 14 item 2: resource subscriptions pass through a gateway of two
// workers. The client's subscribe lands on any worker; the worker holding
// its standing stream subscribes upstream, and the upstream's update
// reaches the client; an unsubscribe ends the upstream subscription. The
// same on a virtual server exposing the upstream one-to-one.
func TestFederatedResourceSubscriptions(t *testing.T) {
	up := &subscribableUpstream{streams: map[string]chan string{}, subs: map[string]bool{}, changed: make(chan string, 8)}
	srv := httptest.NewServer(up)
	t.Cleanup(srv.Close)
	g := serve(t, nil, "--workers", "2")
	token := g.token()
	if code, body := httpDo(freshClient, "PUT", g.url("/admin/gateways/subs"), token, `{"url":"`+srv.URL+`/mcp"}`); code != 200 {
		t.Fatalf("register: %d %s", code, body)
	}
	if code, body := httpDo(freshClient, "PUT", g.url("/admin/servers/subsrv"), token, `{"name":"one-to-one","gateways":["subs"]}`); code != 200 {
		t.Fatalf("virtual server: %d %s", code, body)
	}
	for _, endpoint := range []string{"/mcp", "/servers/subsrv/mcp"} {
		t.Run(strings.Trim(endpoint, "/"), func(t *testing.T) { subscribeThrough(t, up, g.url(endpoint), token) })
	}
}

// subscribeThrough subscribes with the Go SDK's client at endpoint, gets
// the upstream's update, and unsubscribes.
func subscribeThrough(t *testing.T, up *subscribableUpstream, endpoint, token string) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	updated := make(chan string, 8)
	client := mcp.NewClient(&mcp.Implementation{Name: "subscribe-test", Version: "1"}, &mcp.ClientOptions{
		ResourceUpdatedHandler: func(_ context.Context, req *mcp.ResourceUpdatedNotificationRequest) { updated <- req.Params.URI },
	})
	transport := &mcp.StreamableClientTransport{Endpoint: endpoint, HTTPClient: &http.Client{Transport: freshBearer{token}}, MaxRetries: -1}
	session, err := client.Connect(ctx, transport, &mcp.ClientSessionOptions{ProtocolVersion: "2025-11-25"})
	if err != nil {
		t.Fatal(err)
	}
	defer session.Close()
	if err := session.Subscribe(ctx, &mcp.SubscribeParams{URI: "test://watched"}); err != nil {
		t.Fatalf("subscribe: %v", err)
	}
	select {
	case c := <-up.changed:
		if c != "subscribe test://watched" {
			t.Fatalf("the upstream got %q", c)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no worker subscribed upstream within 5 s")
	}
	// Updates every 100 ms, as a changing resource sends them: the worker's
	// stream to the upstream may open a moment after its subscribe.
	deadline := time.After(5 * time.Second)
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
wait:
	for {
		select {
		case uri := <-updated:
			if uri != "test://watched" {
				t.Errorf("update of %q", uri)
			}
			break wait
		case <-tick.C:
			up.update("test://watched")
		case <-deadline:
			t.Fatal("the upstream's updates did not reach the client")
		}
	}
	if err := session.Unsubscribe(ctx, &mcp.UnsubscribeParams{URI: "test://watched"}); err != nil {
		t.Fatalf("unsubscribe: %v", err)
	}
	select {
	case c := <-up.changed:
		if c != "unsubscribe test://watched" {
			t.Fatalf("the upstream got %q", c)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the upstream subscription outlived the client's")
	}
	if err := session.Subscribe(ctx, &mcp.SubscribeParams{URI: "test://nowhere"}); err == nil || !strings.Contains(err.Error(), "not found") {
		t.Errorf("an unknown resource: %v", err)
	}
}
