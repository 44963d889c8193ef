package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"

	"modernc.org/sqlite" // pure-Go SQLite driver, registered as "sqlite"
	sqlite3 "modernc.org/sqlite/lib"
)

// sqliteDB is a database/sql pool over one SQLite file, which several worker
// processes open at the same time (WAL mode, busy_timeout: see sqlitePragmas).
type sqliteDB struct {
	db          *sql.DB
	poolTimeout time.Duration
}

func openSQLite(dsn string, o Options) (*sqliteDB, error) {
	db, err := sql.Open("sqlite", dsn)
	if err != nil {
		return nil, fmt.Errorf("open database sqlite: %w", err)
	}
	// The pool mirrors SQLAlchemy's QueuePool: PoolSize connections are kept,
	// up to MaxOverflow more are opened under load and closed when idle.
	db.SetMaxOpenConns(o.maxConns())
	db.SetMaxIdleConns(o.PoolSize)
	db.SetConnMaxLifetime(o.PoolRecycle)
	return &sqliteDB{db: db, poolTimeout: o.PoolTimeout}, nil
}

func (d *sqliteDB) dialect() string { return DialectSQLite }

// conn takes a connection from the pool, waiting at most poolTimeout
// (DB_POOL_TIMEOUT); the statement itself then runs under the caller's ctx.
func (d *sqliteDB) conn(ctx context.Context) (*sql.Conn, error) {
	actx, cancel := context.WithTimeout(ctx, d.poolTimeout)
	defer cancel()
	c, err := d.db.Conn(actx)
	if err != nil {
		return nil, fmt.Errorf("sqlite: no connection within DB_POOL_TIMEOUT %s: %w", d.poolTimeout, err)
	}
	return c, nil
}

func (d *sqliteDB) query(ctx context.Context, q string, args ...any) (rows, error) {
	c, err := d.conn(ctx)
	if err != nil {
		return nil, err
	}
	r, err := c.QueryContext(ctx, q, args...)
	if err != nil {
		_ = c.Close()
		return nil, wrapDB(DialectSQLite, "query", err)
	}
	return sqlRows{Rows: r, release: func() { _ = c.Close() }}, nil
}

func (d *sqliteDB) exec(ctx context.Context, q string, args ...any) (int64, error) {
	c, err := d.conn(ctx)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	res, err := c.ExecContext(ctx, q, args...)
	if err != nil {
		return 0, wrapDB(DialectSQLite, "exec", err)
	}
	n, _ := res.RowsAffected()
	return n, nil
}

func (d *sqliteDB) tx(ctx context.Context, fn func(q querier) error) error {
	c, err := d.conn(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	// BEGIN IMMEDIATE (from _txlock): waits up to busy_timeout for the write lock.
	t, err := c.BeginTx(ctx, nil)
	if err != nil {
		return wrapDB(DialectSQLite, "begin", err)
	}
	if err := fn(sqliteTx{t}); err != nil {
		_ = t.Rollback()
		return err
	}
	return wrapDB(DialectSQLite, "commit", t.Commit())
}

// migrate: the BEGIN IMMEDIATE of tx is the cross-process lock. A second
// migrator waits for it, then finds the versions already applied.
func (d *sqliteDB) migrate(ctx context.Context, fn func(q querier) error) error {
	return d.tx(ctx, fn)
}

// prepare switches the file to WAL (readers in every worker run while one
// writer writes). The mode is stored in the file, so this changes something
// only the first time; when another process is switching it at the same
// moment SQLite answers SQLITE_BUSY at once, hence the retries.
func (d *sqliteDB) prepare(ctx context.Context) error {
	deadline := time.Now().Add(10 * time.Second)
	for wait := 5 * time.Millisecond; ; wait = min(2*wait, 200*time.Millisecond) {
		var mode string
		err := queryOne(ctx, d, "PRAGMA journal_mode", nil, &mode)
		if err == nil && strings.EqualFold(mode, "wal") {
			return nil
		}
		if err == nil {
			err = queryOne(ctx, d, "PRAGMA journal_mode=WAL", nil, &mode)
			if err == nil && strings.EqualFold(mode, "wal") {
				return nil
			}
			if err == nil {
				return fmt.Errorf("sqlite: cannot switch to WAL (journal_mode is %q)", mode)
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("sqlite: switch to WAL: %w", err)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("sqlite: switch to WAL: %w", ctx.Err())
		case <-time.After(wait):
		}
	}
}

func (d *sqliteDB) ping(ctx context.Context) error {
	var one int
	return wrapDB(DialectSQLite, "ping", queryOne(ctx, d, "SELECT 1", nil, &one))
}

func (d *sqliteDB) close() { _ = d.db.Close() }

// sqliteTx runs statements inside a transaction.
type sqliteTx struct{ t *sql.Tx }

func (x sqliteTx) query(ctx context.Context, q string, args ...any) (rows, error) {
	r, err := x.t.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, wrapDB(DialectSQLite, "query", err)
	}
	return sqlRows{Rows: r}, nil
}

func (x sqliteTx) exec(ctx context.Context, q string, args ...any) (int64, error) {
	res, err := x.t.ExecContext(ctx, q, args...)
	if err != nil {
		return 0, wrapDB(DialectSQLite, "exec", err)
	}
	n, _ := res.RowsAffected()
	return n, nil
}

// sqliteUnavailable reports the SQLite errors that mean the file cannot be
// used now (locked past busy_timeout, unreadable, unwritable), as opposed to
// an answer (a constraint, a missing table).
func sqliteUnavailable(err error) bool {
	var e *sqlite.Error
	if !errors.As(err, &e) {
		return false
	}
	switch e.Code() & 0xff { // the primary code; extended codes add high bits
	case sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED, sqlite3.SQLITE_CANTOPEN, sqlite3.SQLITE_IOERR,
		sqlite3.SQLITE_FULL, sqlite3.SQLITE_READONLY, sqlite3.SQLITE_NOMEM:
		return true
	}
	return false
}
