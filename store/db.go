package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"syscall"

	"github.com/jackc/pgx/v5/pgconn"
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

// ErrUnavailable is wrapped by the errors of operations that failed because
// the database could not be reached, or not in time: refused or reset
// connections, a server shutting down or refusing new sessions, timeouts
// (DB_CONNECT_TIMEOUT, DB_POOL_TIMEOUT). Other errors (a constraint, a
// missing table) mean the database answered. The gateway answers the first
// kind with 503 and a generic message.
var ErrUnavailable = errors.New("database unavailable")

// unavailableError marks err as ErrUnavailable, keeping its text for logs.
type unavailableError struct{ err error }

func (e *unavailableError) Error() string        { return e.err.Error() }
func (e *unavailableError) Unwrap() error        { return e.err }
func (e *unavailableError) Is(target error) bool { return target == ErrUnavailable }

// markUnavailable returns err wrapped so that errors.Is(err, ErrUnavailable)
// holds when it says that the database cannot be reached; other errors come
// back as they are.
func markUnavailable(err error) error {
	if err == nil || errors.Is(err, ErrUnavailable) || !isUnavailable(err) {
		return err
	}
	return &unavailableError{err}
}

// isUnavailable tells errors of reaching the database from its answers.
func isUnavailable(err error) bool {
	if err == nil || errors.Is(err, errNoRows) || errors.Is(err, ErrNotFound) {
		return false
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		// The server answered. Classes 08 (connection exception), 53
		// (insufficient resources: too many connections, out of memory or
		// disk), 57P (shutting down, starting up) and a statement timeout
		// (57014) mean it cannot serve now; anything else is an answer.
		c := pgErr.Code
		return strings.HasPrefix(c, "08") || strings.HasPrefix(c, "53") || strings.HasPrefix(c, "57P") || c == "57014"
	}
	if errors.Is(err, context.DeadlineExceeded) || pgconn.Timeout(err) || pgconn.SafeToRetry(err) ||
		errors.Is(err, pgconn.ErrConnClosed) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) {
		return true
	}
	var connectErr *pgconn.ConnectError
	var netErr net.Error
	if errors.As(err, &connectErr) || errors.As(err, &netErr) {
		return true
	}
	return sqliteUnavailable(err)
}
