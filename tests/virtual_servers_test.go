package tests

import (
	"context"
	"encoding/json"
	"net/http"
	"reflect"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/mcpgateway/mcpgateway/internal/proctest"
)

// An upstream registered alone and exposed one-to-one as a virtual server
// ("gateways":["everything"]): the official Go SDK's client, configured as
// for the upstream itself, pointed at /servers/everything/mcp of a gateway
// of two workers, lists the upstream's tools under their own names and
// calls echo and get-sum by them, lists the same resources, templates and
// prompts, reads a resource, gets a prompt and completes a prompt's and a
// template's argument, getting what the upstream itself answers, in both
// eras, its requests spread on both workers.
func TestVirtualServerOneToOne(t *testing.T) {
	upURL, _ := proctest.MustStartEverything(t)
	g := serve(t, []string{"FEDERATION_TIMEOUT=10s"}, "--workers", "2")
	token := g.token()

	code, body := httpDo(freshClient, "PUT", g.url("/admin/gateways/everything"), token, `{"url":"`+upURL+`"}`)
	if code != 200 {
		t.Fatalf("register: %d %s", code, body)
	}
	var reg struct{ Tools []string }
	if err := json.Unmarshal([]byte(body), &reg); err != nil || len(reg.Tools) == 0 {
		t.Fatalf("register: %v %s", err, body)
	}
	if code, body := httpDo(freshClient, "PUT", g.url("/admin/servers/everything"), token, `{"name":"Everything","tools":["nope"]}`); code != 400 || !strings.Contains(body, "nope") {
		t.Errorf("an unknown tool: %d %s", code, body)
	}
	if code, body := httpDo(freshClient, "PUT", g.url("/admin/servers/everything"), token, `{"name":"Everything","gateways":["nowhere"],"prompts":["everything-nope"]}`); code != 400 ||
		!strings.Contains(body, "Unknown gateways: nowhere; unknown prompts: everything-nope") {
		t.Errorf("an unknown upstream and prompt: %d %s", code, body)
	}
	if code, body := httpDo(freshClient, "PUT", g.url("/admin/servers/everything"), token,
		`{"name":"Everything","description":"the reference server, one-to-one","gateways":["everything"]}`); code != 200 {
		t.Fatalf("put server: %d %s", code, body)
	}
	if code, body := httpDo(freshClient, "GET", g.url("/admin/servers"), token, ""); code != 200 || !strings.Contains(body, `"id":"everything"`) || !strings.Contains(body, `"gateways":["everything"]`) {
		t.Errorf("list servers: %d %s", code, body)
	}

	connect := func(ctx context.Context, endpoint string, client *http.Client, version string) *mcp.ClientSession {
		t.Helper()
		// Sampling and elicitation declared, as the gateway declares them
		// to its upstreams (it relays them to its clients).
		c := mcp.NewClient(&mcp.Implementation{Name: "virtual-server-test", Version: "1"}, &mcp.ClientOptions{
			CreateMessageHandler: func(context.Context, *mcp.CreateMessageRequest) (*mcp.CreateMessageResult, error) {
				return &mcp.CreateMessageResult{Model: "m", Role: "assistant", Content: &mcp.TextContent{Text: "sampled"}}, nil
			},
			ElicitationHandler: func(context.Context, *mcp.ElicitRequest) (*mcp.ElicitResult, error) {
				return &mcp.ElicitResult{Action: "decline"}, nil
			},
		})
		transport := &mcp.StreamableClientTransport{Endpoint: endpoint, HTTPClient: client, MaxRetries: -1}
		session, err := c.Connect(ctx, transport, &mcp.ClientSessionOptions{ProtocolVersion: version})
		if err != nil {
			t.Fatalf("connect %s (%q): %v", endpoint, version, err)
		}
		return session
	}
	listNames := func(ctx context.Context, session *mcp.ClientSession) []string {
		t.Helper()
		var names []string
		for tool, err := range session.Tools(ctx, nil) {
			if err != nil {
				t.Fatalf("ListTools: %v", err)
			}
			names = append(names, tool.Name)
		}
		sort.Strings(names)
		return names
	}
	callText := func(ctx context.Context, session *mcp.ClientSession, name string, args map[string]any) string {
		t.Helper()
		res, err := session.CallTool(ctx, &mcp.CallToolParams{Name: name, Arguments: args})
		if err != nil || res.IsError || len(res.Content) == 0 {
			t.Fatalf("CallTool %s: %v %+v", name, err, res)
		}
		text, ok := res.Content[0].(*mcp.TextContent)
		if !ok {
			t.Fatalf("CallTool %s: %+v", name, res.Content[0])
		}
		return text.Text
	}

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	direct := connect(ctx, upURL, &http.Client{}, "")
	defer direct.Close()
	// The upstream's tools as the gateway registered them, by their own
	// names: the same as this client's, which declares what the gateway's
	// upstream client declares (sampling, elicitation, roots).
	var want []string
	directNames := listNames(ctx, direct)
	if len(directNames) != len(reg.Tools) {
		t.Errorf("the upstream offers %d tools (%v), the gateway registered %d (%v)", len(directNames), directNames, len(reg.Tools), reg.Tools)
	}
	offered := strings.Join(directNames, " ") + " "
	for _, name := range reg.Tools {
		own := strings.TrimPrefix(name, "everything-")
		if !strings.Contains(offered, own+" ") {
			t.Errorf("registered %s, not offered by the upstream (%s)", name, offered)
		}
		want = append(want, own)
	}
	sort.Strings(want)
	wantEcho := callText(ctx, direct, "echo", map[string]any{"message": "one-to-one"})
	wantSum := callText(ctx, direct, "get-sum", map[string]any{"a": 2, "b": 40})
	wantFeatures := features(ctx, t, direct)

	before := workerRequests(t, g)
	for _, version := range []string{"", "2025-11-25", "2025-06-18"} {
		// Within the coherence bound of the registration, on either worker.
		var session *mcp.ClientSession
		var got []string
		deadline := time.Now().Add(5 * time.Second)
		for {
			session = connect(ctx, g.url("/servers/everything/mcp"), &http.Client{Transport: freshBearer{token}}, version)
			if got = listNames(ctx, session); reflect.DeepEqual(got, want) || time.Now().After(deadline) {
				break
			}
			session.Close()
			time.Sleep(100 * time.Millisecond)
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("%q: tools on the virtual server %v; the upstream's %v", version, got, want)
		}
		for range 4 { // more than one call, so both workers are likely to serve some
			if echo := callText(ctx, session, "echo", map[string]any{"message": "one-to-one"}); echo != wantEcho {
				t.Errorf("%q: echo %q; the upstream answers %q", version, echo, wantEcho)
			}
			if sum := callText(ctx, session, "get-sum", map[string]any{"a": 2, "b": 40}); sum != wantSum || !strings.Contains(sum, "42") {
				t.Errorf("%q: get-sum %q; the upstream answers %q", version, sum, wantSum)
			}
		}
		// Resources, templates and prompts: the upstream's own, as it lists
		// them, read and got with the same results.
		if got := features(ctx, t, session); !reflect.DeepEqual(got, wantFeatures) {
			t.Errorf("%q: resources and prompts on the virtual server differ from the upstream's:\n got %s\nwant %s", version, got, wantFeatures)
		}
		if _, err := session.ReadResource(ctx, &mcp.ReadResourceParams{URI: "demo://nowhere"}); err == nil {
			t.Errorf("%q: an unknown resource read", version)
		}
		if version != "" { // completion is a method of the session revisions
			for _, ref := range []*mcp.CompleteReference{
				{Type: "ref/prompt", Name: "completable-prompt"},
				{Type: "ref/resource", URI: "demo://resource/dynamic/text/{resourceId}"},
			} {
				arg := mcp.CompleteParamsArgument{Name: "department", Value: "E"}
				if ref.Type == "ref/resource" {
					arg = mcp.CompleteParamsArgument{Name: "resourceId", Value: "1"}
				}
				want, err := direct.Complete(ctx, &mcp.CompleteParams{Ref: ref, Argument: arg})
				if err != nil || len(want.Completion.Values) == 0 {
					t.Fatalf("complete %+v directly: %v %+v", ref, err, want)
				}
				got, err := session.Complete(ctx, &mcp.CompleteParams{Ref: ref, Argument: arg})
				if err != nil || !reflect.DeepEqual(got.Completion.Values, want.Completion.Values) {
					t.Errorf("%q: complete %+v on the virtual server: %v %+v; directly %v", version, ref, err, got, want.Completion.Values)
				}
			}
		}
		// The gateway's names are not the server's.
		if res, err := session.CallTool(ctx, &mcp.CallToolParams{Name: "everything-echo", Arguments: map[string]any{"message": "x"}}); err == nil && !res.IsError {
			t.Errorf("%q: everything-echo called on the virtual server: %+v", version, res)
		}
		session.Close()
	}

	if after := workerRequests(t, g); !eachWorkerServed(before, after, 1) {
		t.Errorf("the SDK's requests did not reach both workers: %v -> %v", before, after)
	}

	// Deleted: the endpoint is gone on every worker within the bound
	// (half a second per worker, rpc/servers.go:serverTTL).
	if code, body := httpDo(freshClient, "DELETE", g.url("/admin/servers/everything"), token, ""); code != 204 {
		t.Fatalf("delete server: %d %s", code, body)
	}
	time.Sleep(time.Second)
	for i := range 10 { // fresh connections, spread on both workers
		code, body := httpDo(freshClient, "POST", g.url("/servers/everything/mcp"), token,
			`{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}`)
		if code != 404 {
			t.Fatalf("deleted server, request %d: %d %s", i, code, body)
		}
	}
}

// features lists a session's resources, templates and prompts, reads its
// first static document and a resource of its dynamic text template, and
// gets its args-prompt, as JSON for comparison.
func features(ctx context.Context, t *testing.T, session *mcp.ClientSession) string {
	t.Helper()
	resources, err := session.ListResources(ctx, nil)
	if err != nil {
		t.Fatalf("ListResources: %v", err)
	}
	templates, err := session.ListResourceTemplates(ctx, nil)
	if err != nil {
		t.Fatalf("ListResourceTemplates: %v", err)
	}
	prompts, err := session.ListPrompts(ctx, nil)
	if err != nil {
		t.Fatalf("ListPrompts: %v", err)
	}
	doc := ""
	for _, r := range resources.Resources {
		if doc == "" && strings.HasPrefix(r.URI, "demo://resource/static/document/") {
			doc = r.URI
		}
	}
	read, err := session.ReadResource(ctx, &mcp.ReadResourceParams{URI: doc})
	if err != nil || len(read.Contents) == 0 || read.Contents[0].Text == "" {
		t.Fatalf("ReadResource %q: %v %+v", doc, err, read)
	}
	dynamic, err := session.ReadResource(ctx, &mcp.ReadResourceParams{URI: "demo://resource/dynamic/text/7"})
	if err != nil || len(dynamic.Contents) == 0 {
		t.Fatalf("ReadResource of a template: %v %+v", err, dynamic)
	}
	prompt, err := session.GetPrompt(ctx, &mcp.GetPromptParams{Name: "args-prompt", Arguments: map[string]string{"city": "Oslo"}})
	if err != nil {
		t.Fatalf("GetPrompt: %v", err)
	}
	b, _ := json.Marshal(map[string]any{
		"resources": resources.Resources, "templates": templates.ResourceTemplates, "prompts": prompts.Prompts,
		"read": read.Contents, "dynamicURI": dynamic.Contents[0].URI,
		// Not its _meta: the gateway's, in 2026-07-28, names the gateway.
		"prompt": prompt.Messages, "promptDescription": prompt.Description,
	})
	return string(b)
}

// freshBearer sends each request with the token on a new connection, so
// that one client's requests spread on the workers.
type freshBearer struct{ token string }

func (b freshBearer) RoundTrip(req *http.Request) (*http.Response, error) {
	req = req.Clone(req.Context())
	req.Header.Set("Authorization", "Bearer "+b.token)
	return freshClient.Transport.RoundTrip(req)
}
