package store

import (
	"fmt"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
)

// Cache types accepted in Options.CacheType (CACHE_TYPE).
const (
	CacheDatabase = "database" // near cache + per-key invalidation through the database (default)
	CacheMemory   = "memory"   // near cache + drop-everything invalidation through the database
	CacheRedis    = "redis"    // near cache + rueidis client-side caching, invalidated by Redis
	CacheNone     = "none"     // no cache: every lookup is a database query
)

// Options configures the store. A zero field takes the default named in its
// comment, except MaxOverflow and StaleIfError, where 0 is a real setting (no
// overflow, no stale answers): the configuration layer supplies their
// defaults (5, and 5 minutes).
type Options struct {
	// DatabaseURL is DATABASE_URL: sqlite:///./mcp.db (relative), sqlite:////abs/x.db,
	// postgresql://..., postgres://..., postgresql+psycopg://...
	DatabaseURL string

	// PoolSize and MaxOverflow are DB_POOL_SIZE (5) and DB_MAX_OVERFLOW (5), per
	// worker process. A worker opens at most PoolSize+MaxOverflow connections.
	PoolSize, MaxOverflow int
	// PoolTimeout is DB_POOL_TIMEOUT (30s): how long a write or a background
	// task waits for a free connection. PoolRecycle is DB_POOL_RECYCLE (1h):
	// a connection's maximum life.
	PoolTimeout, PoolRecycle time.Duration
	// ConnectTimeout is DB_CONNECT_TIMEOUT (2s): the longest a request waits
	// to reach the database. It bounds dialling a new connection (TCP, TLS,
	// startup and authentication) and the whole database step of a lookup
	// made for a request (a free connection, dialling, the query): past it
	// the lookup fails with ErrUnavailable, which the gateway answers with
	// 503, instead of waiting for the kernel's TCP timeout. See outage.go.
	ConnectTimeout time.Duration

	CacheType   string        // CACHE_TYPE: "database" (default) | "memory" | "redis" | "none"
	CachePrefix string        // CACHE_PREFIX: "mcpgw:"
	CacheTTL    time.Duration // CACHE_TTL: 60s

	// StaleIfError is CACHE_STALE_IF_ERROR: while the database cannot be
	// reached, near-cache entries (users, the tool catalogue) are still
	// served for up to this long after they expired or lost their coherence
	// lease, so requests whose lookups were cached keep working through an
	// outage. 0 (the zero value) turns it off; the configuration layer
	// supplies its default of 5 minutes. See outage.go.
	StaleIfError time.Duration

	RedisURL            string // REDIS_URL: redis://localhost:6379/0
	RedisMaxConnections int    // REDIS_MAX_CONNECTIONS: 50

	// REDIS_SOCKET_TIMEOUT (2s), REDIS_SOCKET_CONNECT_TIMEOUT (2s),
	// REDIS_HEALTH_CHECK_INTERVAL (30s). See docs/store.md for what each means
	// with rueidis.
	RedisSocketTimeout, RedisSocketConnectTimeout, RedisHealthCheckInterval time.Duration

	// PlatformAdminEmail is PLATFORM_ADMIN_EMAIL (admin@example.com): Migrate
	// creates this user, active and admin, if it does not exist.
	PlatformAdminEmail string

	// Instance identifies the server instance these sessions belong to:
	// every PostgreSQL session is named "mcpgateway/<Instance>/<pid>"
	// through application_name (see appname.go), and CheckReloadCapacity
	// counts the instance's own sessions apart from other clients'.
	// Empty: InstanceOf(the master's pid) when EnvMasterPID is set, as the
	// supervisor does in every worker, else InstanceOf(this process's pid).
	Instance string

	Logger *zap.Logger // nil: zap.NewNop()

	// LocalWrites, when set, is a counter shared by the stores of one
	// instance's workers (in shared memory: internal/shm). Every write
	// adds one once it has committed, and a store that sees it move reads
	// past its near cache until its next coherence check has caught up: a
	// write is seen at once by every worker of its instance (a DELETE of
	// an MCP session, a revoked token, a tool), and by other instances
	// within the lease (one second). Nil: within the lease everywhere.
	LocalWrites *atomic.Uint64
}

// withDefaults returns o with every zero field replaced by its default and the
// cache type checked.
func (o Options) withDefaults() (Options, error) {
	if o.DatabaseURL == "" {
		o.DatabaseURL = "sqlite:///./mcp.db"
	}
	if o.PoolSize <= 0 {
		o.PoolSize = 5
	}
	if o.MaxOverflow < 0 {
		o.MaxOverflow = 0
	}
	if o.PoolTimeout <= 0 {
		o.PoolTimeout = 30 * time.Second
	}
	if o.PoolRecycle <= 0 {
		o.PoolRecycle = time.Hour
	}
	if o.ConnectTimeout <= 0 {
		o.ConnectTimeout = 2 * time.Second
	}
	if o.StaleIfError < 0 {
		o.StaleIfError = 0
	}
	if o.CacheType == "" {
		o.CacheType = CacheDatabase
	}
	switch o.CacheType {
	case CacheDatabase, CacheMemory, CacheRedis, CacheNone:
	default:
		return o, fmt.Errorf("CACHE_TYPE %q is not supported: use database, memory, redis or none", o.CacheType)
	}
	if o.CachePrefix == "" {
		o.CachePrefix = "mcpgw:"
	}
	if o.CacheTTL <= 0 {
		o.CacheTTL = 60 * time.Second
	}
	if o.RedisURL == "" {
		o.RedisURL = "redis://localhost:6379/0"
	}
	if o.RedisMaxConnections <= 0 {
		o.RedisMaxConnections = 50
	}
	if o.RedisSocketTimeout <= 0 {
		o.RedisSocketTimeout = 2 * time.Second
	}
	if o.RedisSocketConnectTimeout <= 0 {
		o.RedisSocketConnectTimeout = 2 * time.Second
	}
	if o.RedisHealthCheckInterval <= 0 {
		o.RedisHealthCheckInterval = 30 * time.Second
	}
	if o.PlatformAdminEmail == "" {
		o.PlatformAdminEmail = "admin@example.com"
	}
	if o.Instance == "" {
		o.Instance = defaultInstance()
	}
	if o.Logger == nil {
		o.Logger = zap.NewNop()
	}
	return o, nil
}

// maxConns is the most connections one worker's pool may open.
func (o Options) maxConns() int { return o.PoolSize + o.MaxOverflow }
