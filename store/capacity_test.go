package store

import (
	"context"
	"strings"
	"testing"
)

func TestCheckCapacity(t *testing.T) {
	ctx := context.Background()
	o := testOptions(t, testDatabaseURL(), CacheNone)
	o.PoolSize, o.MaxOverflow = 5, 5

	err := CheckCapacity(ctx, o, 1000)
	if err == nil {
		t.Fatal("1000 workers × 10 connections accepted")
	}
	msg := err.Error()
	for _, want := range []string{"1000 workers", "DB_POOL_SIZE 5", "DB_MAX_OVERFLOW 5", "10000 connections",
		"max_connections", "superuser_reserved_connections", "in use by other clients", "raise max_connections"} {
		if !strings.Contains(msg, want) {
			t.Errorf("error lacks %q: %s", want, msg)
		}
	}
	t.Log(msg)

	o.PoolSize, o.MaxOverflow = 1, 1
	if err := CheckCapacity(ctx, o, 2); err != nil {
		t.Errorf("2 workers × 2 connections refused: %v", err)
	}

	// SQLite has no connection limit to check.
	if err := CheckCapacity(ctx, testOptions(t, sqliteURL(t), CacheNone), 1000); err != nil {
		t.Errorf("SQLite: %v", err)
	}
	// A bad URL is reported, not ignored.
	if err := CheckCapacity(ctx, testOptions(t, "mysql://x", CacheNone), 1); err == nil {
		t.Error("bad DATABASE_URL: no error")
	}
}
