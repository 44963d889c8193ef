package store

import (
	"context"
	"strings"
	"testing"
	"time"
)

// A session's subscriptions written by one store are read by another (a
// worker of another instance) within the coherence bound; a later write
// replaces them.
func TestSessionSubscriptions(t *testing.T) {
	eachBackend(t, func(t *testing.T, o Options) {
		ctx := context.Background()
		a := openMigrated(t, o)
		b := openStore(t, o)
		sid := randomName("sid")
		until := time.Now().Add(time.Hour)
		if err := a.SetSessionSubscriptions(ctx, sid, []string{"test://a", "test://b c"}, until); err != nil {
			t.Fatal(err)
		}
		waitFor(t, 2*time.Second, "b reads the subscriptions", func() bool {
			uris, err := b.SessionSubscriptions(ctx, sid)
			return err == nil && strings.Join(uris, ",") == "test://a,test://b c"
		})
		if err := a.SetSessionSubscriptions(ctx, sid, nil, until); err != nil {
			t.Fatal(err)
		}
		waitFor(t, 2*time.Second, "b reads the emptied list", func() bool {
			uris, err := b.SessionSubscriptions(ctx, sid)
			return err == nil && len(uris) == 0
		})
		if uris, err := b.SessionSubscriptions(ctx, "other"); err != nil || uris != nil {
			t.Errorf("another session: %v %v", uris, err)
		}
	})
}
