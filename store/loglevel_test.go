package store

import (
	"context"
	"testing"
	"time"
)

// Session log levels on every database and cache type: a level set through
// one store is seen by another (another worker or instance) within the
// coherence bound, a later one replaces it, and it ends with its Until.
func TestSessionLogLevels(t *testing.T) {
	ctx := context.Background()
	eachBackend(t, func(t *testing.T, o Options) {
		a := openMigrated(t, o)
		b := openStore(t, o)
		const sid = "session-1"
		if l, err := b.SessionLogLevel(ctx, sid); err != nil || l != "" {
			t.Fatalf("before: %q, %v", l, err)
		}
		until := time.Now().Add(time.Hour)
		for _, level := range []string{"warning", "debug"} {
			if err := a.SetSessionLogLevel(ctx, sid, level, until); err != nil {
				t.Fatal(err)
			}
			if l, err := a.SessionLogLevel(ctx, sid); err != nil || l != level {
				t.Fatalf("the writer reads %q, %v; want %s", l, err, level)
			}
			waitFor(t, time.Second, "b sees "+level, func() bool {
				l, err := b.SessionLogLevel(ctx, sid)
				return err == nil && l == level
			})
		}
		// A level is not a revocation of the session, nor of a jti.
		if r, err := b.IsRevoked(ctx, RevokedSession, sid); err != nil || r {
			t.Errorf("session revoked by a level: %v, %v", r, err)
		}
		// An expired level no longer counts.
		if err := a.SetSessionLogLevel(ctx, "session-2", "info", time.Now().Add(-time.Second)); err != nil {
			t.Fatal(err)
		}
		if l, err := b.SessionLogLevel(ctx, "session-2"); err != nil || l != "" {
			t.Errorf("expired level: %q, %v", l, err)
		}
		if err := a.SetSessionLogLevel(ctx, "", "info", until); err == nil {
			t.Error("empty session id accepted")
		}
	})
}
