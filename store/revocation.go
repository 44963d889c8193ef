package store

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Revocations are tombstones: a (kind, id) that must be refused until a
// given time, seen by every worker of every instance within the coherence
// bound (one second; coherence.go). One mechanism serves every kind:
//
//   - "jti": a JWT, by its jti claim (POST /admin/tokens/revoke);
//   - "session": an MCP session id ended by DELETE /mcp;
//   - "loglevel": not a refusal but a value, the log level that
//     logging/setLevel set for an MCP session (loglevel.go), kept in the
//     row's reason; it is the one kind a later write overwrites.
//   - "cancel": a tools/call of an MCP session that notifications/cancelled
//     ended, by its call key (events.go), for the worker running it.
//
// They live in the revocations table, one row per (kind, id) with the Unix
// time after which the row may go (the token's exp plus the leeway, the
// session's expiry; 0: kept until removed by hand). Writers purge rows past
// that time; a row past it no longer counts, whether purged yet or not.
//
// Lookups are answered like user lookups: per id from the near cache while
// the lease holds, else from Redis (CACHE_TYPE=redis) or the database, one
// indexed query per id and worker, collapsed across concurrent requests.
// Each answer, revoked or not, is cached for CACHE_TTL; a revocation bumps
// the cache epoch with the key "revoked:<kind>:<id>" (and, with Redis,
// tombstones that key), which drops exactly that entry everywhere. So a
// request pays, on the hot path, one sync.Map lookup per kind it checks.

// Kinds of revocation.
const (
	RevokedJTI      = "jti"
	RevokedSession  = "session"
	RevokedLogLevel = "loglevel"
	RevokedCancel   = "cancel"
	RevokedSubs     = "subs" // an MCP session's subscribed resource URIs (subscriptions.go)
)

// revocationKinds indexes the near cache's per-kind maps.
var revocationKinds = [...]string{RevokedJTI, RevokedSession, RevokedLogLevel, RevokedCancel, RevokedSubs}

// MaxRevocationIDLen is the longest id Revoke accepts. Ids are UUIDs (jti)
// or 54-character session ids in practice; a longer one cannot have been
// revoked, and IsRevoked answers false for it without a lookup.
const MaxRevocationIDLen = 256

// ErrBadRevocation is returned by Revoke for an unknown kind or a bad id.
var ErrBadRevocation = errors.New("bad revocation")

// Revocation is one tombstone.
type Revocation struct {
	Kind string `json:"kind"`
	ID   string `json:"id"`
	// Until is when the revocation stops mattering (the token or session
	// expires by then anyway), after which the row may be purged. Zero:
	// kept until removed.
	Until     time.Time `json:"until,omitzero"`
	RevokedAt time.Time `json:"revoked_at,omitzero"` // set by the store
	By        string    `json:"revoked_by,omitempty"`
	Reason    string    `json:"reason,omitempty"`
}

// revEntry is a cached answer for one id.
type revEntry struct {
	revoked bool
	until   int64  // Unix seconds; 0: for good (meaningful when revoked)
	value   string // the row's reason, for RevokedLogLevel and RevokedSubs only
	expires int64  // the store's monotonic clock
}

// active reports whether a cached answer refuses now. The clock is read
// only for a revoked id: "not revoked", the answer of nearly every request,
// costs no time.Now.
func (e *revEntry) active() bool {
	return e.revoked && (e.until == 0 || time.Now().Unix() < e.until)
}

func kindIndex(kind string) int {
	for i, k := range revocationKinds {
		if k == kind {
			return i
		}
	}
	return -1
}

func revokedKey(kind, id string) string { return "revoked:" + kind + ":" + id }

// cutRevokedKey parses a key made by revokedKey.
func cutRevokedKey(key string) (int, string, bool) {
	rest, ok := strings.CutPrefix(key, "revoked:")
	if !ok {
		return 0, "", false
	}
	kind, id, ok := strings.Cut(rest, ":")
	k := kindIndex(kind)
	if !ok || k < 0 {
		return 0, "", false
	}
	return k, id, true
}

func (c *nearCache) getRevoked(kind int, id string, now int64) (*revEntry, bool) {
	v, ok := c.revs[kind].Load().m.Load(id)
	if !ok {
		return nil, false
	}
	e := v.(*revEntry)
	if now >= e.expires {
		return nil, false
	}
	return e, true
}

// fillRevoked stores an answer read from Redis or the database; see
// nearCache for the gen dance.
func (c *nearCache) fillRevoked(gen uint64, kind int, id string, e *revEntry, now int64) {
	e.expires = now + c.ttl
	m := c.revs[kind].Load()
	if m.n.Load() >= c.maxUsers {
		m = &userMap{}
		c.revs[kind].Store(m)
	}
	if _, loaded := m.m.Swap(id, e); !loaded {
		m.n.Add(1)
	}
	if c.gen.Load() != gen {
		m.m.CompareAndDelete(id, e)
	}
}

// IsRevoked reports whether (kind, id) is revoked now. An empty id is not.
func (s *Store) IsRevoked(ctx context.Context, kind, id string) (bool, error) {
	k := kindIndex(kind)
	if k < 0 {
		return false, fmt.Errorf("%w: unknown kind %q", ErrBadRevocation, kind)
	}
	if id == "" || len(id) > MaxRevocationIDLen {
		return false, nil
	}
	e, err := s.lookupRevoked(ctx, k, id)
	if err != nil {
		return false, err
	}
	return e.active(), nil
}

// lookupRevoked answers (kind k, id) from the near cache, else the store.
func (s *Store) lookupRevoked(ctx context.Context, k int, id string) (*revEntry, error) {
	if now := s.now(); s.trusted(now) {
		if e, ok := s.near.getRevoked(k, id, now); ok {
			return e, nil
		}
	}
	return s.loadRevoked(ctx, k, id)
}

func (s *Store) loadRevoked(ctx context.Context, k int, id string) (*revEntry, error) {
	key := revokedKey(revocationKinds[k], id)
	if s.near == nil {
		lctx, cancel := s.lookupContext(ctx)
		defer cancel()
		return s.fetchRevoked(lctx, k, id, key)
	}
	if e := s.revokedWhileDown(k, id); e != nil {
		return e, nil
	}
	v, err := s.flight.do(ctx, key, func() (any, error) {
		fctx, cancel := s.detached(ctx)
		defer cancel()
		return s.fetchRevoked(fctx, k, id, key)
	})
	if err != nil {
		if e := s.staleRevoked(k, id); e != nil && errors.Is(err, ErrUnavailable) {
			return e, nil
		}
		return nil, err
	}
	return v.(*revEntry), nil
}

// Redis encoding of a revocation key: redisNoUser ("-") for "not revoked",
// else the decimal Unix time until which it is (0: for good), followed, for
// RevokedLogLevel and RevokedSubs, by a space and the value.

func (s *Store) fetchRevoked(ctx context.Context, k int, id, key string) (*revEntry, error) {
	now := s.now()
	cacheable := s.trusted(now)
	var gen uint64
	if s.near != nil {
		gen = s.near.snapshotGen()
	}
	e := &revEntry{}
	state := redisSkipped
	if s.redis != nil && cacheable && s.redis.usable(now) {
		var val string
		val, state = s.redis.get(ctx, key)
		if state == redisHit && val != redisNoUser {
			num, value, _ := strings.Cut(val, " ")
			until, err := strconv.ParseInt(num, 10, 64)
			if err != nil {
				s.log.Warn("undecodable revocation entry in Redis; reading the database")
				state = redisAbsent
			} else {
				e.revoked, e.until, e.value = true, until, value
			}
		}
	}
	if state != redisHit {
		var until int64
		var reason string
		err := s.noteDB(queryOne(ctx, s.db, "SELECT expires_at, reason FROM revocations WHERE kind = $1 AND id = $2",
			[]any{revocationKinds[k], id}, &until, &reason))
		switch {
		case err == nil:
			e.revoked, e.until = true, until
			if revocationKinds[k] == RevokedLogLevel || revocationKinds[k] == RevokedSubs {
				e.value = reason // the others' reasons are for the admin API only
			}
		case errors.Is(err, errNoRows):
		default:
			return nil, fmt.Errorf("read revocation: %w", err)
		}
		if state == redisAbsent {
			val := redisNoUser
			if e.revoked {
				val = strconv.FormatInt(e.until, 10)
				if e.value != "" {
					val += " " + e.value
				}
			}
			s.redis.fill(ctx, key, val, s.o.CacheTTL, now)
		}
	}
	if cacheable && state != redisFailed {
		s.near.fillRevoked(gen, k, id, e, now)
	}
	return e, nil
}

// Revoke records a revocation and makes every worker of every instance
// refuse (kind, id) within the coherence bound. Revoking again keeps the
// first record and the later Until. Rows whose Until has passed are purged
// on the way.
func (s *Store) Revoke(ctx context.Context, r Revocation) error {
	if kindIndex(r.Kind) < 0 {
		return fmt.Errorf("%w: unknown kind %q", ErrBadRevocation, r.Kind)
	}
	if r.ID == "" || len(r.ID) > MaxRevocationIDLen {
		return fmt.Errorf("%w: the id must have 1 to %d bytes", ErrBadRevocation, MaxRevocationIDLen)
	}
	var until int64
	if !r.Until.IsZero() {
		until = max(r.Until.Unix(), 1)
	}
	return s.writeRevocation(ctx, r, until, revokeUpsert)
}

// revokeUpsert is writeRevocation's statement for a tombstone: a second
// write keeps the first record and the later Until (0, for good, wins).
const revokeUpsert = `INSERT INTO revocations (kind, id, expires_at, revoked_at, revoked_by, reason)
			VALUES ($1, $2, $3, $4, $5, $6)
			ON CONFLICT (kind, id) DO UPDATE SET expires_at = CASE
				WHEN revocations.expires_at = 0 OR excluded.expires_at = 0 THEN 0
				WHEN excluded.expires_at > revocations.expires_at THEN excluded.expires_at
				ELSE revocations.expires_at END`

// writeRevocation runs upsert (parameters: kind, id, expires_at,
// revoked_at, revoked_by, reason) and makes every worker of every instance
// drop its cached answer for (kind, id) within the coherence bound.
func (s *Store) writeRevocation(ctx context.Context, r Revocation, until int64, upsert string) error {
	now := time.Now().Unix()
	key := revokedKey(r.Kind, r.ID)
	err := s.db.tx(ctx, func(q querier) error {
		if _, err := q.exec(ctx, upsert, r.Kind, r.ID, until, now, r.By, r.Reason); err != nil {
			return err
		}
		if _, err := bumpEpoch(ctx, q, key); err != nil {
			return err
		}
		if err := purgeStreamEvents(ctx, q, now); err != nil {
			return err
		}
		return purgeRevocations(ctx, q, now)
	})
	if err = s.noteDB(err); err != nil {
		return fmt.Errorf("revoke %s: %w", r.Kind, err)
	}
	s.afterWrite(ctx, key)
	return nil
}

// purgeRevocations deletes the rows that no longer matter. They need no
// epoch bump: a cached "revoked" past its Until already answers false.
func purgeRevocations(ctx context.Context, q querier, now int64) error {
	if _, err := q.exec(ctx, "DELETE FROM revocations WHERE expires_at > 0 AND expires_at <= $1", now); err != nil {
		return fmt.Errorf("purge revocations: %w", err)
	}
	return nil
}

// Revocation reads one record straight from the database (the admin API),
// or ErrNotFound; a record past its Until is not found.
func (s *Store) Revocation(ctx context.Context, kind, id string) (Revocation, error) {
	if kindIndex(kind) < 0 {
		return Revocation{}, fmt.Errorf("%w: unknown kind %q", ErrBadRevocation, kind)
	}
	var until, at int64
	r := Revocation{Kind: kind, ID: id}
	err := s.noteDB(queryOne(ctx, s.db, `SELECT expires_at, revoked_at, revoked_by, reason FROM revocations
		WHERE kind = $1 AND id = $2 AND (expires_at = 0 OR expires_at > $3)`,
		[]any{kind, id, time.Now().Unix()}, &until, &at, &r.By, &r.Reason))
	switch {
	case errors.Is(err, errNoRows):
		return Revocation{}, ErrNotFound
	case err != nil:
		return Revocation{}, fmt.Errorf("read revocation: %w", err)
	}
	if until > 0 {
		r.Until = time.Unix(until, 0).UTC()
	}
	r.RevokedAt = time.Unix(at, 0).UTC()
	return r, nil
}

// staleRevoked is staleUser (outage.go) for a revocation answer.
func (s *Store) staleRevoked(k int, id string) *revEntry {
	grace := s.staleGrace()
	if grace == 0 {
		return nil
	}
	v, ok := s.near.revs[k].Load().m.Load(id)
	if !ok {
		return nil
	}
	e := v.(*revEntry)
	if s.now() >= e.expires+grace {
		return nil
	}
	return e
}

// revokedWhileDown is userWhileDown (outage.go) for a revocation answer.
func (s *Store) revokedWhileDown(k int, id string) *revEntry {
	if s.dbDown.Load() == 0 {
		return nil
	}
	return s.staleRevoked(k, id)
}
