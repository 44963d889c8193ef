package store

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"
)

func readyMap(checks []Check) map[string]Check {
	m := map[string]Check{}
	for _, c := range checks {
		m[c.Name] = c
	}
	return m
}

func TestReady(t *testing.T) {
	ctx := context.Background()
	for _, d := range dialects {
		for _, ct := range cacheTypes {
			t.Run(d+"/"+ct, func(t *testing.T) {
				t.Parallel()
				o := testOptions(t, dbURL(t, d), ct)
				if ct == CacheRedis {
					o.CachePrefix = redisPrefix(t)
				}
				s := openMigrated(t, o)
				checks := s.Ready(ctx)
				if len(checks) != 2 || checks[0].Name != "Database" || checks[1].Name != "Cache" {
					t.Fatalf("Ready = %+v", checks)
				}
				for _, c := range checks {
					if !c.OK || c.Detail == "" {
						t.Errorf("%+v", c)
					}
				}
			})
		}
	}
}

// PostgreSQL unreachable: Open still works (pools are lazy), lookups fail
// with an error in bounded time, Ready says Database (and the database-backed
// cache) not OK.
func TestDatabaseDown(t *testing.T) {
	ctx := context.Background()
	for _, ct := range []string{CacheDatabase, CacheNone} {
		t.Run(ct, func(t *testing.T) {
			o := testOptions(t, fmt.Sprintf("postgresql://postgres@127.0.0.1:%d/test", freePort(t)), ct)
			o.PoolTimeout = time.Second
			s := openStore(t, o)
			start := time.Now()
			if _, err := s.User(ctx, "a@example.com"); err == nil || errors.Is(err, ErrNotFound) {
				t.Errorf("User with the database down: %v", err)
			}
			if time.Since(start) > 3*time.Second {
				t.Errorf("lookup took %s with the database down", time.Since(start))
			}
			r := readyMap(s.Ready(ctx))
			if r["Database"].OK || !strings.Contains(r["Database"].Detail, "postgresql") {
				t.Errorf("Database check: %+v", r["Database"])
			}
			if ct == CacheDatabase && r["Cache"].OK {
				t.Errorf("Cache check with the epoch poll failing: %+v", r["Cache"])
			}
		})
	}
}

// Redis unreachable from the start: lookups are answered from the database,
// quickly, and Ready reports the cache as not OK.
func TestRedisDown(t *testing.T) {
	ctx := context.Background()
	o := testOptions(t, sqliteURL(t), CacheRedis)
	o.RedisURL = fmt.Sprintf("redis://127.0.0.1:%d/0", freePort(t))
	o.RedisSocketTimeout = 500 * time.Millisecond
	o.RedisSocketConnectTimeout = 500 * time.Millisecond
	s := openMigrated(t, o)

	start := time.Now()
	for i := 0; i < 100; i++ {
		if u, err := s.User(ctx, "admin@example.com"); err != nil || !u.Admin {
			t.Fatalf("User with Redis down: %+v, %v", u, err)
		}
		if tools, err := s.Tools(ctx); err != nil || len(tools) != 2 {
			t.Fatalf("Tools with Redis down: %v, %v", tools, err)
		}
	}
	if took := time.Since(start); took > 2*time.Second {
		t.Errorf("200 lookups took %s with Redis down", took)
	}
	if err := s.PutUser(ctx, User{Email: "new@example.com", Active: true}); err != nil {
		t.Errorf("PutUser with Redis down: %v", err)
	}
	if u, err := s.User(ctx, "new@example.com"); err != nil || !u.Active {
		t.Errorf("read own write with Redis down: %+v, %v", u, err)
	}
	r := readyMap(s.Ready(ctx))
	if !r["Database"].OK || r["Cache"].OK || !strings.Contains(r["Cache"].Detail, "redis") {
		t.Errorf("Ready with Redis down: %+v", r)
	}
}

// Redis goes away under two running stores and comes back: lookups keep
// working from the database, a write made during the outage is seen by the
// other store, and the cache (and its coherence) recover by themselves. The
// test runs its own redis-server so the shared one is never stopped.
func TestRedisRecovery(t *testing.T) {
	ctx := context.Background()
	port := freePort(t)
	srv := startRedisServer(t, port)

	o := testOptions(t, pgURL(t), CacheRedis)
	o.RedisURL = srv.url()
	o.RedisSocketTimeout = 500 * time.Millisecond
	o.RedisSocketConnectTimeout = 500 * time.Millisecond
	a := openMigrated(t, o)
	b := openStore(t, o)
	const email = "carol@example.com"
	if err := a.PutUser(ctx, User{Email: email, Active: true}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, time.Second, "b sees carol", func() bool {
		u, err := b.User(ctx, email)
		return err == nil && u.Active
	})
	if !b.trusted(b.now()) {
		t.Fatal("b's near cache not in use with Redis up")
	}

	srv.stop()
	waitFor(t, 3*time.Second, "b reports the cache down", func() bool {
		return !readyMap(b.Ready(ctx))["Cache"].OK
	})
	if u, err := b.User(ctx, email); err != nil || !u.Active {
		t.Fatalf("User with Redis stopped: %+v, %v", u, err)
	}
	// A write during the outage: b must see it although no invalidation
	// could be sent.
	if err := a.PutUser(ctx, User{Email: email, Active: false}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, time.Second, "b sees the write made during the outage", func() bool {
		u, err := b.User(ctx, email)
		return err == nil && !u.Active
	})

	srv = startRedisServer(t, port)
	waitFor(t, 5*time.Second, "cache recovers", func() bool {
		return readyMap(a.Ready(ctx))["Cache"].OK && readyMap(b.Ready(ctx))["Cache"].OK &&
			a.trusted(a.now()) && b.trusted(b.now())
	})
	if u, err := b.User(ctx, email); err != nil || u.Active {
		t.Fatalf("after recovery: %+v, %v", u, err)
	}
	// Coherence through Redis works again.
	if err := a.PutUser(ctx, User{Email: email, Active: true}); err != nil {
		t.Fatal(err)
	}
	took := waitFor(t, time.Second, "b sees a write after recovery", func() bool {
		u, err := b.User(ctx, email)
		return err == nil && u.Active
	})
	t.Logf("write after recovery seen in %s", took)
	// And b serves from its near cache again, once its Redis check and its
	// database epoch poll have both run since (a bound of speed, not of
	// coherence: generous, for a busy machine).
	waitFor(t, 5*time.Second, "b back on its near cache", func() bool {
		// A lookup refills the near cache: one whose fill raced with the
		// write's invalidation does not, and the next one does.
		if _, err := b.User(ctx, email); err != nil {
			return false
		}
		_, ok := b.near.getUser(email, b.now())
		return ok && b.trusted(b.now())
	})
}

// A Redis that accepts connections but never answers (a hung server or a
// black-holed network): Open, lookups and writes take at most about one
// socket timeout, then run at database speed.
func TestRedisUnresponsive(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var conns sync.WaitGroup
	t.Cleanup(func() { l.Close(); conns.Wait() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			conns.Add(1)
			go func() { defer conns.Done(); _, _ = io.Copy(io.Discard, c); c.Close() }()
		}
	}()

	ctx := context.Background()
	o := testOptions(t, sqliteURL(t), CacheRedis)
	o.RedisURL = "redis://" + l.Addr().String() + "/0"
	o.RedisSocketTimeout = 300 * time.Millisecond
	o.RedisSocketConnectTimeout = 300 * time.Millisecond
	if err := Migrate(ctx, o); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	s := openStore(t, o)
	if took := time.Since(start); took > 2*time.Second {
		t.Errorf("Open took %s against an unresponsive Redis", took)
	}
	start = time.Now()
	for i := 0; i < 50; i++ {
		if u, err := s.User(ctx, "admin@example.com"); err != nil || !u.Admin {
			t.Fatalf("User: %+v, %v", u, err)
		}
	}
	if took := time.Since(start); took > time.Second {
		t.Errorf("50 lookups took %s against an unresponsive Redis", took)
	}
	start = time.Now()
	if err := s.PutUser(ctx, User{Email: "w@example.com", Active: true}); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took > time.Second {
		t.Errorf("PutUser took %s against an unresponsive Redis", took)
	}
	if c := readyMap(s.Ready(ctx))["Cache"]; c.OK {
		t.Errorf("Cache check OK against an unresponsive Redis: %+v", c)
	}
}

func TestRedisClientOption(t *testing.T) {
	o, _ := Options{
		RedisURL:                  "redis://user:secret@127.0.0.1:6380/3",
		RedisMaxConnections:       100,
		RedisSocketTimeout:        time.Second,
		RedisSocketConnectTimeout: 1500 * time.Millisecond,
		RedisHealthCheckInterval:  15 * time.Second,
	}.withDefaults()
	opt, err := redisClientOption(o)
	if err != nil {
		t.Fatal(err)
	}
	if opt.InitAddress[0] != "127.0.0.1:6380" || opt.SelectDB != 3 || opt.Username != "user" ||
		opt.BlockingPoolSize != 100 || opt.ConnWriteTimeout != time.Second ||
		opt.Dialer.Timeout != 1500*time.Millisecond || opt.Dialer.KeepAlive != 15*time.Second ||
		!opt.ForceSingleClient || opt.PipelineMultiplex != -1 || !opt.DisableRetry {
		t.Errorf("mapping: %+v", opt)
	}
	o.RedisURL = "redis://user:secret@127.0.0.1:notaport/0"
	if _, err := redisClientOption(o); err == nil || strings.Contains(err.Error(), "secret") ||
		!strings.Contains(err.Error(), "REDIS_URL") {
		t.Errorf("bad REDIS_URL: %v", err)
	}
}
