package store

import (
	"context"
	"errors"
	"reflect"
	"testing"
)

// A virtual server written through one store is read by another (another
// worker), with its tools, resources, prompts and whole upstreams,
// replaced whole, listed, and deleted, in every dialect.
func TestServers(t *testing.T) {
	ctx := context.Background()
	eachBackend(t, func(t *testing.T, o Options) {
		a, b := writerAndReader(t, o)
		if _, err := b.Server(ctx, "everything"); !errors.Is(err, ErrNotFound) {
			t.Fatalf("unknown server: %v", err)
		}
		v := Server{ID: "everything", Name: "Everything", Description: "the reference server",
			Tools: []string{"everything-echo", "convert_time"}, Resources: []string{"demo://resource/static/document/architecture.md", "demo://resource/dynamic/text/{resourceId}"},
			Prompts: []string{"everything-simple-prompt"}, Gateways: []string{"everything"}}
		if err := a.PutServer(ctx, v); err != nil {
			t.Fatal(err)
		}
		if got, err := b.Server(ctx, "everything"); err != nil || !reflect.DeepEqual(got, v) {
			t.Fatalf("read back: %+v, %v", got, err)
		}
		v.Tools, v.Name, v.Resources, v.Gateways = []string{"get_system_time"}, "Time", []string{}, []string{"other", "everything"}
		if err := a.PutServer(ctx, v); err != nil {
			t.Fatal(err)
		}
		if err := a.PutServer(ctx, Server{ID: "empty"}); err != nil {
			t.Fatal(err)
		}
		list, err := b.Servers(ctx)
		want := []Server{{ID: "empty", Tools: []string{}, Resources: []string{}, Prompts: []string{}, Gateways: []string{}}, v}
		if err != nil || !reflect.DeepEqual(list, want) {
			t.Fatalf("servers = %+v, %v; want %+v", list, err, want)
		}
		// A row as migration 6 wrote it reads with empty lists (migration 8's defaults).
		if _, err := a.db.exec(ctx, `INSERT INTO virtual_servers (id, tools) VALUES ('old', '["convert_time"]')`); err != nil {
			t.Fatal(err)
		}
		old := Server{ID: "old", Tools: []string{"convert_time"}, Resources: []string{}, Prompts: []string{}, Gateways: []string{}}
		if got, err := b.Server(ctx, "old"); err != nil || !reflect.DeepEqual(got, old) {
			t.Errorf("a server of migration 6: %+v, %v", got, err)
		}
		if err := b.DeleteServer(ctx, "everything"); err != nil {
			t.Fatal(err)
		}
		if err := a.DeleteServer(ctx, "everything"); !errors.Is(err, ErrNotFound) {
			t.Errorf("second delete: %v", err)
		}
		if _, err := a.Server(ctx, "everything"); !errors.Is(err, ErrNotFound) {
			t.Errorf("deleted server: %v", err)
		}
	})
}
