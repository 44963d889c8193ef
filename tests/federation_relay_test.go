package tests

import (
	"context"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/mcpgateway/mcpgateway/internal/proctest"
)

// Issue 14 item 2: the reference server asks its client for sampling and
// for elicitation during a tool call, and reports progress. Through a gateway of two workers the
// official Go SDK's client gets each request, and its answers, posted to
// whichever worker its connection lands on, reach the upstream, whose
// results carry them.
func TestFederatedSamplingAndElicitation(t *testing.T) {
	upURL, _ := proctest.MustStartEverything(t)
	g := serve(t, []string{"FEDERATION_TIMEOUT=20s"}, "--workers", "2")
	token := g.token()
	if code, body := httpDo(freshClient, "PUT", g.url("/admin/gateways/everything"), token, `{"url":"`+upURL+`"}`); code != 200 ||
		!strings.Contains(body, `"everything-trigger-sampling-request"`) || !strings.Contains(body, `"everything-trigger-elicitation-request"`) {
		t.Fatalf("register (the gateway declares sampling and elicitation, so the upstream offers its tools): %d %s", code, body)
	}
	// The same upstream exposed one-to-one as a virtual server, its tools
	// under their own names.
	if code, body := httpDo(freshClient, "PUT", g.url("/admin/servers/every"), token, `{"name":"everything","gateways":["everything"]}`); code != 200 {
		t.Fatalf("virtual server: %d %s", code, body)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var sampled, elicited, progressed atomic.Int32
	for _, c := range []struct{ version, endpoint, prefix string }{
		{"2025-11-25", "/mcp", "everything-"}, {"2025-06-18", "/mcp", "everything-"}, {"2025-11-25", "/servers/every/mcp", ""},
	} {
		version := c.version
		client := mcp.NewClient(&mcp.Implementation{Name: "relay-test", Version: "1"}, &mcp.ClientOptions{
			CreateMessageHandler: func(_ context.Context, req *mcp.CreateMessageRequest) (*mcp.CreateMessageResult, error) {
				sampled.Add(1)
				return &mcp.CreateMessageResult{Model: "test-model", Role: "assistant",
					Content: &mcp.TextContent{Text: "a sampled answer"}}, nil
			},
			ElicitationHandler: func(_ context.Context, req *mcp.ElicitRequest) (*mcp.ElicitResult, error) {
				elicited.Add(1)
				return &mcp.ElicitResult{Action: "decline"}, nil
			},
			ProgressNotificationHandler: func(context.Context, *mcp.ProgressNotificationClientRequest) { progressed.Add(1) },
		})
		transport := &mcp.StreamableClientTransport{Endpoint: g.url(c.endpoint), HTTPClient: &http.Client{Transport: freshBearer{token}}, MaxRetries: -1}
		session, err := client.Connect(ctx, transport, &mcp.ClientSessionOptions{ProtocolVersion: version})
		if err != nil {
			t.Fatalf("Go SDK %q: connect: %v", version, err)
		}
		for i := range 4 {
			res, err := session.CallTool(ctx, &mcp.CallToolParams{Name: c.prefix + "trigger-sampling-request",
				Arguments: map[string]any{"prompt": "hello", "maxTokens": 10}})
			if err != nil || res.IsError || len(res.Content) == 0 {
				t.Fatalf("%s: sampling call %d: %v %+v", version, i, err, res)
			}
			if text := res.Content[0].(*mcp.TextContent).Text; !strings.Contains(text, "a sampled answer") || !strings.Contains(text, "test-model") {
				t.Errorf("%s: sampling call %d: %s", version, i, text)
			}
			res, err = session.CallTool(ctx, &mcp.CallToolParams{Name: c.prefix + "trigger-elicitation-request", Arguments: map[string]any{}})
			if err != nil || res.IsError || len(res.Content) == 0 {
				t.Fatalf("%s: elicitation call %d: %v %+v", version, i, err, res)
			}
			if text := res.Content[0].(*mcp.TextContent).Text; !strings.Contains(text, "decline") {
				t.Errorf("%s: elicitation call %d: %s", version, i, text)
			}
		}
		// Progress passes through as well.
		params := &mcp.CallToolParams{Name: c.prefix + "trigger-long-running-operation", Arguments: map[string]any{"duration": 1, "steps": 3}}
		params.SetProgressToken("p")
		progressed.Store(0)
		res, err := session.CallTool(ctx, params)
		for deadline := time.Now().Add(2 * time.Second); progressed.Load() < 3 && time.Now().Before(deadline); {
			time.Sleep(10 * time.Millisecond) // the SDK hands notifications to the handler on its own goroutine
		}
		if err != nil || res.IsError || progressed.Load() != 3 {
			t.Errorf("%s %s: a call with progress: %v, %d progress notifications, want 3", version, c.endpoint, err, progressed.Load())
		}
		session.Close()
	}
	if sampled.Load() != 12 || elicited.Load() != 12 {
		t.Errorf("the client was asked %d times for sampling and %d for elicitation, want 12 and 12", sampled.Load(), elicited.Load())
	}
}
