package supervisor

import (
	"strconv"
	"time"

	"github.com/mcpgateway/mcpgateway/supervisor/protocol"
)

// Readiness is the whole server's readiness as its status table shows it.
// It is the one definition of /ready: the master's health port decides with
// it, and so does an application's /ready in any worker, which maps the same
// table (worker.Info.Table). The server is ready unless
//
//   - it is stopping (the master set HStopping, or halted),
//   - no worker is ready (serving: ready, or retiring but still serving), or
//   - the latest database check of the server failed: among the serving
//     workers, the one whose check (Info.ReportDatabase) is the most recent
//     decides. No check reported yet (a program without a database, or a
//     boot) passes.
//
// A worker that sheds load, or a degraded cache, is reported but never makes
// the server unready: an overloaded or cache-less fleet that failed its
// probes would be taken out of service all at once.
type Readiness struct {
	Stopping bool
	Ready    int // serving workers (ready or retiring); during a roll it may exceed Target
	Target   int // the workers the master wants
	Shedding int // of the serving workers, those shedding by queueing delay

	// UpstreamsOpen is the most upstream MCP servers any serving worker
	// holds its circuit open for: a detail, never a reason to be unready
	// (the other tools still work).
	UpstreamsOpen int

	// The latest database check among the serving workers.
	DBCheck   uint64 // protocol.DBCheckOK or protocol.DBCheckFailed; 0: none reported yet
	DBCheckAt int64  // its protocol.Nanotime; 0 when DBCheck is 0
}

// dbCheckSkew is how far in the future a check's time may be and still
// count (another process may report between our clock read and the row's):
// a row is writable by its worker, so a time beyond this is corrupt and must
// not become "the latest" for ever.
const dbCheckSkew = time.Second

// ReadinessOf reads the readiness from a status table: the master's, or a
// worker's mapping of it. It reads a few words per row, allocates nothing,
// and never waits, so it may run on every probe.
func ReadinessOf(t *protocol.Table) Readiness {
	now := protocol.Nanotime()
	h := t.Header()
	r := Readiness{Stopping: h.Load(protocol.HStopping) == 1, Target: int(h.Load(protocol.HWorkersTarget))}
	for i := 1; i <= t.MaxRow(); i++ {
		row := t.Row(i)
		if row.Load(protocol.FPid) == 0 {
			continue
		}
		if st := row.Load(protocol.FState); st != protocol.StateReady && st != protocol.StateRetiring {
			continue
		}
		r.Ready++
		if row.Load(protocol.FShedding) == 1 {
			r.Shedding++
		}
		r.UpstreamsOpen = max(r.UpstreamsOpen, int(row.Load(protocol.FUpstreamsOpen)))
		// The worker stores the outcome, then the time: read the time
		// first, and the outcome is at least as new as it.
		at := int64(row.Load(protocol.FDBCheckAt))
		check := row.Load(protocol.FDBCheck)
		if at <= 0 || at-now > int64(dbCheckSkew) || (check != protocol.DBCheckOK && check != protocol.DBCheckFailed) {
			continue
		}
		if at > r.DBCheckAt {
			r.DBCheck, r.DBCheckAt = check, at
		}
	}
	return r
}

// OK is the decision: 200 or 503.
func (r Readiness) OK() bool {
	return !r.Stopping && r.Ready > 0 && r.DBCheck != protocol.DBCheckFailed
}

// Status is the body's "status": "ready", "stopping" or "unready".
func (r Readiness) Status() string {
	switch {
	case r.Stopping:
		return "stopping"
	case !r.OK():
		return "unready"
	}
	return "ready"
}

// Reasons why the server is not ready, for people; none when it is.
const (
	ReasonStopping = "the server is stopping"
	ReasonNoWorker = "no worker is ready"
	ReasonDatabase = "the latest database check failed"
)

// Reasons lists why the server is not ready, in a fixed order; nil when it
// is ready.
func (r Readiness) Reasons() []string {
	var out []string
	if r.Stopping {
		out = append(out, ReasonStopping)
	}
	if r.Ready == 0 {
		out = append(out, ReasonNoWorker)
	}
	if r.DBCheck == protocol.DBCheckFailed {
		out = append(out, ReasonDatabase)
	}
	return out
}

// Database names the latest check's outcome: "ok", "failed" or "unknown"
// (none reported yet).
func (r Readiness) Database() string {
	switch r.DBCheck {
	case protocol.DBCheckOK:
		return "ok"
	case protocol.DBCheckFailed:
		return "failed"
	}
	return "unknown"
}

// AppendJSON appends the /ready body, a JSON object, to b: now (a
// protocol.Nanotime) dates the database check. For example
//
//	{"status":"ready","workers":{"ready":2,"target":2},"database":{"status":"ok","age_seconds":1.204},"shedding":0,"upstream_circuits_open":0,"reasons":[]}
func (r Readiness) AppendJSON(b []byte, now int64) []byte {
	b = append(b, '{')
	b = r.AppendFields(b, now)
	return append(b, '}')
}

// AppendFields appends the members of the /ready body without the braces,
// for an application that adds its own (the gateway adds its cache).
func (r Readiness) AppendFields(b []byte, now int64) []byte {
	b = append(b, `"status":"`...)
	b = append(b, r.Status()...)
	b = append(b, `","workers":{"ready":`...)
	b = strconv.AppendInt(b, int64(r.Ready), 10)
	b = append(b, `,"target":`...)
	b = strconv.AppendInt(b, int64(r.Target), 10)
	b = append(b, `},"database":{"status":"`...)
	b = append(b, r.Database()...)
	b = append(b, '"')
	if r.DBCheckAt > 0 {
		b = append(b, `,"age_seconds":`...)
		b = strconv.AppendFloat(b, max(time.Duration(now-r.DBCheckAt), 0).Seconds(), 'f', 3, 64)
	}
	b = append(b, `},"shedding":`...)
	b = strconv.AppendInt(b, int64(r.Shedding), 10)
	b = append(b, `,"upstream_circuits_open":`...)
	b = strconv.AppendInt(b, int64(r.UpstreamsOpen), 10)
	b = append(b, `,"reasons":[`...)
	for i, why := range r.Reasons() {
		if i > 0 {
			b = append(b, ',')
		}
		b = strconv.AppendQuote(b, why) // plain ASCII: JSON and Go quoting agree
	}
	return append(b, ']')
}
