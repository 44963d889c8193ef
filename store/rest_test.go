package store

import (
	"context"
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"
)

// A REST tool's endpoint travels with the catalogue, in every dialect and
// cache type (Redis holds the catalogue as JSON): another worker's store
// has it within the coherence bound, its credential only sealed; a PUT
// without an endpoint keeps it; its name cannot be taken by an upstream.
func TestRESTTools(t *testing.T) {
	ctx := context.Background()
	key := SecretKey("a test secret")
	eachBackend(t, func(t *testing.T, o Options) {
		a, b := writerAndReader(t, o)
		sealed, err := SealSecret(key, "Bearer rest-s3cret")
		if err != nil {
			t.Fatal(err)
		}
		ep := &RESTEndpoint{Method: "POST", URL: "http://127.0.0.1:1/items/{id}", Headers: map[string]string{"Accept": "application/json"},
			Query: []string{"q"}, Body: []string{"item"}, AuthHeaderName: "Authorization", SealedAuth: sealed}
		schema := json.RawMessage(`{"type":"object","properties":{"id":{"type":"string"}}}`)
		if err := a.PutTool(ctx, Tool{Name: "items", Description: "Items", InputSchema: schema, Enabled: true, REST: ep}); err != nil {
			t.Fatal(err)
		}
		waitFor(t, 5*time.Second, "the REST tool in b's catalogue", func() bool {
			tl, err := b.Tool(ctx, "items")
			return err == nil && reflect.DeepEqual(tl.REST, ep) && string(tl.InputSchema) == string(schema)
		})
		var col string
		if err := queryOne(ctx, a.db, "SELECT rest FROM tools WHERE name = $1", []any{"items"}, &col); err != nil || strings.Contains(col, "s3cret") {
			t.Fatalf("stored endpoint %q (%v): want the credential sealed", col, err)
		}
		tl, _ := b.Tool(ctx, "items")
		if plain, err := OpenSecret(key, tl.REST.SealedAuth); err != nil || plain != "Bearer rest-s3cret" {
			t.Fatalf("credential read back: %q, %v", plain, err)
		}

		// A PUT without an endpoint (a description, disabling) keeps it.
		if err := a.PutTool(ctx, Tool{Name: "items", Description: "Items, renamed", InputSchema: schema}); err != nil {
			t.Fatal(err)
		}
		all, err := a.AllTools(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, tl := range all {
			if tl.Name == "items" && (!reflect.DeepEqual(tl.REST, ep) || tl.Enabled || tl.Description != "Items, renamed") {
				t.Errorf("after a PUT without an endpoint: %+v", tl)
			}
		}
		waitFor(t, 5*time.Second, "the disabled REST tool gone from b", func() bool {
			_, err := b.Tool(ctx, "items")
			return errors.Is(err, ErrNotFound)
		})
		// A new endpoint replaces the old one whole.
		ep2 := &RESTEndpoint{Method: "GET", URL: "http://127.0.0.1:2/search"}
		if err := a.PutTool(ctx, Tool{Name: "items", InputSchema: schema, Enabled: true, REST: ep2}); err != nil {
			t.Fatal(err)
		}
		waitFor(t, 5*time.Second, "the new endpoint in b's catalogue", func() bool {
			tl, err := b.Tool(ctx, "items")
			return err == nil && reflect.DeepEqual(tl.REST, ep2)
		})
		// Built-in tools have none.
		if tl, err := b.Tool(ctx, "get_system_time"); err != nil || tl.REST != nil {
			t.Errorf("a built-in tool: %+v, %v", tl, err)
		}
		// An upstream cannot take the REST tool's name.
		g := Gateway{Name: "up", URL: "http://127.0.0.1:3/mcp", Transport: "streamablehttp", Enabled: true}
		if err := a.PutGateway(ctx, g, []Tool{{Name: "items", UpstreamName: "x"}}, key); !errors.Is(err, ErrConflict) {
			t.Errorf("an upstream took the REST tool's name: %v", err)
		}
	})
}

// writerAndReader opens two stores on one migrated database, as two
// workers: a writes, and b has cached the catalogue before the write.
func writerAndReader(t *testing.T, o Options) (a, b *Store) {
	t.Helper()
	a, b = openMigrated(t, o), openStore(t, o)
	if _, err := b.Tools(context.Background()); err != nil {
		t.Fatal(err)
	}
	return a, b
}
