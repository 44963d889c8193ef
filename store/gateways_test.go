package store

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"
)

// An upstream's tools join the catalogue under the gateway's names, in
// every dialect and cache type, and leave it with the upstream; names are
// never taken over; credentials are stored sealed.
func TestGateways(t *testing.T) {
	ctx := context.Background()
	key := SecretKey("a test secret")
	eachBackend(t, func(t *testing.T, o Options) {
		a, b := writerAndReader(t, o) // rest_test.go
		g := Gateway{Name: "everything", URL: "http://127.0.0.1:1/mcp", Transport: "streamablehttp", Enabled: true,
			AuthHeaderName: "Authorization", AuthHeaderValue: "Bearer s3cret"}
		tools := []Tool{
			{Name: "everything-echo", UpstreamName: "echo", Description: "Echo", InputSchema: json.RawMessage(`{"type":"object"}`)},
			{Name: "everything-get-sum", UpstreamName: "get-sum", OutputSchema: json.RawMessage(`{"type":"object"}`)},
		}
		if err := a.PutGateway(ctx, g, tools, key); err != nil {
			t.Fatal(err)
		}
		waitFor(t, 5*time.Second, "the upstream's tools in b's catalogue", func() bool {
			tl, err := b.Tool(ctx, "everything-get-sum")
			return err == nil && tl.Gateway == "everything" && tl.UpstreamName == "get-sum" && string(tl.OutputSchema) == `{"type":"object"}`
		})
		got, err := b.Gateway(ctx, "everything", key)
		if err != nil || got.AuthHeaderValue != "Bearer s3cret" || got.URL != g.URL {
			t.Fatalf("gateway read back: %+v, %v", got, err)
		}
		var sealed string
		if err := queryOne(ctx, a.db, "SELECT auth_header_value FROM gateways WHERE name = $1", []any{"everything"}, &sealed); err != nil || strings.Contains(sealed, "s3cret") {
			t.Fatalf("stored credential %q (%v): want it sealed", sealed, err)
		}
		if _, err := b.Gateway(ctx, "everything", SecretKey("another secret")); err == nil {
			t.Error("credentials opened with another secret")
		}
		// An upstream without credentials stays readable when another's
		// credential does not open.
		plain := Gateway{Name: "plain", URL: "http://127.0.0.1:3/mcp", Transport: "streamablehttp", Enabled: true}
		if err := a.PutGateway(ctx, plain, nil, key); err != nil {
			t.Fatal(err)
		}
		if got, err := b.Gateway(ctx, "plain", SecretKey("another secret")); err != nil || got != plain {
			t.Errorf("plain upstream read with another secret: %+v, %v", got, err)
		}
		// A name taken by a built-in tool or another gateway's tool is refused, and nothing changes.
		other := Gateway{Name: "other", URL: "http://127.0.0.1:2/mcp", Transport: "streamablehttp", Enabled: true}
		for _, name := range []string{"get_system_time", "everything-echo"} {
			if err := a.PutGateway(ctx, other, []Tool{{Name: name, UpstreamName: "x"}}, key); !errors.Is(err, ErrConflict) {
				t.Errorf("tool %q taken over: %v", name, err)
			}
		}
		if _, err := a.Gateway(ctx, "other", key); !errors.Is(err, ErrNotFound) {
			t.Errorf("a refused registration was kept: %v", err)
		}
		// Re-registration replaces the tool list; deletion removes the tools.
		if err := a.PutGateway(ctx, g, tools[:1], key); err != nil {
			t.Fatal(err)
		}
		waitFor(t, 5*time.Second, "a tool the upstream no longer lists gone from b", func() bool {
			_, err := b.Tool(ctx, "everything-get-sum")
			return errors.Is(err, ErrNotFound)
		})
		if err := a.DeleteGateway(ctx, "everything"); err != nil {
			t.Fatal(err)
		}
		waitFor(t, 5*time.Second, "the upstream's tools gone from b", func() bool {
			_, err := b.Tool(ctx, "everything-echo")
			return errors.Is(err, ErrNotFound)
		})
		if err := a.DeleteGateway(ctx, "everything"); !errors.Is(err, ErrNotFound) {
			t.Errorf("deleting it again: %v", err)
		}
		if err := a.PutGateway(ctx, g, nil, nil); err == nil {
			t.Error("credentials stored without a key")
		}
	})
}
