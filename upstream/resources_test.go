package upstream

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/mcpgateway/mcpgateway/internal/mcptest"
)

// The reference server's resources, templates and prompts: listed, read
// and got as it answers them.
func TestEverythingResourcesAndPrompts(t *testing.T) {
	url, _ := everything(t)
	c := New(Server{Name: "everything", URL: url, Timeout: 10 * time.Second}, nil)
	ctx := context.Background()
	defer c.Close(ctx)

	if _, known := c.Offers("resources"); known {
		t.Error("capabilities known before initialize")
	}
	resources, err := c.ListResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if offers, known := c.Offers("resources"); !offers || !known {
		t.Errorf("resources not offered: %s", c.Info().Capabilities)
	}
	if offers, known := c.Offers("no-such-capability"); offers || !known {
		t.Errorf("an unknown capability: %v %v", offers, known)
	}
	doc := ""
	for _, r := range resources {
		if strings.HasPrefix(r.Key, "demo://resource/static/document/") {
			doc = r.Key
			if !strings.Contains(string(r.Raw), `"mimeType"`) {
				t.Errorf("the entry was not kept whole: %s", r.Raw)
			}
			break
		}
	}
	if doc == "" {
		t.Fatalf("no static document among %d resources: %v", len(resources), resources)
	}
	res, err := c.ReadResource(ctx, doc)
	var read struct {
		Contents []struct{ URI, Text string } `json:"contents"`
	}
	if err != nil || json.Unmarshal(res, &read) != nil || len(read.Contents) != 1 || read.Contents[0].URI != doc || read.Contents[0].Text == "" {
		t.Fatalf("read %s: %.200s, %v", doc, res, err)
	}

	templates, err := c.ListResourceTemplates(ctx)
	if err != nil || !hasKey(templates, "demo://resource/dynamic/text/{resourceId}") {
		t.Fatalf("templates: %v, %v", templates, err)
	}
	if res, err := c.ReadResource(ctx, "demo://resource/dynamic/text/1"); err != nil || !strings.Contains(string(res), `"demo://resource/dynamic/text/1"`) {
		t.Fatalf("read from a template: %s, %v", res, err)
	}

	prompts, err := c.ListPrompts(ctx)
	if err != nil || !hasKey(prompts, "simple-prompt") || !hasKey(prompts, "args-prompt") {
		t.Fatalf("prompts: %v, %v", prompts, err)
	}
	res, err = c.GetPrompt(ctx, "args-prompt", json.RawMessage(`{"city":"Paris","state":"Texas"}`))
	if err != nil || !strings.Contains(string(res), "What's weather in Paris, Texas?") {
		t.Fatalf("args-prompt: %s, %v", res, err)
	}
	if res, err := c.GetPrompt(ctx, "simple-prompt", nil); err != nil || !strings.Contains(string(res), "simple prompt without arguments") {
		t.Fatalf("simple-prompt: %s, %v", res, err)
	}

	// Protocol errors are answers: passed on as RPCErrors, the breaker closed.
	var rpcErr *RPCError
	if _, err := c.GetPrompt(ctx, "no-such-prompt", nil); !errors.As(err, &rpcErr) {
		t.Errorf("an unknown prompt: %v", err)
	}
	if _, err := c.ReadResource(ctx, "demo://no/such/resource"); !errors.As(err, &rpcErr) {
		t.Errorf("an unknown resource: %v", err)
	}
	if s := c.Breaker().State(); s != Closed {
		t.Errorf("breaker %v after answered errors", s)
	}
}

func hasKey(entries []Entry, key string) bool {
	for _, e := range entries {
		if e.Key == key {
			return true
		}
	}
	return false
}

// Lists follow nextCursor over every page; entries without their key are
// dropped; a result that is not an object is an error.
func TestListPages(t *testing.T) {
	failures := 1
	fake := &mcptest.Server{Session: "s", Handle: func(_ *http.Request, method string, params json.RawMessage) string {
		var p struct{ Cursor string }
		json.Unmarshal(params, &p)
		switch {
		case method != "prompts/list":
			return ""
		case failures > 0:
			failures--
			return `"not a result object"`
		case p.Cursor == "":
			return `{"prompts":[{"name":"p0"},{"title":"no name"}],"nextCursor":"c1"}`
		case p.Cursor == "c1":
			return `{"prompts":[{"name":"p1"}],"nextCursor":"c2"}`
		}
		return fmt.Sprintf(`{"prompts":[{"name":"p2","cursor":%q}],"nextCursor":null}`, p.Cursor)
	}}
	srv := httptest.NewServer(fake)
	defer srv.Close()
	c := New(Server{Name: "fake", URL: srv.URL}, nil)
	// The first answer is not an object: the error is the result's, and
	// not retried (it came whole); the next call succeeds.
	if _, err := c.ListPrompts(context.Background()); err == nil {
		t.Fatal("a result that is not an object was accepted")
	}
	prompts, err := c.ListPrompts(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	for _, p := range prompts {
		keys = append(keys, p.Key)
	}
	if got := strings.Join(keys, ","); got != "p0,p1,p2" || !strings.Contains(string(prompts[2].Raw), `"c2"`) {
		t.Errorf("pages: %s (%s)", got, prompts[2].Raw)
	}
	if tools, err := c.ListTools(context.Background()); err == nil {
		t.Errorf("tools/list of a server without it: %v", tools)
	}
}
