package store

import (
	"strings"
	"testing"
)

func TestParseDatabaseURL(t *testing.T) {
	ok := []struct {
		in, dialect, dsnPrefix string
	}{
		{"sqlite:///./mcp.db", DialectSQLite, "./mcp.db?"},
		{"sqlite:///mcp.db", DialectSQLite, "mcp.db?"},
		{"sqlite:////var/lib/mcp/mcp.db", DialectSQLite, "/var/lib/mcp/mcp.db?"},
		{"sqlite+pysqlite:///./x.db", DialectSQLite, "./x.db?"},
		{"  sqlite:///./mcp.db\n", DialectSQLite, "./mcp.db?"},
		{"postgresql://u:p@127.0.0.1:5432/db", DialectPostgres, "postgresql://u:p@127.0.0.1:5432/db"},
		{"postgres://u@127.0.0.1/db?sslmode=disable", DialectPostgres, "postgresql://u@127.0.0.1/db?sslmode=disable"},
		{"postgresql+psycopg://u:p@127.0.0.1:5432/db", DialectPostgres, "postgresql://u:p@127.0.0.1:5432/db"},
		{"postgresql+asyncpg://u@127.0.0.1/db", DialectPostgres, "postgresql://u@127.0.0.1/db"},
		{"POSTGRESQL+PSYCOPG2://u@127.0.0.1/db", DialectPostgres, "postgresql://u@127.0.0.1/db"},
	}
	for _, c := range ok {
		d, dsn, err := ParseDatabaseURL(c.in)
		if err != nil {
			t.Errorf("ParseDatabaseURL(%q): %v", c.in, err)
			continue
		}
		if d != c.dialect || !strings.HasPrefix(dsn, c.dsnPrefix) {
			t.Errorf("ParseDatabaseURL(%q) = %q, %q; want %q, %q...", c.in, d, dsn, c.dialect, c.dsnPrefix)
		}
		if d == DialectSQLite && (!strings.Contains(dsn, "busy_timeout(10000)") || !strings.Contains(dsn, "_txlock=immediate")) {
			t.Errorf("ParseDatabaseURL(%q): SQLite DSN %q lacks busy_timeout or _txlock", c.in, dsn)
		}
	}

	bad := []struct {
		in, want string
	}{
		{"", "DATABASE_URL is empty"},
		{"mcp.db", "no scheme"},
		{"mysql://u:secret@h/db", `scheme "mysql" is not supported`},
		{"sqlite://mcp.db", "three slashes"},
		{"sqlite://", "three slashes"},
		{"sqlite:///", "in-memory"},
		{"sqlite:///:memory:", "in-memory"},
		{"sqlite:///./mcp.db?mode=ro", "no query parameters"},
		{"postgresql://u:secret@h:notaport/db", "not a valid PostgreSQL URL"},
	}
	for _, c := range bad {
		_, _, err := ParseDatabaseURL(c.in)
		if err == nil {
			t.Errorf("ParseDatabaseURL(%q): no error", c.in)
			continue
		}
		msg := err.Error()
		if !strings.Contains(msg, c.want) || !strings.Contains(msg, "DATABASE_URL") {
			t.Errorf("ParseDatabaseURL(%q) error %q; want it to name DATABASE_URL and say %q", c.in, msg, c.want)
		}
		if strings.Contains(msg, "secret") {
			t.Errorf("ParseDatabaseURL(%q) error leaks the password: %q", c.in, msg)
		}
	}
}

func TestOptionsDefaults(t *testing.T) {
	o, err := Options{}.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	if o.DatabaseURL != "sqlite:///./mcp.db" || o.CacheType != CacheDatabase || o.PoolSize != 5 ||
		o.CachePrefix != "mcpgw:" || o.CacheTTL.Seconds() != 60 || o.RedisMaxConnections != 50 ||
		o.PlatformAdminEmail != "admin@example.com" || o.Logger == nil {
		t.Errorf("defaults: %+v", o)
	}
	if _, err := (Options{CacheType: "memcached"}).withDefaults(); err == nil ||
		!strings.Contains(err.Error(), "CACHE_TYPE") {
		t.Errorf("CACHE_TYPE=memcached: %v", err)
	}
}
