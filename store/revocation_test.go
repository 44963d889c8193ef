package store

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
)

// Revocations on every database and cache type: a revocation made through
// one store is seen by another (another worker or instance) within the
// coherence bound, answers are cached, and expired ones stop counting.
func TestRevocations(t *testing.T) {
	ctx := context.Background()
	eachBackend(t, func(t *testing.T, o Options) {
		a := openMigrated(t, o)
		b := openStore(t, o)
		const jti = "0b8e7d1c-1111-4222-8333-944455556666"
		if r, err := b.IsRevoked(ctx, RevokedJTI, jti); err != nil || r {
			t.Fatalf("IsRevoked before: %v, %v", r, err)
		}
		if _, err := a.Revocation(ctx, RevokedJTI, jti); !errors.Is(err, ErrNotFound) {
			t.Fatalf("Revocation before: %v", err)
		}
		until := time.Now().Add(time.Hour).Truncate(time.Second)
		if err := a.Revoke(ctx, Revocation{Kind: RevokedJTI, ID: jti, Until: until, By: "admin@example.com", Reason: "leaked"}); err != nil {
			t.Fatal(err)
		}
		if r, err := a.IsRevoked(ctx, RevokedJTI, jti); err != nil || !r {
			t.Fatalf("the writer does not read its own revocation: %v, %v", r, err)
		}
		took := waitFor(t, time.Second, "b sees the revocation", func() bool {
			r, err := b.IsRevoked(ctx, RevokedJTI, jti)
			return err == nil && r
		})
		t.Logf("seen in %s", took)
		// Another kind with the same id is not revoked.
		if r, err := b.IsRevoked(ctx, RevokedSession, jti); err != nil || r {
			t.Errorf("session %s: %v, %v", jti, r, err)
		}
		rec, err := b.Revocation(ctx, RevokedJTI, jti)
		if err != nil || !rec.Until.Equal(until) || rec.By != "admin@example.com" || rec.Reason != "leaked" ||
			time.Since(rec.RevokedAt) > time.Minute {
			t.Errorf("Revocation: %+v, %v", rec, err)
		}
		// Revoking again keeps the later Until, and the first record.
		if err := a.Revoke(ctx, Revocation{Kind: RevokedJTI, ID: jti, Until: until.Add(-time.Minute), By: "other@example.com"}); err != nil {
			t.Fatal(err)
		}
		if rec, err := b.Revocation(ctx, RevokedJTI, jti); err != nil || !rec.Until.Equal(until) || rec.By != "admin@example.com" {
			t.Errorf("after a second revocation: %+v, %v", rec, err)
		}
		// Without Until: kept for good.
		if err := a.Revoke(ctx, Revocation{Kind: RevokedSession, ID: "s1"}); err != nil {
			t.Fatal(err)
		}
		waitFor(t, time.Second, "b sees the session revocation", func() bool {
			r, err := b.IsRevoked(ctx, RevokedSession, "s1")
			return err == nil && r
		})
		// Past its Until a revocation no longer counts, and the next
		// write purges it.
		if err := a.Revoke(ctx, Revocation{Kind: RevokedJTI, ID: "old", Until: time.Now().Add(-time.Second)}); err != nil {
			t.Fatal(err)
		}
		if r, err := b.IsRevoked(ctx, RevokedJTI, "old"); err != nil || r {
			t.Errorf("expired revocation: %v, %v", r, err)
		}
		if err := a.Revoke(ctx, Revocation{Kind: RevokedJTI, ID: "another", Until: until}); err != nil {
			t.Fatal(err)
		}
		var n int
		if err := queryOne(ctx, a.db, "SELECT COUNT(*) FROM revocations WHERE id = 'old'", nil, &n); err != nil || n != 0 {
			t.Errorf("expired row not purged: %d, %v", n, err)
		}
		// Bad input.
		for _, r := range []Revocation{{Kind: "nope", ID: "x"}, {Kind: RevokedJTI}, {Kind: RevokedJTI, ID: string(make([]byte, MaxRevocationIDLen+1))}} {
			if err := a.Revoke(ctx, r); !errors.Is(err, ErrBadRevocation) {
				t.Errorf("Revoke(%.20v): %v", r, err)
			}
		}
		if _, err := a.IsRevoked(ctx, "nope", "x"); !errors.Is(err, ErrBadRevocation) {
			t.Errorf("IsRevoked of an unknown kind: %v", err)
		}
	})
}

// The hot path: an answer already cached costs no database query.
func TestRevocationAnswersCached(t *testing.T) {
	ctx := context.Background()
	s := openMigrated(t, testOptions(t, sqliteURL(t), CacheDatabase))
	waitFor(t, time.Second, "trusted", func() bool { return s.trusted(s.now()) })
	if r, err := s.IsRevoked(ctx, RevokedJTI, "j1"); err != nil || r {
		t.Fatal(r, err)
	}
	if _, ok := s.near.getRevoked(0, "j1", s.now()); !ok {
		t.Fatal("a negative answer was not cached")
	}
	allocs := testing.AllocsPerRun(1000, func() {
		if r, _ := s.IsRevoked(ctx, RevokedJTI, "j1"); r {
			t.Fatal("revoked")
		}
	})
	if allocs > 1 {
		t.Errorf("IsRevoked allocates %.1f times on a hit", allocs)
	}
}

// Finding #6 of the review (item 7 of issue 12): in Redis mode a writer that
// cannot reach Redis commits to the database but never writes its
// tombstone. The other stores (workers, instances) must still see the
// change within the coherence bound, through the database epoch, and the
// stale value left in Redis must not come back.
func TestRedisWriterWithoutRedis(t *testing.T) {
	ctx := context.Background()
	dbu := pgURL(t)
	o := testOptions(t, dbu, CacheRedis)
	o.CachePrefix = redisPrefix(t)
	o.RedisSocketTimeout = 500 * time.Millisecond
	o.RedisSocketConnectTimeout = 500 * time.Millisecond
	reader := openMigrated(t, o)
	other := openStore(t, o)

	cut := o
	cut.RedisURL = fmt.Sprintf("redis://127.0.0.1:%d/0", freePort(t)) // nothing listens there
	writer := openStore(t, cut)

	const email = "dave@example.com"
	insertUser(t, reader, email) // not PutUser: its tombstone would keep Redis from filling for 2 s
	for _, s := range []*Store{reader, other} {
		waitFor(t, time.Second, "active and cached", func() bool {
			u, err := s.User(ctx, email)
			_, cached := s.near.getUser(email, s.now())
			return err == nil && u.Active && cached && s.trusted(s.now())
		})
		if r, err := s.IsRevoked(ctx, RevokedJTI, "jti-1"); err != nil || r {
			t.Fatal(r, err)
		}
	}
	// The shared Redis holds the user as active (filled by the reads above).
	if v, st := reader.redis.get(ctx, userKey(email)); st != redisHit || v == redisNoUser {
		t.Fatalf("redis entry before the write: %q %v", v, st)
	}

	start := time.Now()
	if err := writer.PutUser(ctx, User{Email: email, Active: false}); err != nil {
		t.Fatal(err)
	}
	if err := writer.Revoke(ctx, Revocation{Kind: RevokedJTI, ID: "jti-1", Until: time.Now().Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	wrote := time.Since(start)
	for i, s := range []*Store{reader, other} {
		took := waitFor(t, time.Second, fmt.Sprintf("store %d sees the deactivation and the revocation", i), func() bool {
			u, err := s.User(ctx, email)
			r, rerr := s.IsRevoked(ctx, RevokedJTI, "jti-1")
			return err == nil && !u.Active && rerr == nil && r
		})
		t.Logf("store %d: seen %s after the writes (which took %s)", i, took, wrote)
	}
	// Redis no longer holds the old value for anyone.
	if v, st := reader.redis.get(ctx, userKey(email)); st == redisHit && strings.Contains(v, `"active":true`) {
		t.Errorf("redis still holds the old value %s", v)
	}
}

// A worker that starts after a write whose tombstone was lost while no
// worker was polling (the whole fleet restarting) repairs Redis from the
// epoch the pollers before it recorded.
func TestRedisCatchUpOnStart(t *testing.T) {
	ctx := context.Background()
	o := testOptions(t, pgURL(t), CacheRedis)
	o.CachePrefix = redisPrefix(t)
	o.RedisSocketTimeout = 500 * time.Millisecond
	o.RedisSocketConnectTimeout = 500 * time.Millisecond
	first := openMigrated(t, o)
	const email = "erin@example.com"
	insertUser(t, first, email)
	waitFor(t, time.Second, "filled", func() bool {
		u, err := first.User(ctx, email)
		v, st := first.redis.get(ctx, userKey(email))
		return err == nil && u.Active && st == redisHit && v != redisNoUser
	})
	first.Close()

	cut := o
	cut.RedisURL = fmt.Sprintf("redis://127.0.0.1:%d/0", freePort(t))
	writer := openStore(t, cut)
	if err := writer.PutUser(ctx, User{Email: email, Active: false}); err != nil {
		t.Fatal(err)
	}
	writer.Close()

	late := openStore(t, o)
	waitFor(t, time.Second, "a store started later sees the write", func() bool {
		u, err := late.User(ctx, email)
		return err == nil && !u.Active && late.trusted(late.now())
	})
}

// insertUser adds an active user straight into the database, as if it had
// been there for long: no epoch bump, no tombstone.
func insertUser(t *testing.T, s *Store, email string) {
	t.Helper()
	if _, err := s.db.exec(context.Background(), "INSERT INTO users (email, active, is_admin) VALUES ($1, TRUE, FALSE)", email); err != nil {
		t.Fatal(err)
	}
}

// The per-request revocation check of a token already seen (go test -run
// '^$' -bench RevokedHit -benchmem ./store/).
func BenchmarkRevokedHit(b *testing.B) {
	for _, ct := range []string{CacheDatabase, CacheRedis} {
		b.Run(ct, func(b *testing.B) {
			s := benchStore(b, ct)
			ctx := context.Background()
			const jti = "0b8e7d1c-1111-4222-8333-944455556666"
			if _, err := s.IsRevoked(ctx, RevokedJTI, jti); err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if r, err := s.IsRevoked(ctx, RevokedJTI, jti); err != nil || r {
					b.Fatal(r, err)
				}
			}
		})
	}
}
