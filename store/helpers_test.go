package store

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/redis/rueidis"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"
)

// The tests run against real services. They fail (never skip) when one is
// unreachable; point them elsewhere with TEST_DATABASE_URL / TEST_REDIS_URL.

func testDatabaseURL() string {
	if u := os.Getenv("TEST_DATABASE_URL"); u != "" {
		return u
	}
	return "postgresql://postgres@127.0.0.1:5432/test"
}

func testRedisURL() string {
	if u := os.Getenv("TEST_REDIS_URL"); u != "" {
		return u
	}
	return "redis://127.0.0.1:6379/0"
}

func randomName(prefix string) string {
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	return prefix + hex.EncodeToString(b)
}

// sqliteURL is a fresh SQLite file in a temporary directory.
func sqliteURL(t testing.TB) string {
	return "sqlite:///" + filepath.Join(t.TempDir(), "mcp.db") // t.TempDir is absolute: four slashes
}

// pgURL is a fresh PostgreSQL schema (dropped at the end), selected through
// the search_path runtime parameter of the URL.
func pgURL(t testing.TB) string {
	t.Helper()
	base := testDatabaseURL()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, base)
	if err != nil {
		t.Fatalf("PostgreSQL unreachable at TEST_DATABASE_URL=%s: %v", base, err)
	}
	defer conn.Close(ctx)
	schema := randomName("mcpgw_test_")
	if _, err := conn.Exec(ctx, "CREATE SCHEMA "+schema); err != nil {
		t.Fatalf("create schema: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		c, err := pgx.Connect(ctx, base)
		if err != nil {
			t.Errorf("drop schema %s: %v", schema, err)
			return
		}
		defer c.Close(ctx)
		if _, err := c.Exec(ctx, "DROP SCHEMA "+schema+" CASCADE"); err != nil {
			t.Errorf("drop schema %s: %v", schema, err)
		}
	})
	u, err := url.Parse(base)
	if err != nil {
		t.Fatal(err)
	}
	q := u.Query()
	q.Set("search_path", schema)
	u.RawQuery = q.Encode()
	return u.String()
}

// dbURL returns a fresh database of the dialect.
func dbURL(t testing.TB, dialect string) string {
	if dialect == DialectPostgres {
		return pgURL(t)
	}
	return sqliteURL(t)
}

// redisPrefix is a CACHE_PREFIX no other test uses; its keys are deleted at
// the end. It fails the test if the shared Redis is unreachable.
func redisPrefix(t testing.TB) string {
	t.Helper()
	prefix := randomName("mcpgw_test_") + ":"
	c := testRedisClient(t, testRedisURL())
	t.Cleanup(func() {
		defer c.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		var cursor uint64
		for {
			e, err := c.Do(ctx, c.B().Scan().Cursor(cursor).Match(prefix+"*").Count(1000).Build()).AsScanEntry()
			if err != nil {
				t.Errorf("clean redis keys %s*: %v", prefix, err)
				return
			}
			for _, k := range e.Elements {
				c.Do(ctx, c.B().Del().Key(k).Build())
			}
			if cursor = e.Cursor; cursor == 0 {
				return
			}
		}
	})
	return prefix
}

func testRedisClient(t testing.TB, redisURL string) rueidis.Client {
	t.Helper()
	opt, err := rueidis.ParseURL(redisURL)
	if err != nil {
		t.Fatal(err)
	}
	opt.DisableCache = true
	opt.Dialer.Timeout = 2 * time.Second
	c, err := rueidis.NewClient(opt)
	if err != nil {
		t.Fatalf("Redis unreachable at TEST_REDIS_URL=%s: %v", redisURL, err)
	}
	return c
}

// testOptions are the options of one worker in a test.
func testOptions(t testing.TB, databaseURL, cacheType string) Options {
	return Options{
		DatabaseURL: databaseURL,
		PoolSize:    2,
		MaxOverflow: 2,
		PoolTimeout: 5 * time.Second,
		CacheType:   cacheType,
		CachePrefix: "mcpgw_unused:",
		RedisURL:    testRedisURL(),
		Logger:      testLogger(t),
	}
}

func testLogger(t testing.TB) *zap.Logger {
	if testing.Verbose() {
		return zaptest.NewLogger(t, zaptest.Level(zap.InfoLevel))
	}
	return zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel))
}

// openMigrated migrates the database and opens a store on it.
func openMigrated(t testing.TB, o Options) *Store {
	t.Helper()
	ctx := context.Background()
	if err := Migrate(ctx, o); err != nil {
		t.Fatalf("Migrate: %v", err)
	}
	return openStore(t, o)
}

func openStore(t testing.TB, o Options) *Store {
	t.Helper()
	s, err := Open(context.Background(), o)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// freePort returns a 127.0.0.1 TCP port nothing listens on right now.
func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// redisServer is a redis-server of the test's own, so the shared one is
// never disturbed by stopping it.
type redisServer struct {
	t    testing.TB
	port int
	cmd  *exec.Cmd
}

func startRedisServer(t testing.TB, port int) *redisServer {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		t.Fatalf("redis-server not found in PATH (needed to test Redis recovery): %v", err)
	}
	cmd := exec.Command(bin, "--port", strconv.Itoa(port), "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "no", "--dir", t.TempDir())
	if err := cmd.Start(); err != nil {
		t.Fatalf("start redis-server: %v", err)
	}
	r := &redisServer{t: t, port: port, cmd: cmd}
	t.Cleanup(r.stop)
	deadline := time.Now().Add(5 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", r.addr(), 100*time.Millisecond)
		if err == nil {
			c.Close()
			return r
		}
		if time.Now().After(deadline) {
			t.Fatalf("redis-server on %s did not start: %v", r.addr(), err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (r *redisServer) addr() string { return fmt.Sprintf("127.0.0.1:%d", r.port) }
func (r *redisServer) url() string  { return "redis://" + r.addr() + "/0" }

// stop kills the server (by its own pid) and waits for it.
func (r *redisServer) stop() {
	if r.cmd == nil {
		return
	}
	_ = r.cmd.Process.Kill()
	_ = r.cmd.Wait()
	r.cmd = nil
}

// waitFor polls cond until it holds and returns how long that took. It fails
// when a call of cond that began more than d after the start still does not
// hold: a call that began in time but was descheduled past d does not count,
// so a loaded machine does not make coherence tests flaky.
func waitFor(t testing.TB, d time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for {
		began := time.Since(start)
		if cond() {
			if testing.Verbose() {
				t.Logf("%s: %s", what, time.Since(start))
			}
			return time.Since(start)
		}
		if began > d {
			t.Fatalf("%s: not within %s", what, d)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
