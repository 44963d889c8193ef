package store

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/rueidis"
	"go.uber.org/zap"
)

// CACHE_TYPE=redis. Values live in Redis under CachePrefix; each worker reads
// them with DoCache, i.e. rueidis server-assisted client-side caching: Redis
// remembers which keys this connection read and pushes an invalidation when
// any client changes one. The push also reaches OnInvalidations, which drops
// the decoded copy in the near cache; steady-state lookups never leave the
// process.
//
// Writes go to the database first. Then, instead of a bare DEL, the key is
// overwritten with a short-lived tombstone (any write to a tracked key makes
// Redis push the invalidation, exactly as DEL would). The tombstone closes the
// cache-aside race a DEL leaves open: a reader that read the database just
// before the write could otherwise put the old value back right after the
// DEL, and it would stay for CACHE_TTL. Readers fill Redis only with SET NX,
// which fails while the tombstone is there, and give up filling if their own
// read took longer than redisFillWindow. The tombstone outlives that window
// plus one socket timeout (the longest the SET itself may travel), so an old
// value can never land after it expires. While it lives, readers take the
// value from the database into their near cache (one read per worker).
const (
	redisTombstone    = "!"
	redisFillWindow   = time.Second
	redisCacheBytes   = 4 << 20  // client-side cache per connection (rueidis default: 128 MiB)
	redisBufferBytes  = 64 << 10 // read/write buffer per connection (rueidis default: 512 KiB)
	redisRingScale    = 8        // 256-slot pipeline ring (default 1024): our Redis traffic is only misses
	redisPingInterval = checkInterval
)

// redisState is what a cache read found.
type redisState int

const (
	redisSkipped    redisState = iota // Redis not asked (not trusted right now)
	redisHit                          // a value
	redisAbsent                       // no key: read the database, then fill
	redisTombstoned                   // recently written: read the database, do not fill
	redisFailed                       // Redis error: read the database, cache nothing
)

type redisCache struct {
	s         *Store
	client    rueidis.Client
	prefix    string
	addr      string
	opTimeout time.Duration
	tombLife  time.Duration
	down      atomic.Bool

	mu      sync.Mutex
	pending map[string]bool // keys whose tombstone could not be written yet

	// The database epoch poll of CACHE_TYPE=redis (coherence_redis.go).
	epochLease    atomic.Int64          // the near cache may be read while now() < epochLease (and < Store.lease)
	epochErr      atomic.Pointer[error] // current epoch poll failure, nil when fine
	distrustUntil atomic.Int64          // Redis values are not read before this (now() clock)
}

// redisClientOption maps the REDIS_* settings onto rueidis (docs/store.md).
func redisClientOption(o Options) (rueidis.ClientOption, error) {
	opt, err := rueidis.ParseURL(o.RedisURL)
	if err != nil {
		// A *url.Error quotes the whole URL, password included: keep only
		// the reason.
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return opt, fmt.Errorf("REDIS_URL is not a valid redis:// or rediss:// URL: %w", err)
	}
	// REDIS_SOCKET_CONNECT_TIMEOUT: dialling plus the connection handshake.
	opt.Dialer.Timeout = o.RedisSocketConnectTimeout
	// REDIS_HEALTH_CHECK_INTERVAL: rueidis PINGs a connection that has been
	// idle this long (and uses it as the TCP keep-alive period), which is what
	// redis-py's health_check_interval does before reusing an idle connection.
	opt.Dialer.KeepAlive = o.RedisHealthCheckInterval
	// REDIS_SOCKET_TIMEOUT: the longest a command, or that PING, may wait for
	// its reply before the connection is declared dead and closed.
	opt.ConnWriteTimeout = o.RedisSocketTimeout
	// REDIS_MAX_CONNECTIONS: rueidis does not hold one connection per request;
	// it pipelines every request over one connection here. Only blocking
	// commands (which the store never sends) take dedicated connections, from
	// a pool bounded by this.
	opt.BlockingPoolSize = o.RedisMaxConnections
	// One pipelined connection: it carries every read, write and invalidation
	// push, so a PONG on it proves that all earlier pushes were processed (the
	// coherence lease relies on this).
	opt.PipelineMultiplex = -1
	opt.ForceSingleClient = true // no CLUSTER SLOTS probe; a URL names one server
	// No automatic retries: a failed read falls back to the database at once
	// instead of waiting in rueidis's retry back-off.
	opt.DisableRetry = true
	opt.CacheSizeEachConn = redisCacheBytes
	opt.ReadBufferEachConn = redisBufferBytes
	opt.WriteBufferEachConn = redisBufferBytes
	opt.RingScaleEachConn = redisRingScale
	opt.ClientName = "mcpgateway"
	return opt, nil
}

func newRedisCache(s *Store) (*redisCache, error) {
	opt, err := redisClientOption(s.o)
	if err != nil {
		return nil, err
	}
	prefix := s.o.CachePrefix
	opt.OnInvalidations = func(msgs []rueidis.RedisMessage) {
		// Runs on rueidis's read goroutine: keep it short. nil means the
		// connection closed or Redis flushed: forget everything.
		if msgs == nil {
			s.near.invalidateAll()
			return
		}
		for i := range msgs {
			k, err := msgs[i].ToString()
			if err != nil {
				s.near.invalidateAll()
				return
			}
			if key, ok := strings.CutPrefix(k, prefix); ok {
				s.near.invalidateKey(key)
			}
		}
	}
	rc := &redisCache{s: s, prefix: prefix, addr: strings.Join(opt.InitAddress, ","),
		opTimeout: s.o.RedisSocketTimeout, pending: map[string]bool{},
		tombLife: redisFillWindow + s.o.RedisSocketTimeout + time.Second}
	// With ForceSingleClient, NewClient returns a usable client even when
	// the first dial fails; it dials again on the next command.
	client, err := rueidis.NewClient(opt)
	if client == nil {
		return nil, fmt.Errorf("open redis cache %s: %w", rc.addr, err)
	}
	rc.client = client
	if err != nil {
		rc.markDown(err)
	}
	return rc, nil
}

// get reads key through the client-side cache.
func (r *redisCache) get(ctx context.Context, key string) (string, redisState) {
	cctx, cancel := context.WithTimeout(ctx, r.opTimeout)
	defer cancel()
	v, err := r.client.DoCache(cctx, r.client.B().Get().Key(r.prefix+key).Cache(), r.s.o.CacheTTL).ToString()
	switch {
	case rueidis.IsRedisNil(err):
		return "", redisAbsent
	case err != nil:
		r.failed(ctx, err)
		return "", redisFailed
	case v == redisTombstone:
		return "", redisTombstoned
	}
	return v, redisHit
}

// fill stores a value read from the database, unless a write tombstoned the
// key meanwhile (NX) or the read that produced it started too long ago.
func (r *redisCache) fill(ctx context.Context, key, val string, ttl time.Duration, started int64) {
	if time.Duration(r.s.now()-started) > redisFillWindow {
		return
	}
	cctx, cancel := context.WithTimeout(ctx, r.opTimeout)
	defer cancel()
	err := r.client.Do(cctx, r.client.B().Set().Key(r.prefix+key).Value(val).Nx().Px(ttl).Build()).Error()
	if err != nil && !rueidis.IsRedisNil(err) { // nil: NX refused, someone else set it
		r.failed(ctx, err)
	}
}

// tombstone tells every client that key changed. If Redis cannot be reached
// the key is remembered and written by the heartbeat once Redis is back.
func (r *redisCache) tombstone(ctx context.Context, key string) {
	if r.down.Load() {
		// Known to be away: do not make the write wait for a timeout.
		r.addPending(key)
		return
	}
	cctx, cancel := context.WithTimeout(ctx, r.opTimeout)
	defer cancel()
	if err := r.setTombstone(cctx, key); err != nil {
		r.addPending(key)
		r.failed(ctx, err)
	}
}

func (r *redisCache) addPending(key string) {
	r.mu.Lock()
	r.pending[key] = true
	r.mu.Unlock()
}

func (r *redisCache) setTombstone(ctx context.Context, key string) error {
	return r.client.Do(ctx, r.client.B().Set().Key(r.prefix+key).Value(redisTombstone).Px(r.tombLife).Build()).Error()
}

// flushPending writes the tombstones that failed while Redis was away.
func (r *redisCache) flushPending(ctx context.Context) error {
	r.mu.Lock()
	keys := make([]string, 0, len(r.pending))
	for k := range r.pending {
		keys = append(keys, k)
	}
	r.mu.Unlock()
	for _, k := range keys {
		if err := r.setTombstone(ctx, k); err != nil {
			return err
		}
		r.mu.Lock()
		delete(r.pending, k)
		r.mu.Unlock()
	}
	return nil
}

// failed handles a Redis error on a lookup or write: unless the caller gave
// up, the lease ends now, so lookups go straight to the database (without
// paying a Redis timeout each) until the heartbeat gets a PONG again.
func (r *redisCache) failed(ctx context.Context, err error) {
	if ctx.Err() != nil && errors.Is(err, ctx.Err()) {
		return
	}
	r.markDown(err)
}

func (r *redisCache) markDown(err error) {
	r.s.lease.Store(0)
	if !r.down.Swap(true) {
		r.s.log.Warn("redis unreachable; answering from the database until it returns",
			zap.String("redis", r.addr), zap.Error(err))
	}
	err = fmt.Errorf("redis %s: %w", r.addr, err)
	r.s.checkErr.Store(&err)
}

func (r *redisCache) ping(ctx context.Context) error {
	cctx, cancel := context.WithTimeout(ctx, r.opTimeout)
	defer cancel()
	return r.client.Do(cctx, r.client.B().Ping().Build()).Error()
}

func (r *redisCache) close() { r.client.Close() }

// heartbeat PINGs Redis. The PONG comes back on the connection that carries
// the invalidation pushes, after every push Redis sent before it, so once it
// arrives the near cache reflects every write Redis had seen when the PING
// was sent: the lease can start from that moment.
func (s *Store) heartbeat(parent context.Context) {
	r := s.redis
	sent := s.now()
	ctx, cancel := context.WithTimeout(parent, r.opTimeout)
	defer cancel()
	if err := r.ping(ctx); err != nil {
		if !s.closed.Load() {
			r.markDown(err)
		}
		return
	}
	if err := r.flushPending(ctx); err != nil {
		r.markDown(err)
		return
	}
	if r.down.Swap(false) {
		// Pushes may have been lost while the connection was down; rueidis
		// reports a closed connection with a nil push, but start clean anyway.
		s.near.invalidateAll()
	}
	s.checkOK(sent)
}
