package tests

// Readiness through the real binary: one definition on the health port and
// on the main port (supervisor.ReadinessOf over the status table), driven by
// a real database outage, and a cache outage that is reported but never
// takes the server out of service.

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/mcpgateway/mcpgateway/internal/proctest"
)

// readiness is a /ready body, of either port.
type readiness struct {
	Status   string
	Workers  *struct{ Ready, Target int }
	Database struct {
		Status     string
		AgeSeconds *float64 `json:"age_seconds"`
	}
	Shedding *int
	Cache    *struct{ Status, Detail string }
	Reasons  []string
	Items    []struct {
		Name string
		OK   bool
	} `json:"status_items"`
	raw  string
	code int
}

func getReady(t *testing.T, url string) readiness {
	t.Helper()
	code, body := httpDo(freshClient, "GET", url, "", "")
	var r readiness
	if err := json.Unmarshal([]byte(body), &r); err != nil {
		t.Fatalf("GET %s: %d, not JSON: %s", url, code, body)
	}
	r.raw, r.code = body, code
	return r
}

// keys lists the top-level members of a JSON object.
func keys(t *testing.T, body string) []string {
	t.Helper()
	var m map[string]json.RawMessage
	if err := json.Unmarshal([]byte(body), &m); err != nil {
		t.Fatal(err)
	}
	var out []string
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// waitBoth polls both ports until cond holds for both answers.
func waitBoth(t *testing.T, what string, timeout time.Duration, health, main string, cond func(r readiness) bool) {
	t.Helper()
	var last [2]readiness
	if _, ok := proctest.Poll(timeout, 100*time.Millisecond, func() bool {
		last = [2]readiness{getReady(t, health), getReady(t, main)}
		return cond(last[0]) && cond(last[1])
	}); !ok {
		t.Fatalf("%s: not within %v\nhealth port: %d %s\nmain port:   %d %s", what, timeout, last[0].code, last[0].raw, last[1].code, last[1].raw)
	}
}

// A database that stops accepting connections (ALLOW_CONNECTIONS false, the
// sessions terminated: what a failover or an administrator's lock-out does)
// makes /ready 503 on both ports within a check interval, with the reason;
// liveness is not affected; when the database comes back, so does
// readiness. Both ports answer the same body, the main port adding the
// cache.
func TestReadyFollowsARealDatabaseOutage(t *testing.T) {
	dbURL := pgDatabase(t)
	name := dbURL[strings.LastIndexByte(dbURL, '/')+1:]
	hp := fmt.Sprintf("127.0.0.1:%d", proctest.MustFreePort(t))
	g := serve(t, []string{"DATABASE_URL=" + dbURL, "CACHE_TYPE=database", "HEALTH_BIND=" + hp}, "--workers", "2")
	health, main := "http://"+hp+"/ready", g.url("/ready")

	waitBoth(t, "ready with the database checked", 5*time.Second, health, main, func(r readiness) bool {
		return r.code == 200 && r.Database.Status == "ok"
	})
	h, m := getReady(t, health), getReady(t, main)
	if h.Status != "ready" || h.Workers == nil || h.Workers.Ready != 2 || h.Workers.Target != 2 || h.Shedding == nil || *h.Shedding != 0 ||
		h.Database.AgeSeconds == nil || *h.Database.AgeSeconds > 6 || len(h.Reasons) != 0 || h.Cache != nil {
		t.Fatalf("health port: %d %s", h.code, h.raw)
	}
	if m.Cache == nil || m.Cache.Status != "ok" || m.Cache.Detail != "database" || len(m.Items) != 2 || !m.Items[0].OK {
		t.Fatalf("main port: %d %s", m.code, m.raw)
	}
	// One definition: the main port's body is the health port's, plus the cache
	// (and status_items, the earlier body's list).
	hk, mk := keys(t, h.raw), keys(t, m.raw)
	want := slices.Concat(hk, []string{"cache", "status_items"})
	slices.Sort(want)
	if !slices.Equal(mk, want) {
		t.Fatalf("members: health port %v, main port %v", hk, mk)
	}

	admin := func(sql string) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		conn, err := pgx.Connect(ctx, pgAdminURL)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close(ctx)
		if _, err := conn.Exec(ctx, sql); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	ident := pgx.Identifier{name}.Sanitize()
	t.Cleanup(func() { admin("ALTER DATABASE " + ident + " ALLOW_CONNECTIONS true") }) // before the drop (cleanups run last first)
	admin("ALTER DATABASE " + ident + " ALLOW_CONNECTIONS false")
	admin("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '" + name + "'")
	down := time.Now()

	waitBoth(t, "/ready failing on the database", 10*time.Second, health, main, func(r readiness) bool {
		return r.code == 503 && r.Status == "unready" && r.Database.Status == "failed" &&
			slices.Equal(r.Reasons, []string{"the latest database check failed"})
	})
	t.Logf("both ports unready %v after the database went away", time.Since(down).Round(time.Millisecond))
	if code, body := httpDo(freshClient, "GET", "http://"+hp+"/health", "", ""); code != 200 {
		t.Fatalf("health port /health during the outage: %d %s", code, body)
	}
	if code, body := httpDo(freshClient, "GET", g.url("/health"), "", ""); code != 200 {
		t.Fatalf("main port /health during the outage: %d %s", code, body)
	}
	// status_items are the answering worker's own checks: the other worker
	// fails its own within its 5 s period.
	var during readiness
	if _, ok := proctest.Poll(10*time.Second, 50*time.Millisecond, func() bool {
		during = getReady(t, main)
		return during.Cache != nil && len(during.Items) == 2 && during.Items[0].Name == "Database" && !during.Items[0].OK
	}); !ok {
		t.Fatalf("main port during the outage: %s", during.raw)
	}
	if !strings.Contains(g.Log.String(), `"msg":"database check failed`) {
		t.Error("the failed check was not logged")
	}

	admin("ALTER DATABASE " + ident + " ALLOW_CONNECTIONS true")
	up := time.Now()
	waitBoth(t, "/ready passing again", 10*time.Second, health, main, func(r readiness) bool {
		return r.code == 200 && r.Status == "ready" && r.Database.Status == "ok"
	})
	t.Logf("both ports ready %v after the database came back", time.Since(up).Round(time.Millisecond))
}

// Redis down: the server is ready (the store falls back to the database),
// and the main port says the cache is degraded, and why.
func TestReadyWithTheCacheDown(t *testing.T) {
	hp := fmt.Sprintf("127.0.0.1:%d", proctest.MustFreePort(t))
	closed := proctest.MustFreePort(t) // nothing listens there
	g := serve(t, []string{"CACHE_TYPE=redis", fmt.Sprintf("REDIS_URL=redis://127.0.0.1:%d/0", closed), "HEALTH_BIND=" + hp}, "--workers", "2")
	health, main := "http://"+hp+"/ready", g.url("/ready")
	waitBoth(t, "ready", 5*time.Second, health, main, func(r readiness) bool {
		return r.code == 200 && r.Status == "ready" && r.Database.Status == "ok" && len(r.Reasons) == 0
	})
	m := getReady(t, main)
	if m.Cache == nil || m.Cache.Status != "degraded" || !strings.HasPrefix(m.Cache.Detail, "redis: ") {
		t.Fatalf("main port with Redis down: %d %s", m.code, m.raw)
	}
	t.Logf("main port: %s", m.raw)
	// The seed request is still served.
	if err := checkSeed(httpDo(freshClient, "POST", g.url("/rpc"), g.token(), seedPayload)); err != nil {
		t.Fatalf("seed request with Redis down: %v", err)
	}
}
