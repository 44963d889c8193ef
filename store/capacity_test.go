package store

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
)

func TestCheckCapacity(t *testing.T) {
	ctx := context.Background()
	o := testOptions(t, testDatabaseURL(), CacheNone)
	o.PoolSize, o.MaxOverflow = 5, 5

	err := CheckCapacity(ctx, o, 1000)
	if err == nil {
		t.Fatal("1000 workers × 10 connections accepted")
	}
	msg := err.Error()
	for _, want := range []string{"1000 workers", "DB_POOL_SIZE 5", "DB_MAX_OVERFLOW 5", "10000 connections",
		"max_connections", "superuser_reserved_connections", "in use by other clients", "raise max_connections"} {
		if !strings.Contains(msg, want) {
			t.Errorf("error lacks %q: %s", want, msg)
		}
	}
	t.Log(msg)

	o.PoolSize, o.MaxOverflow = 1, 1
	if err := CheckCapacity(ctx, o, 2); err != nil {
		t.Errorf("2 workers × 2 connections refused: %v", err)
	}

	// SQLite has no connection limit to check.
	if err := CheckCapacity(ctx, testOptions(t, sqliteURL(t), CacheNone), 1000); err != nil {
		t.Errorf("SQLite: %v", err)
	}
	// A bad URL is reported, not ignored.
	if err := CheckCapacity(ctx, testOptions(t, "mysql://x", CacheNone), 1); err == nil {
		t.Error("bad DATABASE_URL: no error")
	}
}

func TestSessionName(t *testing.T) {
	host, _ := os.Hostname()
	if got, want := InstanceOf(4242), "4242@"+host; got != want {
		t.Errorf("InstanceOf = %q, want %q", got, want)
	}
	if got := sessionName("", "4242@web-1", 4250); got != "mcpgateway/4242@web-1/4250" {
		t.Errorf("default base: %q", got)
	}
	if got := sessionName("billing", "4242@web-1", 4250); got != "billing/4242@web-1/4250" {
		t.Errorf("base from DATABASE_URL: %q", got)
	}
	if got := sessionName("a/b", "1@h\u00e9", 2); got != "a-b/1@h-/2" {
		t.Errorf("sanitised: %q", got)
	}
	// Long names fit PostgreSQL's 63 bytes with a 7-digit pid, and every
	// process of the instance shares the prefix, so the matching holds.
	longHost := "1@" + strings.Repeat("deployment-name-", 5) + "5d8f7c9b6-x7k2p"
	for _, base := range []string{"", strings.Repeat("b", 40)} {
		a, b := sessionName(base, longHost, 1), sessionName(base, longHost, 4194304)
		if len(b) > maxAppName {
			t.Errorf("%q is %d bytes", b, len(b))
		}
		prefix := sessionPrefix(base, longHost)
		if !strings.HasPrefix(a, prefix) || !strings.HasPrefix(b, prefix) {
			t.Errorf("%q and %q do not share %q", a, b, prefix)
		}
	}
	// Two long host names that differ only at the end stay apart.
	other := strings.TrimSuffix(longHost, "x7k2p") + "q9w3z"
	if sessionPrefix("", longHost) == sessionPrefix("", other) {
		t.Errorf("%q and %q give one prefix", longHost, other)
	}

	t.Setenv(EnvMasterPID, "77")
	if got, want := defaultInstance(), "77@"+host; got != want {
		t.Errorf("defaultInstance with %s=77: %q, want %q", EnvMasterPID, got, want)
	}
	t.Setenv(EnvMasterPID, "")
	if got, want := defaultInstance(), InstanceOf(os.Getpid()); got != want {
		t.Errorf("defaultInstance without %s: %q, want %q", EnvMasterPID, got, want)
	}
}

func TestReloadPeak(t *testing.T) {
	fifteen := []int{15, 15, 15, 15, 15}
	for _, tc := range []struct {
		name                        string
		own                         []int
		workers, perWorker, overlap int
		want                        int
	}{
		// Item 17's measurement: 5 workers × 15 at their maximum.
		{"every slot at once", fifteen, 5, 15, 5, 150},
		{"one slot at a time", fifteen, 5, 15, 1, 90},
		{"two slots at a time", fifteen, 5, 15, 2, 105},
		{"idle old workers", []int{1, 1, 1, 1, 1}, 5, 15, 5, 80},
		{"scale up", []int{10, 10}, 4, 10, 1, 50},
		{"smaller pool", []int{15, 15, 15}, 3, 10, 1, 55},
		{"scale down", []int{5, 5, 5, 5}, 2, 10, 1, 40},
		{"nothing held", nil, 3, 10, 1, 30},
	} {
		if got := reloadPeak(tc.own, tc.workers, tc.perWorker, tc.overlap); got != tc.want {
			t.Errorf("%s: reloadPeak = %d, want %d", tc.name, got, tc.want)
		}
	}
}

// TestSessionsAreNamed: every pooled session carries the instance's name,
// under the name DATABASE_URL gives when it gives one.
func TestSessionsAreNamed(t *testing.T) {
	ctx := context.Background()
	instance := randomName("t")
	for _, tc := range []struct{ query, base string }{{"", DefaultAppName}, {"&application_name=billing", "billing"}} {
		o := testOptions(t, pgURL(t)+tc.query, CacheNone)
		o.Instance = instance
		s := openMigrated(t, o)
		var name string
		if err := queryOne(ctx, s.db, "SELECT current_setting('application_name')", nil, &name); err != nil {
			t.Fatal(err)
		}
		if want := tc.base + "/" + instance + "/" + strconv.Itoa(os.Getpid()); name != want {
			t.Errorf("application_name = %q, want %q", name, want)
		}
	}
}

// holdSessions opens n sessions named name, closed at the end of the test.
func holdSessions(t *testing.T, name string, n int) {
	t.Helper()
	cfg, err := pgx.ParseConfig(testDatabaseURL())
	if err != nil {
		t.Fatal(err)
	}
	cfg.RuntimeParams["application_name"] = name
	for range n {
		c, err := pgx.ConnectConfig(context.Background(), cfg)
		if err != nil {
			t.Fatalf("hold a session: %v", err)
		}
		t.Cleanup(func() { c.Close(context.Background()) })
	}
}

// roomFor measures what the server leaves for an instance whose sessions
// start with prefix.
func roomFor(t *testing.T, prefix string) serverLimits {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, testDatabaseURL())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	l, err := readLimits(ctx, conn, prefix)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// TestCheckReloadCapacity is item 17 on a real server: once the pools are in
// use, a reload that replaces one worker at a time fits where the first-start
// check (which counts the server's own sessions as other clients') refuses
// it; replacing every worker at once does not fit; and other clients'
// sessions still count.
func TestCheckReloadCapacity(t *testing.T) {
	ctx := context.Background()
	o := testOptions(t, testDatabaseURL(), CacheNone)
	o.Instance = randomName("reload")
	const (
		perWorker = 5
		oldProcs  = 4 // old workers, each holding its whole pool
		slack     = 4 // room left for other clients connecting meanwhile
	)
	o.PoolSize, o.MaxOverflow = perWorker, 0
	prefix := sessionPrefix("", o.Instance)
	for i := range oldProcs {
		holdSessions(t, prefix+strconv.Itoa(1000001+i), perWorker)
	}
	if l := roomFor(t, prefix); l.ownTotal() != oldProcs*perWorker || len(l.own) != oldProcs {
		t.Fatalf("own sessions seen: %v, want %d × %d", l.own, oldProcs, perWorker)
	}

	// Other tests share the server, so what other clients hold may change
	// between the measurement and the check: measure again and retry.
	var workers int
	for attempt := 1; ; attempt++ {
		room := roomFor(t, prefix).room()
		// The most workers whose one-at-a-time reload leaves slack.
		workers = (room - perWorker - slack) / perWorker
		if workers <= oldProcs {
			t.Fatalf("PostgreSQL leaves only %d connections for this test", room)
		}
		firstErr := CheckCapacity(ctx, o, workers)
		reloadErr := CheckReloadCapacity(ctx, o, workers, 1)
		if firstErr != nil && reloadErr == nil {
			t.Logf("room %d, %d workers × %d: first-start check: %v", room, workers, perWorker, firstErr)
			break
		}
		if attempt == 5 {
			t.Fatalf("room %d, %d workers × %d: first-start check %v, reload check %v", room, workers, perWorker, firstErr, reloadErr)
		}
	}

	// Every slot at once: all the old sessions plus all the new pools.
	err := CheckReloadCapacity(ctx, o, workers, workers)
	if err == nil {
		t.Fatal("a reload starting every successor at once was accepted")
	}
	for _, want := range []string{"for the reload", fmt.Sprintf("hold %d sessions in %d processes", oldProcs*perWorker, oldProcs),
		"at a time would fit", "restart instead of reloading"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q: %v", want, err)
		}
	}

	// Other clients' sessions still count.
	holdSessions(t, "someone-else", perWorker+slack+4)
	err = CheckReloadCapacity(ctx, o, workers, 1)
	if err == nil {
		t.Fatal("other clients' sessions were not counted")
	}
	if !strings.Contains(err.Error(), "in use by other clients") {
		t.Errorf("error: %v", err)
	}
	t.Log(err)
}
