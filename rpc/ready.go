package rpc

import (
	"context"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/mcpgateway/mcpgateway/store"
)

// Readiness (GET /ready).
//
// Whether the server is ready is the embedding server's call
// (Options.Readiness): it knows the whole server, its worker processes and
// the database checks they published, which this package does not. What
// this package adds is the store's side: CheckBackend runs the Backend's
// checks (in the background, not per probe), and /ready reports the latest
// cache check, which never makes the server unready. A server without
// Options.Readiness (one process, tests) runs the checks itself, at most
// once per readyCheckEvery whatever the rate of probes (so that probes
// cannot take the pool's connections from requests), and is ready unless
// the database check fails.
//
// /ready is unauthenticated: its body never carries the checks' details as
// the Backend wrote them (driver errors, host:port, user names), only the
// dialect or cache type and a fixed word (publicDetail).

// Reasons of a 503 that this package decides itself (without Options.Readiness).
const reasonDatabase = "the latest database check failed"

// readyCheckEvery is how old the checks may be when /ready answers without
// Options.Readiness.
const readyCheckEvery = time.Second

// readyCache remembers when the checks in Server.checks were made.
type readyCache struct {
	mu sync.Mutex   // held by the one request running the checks
	at atomic.Int64 // unix ns of the latest checks; 0: none yet
}

// recentChecks returns checks at most readyCheckEvery old, running them if
// needed. While one request runs them, the others answer with the previous
// ones (they wait only for the very first).
func (s *Server) recentChecks(ctx context.Context) []store.Check {
	fresh := func() bool { return time.Now().UnixNano()-s.checked.at.Load() < int64(readyCheckEvery) }
	if p := s.checks.Load(); p != nil && fresh() {
		return *p
	}
	if !s.checked.mu.TryLock() {
		if p := s.checks.Load(); p != nil {
			return *p
		}
		s.checked.mu.Lock()
	}
	defer s.checked.mu.Unlock()
	if p := s.checks.Load(); p != nil && fresh() {
		return *p // made while this request waited
	}
	checks := s.backend.Ready(ctx)
	s.storeChecks(checks)
	return checks
}

func (s *Server) storeChecks(checks []store.Check) {
	s.checks.Store(&checks)
	s.checked.at.Store(time.Now().UnixNano())
}

// CheckBackend runs the Backend's readiness checks (database and cache)
// and keeps their outcome for /ready. It reports whether the database
// answered, with the check's detail (the dialect, or the error): the
// embedding server publishes that for the whole server's readiness. Run it
// periodically in the background, with a timeout in ctx.
func (s *Server) CheckBackend(ctx context.Context) (databaseOK bool, detail string) {
	checks := s.backend.Ready(ctx)
	s.storeChecks(checks)
	for _, c := range checks {
		if c.Name == "Database" {
			return c.OK, c.Detail
		}
	}
	return true, ""
}

// databaseCheckOK is false only when a database check is present and failed.
func databaseCheckOK(checks []store.Check) bool {
	for _, c := range checks {
		if c.Name == "Database" && !c.OK {
			return false
		}
	}
	return true
}

func (s *Server) serveReady(ctx *fasthttp.RequestCtx) {
	buf := getBuffers()
	defer putBuffers(buf)
	b := append(buf.out[:0], '{')
	var ready bool
	var checks []store.Check
	if s.opt.Readiness != nil {
		b, ready = s.opt.Readiness(b)
		if p := s.checks.Load(); p != nil {
			checks = *p
		}
	} else {
		// One process: recent checks, and the database decides.
		checks = s.recentChecks(ctx)
		ready = databaseCheckOK(checks)
		b = appendOwnReadiness(b, ready)
	}
	b = appendCache(b, checks)
	// status_items: the earlier body's list, kept for its clients (this
	// worker's latest checks, as they came from the Backend).
	b = append(b, `,"status_items":[`...)
	for i, c := range checks {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, `{"name":`...)
		b = appendString(b, c.Name)
		b = append(b, `,"ok":`...)
		b = appendBool(b, c.OK)
		b = append(b, `,"detail":`...)
		b = appendString(b, publicDetail(c))
		b = append(b, '}')
	}
	b = append(b, "]}"...)
	buf.out = b
	status := fasthttp.StatusOK
	if !ready {
		status = fasthttp.StatusServiceUnavailable
	}
	ctx.Response.Header.Set("Cache-Control", "no-store")
	writeJSON(ctx, status, b) // SetBody copies
}

// appendOwnReadiness appends the members that Options.Readiness would
// supply, for a server of one process: no workers to count, and the
// database check just made.
func appendOwnReadiness(b []byte, ready bool) []byte {
	if ready {
		return append(b, `"status":"ready","database":{"status":"ok","age_seconds":0.000},"reasons":[]`...)
	}
	b = append(b, `"status":"unready","database":{"status":"failed","age_seconds":0.000},"reasons":[`...)
	b = appendString(b, reasonDatabase)
	return append(b, ']')
}

// appendCache appends the "cache" member: "ok", "degraded" (with why) or
// "unknown" (not checked yet). A degraded cache never fails readiness: the
// store falls back to the database, and a fleet whose Redis is down must
// not leave the load balancer all at once.
func appendCache(b []byte, checks []store.Check) []byte {
	b = append(b, `,"cache":{"status":"`...)
	for _, c := range checks {
		if c.Name != "Cache" {
			continue
		}
		if c.OK {
			b = append(b, `ok","detail":`...)
		} else {
			b = append(b, `degraded","detail":`...)
		}
		b = appendString(b, publicDetail(c))
		return append(b, '}')
	}
	return append(b, `unknown"}`...)
}

// publicKinds are the words a check's detail may begin with that /ready
// repeats: the dialects and the cache types.
var publicKinds = map[string]bool{
	store.DialectSQLite: true, store.DialectPostgres: true,
	store.CacheDatabase: true, store.CacheMemory: true, store.CacheRedis: true, store.CacheNone: true,
}

// publicDetail is what /ready says of a check: its kind (the dialect or
// cache type its detail begins with, as the store writes it: "postgresql",
// "redis 10.0.0.5:6379", "redis: dial tcp ...: connection refused"), and
// "unreachable" when it failed. The rest of the detail (driver error text,
// addresses, user and database names) goes to the worker's log only.
func publicDetail(c store.Check) string {
	kind := c.Detail
	if i := strings.IndexAny(kind, ": "); i >= 0 {
		kind = kind[:i]
	}
	if !publicKinds[kind] {
		kind = ""
	}
	switch {
	case c.OK && kind != "":
		return kind
	case c.OK:
		return "ok"
	case kind != "":
		return kind + ": unreachable"
	default:
		return "unreachable"
	}
}
