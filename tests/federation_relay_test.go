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
// for elicitation during a tool call. Through a gateway of two workers the
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
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var sampled, elicited atomic.Int32
	for _, version := range []string{"2025-11-25", "2025-06-18"} {
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
		})
		transport := &mcp.StreamableClientTransport{Endpoint: g.url("/mcp"), HTTPClient: &http.Client{Transport: freshBearer{token}}, MaxRetries: -1}
		session, err := client.Connect(ctx, transport, &mcp.ClientSessionOptions{ProtocolVersion: version})
		if err != nil {
			t.Fatalf("Go SDK %q: connect: %v", version, err)
		}
		for i := range 4 {
			res, err := session.CallTool(ctx, &mcp.CallToolParams{Name: "everything-trigger-sampling-request",
				Arguments: map[string]any{"prompt": "hello", "maxTokens": 10}})
			if err != nil || res.IsError || len(res.Content) == 0 {
				t.Fatalf("%s: sampling call %d: %v %+v", version, i, err, res)
			}
			if text := res.Content[0].(*mcp.TextContent).Text; !strings.Contains(text, "a sampled answer") || !strings.Contains(text, "test-model") {
				t.Errorf("%s: sampling call %d: %s", version, i, text)
			}
			res, err = session.CallTool(ctx, &mcp.CallToolParams{Name: "everything-trigger-elicitation-request", Arguments: map[string]any{}})
			if err != nil || res.IsError || len(res.Content) == 0 {
				t.Fatalf("%s: elicitation call %d: %v %+v", version, i, err, res)
			}
			if text := res.Content[0].(*mcp.TextContent).Text; !strings.Contains(text, "decline") {
				t.Errorf("%s: elicitation call %d: %s", version, i, text)
			}
		}
		session.Close()
	}
	if sampled.Load() != 8 || elicited.Load() != 8 {
		t.Errorf("the client was asked %d times for sampling and %d for elicitation, want 8 and 8", sampled.Load(), elicited.Load())
	}
}
