package store

import (
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5/pgxpool"
)

// Dialects returned by ParseDatabaseURL and Store.Dialect.
const (
	DialectSQLite   = "sqlite"
	DialectPostgres = "postgresql"
)

const acceptedURLForms = "accepted forms: sqlite:///./relative/path.db, sqlite:////absolute/path.db, " +
	"postgresql://user:password@host:5432/dbname (also postgres:// and SQLAlchemy's postgresql+driver://)"

// sqlitePragmas are applied by modernc.org/sqlite to every new connection.
// busy_timeout comes first (the driver orders it so): a connection waits up to
// 10 s for another process's lock instead of failing. synchronous=NORMAL is
// the usual WAL pairing (durable at checkpoints, no fsync per commit).
// _txlock=immediate makes every BeginTx a BEGIN IMMEDIATE: the store only
// opens explicit transactions to write, and taking the write lock up front
// avoids the SQLITE_BUSY that a deferred transaction gets when it upgrades
// from read to write after another process committed.
//
// WAL itself is not set here: it is a property of the file, and switching a
// fresh file to WAL from several connections at once can fail with
// SQLITE_BUSY without waiting (the busy handler is not used for it). Migrate
// and Open switch it once, with retries (sqliteDB.prepare).
const sqlitePragmas = "?_pragma=busy_timeout(10000)&_pragma=synchronous(NORMAL)" +
	"&_pragma=foreign_keys(1)&_txlock=immediate"

// ParseDatabaseURL turns a DATABASE_URL into the dialect ("sqlite" or
// "postgresql") and the DSN its driver takes. SQLAlchemy-style URLs are
// accepted: a "+driver" suffix on the scheme (postgresql+psycopg://) is
// dropped, and sqlite:/// is followed by a relative path, sqlite://// by an
// absolute one.
func ParseDatabaseURL(u string) (dialect, dsn string, err error) {
	u = strings.TrimSpace(u)
	if u == "" {
		return "", "", fmt.Errorf("DATABASE_URL is empty; %s", acceptedURLForms)
	}
	scheme, rest, ok := strings.Cut(u, "://")
	if !ok || scheme == "" {
		// Never echo the URL: it may hold a password.
		return "", "", fmt.Errorf("DATABASE_URL has no scheme:// prefix; %s", acceptedURLForms)
	}
	base, _, _ := strings.Cut(strings.ToLower(scheme), "+")
	switch base {
	case "sqlite", "sqlite3":
		path, err := sqlitePath(rest)
		if err != nil {
			return "", "", err
		}
		return DialectSQLite, path + sqlitePragmas, nil
	case "postgresql", "postgres":
		dsn := "postgresql://" + rest
		// Parse now so a malformed URL fails at startup with pgx's message
		// (which redacts the password) rather than at the first query.
		if _, err := pgxpool.ParseConfig(dsn); err != nil {
			return "", "", fmt.Errorf("DATABASE_URL is not a valid PostgreSQL URL: %w; %s", err, acceptedURLForms)
		}
		return DialectPostgres, dsn, nil
	default:
		return "", "", fmt.Errorf("DATABASE_URL scheme %q is not supported; %s", scheme, acceptedURLForms)
	}
}

// sqlitePath extracts the file path from what follows "sqlite://".
func sqlitePath(rest string) (string, error) {
	// SQLAlchemy: sqlite:///rel.db has an empty host and the path "rel.db";
	// sqlite:////abs.db has the path "/abs.db". Anything before the third
	// slash would be a host, which SQLite does not have.
	if !strings.HasPrefix(rest, "/") {
		return "", fmt.Errorf("DATABASE_URL: a SQLite URL has three slashes before a relative path "+
			"(sqlite:///./mcp.db) or four before an absolute one (sqlite:////var/lib/mcp.db); %s", acceptedURLForms)
	}
	path := rest[1:]
	if path == "" || path == ":memory:" {
		return "", fmt.Errorf("DATABASE_URL: an in-memory SQLite database cannot be shared by worker processes; " +
			"give a file path such as sqlite:///./mcp.db")
	}
	if strings.ContainsAny(path, "?#") {
		return "", fmt.Errorf("DATABASE_URL: SQLite URLs take no query parameters or fragments " +
			"(the store sets WAL, busy_timeout, synchronous and foreign_keys itself)")
	}
	return path, nil
}
