package store

import (
	"context"
	"sync"
	"sync/atomic"
)

// nearCache is the in-process cache every cache type except "none" reads
// first: decoded values, no locks and no allocation on a hit.
//
// Invalidation and filling race: a lookup may read the database, then an
// invalidation for that key arrives, then the lookup stores what it read,
// which is now stale. gen prevents that. Every invalidation increments gen
// BEFORE it removes entries; every fill stores its entry and THEN compares gen
// with the value it saw before reading the database, taking the entry back out
// if they differ. Whatever the interleaving, either the invalidation removes
// the entry or the filler sees the new gen and removes it itself.
type nearCache struct {
	gen   atomic.Uint64
	tools atomic.Pointer[toolSnapshot]
	users atomic.Pointer[userMap]
	revs  [len(revocationKinds)]atomic.Pointer[userMap] // per kind: id -> *revEntry (revocation.go)

	ttl, negTTL int64 // nanoseconds on the store's monotonic clock
	maxUsers    int64
}

// toolSnapshot is the whole catalogue as read at one moment. list is shared
// by every Tools caller, who must not modify it.
type toolSnapshot struct {
	list    []Tool          // enabled tools, sorted by name
	byName  map[string]Tool // enabled tools
	expires int64
}

// userEntry is a cached lookup result, found or not.
type userEntry struct {
	user    User
	found   bool
	expires int64
}

// userMap is replaced whole to drop every user at once (cheaper and simpler
// than ranging over a sync.Map to delete). Revocation entries use the same
// map type, one per kind.
type userMap struct {
	m sync.Map // email -> *userEntry
	n atomic.Int64
}

func newNearCache(ttl, negTTL int64, maxUsers int) *nearCache {
	c := &nearCache{ttl: ttl, negTTL: negTTL, maxUsers: int64(maxUsers)}
	c.users.Store(&userMap{})
	for i := range c.revs {
		c.revs[i].Store(&userMap{})
	}
	return c
}

// snapshotGen is read before a database or Redis read that will fill the cache.
func (c *nearCache) snapshotGen() uint64 { return c.gen.Load() }

func (c *nearCache) getTools(now int64) *toolSnapshot {
	s := c.tools.Load()
	if s == nil || now >= s.expires {
		return nil
	}
	return s
}

func (c *nearCache) getUser(email string, now int64) (*userEntry, bool) {
	v, ok := c.users.Load().m.Load(email)
	if !ok {
		return nil, false
	}
	e := v.(*userEntry)
	if now >= e.expires {
		return nil, false
	}
	return e, true
}

func (c *nearCache) fillTools(gen uint64, s *toolSnapshot, now int64) {
	s.expires = now + c.ttl
	c.tools.Store(s)
	if c.gen.Load() != gen {
		c.tools.CompareAndSwap(s, nil)
	}
}

func (c *nearCache) fillUser(gen uint64, email string, u User, found bool, now int64) {
	e := &userEntry{user: u, found: found, expires: now + c.ttl}
	if !found {
		// Unknown emails expire sooner: they are invalidated like any key, the
		// short life only bounds the memory a stream of distinct unknown
		// subjects can take.
		e.expires = now + c.negTTL
	}
	um := c.users.Load()
	if um.n.Load() >= c.maxUsers {
		// Full: start again empty rather than track recency on the hot path.
		um = &userMap{}
		c.users.Store(um)
	}
	if _, loaded := um.m.Swap(email, e); !loaded {
		um.n.Add(1)
	}
	if c.gen.Load() != gen {
		um.m.CompareAndDelete(email, e)
	}
}

// invalidateAll drops everything.
func (c *nearCache) invalidateAll() {
	c.gen.Add(1)
	c.tools.Store(nil)
	c.users.Store(&userMap{})
	for i := range c.revs {
		c.revs[i].Store(&userMap{})
	}
}

// invalidateKey drops one cache key ("tools" or "user:<email>"); an unknown
// key drops everything, to be safe.
func (c *nearCache) invalidateKey(key string) {
	c.gen.Add(1)
	if key == toolsKey {
		c.tools.Store(nil)
		return
	}
	if email, ok := cutUserKey(key); ok {
		c.users.Load().m.Delete(email)
		return
	}
	if kind, id, ok := cutRevokedKey(key); ok {
		c.revs[kind].Load().m.Delete(id)
		return
	}
	c.invalidateAll()
}

// flight collapses concurrent misses for the same key into one database read,
// so an invalidation does not send every in-flight request to the database.
type flight struct {
	mu    sync.Mutex
	calls map[string]*flightCall
}

type flightCall struct {
	done chan struct{}
	val  any
	err  error
}

// do runs fn once for all concurrent callers with the same key. fn must not
// depend on the first caller's cancellation (the others share its result), so
// callers give it a context of its own; a waiting caller still honours ctx.
func (f *flight) do(ctx context.Context, key string, fn func() (any, error)) (any, error) {
	f.mu.Lock()
	if c, ok := f.calls[key]; ok {
		f.mu.Unlock()
		select {
		case <-c.done:
			return c.val, c.err
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	if f.calls == nil {
		f.calls = map[string]*flightCall{}
	}
	c := &flightCall{done: make(chan struct{})}
	f.calls[key] = c
	f.mu.Unlock()

	c.val, c.err = fn()

	f.mu.Lock()
	delete(f.calls, key)
	f.mu.Unlock()
	close(c.done)
	return c.val, c.err
}
