package rpc

import (
	"context"

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
// Options.Readiness (one process, tests) runs the checks in the request and
// is ready unless the database check fails.

// Reasons of a 503 that this package decides itself (without Options.Readiness).
const reasonDatabase = "the latest database check failed"

// CheckBackend runs the Backend's readiness checks (database and cache)
// and keeps their outcome for /ready. It reports whether the database
// answered, with the check's detail (the dialect, or the error): the
// embedding server publishes that for the whole server's readiness. Run it
// periodically in the background, with a timeout in ctx.
func (s *Server) CheckBackend(ctx context.Context) (databaseOK bool, detail string) {
	checks := s.backend.Ready(ctx)
	s.checks.Store(&checks)
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
		// One process: the checks run now, and the database decides.
		checks = s.backend.Ready(ctx)
		s.checks.Store(&checks)
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
		b = appendString(b, c.Detail)
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
		b = appendString(b, c.Detail)
		return append(b, '}')
	}
	return append(b, `unknown"}`...)
}
