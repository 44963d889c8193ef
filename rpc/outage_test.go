package rpc

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mcpgateway/mcpgateway/store"
)

// What drivers really say when the database or Redis cannot be reached:
// user and database names, addresses, even a URL with its password.
var leakyChecks = [][]store.Check{
	{
		{Name: "Database", OK: false, Detail: "postgresql ping: failed to connect to `user=mcp database=prod`: 10.1.2.3:5432 (db.internal): dial error: dial tcp 10.1.2.3:5432: connect: connection refused"},
		{Name: "Cache", OK: false, Detail: "redis: redis 10.9.8.7:6379: dial tcp 10.9.8.7:6379: i/o timeout"},
	},
	{
		{Name: "Database", OK: false, Detail: "postgresql://mcp:hunter2@db.internal:5432/prod: FATAL: password authentication failed for user \"mcp\" (SQLSTATE 28P01)"},
		{Name: "Cache", OK: false, Detail: "database: poll cache epoch: postgresql query: FATAL: terminating connection due to administrator command (SQLSTATE 57P01)"},
	},
	{
		{Name: "Database", OK: true, Detail: "postgresql db.internal:5432"},
		{Name: "Cache", OK: true, Detail: "redis 10.9.8.7:6379"},
	},
	{
		{Name: "Database", OK: false, Detail: "sqlite: open /srv/secret/mcp.db: permission denied"},
		{Name: "Cache", OK: false, Detail: "rediss://:hunter2@cache.internal:6380/0 refused"},
	},
}

var leakyWords = []string{"10.1.2.3", "10.9.8.7", "5432", "6379", "6380", "db.internal", "cache.internal", "hunter2",
	"user=", "mcp\"", "prod", "dial", "refused", "timeout", "SQLSTATE", "FATAL", "/srv", "permission", "://"}

// /ready is unauthenticated: whatever the checks' details, its body names
// only the dialect or cache type and says "unreachable", on both kinds of
// server (one process, and the embedding server's Readiness).
func TestReadyBodiesNeverLeakDetails(t *testing.T) {
	for _, embedded := range []bool{false, true} {
		s, b := newTestServer(t, func(o *Options) {
			if embedded {
				o.Readiness = func(b []byte) ([]byte, bool) { return append(b, `"status":"ready"`...), true }
			}
		})
		for i, checks := range leakyChecks {
			b.set(func(f *fakeBackend) { f.checks = checks })
			ok, detail := s.CheckBackend(context.Background())
			if ok != checks[0].OK || detail != checks[0].Detail {
				t.Errorf("CheckBackend: %v %q (the embedding server logs the real detail)", ok, detail)
			}
			r := call(s, "GET", "/ready", "")
			for _, w := range leakyWords {
				if strings.Contains(string(r.body), w) {
					t.Errorf("embedded=%v, checks %d: /ready body contains %q: %s", embedded, i, w, r.body)
				}
			}
			if !checks[0].OK && !strings.Contains(string(r.body), `"unreachable"`) && !strings.Contains(string(r.body), `: unreachable"`) {
				t.Errorf("embedded=%v, checks %d: the failure is not reported: %s", embedded, i, r.body)
			}
		}
	}
	for _, c := range []struct {
		check store.Check
		want  string
	}{
		{store.Check{Name: "Database", OK: true, Detail: "postgresql"}, "postgresql"},
		{store.Check{Name: "Database", OK: false, Detail: "postgresql ping: failed to connect"}, "postgresql: unreachable"},
		{store.Check{Name: "Database", OK: false, Detail: "failed to connect to `user=x`"}, "unreachable"},
		{store.Check{Name: "Database", OK: false, Detail: "postgresql: x"}, "postgresql: unreachable"},
		{store.Check{Name: "Cache", OK: true, Detail: "redis 127.0.0.1:6379"}, "redis"},
		{store.Check{Name: "Cache", OK: false, Detail: "redis: dial tcp 127.0.0.1:6379: connection refused"}, "redis: unreachable"},
		{store.Check{Name: "Cache", OK: false, Detail: "memory: poll cache epoch: ..."}, "memory: unreachable"},
		{store.Check{Name: "Cache", OK: true, Detail: "10.0.0.1:6379"}, "ok"},
		{store.Check{Name: "Cache", OK: false, Detail: ""}, "unreachable"},
	} {
		if got := publicDetail(c.check); got != c.want {
			t.Errorf("publicDetail(%+v) = %q, want %q", c.check, got, c.want)
		}
	}
}

// countingBackend counts (and can slow) the readiness checks.
type countingBackend struct {
	*fakeBackend
	calls   atomic.Int64
	release chan struct{} // when set, Ready waits for it
}

func (c *countingBackend) Ready(ctx context.Context) []store.Check {
	c.calls.Add(1)
	if c.release != nil {
		<-c.release
	}
	return c.fakeBackend.Ready(ctx)
}

// Without Options.Readiness, a flood of probes runs the checks (a query on
// the pool, a Redis PING) at most once a second, and probes that arrive
// while a check is under way do not wait for it.
func TestReadyChecksAreCachedAgainstProbeFloods(t *testing.T) {
	cb := &countingBackend{fakeBackend: newFakeBackend()}
	s, err := New(testOptions(), cb)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	start := time.Now()
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 200 {
				if r := call(s, "GET", "/ready", ""); r.status != 200 {
					t.Errorf("/ready: %d %s", r.status, r.body)
					return
				}
			}
		}()
	}
	wg.Wait()
	// The first, and one more each time a second has passed.
	if n, limit := cb.calls.Load(), int64(time.Since(start)/readyCheckEvery)+1; n > limit {
		t.Fatalf("1600 probes in %v ran the checks %d times (at most %d)", time.Since(start), n, limit)
	}

	// A slow check (a black-holed database): the probes that come meanwhile
	// answer with the previous result at once.
	s.checked.at.Store(0) // make the checks stale
	cb.release = make(chan struct{})
	before := cb.calls.Load() + 1
	slow := make(chan result)
	go func() { slow <- call(s, "GET", "/ready", "") }()
	for deadline := time.Now().Add(5 * time.Second); cb.calls.Load() < before; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the slow probe did not start a check")
		}
	}
	for range 50 {
		if r := call(s, "GET", "/ready", ""); r.status != 200 {
			t.Fatalf("/ready during a slow check: %d %s", r.status, r.body)
		}
	}
	if n := cb.calls.Load(); n != before {
		t.Fatalf("probes during a slow check ran %d more checks", n-before)
	}
	close(cb.release)
	if r := <-slow; r.status != 200 {
		t.Fatalf("the slow probe: %d %s", r.status, r.body)
	}
}

// errUnreachable is what the store returns when the database cannot be
// reached: ErrUnavailable, with the driver's text (never shown to clients).
var errUnreachable = fmt.Errorf("get tool: %w: failed to connect to `user=mcp database=prod`: 10.1.2.3:5432: connection refused", store.ErrUnavailable)

// A single JSON-RPC request that needs an unreachable database gets HTTP
// 503 with Retry-After and a generic JSON-RPC error; in a batch, the
// messages that needed it carry the error and the others their results
// (200); other store errors stay -32603. Authentication that cannot look the
// user up is a 503 too.
func TestStoreUnavailableAnswers(t *testing.T) {
	s, b := newTestServer(t, nil)
	b.set(func(f *fakeBackend) { f.toolErr = errUnreachable })
	for _, body := range []string{seedPayload,
		`{"jsonrpc":"2.0","id":2,"method":"tools/list"}`,
		`{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"convert_time","arguments":{}}}`} {
		r := rpc(t, s, body)
		if r.status != 503 || r.header("Retry-After") != "1" {
			t.Errorf("%s: %d Retry-After %q: %s", body, r.status, r.header("Retry-After"), r.body)
		}
		e, _ := r.obj(t)["error"].(map[string]any)
		if e == nil || e["code"] != float64(codeUnavailable) || e["message"] != msgUnavailable {
			t.Errorf("%s: error %v", body, r.obj(t))
		}
		for _, w := range []string{"10.1.2.3", "user=", "refused", "prod"} {
			if strings.Contains(string(r.body), w) {
				t.Errorf("%s: answer contains %q: %s", body, w, r.body)
			}
		}
	}
	// A batch: ping answers, the tool lookup fails; the HTTP status is 200.
	r := rpc(t, s, `[{"jsonrpc":"2.0","id":1,"method":"ping"},`+seedPayload+`]`)
	if r.status != 200 || !strings.Contains(string(r.body), `"result":{}`) || !strings.Contains(string(r.body), fmt.Sprint(codeUnavailable)) {
		t.Errorf("batch: %d %s", r.status, r.body)
	}
	// Requests that do not need the store are unaffected.
	if r := rpc(t, s, `{"jsonrpc":"2.0","id":1,"method":"ping"}`); r.status != 200 || r.header("Retry-After") != "" {
		t.Errorf("ping: %d %s", r.status, r.body)
	}
	// Any other store error is an internal error, HTTP 200.
	b.set(func(f *fakeBackend) { f.toolErr = errors.New("get tool: no such table: tools") })
	if r := rpc(t, s, seedPayload); r.status != 200 || !strings.Contains(string(r.body), `"code":-32603`) {
		t.Errorf("other error: %d %s", r.status, r.body)
	}
	// The user lookup of authentication.
	b.set(func(f *fakeBackend) { f.toolErr, f.userErr = nil, errUnreachable })
	if r := rpc(t, s, seedPayload); r.status != 503 || strings.Contains(string(r.body), "10.1.2.3") {
		t.Errorf("auth with the database down: %d %s", r.status, r.body)
	}
}
