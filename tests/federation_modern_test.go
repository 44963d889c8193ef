package tests

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// A Go SDK server that speaks 2026-07-28 only (the SDK's stateless
// handler, behind a filter that refuses any other revision, initialize
// included) with a tool that asks its client for a name and a sampled
// greeting as multi-round-trip input requests. Through a gateway of two
// workers, the official Go SDK's clients of every revision get the tool's
// answer: a 2026-07-28 client fulfils the input_required result itself
// (the SDK retries with its handlers' answers), a session client is asked
// by the gateway on the call's stream (docs/federation.md, "Upstreams
// that speak 2026-07-28").
func TestFederatedModernOnlyUpstream(t *testing.T) {
	server := mcp.NewServer(&mcp.Implementation{Name: "modern-only", Version: "1"}, nil)
	mcp.AddTool(server, &mcp.Tool{Name: "greet", Description: "asks who is there, then greets"},
		func(_ context.Context, req *mcp.CallToolRequest, _ any) (*mcp.CallToolResult, any, error) {
			name, greeting := "", ""
			if r, ok := req.Params.InputResponses["who"].(*mcp.ElicitResult); ok && r.Action == "accept" {
				name, _ = r.Content["name"].(string)
			}
			if r, ok := req.Params.InputResponses["greeting"].(*mcp.CreateMessageWithToolsResult); ok && len(r.Content) > 0 {
				if tc, ok := r.Content[0].(*mcp.TextContent); ok {
					greeting = tc.Text
				}
			}
			if name == "" || greeting == "" {
				return &mcp.CallToolResult{InputRequests: mcp.InputRequestMap{
					"who": &mcp.ElicitParams{Message: "Who is there?", RequestedSchema: map[string]any{
						"type": "object", "properties": map[string]any{"name": map[string]any{"type": "string"}}, "required": []string{"name"}}},
					"greeting": &mcp.CreateMessageParams{MaxTokens: 10,
						Messages: []*mcp.SamplingMessage{{Role: "user", Content: &mcp.TextContent{Text: "a greeting"}}}},
				}}, nil, nil
			}
			return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: greeting + ", " + name + "!"}}}, nil, nil
		})
	sdk := mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return server }, &mcp.StreamableHTTPOptions{Stateless: true})
	var refused atomic.Int32
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("MCP-Protocol-Version") != "2026-07-28" {
			refused.Add(1)
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusBadRequest)
			fmt.Fprint(w, `{"jsonrpc":"2.0","id":null,"error":{"code":-32600,"message":"this server speaks MCP 2026-07-28 only"}}`)
			return
		}
		sdk.ServeHTTP(w, r)
	}))
	defer up.Close()

	g := serve(t, []string{"FEDERATION_TIMEOUT=20s"}, "--workers", "2")
	token := g.token()
	if code, body := httpDo(freshClient, "PUT", g.url("/admin/gateways/modern"), token, `{"url":"`+up.URL+`/mcp"}`); code != 200 ||
		!strings.Contains(body, `"modern-greet"`) {
		t.Fatalf("register (listed in the 2026-07-28 form): %d %s", code, body)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var elicited, sampled atomic.Int32
	for _, version := range []string{"2026-07-28", "2025-11-25", "2025-06-18"} {
		client := mcp.NewClient(&mcp.Implementation{Name: "modern-test", Version: "1"}, &mcp.ClientOptions{
			ElicitationHandler: func(_ context.Context, req *mcp.ElicitRequest) (*mcp.ElicitResult, error) {
				elicited.Add(1)
				return &mcp.ElicitResult{Action: "accept", Content: map[string]any{"name": "Ada"}}, nil
			},
			CreateMessageHandler: func(_ context.Context, req *mcp.CreateMessageRequest) (*mcp.CreateMessageResult, error) {
				sampled.Add(1)
				return &mcp.CreateMessageResult{Model: "m", Role: "assistant", Content: &mcp.TextContent{Text: "Hello"}}, nil
			},
		})
		transport := &mcp.StreamableClientTransport{Endpoint: g.url("/mcp"), HTTPClient: &http.Client{Transport: freshBearer{token}}, MaxRetries: -1}
		session, err := client.Connect(ctx, transport, &mcp.ClientSessionOptions{ProtocolVersion: version})
		if err != nil {
			t.Fatalf("Go SDK %s: connect: %v", version, err)
		}
		for i := range 3 { // on whichever worker each call lands
			res, err := session.CallTool(ctx, &mcp.CallToolParams{Name: "modern-greet", Arguments: map[string]any{}})
			if err != nil || res.IsError || len(res.Content) == 0 {
				t.Fatalf("%s: call %d: %v %+v", version, i, err, res)
			}
			if text := res.Content[0].(*mcp.TextContent).Text; text != "Hello, Ada!" {
				t.Errorf("%s: call %d: %q", version, i, text)
			}
		}
		session.Close()
	}
	if elicited.Load() != 9 || sampled.Load() != 9 {
		t.Errorf("the clients were asked %d times for a name and %d for a greeting, want 9 and 9", elicited.Load(), sampled.Load())
	}
	if refused.Load() == 0 {
		t.Error("the upstream refused nothing: the gateway never tried a session with it, so the test did not test a modern-only upstream")
	}
}
