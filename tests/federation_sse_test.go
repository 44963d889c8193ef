package tests

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/mcpgateway/mcpgateway/internal/proctest"
)

// An upstream over the HTTP+SSE transport of 2024-11-05 (the reference
// "everything" server in its sse mode) registered through the admin API
// with transport "sse" on a gateway of two workers: its tools are listed on
// /mcp under namespaced names, called on fresh connections (so on both
// workers, each with its own event stream to the upstream), a call with a
// progress token gets the upstream's progress streamed back before the
// result, and once the upstream is killed calls fail as tool errors.
func TestFederatedSSEUpstream(t *testing.T) {
	upURL, up := proctest.MustStartEverythingSSE(t)
	g := serve(t, []string{"AUTH_ENCRYPTION_SECRET=federation-test-secret", "FEDERATION_TIMEOUT=10s"}, "--workers", "2")
	token := g.token()

	if code, body := httpDo(freshClient, "PUT", g.url("/admin/gateways/legacy"), token, `{"url":"`+upURL+`","transport":"websocket"}`); code != 400 ||
		!strings.Contains(body, `\"streamablehttp\"`) || !strings.Contains(body, `\"sse\"`) {
		t.Errorf("an unknown transport: %d %s", code, body)
	}
	// The sse URL registered as Streamable HTTP does not answer tools/list.
	if code, body := httpDo(freshClient, "PUT", g.url("/admin/gateways/legacy"), token, `{"url":"`+upURL+`"}`); code != 502 {
		t.Errorf("the sse URL as streamablehttp: %d %s", code, body)
	}
	code, body := httpDo(freshClient, "PUT", g.url("/admin/gateways/legacy"), token,
		`{"url":"`+upURL+`","transport":"sse","auth_type":"bearer","auth_token":"upstream-s3cret"}`)
	if code != 200 || !strings.Contains(body, `"legacy-trigger-long-running-operation"`) || strings.Contains(body, "s3cret") {
		t.Fatalf("register: %d %s", code, body)
	}
	if code, body := httpDo(freshClient, "GET", g.url("/admin/gateways/legacy"), token, ""); code != 200 || !strings.Contains(body, `"transport":"sse"`) {
		t.Errorf("get: %d %s", code, body)
	}

	// post sends body to /mcp in session sid ("" for initialize) on a
	// fresh connection, accepting JSON and SSE.
	post := func(sid, body string) *http.Response {
		t.Helper()
		req, _ := http.NewRequest("POST", g.url("/mcp"), strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+token)
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Accept", "application/json, text/event-stream")
		if sid != "" {
			req.Header.Set("Mcp-Session-Id", sid)
			req.Header.Set("MCP-Protocol-Version", "2025-11-25")
		}
		resp, err := freshClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		return resp
	}
	read := func(resp *http.Response) string {
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b)
	}
	resp := post("", `{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}`)
	sid := resp.Header.Get("Mcp-Session-Id")
	if read(resp); sid == "" {
		t.Fatalf("initialize: %d, no session", resp.StatusCode)
	}

	// Listed, on whichever worker answers.
	deadline := time.Now().Add(5 * time.Second)
	for {
		list := read(post(sid, `{"jsonrpc":"2.0","id":2,"method":"tools/list"}`))
		if strings.Contains(list, `"legacy-echo"`) && strings.Contains(list, `"legacy-get-sum"`) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("tools/list lacks legacy-echo: %s", list)
		}
		time.Sleep(100 * time.Millisecond)
	}

	// Called over fresh connections, spread on both workers.
	before := workerRequests(t, g)
	for i := range 8 {
		body := read(post(sid, fmt.Sprintf(`{"jsonrpc":"2.0","id":%d,"method":"tools/call","params":{"name":"legacy-echo","arguments":{"message":"over sse %d"}}}`, 10+i, i)))
		if !strings.Contains(body, fmt.Sprintf("Echo: over sse %d", i)) || strings.Contains(body, `"isError":true`) {
			t.Fatalf("tools/call %d: %s", i, body)
		}
	}
	if after := workerRequests(t, g); !eachWorkerServed(before, after, 1) {
		t.Logf("the calls did not reach both workers: %v -> %v", before, after)
	}

	// Progress streamed back, with the client's own token, before the result.
	start := time.Now()
	resp = post(sid, `{"jsonrpc":"2.0","id":30,"method":"tools/call","params":{"name":"legacy-trigger-long-running-operation",`+
		`"arguments":{"duration":1,"steps":4},"_meta":{"progressToken":"tok"}}}`)
	if ct := resp.Header.Get("Content-Type"); resp.StatusCode != 200 || ct != "text/event-stream" {
		t.Fatalf("progress call: %d, Content-Type %q: %s", resp.StatusCode, ct, read(resp))
	}
	var data []string
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if line := sc.Text(); strings.HasPrefix(line, "data:") {
			if d := strings.TrimSpace(strings.TrimPrefix(line, "data:")); d != "" { // not the priming event
				data = append(data, d)
			}
		}
	}
	resp.Body.Close()
	if len(data) != 5 {
		t.Fatalf("progress call: %d events, want 4 progress and the response: %q", len(data), data)
	}
	for i, d := range data[:4] {
		if !strings.Contains(d, `"method":"notifications/progress"`) || !strings.Contains(d, `"progressToken":"tok"`) ||
			!strings.Contains(d, fmt.Sprintf(`"progress":%d`, i+1)) {
			t.Errorf("event %d: %s", i, d)
		}
	}
	if !strings.Contains(data[4], `"id":30`) || !strings.Contains(data[4], "Long running operation completed") {
		t.Errorf("last event: %s", data[4])
	}
	if d := time.Since(start); d < 900*time.Millisecond {
		t.Errorf("a 1 s operation answered in %v", d)
	}

	// The official Go SDK's client through the gateway gets what the SDK's
	// own SSE client gets from the upstream directly.
	sdkEchoesAlike(t, g, token, upURL)

	// The upstream dies (its event streams break): calls fail as tool
	// errors, fast.
	up.Stop(syscall.SIGKILL, 5*time.Second)
	for i := range 4 {
		start := time.Now()
		body := read(post(sid, fmt.Sprintf(`{"jsonrpc":"2.0","id":%d,"method":"tools/call","params":{"name":"legacy-echo","arguments":{"message":"x"}}}`, 40+i)))
		if !strings.Contains(body, `"isError":true`) || !strings.Contains(body, "upstream legacy unavailable") || time.Since(start) > 2*time.Second {
			t.Fatalf("with the upstream gone: %s after %v", body, time.Since(start))
		}
	}
	if g.Log.Contains("s3cret") {
		t.Error("the upstream's credential was logged")
	}
}

// sdkEchoesAlike calls the sse upstream's echo and get-sum with the Go
// SDK's client through the gateway (legacy-*) and with its SSE client
// directly, and compares the answers.
func sdkEchoesAlike(t *testing.T, g *gateway, token, upURL string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	through, err := mcp.NewClient(&mcp.Implementation{Name: "sse-through", Version: "1"}, nil).Connect(ctx,
		&mcp.StreamableClientTransport{Endpoint: g.url("/mcp"), HTTPClient: &http.Client{Transport: bearer{token}}, MaxRetries: -1}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer through.Close()
	direct, err := mcp.NewClient(&mcp.Implementation{Name: "sse-direct", Version: "1"}, nil).Connect(ctx,
		&mcp.SSEClientTransport{Endpoint: upURL}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer direct.Close()
	for _, c := range []struct {
		tool string
		args map[string]any
	}{{"echo", map[string]any{"message": "same both ways"}}, {"get-sum", map[string]any{"a": 2, "b": 40}}} {
		a, err := through.CallTool(ctx, &mcp.CallToolParams{Name: "legacy-" + c.tool, Arguments: c.args})
		if err != nil {
			t.Fatalf("%s through the gateway: %v", c.tool, err)
		}
		b, err := direct.CallTool(ctx, &mcp.CallToolParams{Name: c.tool, Arguments: c.args})
		if err != nil {
			t.Fatalf("%s directly: %v", c.tool, err)
		}
		ta, _ := a.Content[0].(*mcp.TextContent)
		tb, _ := b.Content[0].(*mcp.TextContent)
		if ta == nil || tb == nil || ta.Text != tb.Text || a.IsError {
			t.Errorf("%s: %+v through the gateway, %+v directly", c.tool, a.Content, b.Content)
		}
	}
}
