package tests

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/mcpgateway/mcpgateway/internal/proctest"
)

// The reference server's resources and prompts through a gateway of two
// workers: listed (prompts namespaced, URIs the upstream's own), read and
// got on fresh connections (so on both workers) in a 2025-11-25 session,
// on the 2026-07-28 stateless path, and with the official Go SDK's client
// in both eras; an unknown URI gets the revision's error.
func TestFederatedResourcesAndPrompts(t *testing.T) {
	upURL, _ := proctest.MustStartEverything(t)
	g := serve(t, []string{"FEDERATION_TIMEOUT=10s"}, "--workers", "2")
	token := g.token()
	if code, body := httpDo(freshClient, "PUT", g.url("/admin/gateways/everything"), token, `{"url":"`+upURL+`"}`); code != 200 {
		t.Fatalf("register: %d %s", code, body)
	}

	// 2025-11-25, a session.
	code, body, sid := sessionPost(t, g, token, "", `{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}`)
	if code != 200 || sid == "" || !strings.Contains(body, `"resources":{`) || !strings.Contains(body, `"prompts":{`) {
		t.Fatalf("initialize: %d %s", code, body)
	}
	result := func(body string) map[string]any {
		t.Helper()
		code, resp, _ := sessionPost(t, g, token, sid, body)
		var r struct {
			Result map[string]any
			Error  any
		}
		if json.Unmarshal([]byte(resp), &r); code != 200 || r.Result == nil {
			t.Fatalf("%s: %d %s", body, code, resp)
		}
		return r.Result
	}
	var list struct {
		Resources []struct{ URI string }
		Prompts   []struct{ Name string }
	}
	raw, _ := json.Marshal(result(`{"jsonrpc":"2.0","id":2,"method":"resources/list"}`))
	json.Unmarshal(raw, &list)
	doc := ""
	for _, r := range list.Resources {
		if strings.HasPrefix(r.URI, "demo://resource/static/document/") {
			doc = r.URI
		}
	}
	if doc == "" {
		t.Fatalf("resources/list has no static document: %s", raw)
	}
	raw, _ = json.Marshal(result(`{"jsonrpc":"2.0","id":3,"method":"resources/templates/list"}`))
	if !strings.Contains(string(raw), `"demo://resource/dynamic/text/{resourceId}"`) {
		t.Errorf("resources/templates/list: %s", raw)
	}
	raw, _ = json.Marshal(result(`{"jsonrpc":"2.0","id":4,"method":"prompts/list"}`))
	if !strings.Contains(string(raw), `"everything-simple-prompt"`) || !strings.Contains(string(raw), `"everything-args-prompt"`) {
		t.Errorf("prompts/list: %s", raw)
	}
	before := workerRequests(t, g)
	for i := range 6 {
		raw, _ = json.Marshal(result(fmt.Sprintf(`{"jsonrpc":"2.0","id":%d,"method":"resources/read","params":{"uri":%q}}`, 10+i, doc)))
		if !strings.Contains(string(raw), doc) || !strings.Contains(string(raw), `"text"`) {
			t.Fatalf("resources/read %s: %.300s", doc, raw)
		}
		raw, _ = json.Marshal(result(`{"jsonrpc":"2.0","id":5,"method":"resources/read","params":{"uri":"demo://resource/dynamic/text/7"}}`))
		if !strings.Contains(string(raw), `"demo://resource/dynamic/text/7"`) {
			t.Fatalf("resources/read from a template: %.300s", raw)
		}
		raw, _ = json.Marshal(result(`{"jsonrpc":"2.0","id":6,"method":"prompts/get","params":{"name":"everything-args-prompt","arguments":{"city":"Paris"}}}`))
		if !strings.Contains(string(raw), "What's weather in Paris?") {
			t.Fatalf("prompts/get: %s", raw)
		}
	}
	if after := workerRequests(t, g); !eachWorkerServed(before, after, 1) {
		t.Errorf("the reads did not reach both workers: %v -> %v", before, after)
	}
	if _, body, _ := sessionPost(t, g, token, sid, `{"jsonrpc":"2.0","id":7,"method":"resources/read","params":{"uri":"demo://nowhere"}}`); !strings.Contains(body, `"code":-32002`) {
		t.Errorf("an unknown resource in 2025-11-25: %s", body)
	}

	// 2026-07-28, no session.
	res, err := modernDo(g, token, "resources/read", doc, `"uri":"`+doc+`"`)
	if err != nil || res["ttlMs"] != float64(0) || !strings.Contains(fmt.Sprint(res["contents"]), doc) {
		t.Errorf("2026-07-28 resources/read: %v %v", res, err)
	}
	if res, err = modernDo(g, token, "prompts/get", "everything-simple-prompt", `"name":"everything-simple-prompt"`); err != nil ||
		!strings.Contains(fmt.Sprint(res["messages"]), "simple prompt without arguments") {
		t.Errorf("2026-07-28 prompts/get: %v %v", res, err)
	}
	if res, err = modernDo(g, token, "resources/list", "", ""); err != nil || !strings.Contains(fmt.Sprint(res["resources"]), doc) {
		t.Errorf("2026-07-28 resources/list: %v %v", res, err)
	}
	if _, err = modernDo(g, token, "resources/read", "demo://nowhere", `"uri":"demo://nowhere"`); err == nil || !strings.Contains(err.Error(), `"code":-32602`) {
		t.Errorf("an unknown resource in 2026-07-28: %v", err)
	}

	// The official Go SDK's client, in each era.
	for _, version := range []string{"", "2025-11-25"} {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		client := mcp.NewClient(&mcp.Implementation{Name: "resources-test", Version: "1"}, nil)
		transport := &mcp.StreamableClientTransport{Endpoint: g.url("/mcp"), HTTPClient: &http.Client{Transport: bearer{token}}, MaxRetries: -1}
		session, err := client.Connect(ctx, transport, &mcp.ClientSessionOptions{ProtocolVersion: version})
		if err != nil {
			t.Fatalf("Go SDK %q: connect: %v", version, err)
		}
		resources, err := session.ListResources(ctx, nil)
		if err != nil || len(resources.Resources) == 0 {
			t.Fatalf("Go SDK %q: ListResources: %v %v", version, err, resources)
		}
		read, err := session.ReadResource(ctx, &mcp.ReadResourceParams{URI: doc})
		if err != nil || len(read.Contents) != 1 || read.Contents[0].URI != doc || read.Contents[0].Text == "" {
			t.Fatalf("Go SDK %q: ReadResource: %v %+v", version, err, read)
		}
		prompts, err := session.ListPrompts(ctx, nil)
		if err != nil {
			t.Fatalf("Go SDK %q: ListPrompts: %v", version, err)
		}
		found := false
		for _, p := range prompts.Prompts {
			found = found || p.Name == "everything-args-prompt"
		}
		if !found {
			t.Fatalf("Go SDK %q: ListPrompts: %+v", version, prompts)
		}
		got, err := session.GetPrompt(ctx, &mcp.GetPromptParams{Name: "everything-args-prompt", Arguments: map[string]string{"city": "Oslo"}})
		if err != nil || len(got.Messages) != 1 {
			t.Fatalf("Go SDK %q: GetPrompt: %v %+v", version, err, got)
		}
		if text, ok := got.Messages[0].Content.(*mcp.TextContent); !ok || !strings.Contains(text.Text, "Oslo") {
			t.Fatalf("Go SDK %q: GetPrompt: %+v", version, got)
		}
		if version == "2025-11-25" { // completion is a method of the session revisions
			compareCompletions(ctx, t, session, upURL)
		}
		session.Close()
		cancel()
	}
}

// compareCompletions asks the gateway's session and the upstream directly
// for the same completions: a prompt's argument (alone, and narrowed by
// the context of another) and a resource template's; the values must be
// the same, and not empty.
func compareCompletions(ctx context.Context, t *testing.T, gw *mcp.ClientSession, upURL string) {
	t.Helper()
	direct, err := mcp.NewClient(&mcp.Implementation{Name: "direct", Version: "1"}, nil).
		Connect(ctx, &mcp.StreamableClientTransport{Endpoint: upURL, MaxRetries: -1}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer direct.Close()
	templates, err := direct.ListResourceTemplates(ctx, nil)
	if err != nil || len(templates.ResourceTemplates) == 0 {
		t.Fatalf("the upstream's templates: %v %v", err, templates)
	}
	template := templates.ResourceTemplates[0].URITemplate
	for _, c := range []struct {
		ref      *mcp.CompleteReference // as the gateway names it
		upstream string                 // the prompt's name upstream ("": the same ref)
		arg      mcp.CompleteParamsArgument
		context  map[string]string
	}{
		{&mcp.CompleteReference{Type: "ref/prompt", Name: "everything-completable-prompt"}, "completable-prompt", mcp.CompleteParamsArgument{Name: "department", Value: "E"}, nil},
		{&mcp.CompleteReference{Type: "ref/prompt", Name: "everything-completable-prompt"}, "completable-prompt", mcp.CompleteParamsArgument{Name: "name", Value: ""}, map[string]string{"department": "Engineering"}},
		{&mcp.CompleteReference{Type: "ref/resource", URI: template}, "", mcp.CompleteParamsArgument{Name: "resourceId", Value: "1"}, nil},
	} {
		params := &mcp.CompleteParams{Ref: c.ref, Argument: c.arg}
		if c.context != nil {
			params.Context = &mcp.CompleteContext{Arguments: c.context}
		}
		through, err := gw.Complete(ctx, params)
		if err != nil {
			t.Fatalf("complete %+v through the gateway: %v", c.ref, err)
		}
		if c.upstream != "" {
			params.Ref = &mcp.CompleteReference{Type: "ref/prompt", Name: c.upstream}
		}
		want, err := direct.Complete(ctx, params)
		if err != nil {
			t.Fatalf("complete %+v directly: %v", params.Ref, err)
		}
		if len(want.Completion.Values) == 0 || strings.Join(through.Completion.Values, ",") != strings.Join(want.Completion.Values, ",") {
			t.Errorf("complete %+v %+v: %v through the gateway, %v directly", c.ref, c.arg, through.Completion.Values, want.Completion.Values)
		}
	}
}

// sessionPost posts body to /mcp as a 2025-11-25 client in session sid
// ("": none, for initialize), on a fresh connection; it returns the
// status, the body and the session id answered.
func sessionPost(t *testing.T, g *gateway, tok, sid, body string) (int, string, string) {
	t.Helper()
	req, err := tokRequest("POST", g.url("/mcp"), tok, body)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Accept", "application/json, text/event-stream")
	if sid != "" {
		req.Header.Set("Mcp-Session-Id", sid)
		req.Header.Set("MCP-Protocol-Version", "2025-11-25")
	}
	resp, err := freshClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), resp.Header.Get("Mcp-Session-Id")
}
