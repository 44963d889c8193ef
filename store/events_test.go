package store

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
)

// checkEvents compares a StreamEvents answer with the want seqs, and each
// event's data with what appendAll wrote for its seq.
func checkEvents(t *testing.T, what string, evs []StreamEvent, found bool, err error, wantFound bool, want ...int) {
	t.Helper()
	if err != nil || found != wantFound || len(evs) != len(want) {
		t.Fatalf("%s: %d events %+v, found %v, %v; want seqs %v, found %v", what, len(evs), evs, found, err, want, wantFound)
	}
	for i, ev := range evs {
		if ev.Seq != want[i] || string(ev.Data) != eventData(ev.Seq) || ev.Final != (ev.Seq == 3) {
			t.Errorf("%s: event %d = {%d %s %v}; want seq %d, data %s", what, i, ev.Seq, ev.Data, ev.Final, want[i], eventData(want[i]))
		}
	}
}

func eventData(seq int) string {
	if seq == 0 {
		return `{"id":7,"started":1}`
	}
	return fmt.Sprintf(`{"jsonrpc":"2.0","method":"notifications/progress","params":{"progress":%d}}`, seq)
}

// appendAll records the opening record and events 1 to 3 (3 final).
func appendAll(t *testing.T, s *Store, stream string, until time.Time) {
	t.Helper()
	for seq := 0; seq <= 3; seq++ {
		ev := StreamEvent{Seq: seq, Data: []byte(eventData(seq)), Final: seq == 3}
		if err := s.AppendStreamEvent(context.Background(), stream, ev, until); err != nil {
			t.Fatalf("append %d: %v", seq, err)
		}
	}
}

// Resumable stream events on every database and cache type: what one store
// (a worker) appends, another (a worker of another instance: a store of
// its own on the same database and Redis) reads at once, in order, from
// after, at most limit; a seq appended twice keeps the first; unknown and
// expired streams are not found.
func TestStreamEvents(t *testing.T) {
	ctx := context.Background()
	eachBackend(t, func(t *testing.T, o Options) {
		a := openMigrated(t, o)
		b := openStore(t, o)
		until := time.Now().Add(time.Hour)
		const stream = "session-1 0123abcd"

		for _, s := range []*Store{a, b} {
			evs, found, err := s.StreamEvents(ctx, stream, -1, 10)
			checkEvents(t, "unknown stream", evs, found, err, false)
		}
		appendAll(t, a, stream, until)
		for i, s := range []*Store{a, b} {
			evs, found, err := s.StreamEvents(ctx, stream, -1, 10)
			checkEvents(t, fmt.Sprintf("store %d, all", i), evs, found, err, true, 0, 1, 2, 3)
		}
		evs, found, err := b.StreamEvents(ctx, stream, 0, 2)
		checkEvents(t, "after 0, limit 2", evs, found, err, true, 1, 2)
		evs, found, err = b.StreamEvents(ctx, stream, 2, 10)
		checkEvents(t, "after 2", evs, found, err, true, 3)
		evs, found, err = b.StreamEvents(ctx, stream, -1, 1)
		checkEvents(t, "the opening record", evs, found, err, true, 0)
		// Nothing after the last yet: found, no events.
		evs, found, err = b.StreamEvents(ctx, stream, 3, 10)
		checkEvents(t, "after the last", evs, found, err, true)

		// With Redis the events live there, not in the database.
		if o.CacheType == CacheRedis {
			var n int
			if err := queryOne(ctx, a.db, "SELECT COUNT(*) FROM stream_events", nil, &n); err != nil || n != 0 {
				t.Errorf("%d rows in the database, %v; want none with Redis", n, err)
			}
			if n, err := a.redis.client.Do(ctx, a.redis.client.B().Zcard().Key(a.redis.eventsKey(stream)).Build()).AsInt64(); err != nil || n != 4 {
				t.Errorf("ZCARD in Redis = %d, %v; want 4", n, err)
			}
		}

		// The same seq again (from another worker, other bytes): the first
		// stays, no error, no second event of that seq.
		if err := b.AppendStreamEvent(ctx, stream, StreamEvent{Seq: 2, Data: []byte(`{"other":true}`)}, until); err != nil {
			t.Fatalf("re-append: %v", err)
		}
		if err := a.AppendStreamEvent(ctx, stream, StreamEvent{Seq: 0, Data: []byte(eventData(0))}, until); err != nil {
			t.Fatalf("re-append the opening record: %v", err)
		}
		evs, found, err = a.StreamEvents(ctx, stream, -1, 10)
		checkEvents(t, "after re-appends", evs, found, err, true, 0, 1, 2, 3)

		// A stream whose until has passed is not there, purged or not.
		appendAll(t, a, "expired", time.Now().Add(-time.Second))
		for i, s := range []*Store{a, b} {
			evs, found, err := s.StreamEvents(ctx, "expired", -1, 10)
			checkEvents(t, fmt.Sprintf("store %d, expired", i), evs, found, err, false)
			evs, found, err = s.StreamEvents(ctx, "expired", 1, 10)
			checkEvents(t, fmt.Sprintf("store %d, expired, after 1", i), evs, found, err, false)
		}
		// A later append does not bring its events back.
		if err := a.AppendStreamEvent(ctx, "expired", StreamEvent{Seq: 1, Data: []byte(eventData(1))}, until); err != nil {
			t.Fatal(err)
		}
		evs, found, err = b.StreamEvents(ctx, "expired", -1, 10)
		checkEvents(t, "expired, then appended to", evs, found, err, true, 1)

		// An append with an earlier until does not shorten the stream's life.
		if err := a.AppendStreamEvent(ctx, stream, StreamEvent{Seq: 4, Data: []byte(eventData(4))}, time.Now().Add(-time.Second)); err != nil {
			t.Fatal(err)
		}
		evs, found, err = b.StreamEvents(ctx, stream, 3, 10)
		checkEvents(t, "appended with an earlier until", evs, found, err, true, 4)

		// Bad input.
		for _, st := range []string{"", strings.Repeat("x", MaxStreamKeyLen+1)} {
			if err := a.AppendStreamEvent(ctx, st, StreamEvent{Seq: 1}, until); !errors.Is(err, ErrBadStreamEvent) {
				t.Errorf("append to a stream of %d bytes: %v", len(st), err)
			}
		}
		if err := a.AppendStreamEvent(ctx, stream, StreamEvent{Seq: -1}, until); !errors.Is(err, ErrBadStreamEvent) {
			t.Errorf("append of seq -1: %v", err)
		}
		if err := a.AppendStreamEvent(ctx, strings.Repeat("y", MaxStreamKeyLen), StreamEvent{Seq: 0}, until); err != nil {
			t.Errorf("append to a stream key of %d bytes: %v", MaxStreamKeyLen, err)
		}
	})
}

// Each append extends the life of the stream's earlier events: an event
// recorded with an until now past is still returned after a later append
// with a later until.
func TestStreamEventsExtended(t *testing.T) {
	ctx := context.Background()
	eachBackend(t, func(t *testing.T, o Options) {
		a := openMigrated(t, o)
		b := openStore(t, o)
		const stream = "session-2 extended"
		first := time.Now().Add(time.Second)
		if err := a.AppendStreamEvent(ctx, stream, StreamEvent{Seq: 0, Data: []byte(eventData(0))}, first); err != nil {
			t.Fatal(err)
		}
		if err := a.AppendStreamEvent(ctx, stream, StreamEvent{Seq: 1, Data: []byte(eventData(1))}, time.Now().Add(time.Hour)); err != nil {
			t.Fatal(err)
		}
		// Past the first until (whole seconds in the database).
		time.Sleep(time.Until(first.Truncate(time.Second).Add(time.Second + 100*time.Millisecond)))
		evs, found, err := b.StreamEvents(ctx, stream, -1, 10)
		checkEvents(t, "after the first until", evs, found, err, true, 0, 1)
	})
}

// The database's expired rows are purged by each new stream and by the
// revocation writes.
func TestStreamEventsPurged(t *testing.T) {
	ctx := context.Background()
	for _, d := range dialects {
		t.Run(d, func(t *testing.T) {
			t.Parallel()
			s := openMigrated(t, testOptions(t, dbURL(t, d), CacheDatabase))
			count := func() int {
				var n int
				if err := queryOne(ctx, s.db, "SELECT COUNT(*) FROM stream_events", nil, &n); err != nil {
					t.Fatal(err)
				}
				return n
			}
			// Each append to an expired stream deletes its rows first (as
			// Redis drops an expired set), so one row stays.
			appendAll(t, s, "old", time.Now().Add(-time.Second))
			if n := count(); n != 1 {
				t.Fatalf("%d rows after the appends; want 1", n)
			}
			appendAll(t, s, "new", time.Now().Add(time.Hour))
			if n := count(); n != 4 {
				t.Errorf("%d rows after a new stream; want 4 (the expired one purged)", n)
			}
			appendAll(t, s, "old2", time.Now().Add(-time.Second))
			if n := count(); n != 5 {
				t.Fatalf("%d rows after the appends; want 5", n)
			}
			if err := s.CancelCall(ctx, "call", time.Now().Add(time.Minute)); err != nil {
				t.Fatal(err)
			}
			if n := count(); n != 4 {
				t.Errorf("%d rows after a revocation write; want 4 (the expired one purged)", n)
			}
		})
	}
}

// With Redis the events live in Redis only, and a Redis outage is an error
// (the stream goes on without resumption), not a fall back to the database.
func TestStreamEventsRedisDown(t *testing.T) {
	ctx := context.Background()
	o := testOptions(t, sqliteURL(t), CacheRedis)
	o.CachePrefix = redisPrefix(t)
	o.RedisURL = fmt.Sprintf("redis://127.0.0.1:%d/0", freePort(t)) // nothing listens there
	o.RedisSocketTimeout = 300 * time.Millisecond
	o.RedisSocketConnectTimeout = 300 * time.Millisecond
	s := openMigrated(t, o)
	until := time.Now().Add(time.Hour)
	if err := s.AppendStreamEvent(ctx, "s", StreamEvent{Seq: 0}, until); err == nil {
		t.Error("append without Redis: no error")
	}
	if _, _, err := s.StreamEvents(ctx, "s", -1, 10); err == nil {
		t.Error("read without Redis: no error")
	}
	var n int
	if err := queryOne(ctx, s.db, "SELECT COUNT(*) FROM stream_events", nil, &n); err != nil || n != 0 {
		t.Errorf("%d rows in the database, %v; want none", n, err)
	}
}

// A cancellation recorded through one store (the worker that received
// notifications/cancelled) is seen by another (the worker running the
// call, possibly of another instance) within the coherence bound, on every
// database and cache type, and is a kind apart from the others.
func TestCallCancelled(t *testing.T) {
	ctx := context.Background()
	eachBackend(t, func(t *testing.T, o Options) {
		a := openMigrated(t, o)
		b := openStore(t, o)
		const key = "session-1 \"req-7\""
		// b has the negative answer cached, as a running call's poll would.
		if c, err := b.CallCancelled(ctx, key); err != nil || c {
			t.Fatalf("before: %v, %v", c, err)
		}
		if err := a.CancelCall(ctx, key, time.Now().Add(time.Minute)); err != nil {
			t.Fatal(err)
		}
		if c, err := a.CallCancelled(ctx, key); err != nil || !c {
			t.Fatalf("the writer does not see its cancellation: %v, %v", c, err)
		}
		took := waitFor(t, 2*time.Second, "b sees the cancellation", func() bool {
			c, err := b.CallCancelled(ctx, key)
			return err == nil && c
		})
		t.Logf("seen in %s", took)
		// Not a revocation of a session or a token of that id, and another
		// call is not cancelled.
		for _, kind := range []string{RevokedSession, RevokedJTI} {
			if r, err := b.IsRevoked(ctx, kind, key); err != nil || r {
				t.Errorf("%s %q revoked by a cancellation: %v, %v", kind, key, r, err)
			}
		}
		if c, err := b.CallCancelled(ctx, "session-1 \"req-8\""); err != nil || c {
			t.Errorf("another call: %v, %v", c, err)
		}
		// Past its until a cancellation no longer counts.
		if err := a.CancelCall(ctx, "old", time.Now().Add(-time.Second)); err != nil {
			t.Fatal(err)
		}
		if c, err := b.CallCancelled(ctx, "old"); err != nil || c {
			t.Errorf("expired cancellation: %v, %v", c, err)
		}
		for _, k := range []string{"", strings.Repeat("k", MaxRevocationIDLen+1)} {
			if err := a.CancelCall(ctx, k, time.Now().Add(time.Minute)); !errors.Is(err, ErrBadRevocation) {
				t.Errorf("CancelCall of a %d-byte key: %v", len(k), err)
			}
			if c, err := a.CallCancelled(ctx, k); err != nil || c {
				t.Errorf("CallCancelled of a %d-byte key: %v, %v", len(k), c, err)
			}
		}
	})
}

// The poll of a running call, once answered, is a near-cache hit.
func TestCallCancelledCached(t *testing.T) {
	ctx := context.Background()
	s := openMigrated(t, testOptions(t, sqliteURL(t), CacheDatabase))
	waitFor(t, time.Second, "trusted", func() bool { return s.trusted(s.now()) })
	if c, err := s.CallCancelled(ctx, "s c1"); err != nil || c {
		t.Fatal(c, err)
	}
	if _, ok := s.near.getRevoked(kindIndex(RevokedCancel), "s c1", s.now()); !ok {
		t.Fatal("a negative answer was not cached")
	}
	allocs := testing.AllocsPerRun(1000, func() {
		if c, _ := s.CallCancelled(ctx, "s c1"); c {
			t.Fatal("cancelled")
		}
	})
	if allocs > 1 {
		t.Errorf("CallCancelled allocates %.1f times on a hit", allocs)
	}
}
