package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
)

const (
	// negativeTTL bounds how long "no such user" stays in the near cache
	// (it is also invalidated like any entry, so this is about memory only).
	negativeTTL = 5 * time.Second
	// maxNearUsers bounds the near cache's user entries per worker.
	maxNearUsers = 10000
)

// Store is one worker's handle on the database and the cache. It is safe for
// concurrent use. Lookups are answered from the near cache when it is
// trusted (see coherence.go) and from Redis or the database otherwise.
type Store struct {
	o     Options
	log   *zap.Logger
	db    database
	near  *nearCache  // nil for CACHE_TYPE=none
	redis *redisCache // non-nil for CACHE_TYPE=redis
	base  time.Time   // origin of now()

	// lease: the near cache may be read while now() < lease (coherence.go).
	lease     atomic.Int64
	checkErr  atomic.Pointer[error] // current coherence failure, nil when fine
	dbDown    atomic.Int64          // when the database became unreachable (odd, now()|1); 0: reachable (outage.go)
	lastEpoch int64                 // owned by the poll goroutine
	seenLocal atomic.Uint64         // Options.LocalWrites as of the latest coherence check that started after it
	wake      chan struct{}         // runs the epoch poll now: a write of the instance was seen (trusted)

	flight flight

	// bg is cancelled by Close, ending background polls and PINGs at once.
	bg        context.Context
	cancelBG  context.CancelFunc
	stop      chan struct{}
	wg        sync.WaitGroup
	closed    atomic.Bool
	closeOnce sync.Once
}

// Open opens the database pool and the cache of one worker. It fails only on
// bad options, never because the database or Redis is unreachable (it spends
// at most one coherence check on them): a worker started during an outage
// serves errors (or database answers) until they return, then recovers
// without a restart. Migrate must have run.
func Open(ctx context.Context, o Options) (*Store, error) {
	o, err := o.withDefaults()
	if err != nil {
		return nil, err
	}
	db, err := openDatabase(o)
	if err != nil {
		return nil, err
	}
	s := &Store{o: o, log: o.Logger.Named("store"), db: db, base: time.Now(), stop: make(chan struct{}), lastEpoch: -1,
		wake: make(chan struct{}, 1)}
	s.bg, s.cancelBG = context.WithCancel(context.Background())
	if err := db.prepare(ctx); err != nil {
		// Migrate has normally done this already; carry on (SQLite's
		// rollback journal still works, only with less concurrency).
		s.log.Warn("database preparation failed", zap.Error(err))
	}
	if o.CacheType != CacheNone {
		s.near = newNearCache(int64(o.CacheTTL), int64(min(o.CacheTTL, negativeTTL)), maxNearUsers)
	}
	switch o.CacheType {
	case CacheMemory, CacheDatabase:
		// One poll now so the near cache is usable from the first request.
		s.pollOnce(ctx)
		s.wg.Add(1)
		go s.every(checkInterval, s.wake, s.pollOnce) // keeps the near cache coherent: memory, database
	case CacheRedis:
		if s.redis, err = newRedisCache(s); err != nil {
			s.cancelBG()
			db.close()
			return nil, err
		}
		if !s.redis.down.Load() {
			// Skipped when the first dial failed: Open should not wait
			// for a second timeout. The loop will keep trying.
			s.heartbeat(ctx)
		}
		s.wg.Add(1)
		go s.every(redisPingInterval, nil, s.heartbeat) // renews the coherence lease: redis
		// The database epoch as well, for writes whose tombstone never
		// reached Redis (coherence_redis.go).
		s.pollRedisEpoch(ctx)
		s.wg.Add(1)
		go s.every(checkInterval, s.wake, s.pollRedisEpoch)
	}
	s.log.Info("store opened", zap.String("dialect", db.dialect()), zap.String("cache_type", o.CacheType),
		zap.Int("pool_max_conns", o.maxConns()))
	return s, nil
}

// now is a monotonic clock in nanoseconds, cheap enough for the hot path.
func (s *Store) now() int64 { return int64(time.Since(s.base)) }

// trusted reports whether the near cache may be read at now.
// With Redis both checks must hold: the PING (pushes delivered) and the
// database epoch poll (writes whose tombstone never reached Redis;
// coherence_redis.go).
func (s *Store) trusted(now int64) bool {
	if s.near == nil || now >= s.lease.Load() || s.redis != nil && now >= s.redis.epochLease.Load() {
		return false
	}
	if s.o.LocalWrites != nil && s.o.LocalWrites.Load() != s.seenLocal.Load() {
		// Another worker of the instance wrote: the poll catches up now,
		// not at its next tick, and until then lookups read past the cache.
		select {
		case s.wake <- struct{}{}:
		default:
		}
		return false
	}
	return true
}

// localMark is the instance's write count, read before a coherence check:
// once the check succeeds, every write counted in it has been caught up.
func (s *Store) localMark() uint64 {
	if s.o.LocalWrites == nil {
		return 0
	}
	return s.o.LocalWrites.Load()
}

// Dialect is "sqlite" or "postgresql".
func (s *Store) Dialect() string { return s.db.dialect() }

// CacheType is the effective CACHE_TYPE.
func (s *Store) CacheType() string { return s.o.CacheType }

// normEmail makes lookups case-insensitive. For an already lower-case,
// trimmed address (the usual case) it returns its argument without copying.
func normEmail(e string) string { return strings.ToLower(strings.TrimSpace(e)) }

// Tools returns the enabled tools sorted by name. The slice is shared by all
// callers until the next change: do not modify it or its elements.
func (s *Store) Tools(ctx context.Context) ([]Tool, error) {
	if now := s.now(); s.trusted(now) {
		if snap := s.near.getTools(now); snap != nil {
			return snap.list, nil
		}
	}
	snap, err := s.loadTools(ctx)
	if err != nil {
		return nil, err
	}
	return snap.list, nil
}

// Tool returns one enabled tool; a disabled or unknown tool is ErrNotFound.
func (s *Store) Tool(ctx context.Context, name string) (Tool, error) {
	if now := s.now(); s.trusted(now) {
		if snap := s.near.getTools(now); snap != nil {
			return lookupTool(snap, name)
		}
	}
	if s.near == nil {
		// No cache: one indexed query rather than the whole catalogue.
		lctx, cancel := s.lookupContext(ctx)
		defer cancel()
		t, err := s.dbTool(lctx, name)
		return t, s.noteDB(err)
	}
	snap, err := s.loadTools(ctx)
	if err != nil {
		return Tool{}, err
	}
	return lookupTool(snap, name)
}

func lookupTool(snap *toolSnapshot, name string) (Tool, error) {
	if t, ok := snap.byName[name]; ok {
		return t, nil
	}
	return Tool{}, ErrNotFound
}

// User returns the user with this email (case-insensitive) or ErrNotFound.
func (s *Store) User(ctx context.Context, email string) (User, error) {
	email = normEmail(email)
	if now := s.now(); s.trusted(now) {
		if e, ok := s.near.getUser(email, now); ok {
			if !e.found {
				return User{}, ErrNotFound
			}
			return e.user, nil
		}
	}
	e, err := s.loadUser(ctx, email)
	if err != nil {
		return User{}, err
	}
	if !e.found {
		return User{}, ErrNotFound
	}
	return e.user, nil
}

// detached gives a shared (single-flight) load a context that one caller
// giving up cannot cancel for the others, bounded by DB_CONNECT_TIMEOUT
// (outage.go).
func (s *Store) detached(ctx context.Context) (context.Context, context.CancelFunc) {
	return s.lookupContext(ctx)
}

// loadTools is the miss path: Redis (CACHE_TYPE=redis) or the database, then
// the near cache.
func (s *Store) loadTools(ctx context.Context) (*toolSnapshot, error) {
	if s.near == nil {
		// CACHE_TYPE=none: literally one query per lookup, no collapsing.
		lctx, cancel := s.lookupContext(ctx)
		defer cancel()
		return s.fetchTools(lctx)
	}
	if snap := s.toolsWhileDown(); snap != nil {
		return snap, nil
	}
	v, err := s.flight.do(ctx, toolsKey, func() (any, error) {
		fctx, cancel := s.detached(ctx)
		defer cancel()
		return s.fetchTools(fctx)
	})
	if err != nil {
		if snap := s.staleTools(); snap != nil && errors.Is(err, ErrUnavailable) {
			return snap, nil
		}
		return nil, err
	}
	return v.(*toolSnapshot), nil
}

func (s *Store) fetchTools(ctx context.Context) (*toolSnapshot, error) {
	now := s.now()
	cacheable := s.trusted(now)
	var gen uint64
	if s.near != nil {
		gen = s.near.snapshotGen() // before any read: see nearCache
	}
	var tools []Tool
	state := redisSkipped
	if s.redis != nil && cacheable && s.redis.usable(now) {
		var val string
		val, state = s.redis.get(ctx, toolsKey)
		if state == redisHit {
			if err := json.Unmarshal([]byte(val), &tools); err != nil {
				s.log.Warn("undecodable tools entry in Redis; reading the database", zap.Error(err))
				state = redisAbsent
			}
		}
	}
	if state != redisHit {
		var err error
		tools, err = s.dbTools(ctx)
		if err = s.noteDB(err); err != nil {
			return nil, err
		}
		if state == redisAbsent {
			if b, err := json.Marshal(tools); err == nil {
				s.redis.fill(ctx, toolsKey, string(b), s.o.CacheTTL, now)
			}
		}
	}
	snap := newToolSnapshot(tools)
	if cacheable && state != redisFailed {
		s.near.fillTools(gen, snap, now)
	}
	return snap, nil
}

func newToolSnapshot(tools []Tool) *toolSnapshot {
	sort.Slice(tools, func(i, j int) bool { return tools[i].Name < tools[j].Name })
	snap := &toolSnapshot{list: tools, byName: make(map[string]Tool, len(tools))}
	for _, t := range tools {
		snap.byName[t.Name] = t
	}
	return snap
}

func (s *Store) loadUser(ctx context.Context, email string) (*userEntry, error) {
	key := userKey(email)
	if s.near == nil {
		lctx, cancel := s.lookupContext(ctx)
		defer cancel()
		return s.fetchUser(lctx, email, key)
	}
	if e := s.userWhileDown(email); e != nil {
		return e, nil
	}
	v, err := s.flight.do(ctx, key, func() (any, error) {
		fctx, cancel := s.detached(ctx)
		defer cancel()
		return s.fetchUser(fctx, email, key)
	})
	if err != nil {
		if e := s.staleUser(email); e != nil && errors.Is(err, ErrUnavailable) {
			return e, nil
		}
		return nil, err
	}
	return v.(*userEntry), nil
}

// Redis encodings of a user key besides the JSON of a User.
const redisNoUser = "-" // the database has no such user (a cached negative)

func (s *Store) fetchUser(ctx context.Context, email, key string) (*userEntry, error) {
	now := s.now()
	cacheable := s.trusted(now)
	var gen uint64
	if s.near != nil {
		gen = s.near.snapshotGen()
	}
	e := &userEntry{}
	state := redisSkipped
	if s.redis != nil && cacheable && s.redis.usable(now) {
		var val string
		val, state = s.redis.get(ctx, key)
		if state == redisHit {
			if val != redisNoUser {
				if err := json.Unmarshal([]byte(val), &e.user); err != nil {
					s.log.Warn("undecodable user entry in Redis; reading the database", zap.Error(err))
					state = redisAbsent
				} else {
					e.found = true
				}
			}
		}
	}
	if state != redisHit {
		u, err := s.dbUser(ctx, email)
		err = s.noteDB(err)
		switch {
		case err == nil:
			e.user, e.found = u, true
		case errors.Is(err, ErrNotFound):
		default:
			return nil, err
		}
		if state == redisAbsent {
			val, ttl := redisNoUser, min(s.o.CacheTTL, negativeTTL)
			if e.found {
				b, _ := json.Marshal(e.user)
				val, ttl = string(b), s.o.CacheTTL
			}
			s.redis.fill(ctx, key, val, ttl, now)
		}
	}
	if cacheable && state != redisFailed {
		s.near.fillUser(gen, email, e.user, e.found, now)
	}
	return e, nil
}

// Database reads.

// AllTools lists every tool, disabled ones too, sorted by name, straight
// from the database: it serves the admin API, not the hot path.
func (s *Store) AllTools(ctx context.Context) ([]Tool, error) {
	lctx, cancel := s.lookupContext(ctx)
	defer cancel()
	tools, err := s.queryTools(lctx, "SELECT "+toolColumns+" FROM tools ORDER BY name")
	return tools, s.noteDB(err)
}

func (s *Store) dbTools(ctx context.Context) ([]Tool, error) {
	return s.queryTools(ctx, "SELECT "+toolColumns+" FROM tools WHERE enabled ORDER BY name")
}

// toolColumns are what scanTool reads.
const toolColumns = "name, description, input_schema, enabled, COALESCE(gateway, ''), COALESCE(upstream_name, ''), COALESCE(output_schema, ''), COALESCE(rest, '')"

type scanner interface{ Scan(dest ...any) error }

func scanTool(r scanner) (Tool, error) {
	var t Tool
	var schema, output, rest string
	if err := r.Scan(&t.Name, &t.Description, &schema, &t.Enabled, &t.Gateway, &t.UpstreamName, &output, &rest); err != nil {
		return Tool{}, err
	}
	t.InputSchema = json.RawMessage(schema)
	if output != "" {
		t.OutputSchema = json.RawMessage(output)
	}
	t.REST = scanREST(rest)
	return t, nil
}

func (s *Store) queryTools(ctx context.Context, query string) ([]Tool, error) {
	return s.queryToolsArgs(ctx, query)
}

func (s *Store) queryToolsArgs(ctx context.Context, query string, args ...any) ([]Tool, error) {
	r, err := s.db.query(ctx, query, args...)
	if err != nil {
		return nil, fmt.Errorf("list tools: %w", err)
	}
	defer r.Close()
	tools := []Tool{}
	for r.Next() {
		t, err := scanTool(r)
		if err != nil {
			return nil, fmt.Errorf("list tools: %w", err)
		}
		tools = append(tools, t)
	}
	if err := r.Err(); err != nil {
		return nil, fmt.Errorf("list tools: %w", err)
	}
	return tools, nil
}

func (s *Store) dbTool(ctx context.Context, name string) (Tool, error) {
	tools, err := s.queryToolsArgs(ctx, "SELECT "+toolColumns+" FROM tools WHERE name = $1 AND enabled", name)
	if err != nil {
		return Tool{}, fmt.Errorf("get tool %q: %w", name, err)
	}
	if len(tools) == 0 {
		return Tool{}, ErrNotFound
	}
	return tools[0], nil
}

func (s *Store) dbUser(ctx context.Context, email string) (User, error) {
	var u User
	err := queryOne(ctx, s.db, "SELECT email, active, is_admin FROM users WHERE email = $1",
		[]any{email}, &u.Email, &u.Active, &u.Admin)
	if errors.Is(err, errNoRows) {
		return User{}, ErrNotFound
	}
	if err != nil {
		return User{}, fmt.Errorf("get user %s: %w", email, err)
	}
	return u, nil
}

// Writes.

// PutUser inserts or updates a user (email is case-insensitive and stored
// lower-case), then makes every worker of every instance forget the old value.
func (s *Store) PutUser(ctx context.Context, u User) error {
	u.Email = normEmail(u.Email)
	if u.Email == "" {
		return errors.New("put user: email is empty")
	}
	key := userKey(u.Email)
	ctx, cancel := s.writeContext(ctx)
	defer cancel()
	err := s.db.tx(ctx, func(q querier) error {
		if _, err := q.exec(ctx, `INSERT INTO users (email, active, is_admin) VALUES ($1, $2, $3)
			ON CONFLICT (email) DO UPDATE SET active = excluded.active, is_admin = excluded.is_admin,
			updated_at = CURRENT_TIMESTAMP`, u.Email, u.Active, u.Admin); err != nil {
			return err
		}
		_, err := bumpEpoch(ctx, q, key)
		return err
	})
	if err = s.noteDB(err); err != nil {
		return fmt.Errorf("put user %s: %w", u.Email, err)
	}
	s.afterWrite(ctx, key)
	return nil
}

// PutTool inserts or updates a tool, then makes every worker of every
// instance forget the old catalogue. An empty InputSchema becomes
// {"type":"object"}; an invalid one is refused. A REST endpoint (t.REST,
// its credential already sealed) replaces the tool's; none keeps it.
func (s *Store) PutTool(ctx context.Context, t Tool) error {
	if strings.TrimSpace(t.Name) == "" {
		return errors.New("put tool: name is empty")
	}
	schema := []byte(t.InputSchema)
	if len(schema) == 0 {
		schema = []byte(`{"type":"object"}`)
	}
	if !json.Valid(schema) {
		return fmt.Errorf("put tool %q: inputSchema is not valid JSON", t.Name)
	}
	rest, err := restColumn(t)
	if err != nil {
		return err
	}
	ctx, cancel := s.writeContext(ctx)
	defer cancel()
	err = s.db.tx(ctx, func(q querier) error {
		if _, err := q.exec(ctx, `INSERT INTO tools (name, description, input_schema, enabled, rest) VALUES ($1, $2, $3, $4, $5)
			ON CONFLICT (name) DO UPDATE SET description = excluded.description,
			input_schema = excluded.input_schema, enabled = excluded.enabled,
			rest = COALESCE(excluded.rest, tools.rest), updated_at = CURRENT_TIMESTAMP`,
			t.Name, t.Description, string(schema), t.Enabled, rest); err != nil {
			return err
		}
		_, err := bumpEpoch(ctx, q, toolsKey)
		return err
	})
	if err = s.noteDB(err); err != nil {
		return fmt.Errorf("put tool %q: %w", t.Name, err)
	}
	s.afterWrite(ctx, toolsKey)
	return nil
}

// ErrUpstreamTool refuses to delete a tool of an upstream on its own: the
// upstream's list decides its tools (DeleteGateway removes them all).
var ErrUpstreamTool = errors.New("the tool belongs to an upstream")

// DeleteTool removes a tool of the gateway (built in, registered or REST),
// then makes every worker of every instance forget the old catalogue.
// ErrNotFound when there is none; ErrUpstreamTool for an upstream's.
func (s *Store) DeleteTool(ctx context.Context, name string) error {
	ctx, cancel := s.writeContext(ctx)
	defer cancel()
	var upstream *string
	err := s.db.tx(ctx, func(q querier) error {
		switch err := queryOne(ctx, q, "SELECT gateway FROM tools WHERE name = $1", []any{name}, &upstream); {
		case errors.Is(err, errNoRows):
			return ErrNotFound
		case err != nil:
			return err
		}
		if upstream != nil && *upstream != "" {
			return ErrUpstreamTool
		}
		if _, err := q.exec(ctx, "DELETE FROM tools WHERE name = $1", name); err != nil {
			return err
		}
		_, err := bumpEpoch(ctx, q, toolsKey)
		return err
	})
	switch {
	case errors.Is(err, ErrUpstreamTool):
		return fmt.Errorf("delete tool %q: %w (%s): delete the upstream, or disable the tool", name, err, *upstream)
	case errors.Is(err, ErrNotFound):
		return fmt.Errorf("delete tool %q: %w", name, err)
	}
	if err = s.noteDB(err); err != nil {
		return fmt.Errorf("delete tool %q: %w", name, err)
	}
	s.afterWrite(ctx, toolsKey)
	return nil
}

// afterWrite runs after a committed write: this worker forgets the key at
// once (it reads its own writes), and with Redis every other client is told.
// Other workers using the database epoch learn of it at their next poll.
func (s *Store) afterWrite(ctx context.Context, key string) {
	if s.near != nil {
		s.near.invalidateKey(key)
	}
	if s.redis != nil {
		s.redis.tombstone(ctx, key)
	}
	if s.o.LocalWrites != nil { // the instance's other workers stop trusting their near caches (Options.LocalWrites)
		s.o.LocalWrites.Add(1)
	}
}

// Ready reports whether the database and the cache can be reached, for /ready.
func (s *Store) Ready(ctx context.Context) []Check {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	db := Check{Name: "Database", OK: true, Detail: s.db.dialect()}
	if err := s.noteDB(s.db.ping(ctx)); err != nil {
		db.OK, db.Detail = false, err.Error()
	}
	return []Check{db, s.cacheCheck(ctx)}
}

func (s *Store) cacheCheck(ctx context.Context) Check {
	c := Check{Name: "Cache", OK: true, Detail: s.o.CacheType}
	switch s.o.CacheType {
	case CacheRedis:
		if err := s.redis.ping(ctx); err != nil {
			c.OK, c.Detail = false, "redis: "+err.Error()
		} else {
			c.Detail = "redis " + s.redis.addr
		}
	case CacheMemory, CacheDatabase:
		// These caches are only as good as their epoch polls.
		if ep := s.checkErr.Load(); ep != nil {
			c.OK, c.Detail = false, s.o.CacheType+": "+(*ep).Error()
		}
	}
	return c
}

// Close stops the background goroutines and closes Redis and the pool.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		s.closed.Store(true)
		s.cancelBG()
		close(s.stop)
		s.wg.Wait()
		if s.redis != nil {
			s.redis.close()
		}
		s.db.close()
	})
	return nil
}
