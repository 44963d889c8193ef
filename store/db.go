package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
)

// The store speaks to two drivers: database/sql + modernc.org/sqlite, and
// pgxpool. Both are reduced to the few operations below so the queries, the
// migrations and the coherence logic are written once. SQL text uses $1, $2
// placeholders, which PostgreSQL and SQLite both understand.

// querier runs statements on a connection or inside a transaction.
type querier interface {
	query(ctx context.Context, sql string, args ...any) (rows, error)
	exec(ctx context.Context, sql string, args ...any) (int64, error)
}

// rows is the common subset of *sql.Rows and pgx.Rows.
type rows interface {
	Next() bool
	Scan(dest ...any) error
	Err() error
	Close()
}

// database is one worker's connection pool.
type database interface {
	querier
	// tx runs fn inside one write transaction (BEGIN IMMEDIATE on SQLite) and
	// commits if fn returns nil.
	tx(ctx context.Context, fn func(q querier) error) error
	// migrate runs fn in one transaction while holding the cross-process
	// migration lock (an advisory lock on PostgreSQL, the write lock on SQLite).
	migrate(ctx context.Context, fn func(q querier) error) error
	// prepare does one-time setup of the database file or server before
	// first use (SQLite: switch the file to WAL). Idempotent.
	prepare(ctx context.Context) error
	ping(ctx context.Context) error
	dialect() string
	close()
}

// errNoRows is what queryOne returns when the query matched nothing.
var errNoRows = errors.New("no rows")

// queryOne runs a query expected to return at most one row and scans it.
func queryOne(ctx context.Context, q querier, query string, args []any, dest ...any) error {
	r, err := q.query(ctx, query, args...)
	if err != nil {
		return err
	}
	defer r.Close()
	if !r.Next() {
		if err := r.Err(); err != nil {
			return err
		}
		return errNoRows
	}
	if err := r.Scan(dest...); err != nil {
		return err
	}
	return r.Err()
}

// openDatabase parses o.DatabaseURL and opens the matching pool. Pools are
// lazy: nothing is dialled until the first query, so a worker can start while
// the database is briefly away and recover on its own.
func openDatabase(o Options) (database, error) {
	dialect, dsn, err := ParseDatabaseURL(o.DatabaseURL)
	if err != nil {
		return nil, err
	}
	switch dialect {
	case DialectSQLite:
		return openSQLite(dsn, o)
	default:
		return openPostgres(dsn, o)
	}
}

// sqlRows adapts *sql.Rows (whose Close returns an error) and releases the
// pooled connection it was read from.
type sqlRows struct {
	*sql.Rows
	release func()
}

func (r sqlRows) Close() {
	_ = r.Rows.Close()
	if r.release != nil {
		r.release()
	}
}

// wrapDB adds the dialect to driver errors so logs say which database failed.
func wrapDB(dialect, op string, err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("%s %s: %w", dialect, op, err)
}
