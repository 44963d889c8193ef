package store

import (
	"context"
	"errors"
	"reflect"
	"testing"
)

// A virtual server written through one store is read by another (another
// worker), replaced whole, listed, and deleted, in every dialect.
func TestServers(t *testing.T) {
	ctx := context.Background()
	eachBackend(t, func(t *testing.T, o Options) {
		a, b := writerAndReader(t, o)
		if _, err := b.Server(ctx, "everything"); !errors.Is(err, ErrNotFound) {
			t.Fatalf("unknown server: %v", err)
		}
		v := Server{ID: "everything", Name: "Everything", Description: "the reference server", Tools: []string{"everything-echo", "convert_time"}}
		if err := a.PutServer(ctx, v); err != nil {
			t.Fatal(err)
		}
		if got, err := b.Server(ctx, "everything"); err != nil || !reflect.DeepEqual(got, v) {
			t.Fatalf("read back: %+v, %v", got, err)
		}
		v.Tools, v.Name = []string{"get_system_time"}, "Time"
		if err := a.PutServer(ctx, v); err != nil {
			t.Fatal(err)
		}
		if err := a.PutServer(ctx, Server{ID: "empty"}); err != nil {
			t.Fatal(err)
		}
		list, err := b.Servers(ctx)
		want := []Server{{ID: "empty", Tools: []string{}}, v}
		if err != nil || !reflect.DeepEqual(list, want) {
			t.Fatalf("servers = %+v, %v; want %+v", list, err, want)
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
