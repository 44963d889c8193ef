package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

var cacheTypes = []string{CacheNone, CacheMemory, CacheDatabase, CacheRedis}

// eachBackend runs f for every dialect × cache type, each on a fresh database
// (and a fresh Redis prefix).
func eachBackend(t *testing.T, f func(t *testing.T, o Options)) {
	for _, d := range dialects {
		for _, ct := range cacheTypes {
			t.Run(d+"/"+ct, func(t *testing.T) {
				t.Parallel()
				o := testOptions(t, dbURL(t, d), ct)
				if ct == CacheRedis {
					o.CachePrefix = redisPrefix(t)
				}
				f(t, o)
			})
		}
	}
}

func TestCRUD(t *testing.T) {
	eachBackend(t, func(t *testing.T, o Options) {
		ctx := context.Background()
		s := openMigrated(t, o)

		// Users.
		if _, err := s.User(ctx, "nobody@example.com"); !errors.Is(err, ErrNotFound) {
			t.Fatalf("unknown user: %v; want ErrNotFound", err)
		}
		if err := s.PutUser(ctx, User{Email: "Alice@Example.com", Active: true}); err != nil {
			t.Fatal(err)
		}
		u, err := s.User(ctx, "alice@example.COM ")
		if err != nil || u != (User{Email: "alice@example.com", Active: true}) {
			t.Fatalf("User = %+v, %v", u, err)
		}
		if err := s.PutUser(ctx, User{Email: "alice@example.com", Active: false, Admin: true}); err != nil {
			t.Fatal(err)
		}
		if u, _ := s.User(ctx, "alice@example.com"); u.Active || !u.Admin {
			t.Fatalf("after update: %+v", u)
		}
		// The negative entry cached above must not hide a new user.
		if err := s.PutUser(ctx, User{Email: "nobody@example.com", Active: true}); err != nil {
			t.Fatal(err)
		}
		if u, err := s.User(ctx, "nobody@example.com"); err != nil || !u.Active {
			t.Fatalf("new user after a negative lookup: %+v, %v", u, err)
		}
		if err := s.PutUser(ctx, User{}); err == nil {
			t.Error("PutUser with no email: no error")
		}

		// Tools: sorted, disabled excluded, updates visible.
		if _, err := s.Tool(ctx, "nope"); !errors.Is(err, ErrNotFound) {
			t.Fatalf("unknown tool: %v", err)
		}
		for _, tool := range []Tool{
			{Name: "zeta", Description: "last", InputSchema: []byte(`{"type":"object"}`), Enabled: true},
			{Name: "alpha", Description: "first", Enabled: true},
			{Name: "hidden", Description: "disabled", Enabled: false},
		} {
			if err := s.PutTool(ctx, tool); err != nil {
				t.Fatal(err)
			}
		}
		tools, err := s.Tools(ctx)
		if err != nil {
			t.Fatal(err)
		}
		names := toolNames(tools)
		if fmt.Sprint(names) != "[alpha convert_time get_system_time zeta]" {
			t.Fatalf("Tools = %v", names)
		}
		if !sort.StringsAreSorted(names) {
			t.Fatalf("not sorted: %v", names)
		}
		if string(tools[0].InputSchema) != `{"type":"object"}` {
			t.Errorf("empty schema stored as %s", tools[0].InputSchema)
		}
		if _, err := s.Tool(ctx, "hidden"); !errors.Is(err, ErrNotFound) {
			t.Errorf("disabled tool: %v; want ErrNotFound", err)
		}
		if tool, err := s.Tool(ctx, "zeta"); err != nil || tool.Description != "last" {
			t.Errorf("Tool(zeta) = %+v, %v", tool, err)
		}
		if err := s.PutTool(ctx, Tool{Name: "zeta", Description: "changed", Enabled: false}); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Tool(ctx, "zeta"); !errors.Is(err, ErrNotFound) {
			t.Errorf("tool disabled by update: %v", err)
		}
		if err := s.PutTool(ctx, Tool{Name: "bad", InputSchema: []byte(`{`)}); err == nil {
			t.Error("PutTool with invalid JSON schema: no error")
		}
		if err := s.PutTool(ctx, Tool{Name: " "}); err == nil {
			t.Error("PutTool with no name: no error")
		}

		if s.Dialect() == "" || s.CacheType() != o.CacheType {
			t.Errorf("Dialect %q CacheType %q", s.Dialect(), s.CacheType())
		}
		for _, c := range s.Ready(ctx) {
			if !c.OK {
				t.Errorf("Ready: %+v", c)
			}
		}
	})
}

func toolNames(tools []Tool) []string {
	var n []string
	for _, t := range tools {
		n = append(n, t.Name)
	}
	return n
}

// Two stores on one database stand in for two workers (or two instances):
// a change made through one is seen by the other within one second.
func TestCoherence(t *testing.T) {
	eachBackend(t, func(t *testing.T, o Options) {
		ctx := context.Background()
		a := openMigrated(t, o)
		b := openStore(t, o)

		const email = "bob@example.com"
		if err := a.PutUser(ctx, User{Email: email, Active: true}); err != nil {
			t.Fatal(err)
		}
		// Warm b's caches: it must first see bob (he did not exist when b
		// opened, so this also covers negative → positive), then serve him
		// from its near cache.
		waitFor(t, time.Second, "b sees the new user", func() bool {
			u, err := b.User(ctx, email)
			return err == nil && u.Active
		})
		// Let b's poll catch up with bob's creation (which drops him again),
		// then warm b until what follows is served from its near cache. (With
		// Redis that takes two lookups per key: the first one fills Redis, and
		// Redis's push about that fill drops the entry again.)
		time.Sleep(2 * checkInterval)
		if o.CacheType != CacheNone {
			waitFor(t, time.Second, "b serves bob, ghost and the tools from its near cache", func() bool {
				_, _ = b.User(ctx, email)
				_, _ = b.User(ctx, "ghost@example.com")
				_, _ = b.Tools(ctx)
				now := b.now()
				_, bob := b.near.getUser(email, now)
				_, ghost := b.near.getUser("ghost@example.com", now)
				return b.trusted(now) && bob && ghost && b.near.getTools(now) != nil
			})
		}
		if u, err := b.User(ctx, email); err != nil || !u.Active {
			t.Fatal(u, err)
		}
		if _, err := b.User(ctx, "ghost@example.com"); !errors.Is(err, ErrNotFound) {
			t.Fatal(err)
		}

		// Deactivate through a: b must follow within a second.
		if err := a.PutUser(ctx, User{Email: email, Active: false}); err != nil {
			t.Fatal(err)
		}
		took := waitFor(t, time.Second, "b sees the deactivation", func() bool {
			u, err := b.User(ctx, email)
			return err == nil && !u.Active
		})
		t.Logf("deactivation seen after %s", took)

		// A negative entry is invalidated too.
		if err := a.PutUser(ctx, User{Email: "ghost@example.com", Active: true}); err != nil {
			t.Fatal(err)
		}
		waitFor(t, time.Second, "b sees the new user after a negative lookup", func() bool {
			_, err := b.User(ctx, "ghost@example.com")
			return err == nil
		})

		// Tools: disabling a seeded tool removes it from b's list.
		if err := a.PutTool(ctx, Tool{Name: "convert_time", Description: "off", Enabled: false}); err != nil {
			t.Fatal(err)
		}
		waitFor(t, time.Second, "b sees the disabled tool", func() bool {
			tools, err := b.Tools(ctx)
			return err == nil && len(tools) == 1 && tools[0].Name == "get_system_time"
		})
		if _, err := b.Tool(ctx, "convert_time"); !errors.Is(err, ErrNotFound) {
			t.Errorf("b.Tool(convert_time) after disable: %v", err)
		}
	})
}

// Many readers on b while a flips a user back and forth: once a write has
// returned, b never serves the older value more than a second later, and
// settles on the last value.
func TestCoherenceUnderLoad(t *testing.T) {
	for _, ct := range []string{CacheMemory, CacheDatabase, CacheRedis} {
		t.Run(ct, func(t *testing.T) {
			t.Parallel()
			o := testOptions(t, sqliteURL(t), ct)
			if ct == CacheRedis {
				o.CachePrefix = redisPrefix(t)
			}
			ctx := context.Background()
			a := openMigrated(t, o)
			b := openStore(t, o)
			const email = "flip@example.com"
			if err := a.PutUser(ctx, User{Email: email, Active: true}); err != nil {
				t.Fatal(err)
			}

			var mu sync.Mutex
			var lastWrite time.Time
			var want, writing bool
			stop := make(chan struct{})
			var wg sync.WaitGroup
			var stale []string
			for i := 0; i < 4; i++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for {
						select {
						case <-stop:
							return
						default:
						}
						mu.Lock()
						w, at, busy := want, lastWrite, writing
						mu.Unlock()
						began := time.Now()
						u, err := b.User(ctx, email)
						mu.Lock()
						// A write ran during the read: either value is fine.
						changed := busy || writing || !lastWrite.Equal(at)
						mu.Unlock()
						if err != nil || changed {
							continue
						}
						if !at.IsZero() && u.Active != w && began.Sub(at) > time.Second {
							mu.Lock()
							stale = append(stale, fmt.Sprintf("value %v read %s after the write of %v", u.Active, began.Sub(at), w))
							mu.Unlock()
						}
					}
				}()
			}
			for i := 0; i < 6; i++ {
				v := i%2 == 1
				mu.Lock()
				writing = true
				mu.Unlock()
				if err := a.PutUser(ctx, User{Email: email, Active: v}); err != nil {
					t.Fatal(err)
				}
				mu.Lock()
				want, lastWrite, writing = v, time.Now(), false
				mu.Unlock()
				time.Sleep(1300 * time.Millisecond)
			}
			close(stop)
			wg.Wait()
			if len(stale) > 0 {
				t.Errorf("%d stale reads, e.g. %s", len(stale), stale[0])
			}
		})
	}
}

// A steady-state hit allocates nothing.
func TestHitsDoNotAllocate(t *testing.T) {
	for _, ct := range []string{CacheMemory, CacheDatabase, CacheRedis} {
		t.Run(ct, func(t *testing.T) {
			o := testOptions(t, sqliteURL(t), ct)
			if ct == CacheRedis {
				o.CachePrefix = redisPrefix(t)
			}
			s := openMigrated(t, o)
			ctx := context.Background()
			if _, err := s.Tools(ctx); err != nil {
				t.Fatal(err)
			}
			if _, err := s.User(ctx, "admin@example.com"); err != nil {
				t.Fatal(err)
			}
			tools := testing.AllocsPerRun(1000, func() { _, _ = s.Tools(ctx) })
			users := testing.AllocsPerRun(1000, func() { _, _ = s.User(ctx, "admin@example.com") })
			tool := testing.AllocsPerRun(1000, func() { _, _ = s.Tool(ctx, "convert_time") })
			if tools != 0 || users != 0 || tool != 0 {
				t.Errorf("allocations per hit: Tools %v, User %v, Tool %v; want 0", tools, users, tool)
			}
		})
	}
}

func TestAllToolsListsDisabledToo(t *testing.T) {
	s := openMigrated(t, testOptions(t, sqliteURL(t), CacheNone))
	ctx := context.Background()
	if err := s.PutTool(ctx, Tool{Name: "zz_off", Description: "off", InputSchema: json.RawMessage(`{"type":"object"}`)}); err != nil {
		t.Fatal(err)
	}
	all, err := s.AllTools(ctx)
	if err != nil {
		t.Fatal(err)
	}
	enabled, _ := s.Tools(ctx)
	if len(all) != len(enabled)+1 || all[len(all)-1].Name != "zz_off" || all[len(all)-1].Enabled {
		t.Fatalf("AllTools = %+v, enabled = %d", all, len(enabled))
	}
}

// With Options.LocalWrites shared (the workers of one instance), a write is
// seen at once by the other stores: a session ended on one worker is ended
// on the next request to another, though that one had it cached as live.
func TestLocalWritesAreSeenAtOnce(t *testing.T) {
	eachBackend(t, func(t *testing.T, o Options) {
		if o.CacheType == CacheNone {
			return // nothing cached: seen at once anyway
		}
		var writes atomic.Uint64
		o.LocalWrites = &writes
		ctx := context.Background()
		a := openMigrated(t, o)
		b := openStore(t, o)
		id := randomName("session")
		// b caches "not ended", and trusts its near cache.
		waitFor(t, time.Second, "b serves the session from its near cache", func() bool {
			_, _ = b.IsRevoked(ctx, RevokedSession, id)
			now := b.now()
			_, cached := b.near.getRevoked(kindIndex(RevokedSession), id, now)
			return b.trusted(now) && cached
		})
		if err := a.Revoke(ctx, Revocation{Kind: RevokedSession, ID: id, Until: time.Now().Add(time.Hour)}); err != nil {
			t.Fatal(err)
		}
		if ended, err := b.IsRevoked(ctx, RevokedSession, id); err != nil || !ended {
			t.Fatalf("right after the DELETE on another worker: ended %v, %v", ended, err)
		}
		// And b trusts its cache again once its poll has caught up.
		waitFor(t, time.Second, "b trusts its near cache again", func() bool { return b.trusted(b.now()) })
	})
}

// DeleteTool removes a tool of the gateway, seen by another store within the
// coherence bound; an upstream's tool is refused, an unknown one is
// ErrNotFound.
func TestDeleteTool(t *testing.T) {
	eachBackend(t, func(t *testing.T, o Options) {
		ctx := context.Background()
		a := openMigrated(t, o)
		b := openStore(t, o)
		if err := a.PutTool(ctx, Tool{Name: "gone", Description: "d", Enabled: true}); err != nil {
			t.Fatal(err)
		}
		if err := a.PutGateway(ctx, Gateway{Name: "up", URL: "http://127.0.0.1:1/mcp", Enabled: true},
			[]Tool{{Name: "up-x", UpstreamName: "x", Gateway: "up", Enabled: true}}, nil); err != nil {
			t.Fatal(err)
		}
		waitFor(t, 2*time.Second, "b sees the tool", func() bool { _, err := b.Tool(ctx, "gone"); return err == nil })
		if err := a.DeleteTool(ctx, "gone"); err != nil {
			t.Fatal(err)
		}
		waitFor(t, 2*time.Second, "b forgets the tool", func() bool { _, err := b.Tool(ctx, "gone"); return errors.Is(err, ErrNotFound) })
		if err := a.DeleteTool(ctx, "gone"); !errors.Is(err, ErrNotFound) {
			t.Errorf("deleted twice: %v", err)
		}
		if err := a.DeleteTool(ctx, "up-x"); !errors.Is(err, ErrUpstreamTool) {
			t.Errorf("an upstream's tool: %v", err)
		}
	})
}
