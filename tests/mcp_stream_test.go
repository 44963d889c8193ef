package tests

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/mcpgateway/mcpgateway/internal/proctest"
)

// bearer adds a token to every request of the Go SDK's client.
type bearer struct{ token string }

func (b bearer) RoundTrip(req *http.Request) (*http.Response, error) {
	req = req.Clone(req.Context())
	req.Header.Set("Authorization", "Bearer "+b.token)
	return http.DefaultTransport.RoundTrip(req)
}

// The reference server's long-running tool, called through a gateway of two
// workers with a progress token, streams its 4 progress notifications back
// over an SSE answer, then the result: raw in a 2025-11-25 session (priming
// event, ids) and in 2026-07-28, and through the official Go SDK's client
// in both eras. While a stream is open /metrics counts it in open_streams,
// not in the requests in flight.
func TestMCPFederatedProgressStream(t *testing.T) {
	upURL, _ := proctest.MustStartEverything(t)
	g := serve(t, []string{"FEDERATION_TIMEOUT=20s"}, "--workers", "2")
	token := g.token()
	if code, body := httpDo(freshClient, "PUT", g.url("/admin/gateways/everything"), token, `{"url":"`+upURL+`"}`); code != 200 ||
		!strings.Contains(body, `"everything-trigger-long-running-operation"`) {
		t.Fatalf("register: %d %s", code, body)
	}
	const tool = "everything-trigger-long-running-operation"

	post := func(body string, headers ...string) *http.Response {
		t.Helper()
		req, _ := http.NewRequest("POST", g.url("/mcp"), strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+token)
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Accept", "application/json, text/event-stream")
		for i := 0; i+1 < len(headers); i += 2 {
			req.Header.Set(headers[i], headers[i+1])
		}
		resp, err := freshClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		return resp
	}
	// events reads a stream to its end: each event's id and data lines.
	events := func(resp *http.Response) (ids, data []string) {
		defer resp.Body.Close()
		if ct := resp.Header.Get("Content-Type"); resp.StatusCode != 200 || ct != "text/event-stream" {
			t.Fatalf("answer %d, Content-Type %q", resp.StatusCode, ct)
		}
		sc := bufio.NewScanner(resp.Body)
		id, d, seen := "", "", false
		for sc.Scan() {
			switch line := sc.Text(); {
			case line == "" && seen:
				ids, data = append(ids, id), append(data, d)
				id, d, seen = "", "", false
			case strings.HasPrefix(line, "id: "):
				id, seen = strings.TrimPrefix(line, "id: "), true
			case strings.HasPrefix(line, "data:"):
				d, seen = strings.TrimSpace(strings.TrimPrefix(line, "data:")), true
			}
		}
		return ids, data
	}
	checkProgress := func(what string, data []string, id string) {
		t.Helper()
		if len(data) != 5 {
			t.Fatalf("%s: %d events, want 4 progress and the response: %q", what, len(data), data)
		}
		for i, d := range data[:4] {
			if !strings.Contains(d, `"method":"notifications/progress"`) || !strings.Contains(d, `"progressToken":"tok"`) ||
				!strings.Contains(d, fmt.Sprintf(`"progress":%d`, i+1)) {
				t.Errorf("%s: event %d: %s", what, i, d)
			}
		}
		if !strings.Contains(data[4], `"id":`+id+`,"result"`) || !strings.Contains(data[4], "Long running operation completed") {
			t.Errorf("%s: last event: %s", what, data[4])
		}
	}

	// 2025-11-25, a session.
	resp := post(`{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}`)
	sid := resp.Header.Get("Mcp-Session-Id")
	resp.Body.Close()
	if sid == "" {
		t.Fatalf("initialize: %d, no session", resp.StatusCode)
	}
	ids, data := events(post(`{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"`+tool+`","arguments":{"duration":1,"steps":4},"_meta":{"progressToken":"tok"}}}`,
		"Mcp-Session-Id", sid, "MCP-Protocol-Version", "2025-11-25"))
	if len(data) == 0 || data[0] != "" || ids[0] == "" {
		t.Fatalf("2025-11-25: no priming event: %q %q", ids, data)
	}
	checkProgress("2025-11-25", data[1:], "2")

	// 2026-07-28, no session; /metrics shows the open stream meanwhile.
	modern := `{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"` + tool + `","arguments":{"duration":2,"steps":4},` +
		`"_meta":{"progressToken":"tok","io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{}}}}`
	var streams float64
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		deadline := time.Now().Add(2 * time.Second)
		for time.Now().Before(deadline) && streams == 0 {
			_, m := get(t, g.url("/metrics"))
			streams = metricValue(t, m, "mcpgateway_open_streams")
			time.Sleep(50 * time.Millisecond)
		}
	}()
	ids, data = events(post(modern, "MCP-Protocol-Version", "2026-07-28", "Mcp-Method", "tools/call", "Mcp-Name", tool))
	wg.Wait()
	for _, id := range ids {
		if id != "" {
			t.Errorf("2026-07-28: event ids %q", ids)
		}
	}
	checkProgress("2026-07-28", data, "3")
	if streams != 1 {
		t.Errorf("mcpgateway_open_streams during the stream: %v", streams)
	}
	_, m := get(t, g.url("/metrics"))
	if v := metricValue(t, m, "mcpgateway_open_streams"); v != 0 {
		t.Errorf("mcpgateway_open_streams after the stream: %v", v)
	}

	// A reload (HUP) replaces the workers while a stream runs: its worker
	// drains, and waits for the stream (within the graceful timeout).
	resp = post(strings.Replace(modern, `"duration":2`, `"duration":3`, 1),
		"MCP-Protocol-Version", "2026-07-28", "Mcp-Method", "tools/call", "Mcp-Name", tool)
	br := bufio.NewReader(resp.Body)
	if line, err := br.ReadString('\n'); err != nil || !strings.HasPrefix(line, ":") {
		t.Fatalf("stream start: %q %v", line, err)
	}
	g.Signal(syscall.SIGHUP)
	resp.Body = io.NopCloser(br)
	_, data = events(resp)
	checkProgress("2026-07-28 across a reload", data, "3")
	if !g.Log.Contains("worker draining") {
		t.Error("no worker drained during the stream")
	}

	// The official Go SDK's client, in each era.
	for _, version := range []string{"", "2025-11-25"} {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		var mu sync.Mutex
		var progress []float64
		client := mcp.NewClient(&mcp.Implementation{Name: "stream-test", Version: "1"}, &mcp.ClientOptions{
			ProgressNotificationHandler: func(_ context.Context, req *mcp.ProgressNotificationClientRequest) {
				mu.Lock()
				progress = append(progress, req.Params.Progress)
				mu.Unlock()
			},
		})
		transport := &mcp.StreamableClientTransport{Endpoint: g.url("/mcp"), HTTPClient: &http.Client{Transport: bearer{token}}, MaxRetries: -1}
		session, err := client.Connect(ctx, transport, &mcp.ClientSessionOptions{ProtocolVersion: version})
		if err != nil {
			t.Fatalf("Go SDK %q: connect: %v", version, err)
		}
		params := &mcp.CallToolParams{Name: tool, Arguments: map[string]any{"duration": 1, "steps": 4}}
		params.SetProgressToken("sdk")
		res, err := session.CallTool(ctx, params)
		if err != nil || res.IsError || len(res.Content) == 0 || !strings.Contains(res.Content[0].(*mcp.TextContent).Text, "completed") {
			t.Fatalf("Go SDK %q: CallTool: %v %+v", version, err, res)
		}
		// The SDK may run the handler of the last notification after
		// CallTool returns: they arrived before the result, on the stream.
		var got string
		for deadline := time.Now().Add(2 * time.Second); ; time.Sleep(10 * time.Millisecond) {
			mu.Lock()
			got = fmt.Sprint(progress)
			mu.Unlock()
			if got == "[1 2 3 4]" || time.Now().After(deadline) {
				break
			}
		}
		if got != "[1 2 3 4]" {
			t.Errorf("Go SDK %q: progress %v", version, got)
		}
		session.Close()
		cancel()
	}
}
