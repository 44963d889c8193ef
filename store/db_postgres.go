package store

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// migrationLockKey is the pg_advisory_lock key Migrate holds, so two instances
// starting at once migrate one after the other. Any fixed int64 works; this is
// the ASCII of "mcpgwmig".
const migrationLockKey int64 = 0x6d63706777_6d6967

// pgDB is a pgxpool pool, sized like SQLAlchemy's QueuePool (docs/store.md).
type pgDB struct {
	pool        *pgxpool.Pool
	poolTimeout time.Duration
}

// pgPoolConfig maps the DB_POOL_* settings onto pgxpool.
func pgPoolConfig(dsn string, o Options) (*pgxpool.Config, error) {
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("open database postgresql: %w", err)
	}
	// pgxpool has no overflow: its MaxConns is the hard ceiling, which is what
	// SQLAlchemy's pool_size+max_overflow is.
	cfg.MaxConns = int32(o.maxConns())
	nameSession(cfg.ConnConfig, o)
	// Lazy, like SQLAlchemy: a worker that never queries holds no connection.
	cfg.MinConns = 0
	cfg.MaxConnLifetime = o.PoolRecycle
	// Spread recycling so a whole pool does not reconnect in the same second.
	cfg.MaxConnLifetimeJitter = o.PoolRecycle / 10
	// Bound dialling (TCP, TLS, startup, authentication) by
	// DB_CONNECT_TIMEOUT: an unreachable server must not hold a request for
	// the kernel's TCP timeout. A smaller connect_timeout in DATABASE_URL
	// is kept.
	if cfg.ConnConfig.ConnectTimeout <= 0 || cfg.ConnConfig.ConnectTimeout > o.ConnectTimeout {
		cfg.ConnConfig.ConnectTimeout = o.ConnectTimeout
	}
	return cfg, nil
}

// nameSession sets application_name (see appname.go) on every session
// opened with cfg. The name DATABASE_URL or PGAPPNAME gives, if any, is kept
// as the first part, so monitoring keyed on it keeps working.
func nameSession(cfg *pgx.ConnConfig, o Options) {
	if cfg.RuntimeParams == nil {
		cfg.RuntimeParams = map[string]string{}
	}
	cfg.RuntimeParams["application_name"] = sessionName(cfg.RuntimeParams["application_name"], o.Instance, os.Getpid())
}

func openPostgres(dsn string, o Options) (*pgDB, error) {
	cfg, err := pgPoolConfig(dsn, o)
	if err != nil {
		return nil, err
	}
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		return nil, fmt.Errorf("open database postgresql: %w", err)
	}
	return &pgDB{pool: pool, poolTimeout: o.PoolTimeout}, nil
}

func (d *pgDB) dialect() string { return DialectPostgres }

// acquire takes a connection, waiting at most poolTimeout (DB_POOL_TIMEOUT);
// pgxpool itself would wait as long as ctx allows.
func (d *pgDB) acquire(ctx context.Context) (*pgxpool.Conn, error) {
	actx, cancel := context.WithTimeout(ctx, d.poolTimeout)
	defer cancel()
	c, err := d.pool.Acquire(actx)
	if err != nil {
		return nil, fmt.Errorf("postgresql: no connection within DB_POOL_TIMEOUT %s: %w", d.poolTimeout, err)
	}
	return c, nil
}

func (d *pgDB) query(ctx context.Context, q string, args ...any) (rows, error) {
	c, err := d.acquire(ctx)
	if err != nil {
		return nil, err
	}
	r, err := c.Query(ctx, q, args...)
	if err != nil {
		c.Release()
		return nil, wrapDB(DialectPostgres, "query", err)
	}
	return pgRows{Rows: r, release: c.Release}, nil
}

func (d *pgDB) exec(ctx context.Context, q string, args ...any) (int64, error) {
	c, err := d.acquire(ctx)
	if err != nil {
		return 0, err
	}
	defer c.Release()
	tag, err := c.Exec(ctx, q, args...)
	if err != nil {
		return 0, wrapDB(DialectPostgres, "exec", err)
	}
	return tag.RowsAffected(), nil
}

func (d *pgDB) tx(ctx context.Context, fn func(q querier) error) error {
	c, err := d.acquire(ctx)
	if err != nil {
		return err
	}
	defer c.Release()
	return pgTxOn(ctx, c.Conn(), fn)
}

// pgTxOn runs fn in a transaction on one connection.
func pgTxOn(ctx context.Context, c *pgx.Conn, fn func(q querier) error) error {
	t, err := c.Begin(ctx)
	if err != nil {
		return wrapDB(DialectPostgres, "begin", err)
	}
	if err := fn(pgTx{t}); err != nil {
		_ = t.Rollback(context.WithoutCancel(ctx))
		return err
	}
	return wrapDB(DialectPostgres, "commit", t.Commit(ctx))
}

// migrate holds a session advisory lock on one connection for the whole
// migration. The lock goes away with the session, so a migrator that dies
// does not leave it behind.
func (d *pgDB) migrate(ctx context.Context, fn func(q querier) error) error {
	c, err := d.acquire(ctx)
	if err != nil {
		return err
	}
	defer c.Release()
	if _, err := c.Exec(ctx, "SELECT pg_advisory_lock($1)", migrationLockKey); err != nil {
		return wrapDB(DialectPostgres, "take migration lock", err)
	}
	defer func() {
		// Unlock even if ctx is done; if this fails the connection is broken
		// and the session (and its lock) ends with it.
		uctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if _, err := c.Exec(uctx, "SELECT pg_advisory_unlock($1)", migrationLockKey); err != nil {
			_ = c.Conn().Close(uctx)
		}
	}()
	return pgTxOn(ctx, c.Conn(), fn)
}

func (d *pgDB) prepare(context.Context) error { return nil }

func (d *pgDB) ping(ctx context.Context) error {
	var one int
	return wrapDB(DialectPostgres, "ping", queryOne(ctx, d, "SELECT 1", nil, &one))
}

func (d *pgDB) close() { d.pool.Close() }

// pgRows releases its pooled connection when closed.
type pgRows struct {
	pgx.Rows
	release func()
}

func (r pgRows) Close() {
	r.Rows.Close()
	if r.release != nil {
		r.release()
	}
}

type pgTx struct{ t pgx.Tx }

func (x pgTx) query(ctx context.Context, q string, args ...any) (rows, error) {
	r, err := x.t.Query(ctx, q, args...)
	if err != nil {
		return nil, wrapDB(DialectPostgres, "query", err)
	}
	return pgRows{Rows: r}, nil
}

func (x pgTx) exec(ctx context.Context, q string, args ...any) (int64, error) {
	tag, err := x.t.Exec(ctx, q, args...)
	if err != nil {
		return 0, wrapDB(DialectPostgres, "exec", err)
	}
	return tag.RowsAffected(), nil
}
