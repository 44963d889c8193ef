package rpc

import (
	"bytes"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"hash"
	"strings"
	"sync"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/mcpgateway/mcpgateway/store"
)

// POST /mcp is the MCP Streamable HTTP transport. A POST is answered with one
// application/json body (or 202 when there is nothing to answer), except a
// tools/call of an upstream tool that asked for notifications from a client
// that accepts SSE: that one gets an event stream (mcp_stream.go). GET /mcp
// resumes a stream or opens the session's standing one (mcp_resume.go),
// with a Backend that keeps stream events; otherwise it answers 405, which
// the specification allows.
//
// Each request is served by the rules of one MCP revision (docs/mcp.md,
// section 1). A request of the modern era (2026-07-28) carries its revision
// and is served without a session (mcp_modern.go). Otherwise initialize
// negotiates a legacy revision and records it in the session id, and every
// later request of the session gets the session's revision.

const (
	headerSessionID       = "Mcp-Session-Id"
	headerProtocolVersion = "Mcp-Protocol-Version"
)

// --- Revisions --------------------------------------------------------------------

// revision is an MCP revision served on /mcp. Its value is written into
// session ids: never renumber.
type revision uint8

const (
	revNone     revision = iota // not MCP: /rpc, plain JSON-RPC 2.0
	rev20250326                 // the only revision with JSON-RPC batches
	rev20250618
	rev20251125
	rev20260728 // the modern era: no initialize, no sessions (mcp_modern.go)

	revNewestSession = rev20251125 // the newest with initialize and sessions
	revNewest        = rev20260728
)

var revisionNames = [...]string{rev20250326: "2025-03-26", rev20250618: "2025-06-18", rev20251125: "2025-11-25",
	rev20260728: "2026-07-28"}

// protocolVersions are the revisions the gateway speaks, newest first
// (/version, server/discover, the errors that list them). 2026-07-28 is
// served per request; the others through initialize and a session.
// 2024-11-05 is not served: its transport, HTTP+SSE, never was.
var protocolVersions = []string{rev20260728.String(), rev20251125.String(), rev20250618.String(), rev20250326.String()}

func (r revision) String() string { return revisionNames[r] }

// modern reports whether r is of the modern era, whose requests carry their
// revision in _meta and need no session (2026-07-28 versioning).
func (r revision) modern() bool { return r >= rev20260728 }

// parseRevision returns the revision named v, or revNone (no allocation).
func parseRevision(v []byte) revision {
	for r := revNewest; r > revNone; r-- {
		if string(v) == revisionNames[r] {
			return r
		}
	}
	return revNone
}

// nullID reports whether an error whose request id is unknown carries
// "id":null, as JSON-RPC 2.0 and the MCP schemas up to 2025-06-18 (where id
// is required) have it. From 2025-11-25 on the schema makes id optional and
// never null, so the error has none.
func (r revision) nullID() bool { return r < rev20251125 }

// assumedRevision is the revision of a request whose session is not known
// (yet): the header's, else 2025-03-26, which the transport specification
// says to assume when nothing else tells.
func assumedRevision(header revision) revision {
	if header != revNone {
		return header
	}
	return rev20250326
}

// negotiate picks the revision initialize answers: the client's
// protocolVersion when it is served here, else the newest (MCP lifecycle,
// version negotiation). Only session revisions are negotiated, so a client
// asking for 2026-07-28, which has no initialize, gets 2025-11-25 as well.
func negotiate(params []byte) (revision, *rpcError) {
	rev := revNewestSession
	if params == nil {
		return rev, nil
	}
	if params[0] != '{' {
		return rev, &rpcError{code: codeInvalidParams, msg: "Invalid params: initialize params must be an object"}
	}
	for it := objectMembers(params); ; {
		k, v, ok := it.next()
		if !ok {
			return rev, nil
		}
		if !keyIs(k, "protocolVersion") {
			continue
		}
		if v[0] != '"' {
			return rev, &rpcError{code: codeInvalidParams, msg: "Invalid params: protocolVersion must be a string"}
		}
		if r := parseRevision(unquote(v)); r != revNone && !r.modern() {
			rev = r
		}
	}
}

// checkVersionHeader answers 400 when MCP-Protocol-Version names a revision
// not served here (transports: MUST). It returns the header's revision,
// revNone when there is none. /rpc checks it too (issue 13), though it
// needs none.
func checkVersionHeader(ctx *fasthttp.RequestCtx, t transport) (revision, bool) {
	pv := ctx.Request.Header.Peek(headerProtocolVersion)
	if len(pv) == 0 {
		return revNone, true
	}
	if rev := parseRevision(pv); rev != revNone {
		return rev, true
	}
	// A revision unknown here is most likely newer: its error form is the
	// newest's (no id). /rpc answers as JSON-RPC 2.0 does.
	form := revNewest
	if t == transportRPC {
		form = revNone
	}
	mcpError(ctx, fasthttp.StatusBadRequest, form, codeInvalidRequest, fmt.Sprintf(
		"Bad Request: unsupported MCP-Protocol-Version %q (supported: %s)",
		pv, strings.Join(protocolVersions, ", ")))
	return revNone, false
}

// --- The transport ----------------------------------------------------------------

func (s *Server) serveMCP(ctx *fasthttp.RequestCtx) {
	post, del := ctx.IsPost(), ctx.IsDelete() && s.tombstones != nil
	get := ctx.IsGet() && s.events != nil
	if !post && !del && !get {
		s.mcpMethodNotAllowed(ctx)
		return
	}
	p, ok := s.authorize(ctx)
	if !ok {
		return
	}
	if post && s.modernRequest(ctx) {
		s.serveModern(ctx, p) // mcp_modern.go
		return
	}
	header, ok := checkVersionHeader(ctx, transportMCP)
	if !ok {
		return
	}
	now := requestTime(ctx)
	sid := ctx.Request.Header.Peek(headerSessionID)

	if del {
		s.endSession(ctx, sid, p, header, now)
		return
	}
	if get {
		if sess, ok := s.checkSession(ctx, sid, p, header, now); ok {
			s.serveGet(ctx, sid, sess.rev) // mcp_resume.go
		}
		return
	}

	body, ok := s.mcpBody(ctx)
	if !ok {
		return
	}
	buf := getBuffers()
	defer putBuffers(buf)
	buf.user, buf.vs = p.email, serverOf(ctx)
	if err := validate(body); err != nil {
		buf.out = appendIDLessError(buf.out[:0], assumedRevision(header), codeParseError, "Parse error: "+err.Error())
		writeJSON(ctx, fasthttp.StatusBadRequest, buf.out)
		return
	}
	v := trimValue(body)
	if m, ok := initializeRequest(v); ok {
		// A new session at the negotiated revision. An Mcp-Session-Id sent
		// along is ignored: the client is starting over. Params that
		// initialize refuses open none.
		rev, rerr := negotiate(m.params)
		buf.rev = rev
		if rerr == nil {
			ctx.Response.Header.Set(headerSessionID, s.sessions.issue(p.email, rev, now))
		}
	} else {
		sess, ok := s.checkSession(ctx, sid, p, header, now)
		if !ok {
			return
		}
		buf.rev, buf.sid = sess.rev, sid
	}
	buf.sse = v[0] == '{' && acceptsSSE(ctx)
	status, answered := s.processValue(ctx, v, buf, transportMCP)
	if buf.stream != nil {
		s.startStream(ctx, buf.stream) // mcp_stream.go
		return
	}
	finish(ctx, status, answered, buf.out)
}

// mcpMethodNotAllowed answers 405. DELETE is allowed only with a Backend
// that keeps tombstones: without them a session could be ended in one
// process only, and the specification lets a server refuse DELETE instead.
func (s *Server) mcpMethodNotAllowed(ctx *fasthttp.RequestCtx) {
	allow := "POST"
	if s.events != nil {
		allow = "GET, POST"
	}
	if s.tombstones != nil {
		allow += ", DELETE"
	}
	ctx.Response.Header.Set("Allow", allow)
	msg := "Method Not Allowed"
	if ctx.IsGet() {
		msg = "Method Not Allowed: this server offers no standing SSE stream"
	}
	writeDetail(ctx, fasthttp.StatusMethodNotAllowed, msg)
}

// checkSession returns the session of a request. It answers 400 for a
// missing session id and 404 for an unknown, expired, ended or someone
// else's one, as the transport specification asks (on 404 a client starts a
// new session). An ended session is one with a tombstone, written by a
// DELETE on any worker of any instance; reading it costs a near-cache lookup.
//
// MCP-Protocol-Version, when sent, must be a revision served here
// (checkVersionHeader); the session's revision applies whatever it says.
// A served revision other than the session's is accepted, as the reference
// SDK's server accepts it and the conformance suite sends it (2025-03-26
// in a 2025-11-25 session): the client keeps to the negotiated rules either
// way, since the gateway applies them.
func (s *Server) checkSession(ctx *fasthttp.RequestCtx, sid []byte, p principal, header revision, now time.Time) (session, bool) {
	assumed := assumedRevision(header)
	if len(sid) == 0 {
		mcpError(ctx, fasthttp.StatusBadRequest, assumed, codeInvalidRequest,
			"Bad Request: the Mcp-Session-Id header is required (send initialize first)")
		return session{}, false
	}
	sess, ok := s.sessions.decode(sid, p.email, now)
	if ok && s.tombstones != nil {
		ended, err := s.tombstones.IsRevoked(ctx, store.RevokedSession, string(sid))
		if err != nil {
			s.mcpStoreError(ctx, assumed, "checking MCP session", err)
			return session{}, false
		}
		ok = !ended
	}
	if !ok {
		mcpError(ctx, fasthttp.StatusNotFound, assumed, codeSessionNotFound, "Session not found")
		return session{}, false
	}
	return sess, true
}

// endSession answers DELETE with the session id: a tombstone makes every
// worker of every instance answer 404 for it within the cache's coherence
// bound. It is kept until the id expires anyway.
func (s *Server) endSession(ctx *fasthttp.RequestCtx, sid []byte, p principal, header revision, now time.Time) {
	sess, ok := s.checkSession(ctx, sid, p, header, now)
	if !ok {
		return
	}
	err := s.tombstones.Revoke(ctx, store.Revocation{Kind: store.RevokedSession, ID: string(sid),
		Until: sess.expires, By: p.email, Reason: "DELETE /mcp"})
	if err != nil {
		s.mcpStoreError(ctx, sess.rev, "ending MCP session", err)
		return
	}
	ctx.Response.SetStatusCode(fasthttp.StatusNoContent)
}

// mcpStoreError answers a transport-level store failure: 503 with
// Retry-After when the database is unreachable, else 500 (storeError).
func (s *Server) mcpStoreError(ctx *fasthttp.RequestCtx, rev revision, what string, err error) {
	rerr := s.storeError(ctx, what, err)
	status := fasthttp.StatusInternalServerError
	if rerr.code == codeUnavailable {
		status = unavailableStatus(ctx)
	}
	mcpError(ctx, status, rev, rerr.code, rerr.msg)
}

// initializeRequest returns the message when v is a single initialize
// request with a valid id.
func initializeRequest(v []byte) (message, bool) {
	if v[0] != '{' {
		return message{}, false
	}
	m, perr := parse(v, transportMCP)
	return m, perr == nil && !m.response && m.id != nil && string(m.method) == "initialize"
}

// mcpBody returns the body of a POST /mcp after the checks both eras share:
// 406 when Accept, sent, excludes JSON (every answer here is
// application/json), 413 when the body is too large.
func (s *Server) mcpBody(ctx *fasthttp.RequestCtx) ([]byte, bool) {
	if accept := ctx.Request.Header.Peek("Accept"); len(accept) > 0 && !acceptsJSON(accept) {
		writeDetail(ctx, fasthttp.StatusNotAcceptable, "Not Acceptable: the client must accept application/json")
		return nil, false
	}
	return s.checkBody(ctx)
}

func acceptsJSON(accept []byte) bool {
	return bytes.Contains(accept, []byte("application/json")) ||
		bytes.Contains(accept, []byte("application/*")) ||
		bytes.Contains(accept, []byte("*/*"))
}

// mcpError answers a transport-level failure with an id-less JSON-RPC error
// body of revision rev, the form the MCP SDKs read.
func mcpError(ctx *fasthttp.RequestCtx, status int, rev revision, code int, msg string) {
	writeJSON(ctx, status, appendIDLessError(nil, rev, code, msg))
}

// --- Sessions ---------------------------------------------------------------------

// Sessions are self-validating so that they work across worker processes:
// the N workers share one listening socket, and a client's consecutive
// requests land on any of them. A session id carries its own proof:
//
//	base64url( random[16] | issued[8] (Unix seconds, big endian) | revision[1] | mac[16] )
//	mac = HMAC-SHA256(key, random | issued | revision | subject)[:16]
//	key = HMAC-SHA256(JWT secret, "mcpgateway/mcp-session/v2")
//
// During a key rotation (JWT_SECRET_KEY_PREVIOUS set) ids are issued under
// the current key and verified under either, so sessions survive it.
//
// Any worker holding the secret can check an id without shared state. The
// mac binds the id to the token's subject, so one user cannot use another's
// session id, and to the negotiated revision. Ids expire sessionLifetime
// after issue; clients then get 404 and, as the specification requires,
// start a new session. Ids of the v1 form (no revision, 54 characters) get
// 404 too: their clients start over once, rather than the gateway keeping a
// second path for a day's worth of ids whose revision it cannot know.
//
// Ending a session (DELETE) writes a tombstone to the store (checkSession,
// endSession), not here.
type sessions struct {
	key  []byte
	macs sync.Pool // hash.Hash: HMAC-SHA256 with key (hmac.New allocates a lot)
	prev *sessions // the previous key's, during a rotation; nil otherwise
}

// session is what a valid id says.
type session struct {
	rev     revision
	expires time.Time
}

const (
	sessionLifetime  = 24 * time.Hour
	sessionClockSkew = time.Minute // issue times this far in the future still pass
	sessionHeadLen   = 16 + 8 + 1  // random, issued, revision: what the mac covers, with the subject
	sessionRawLen    = sessionHeadLen + 16
)

var (
	sessionEncoding = base64.RawURLEncoding.Strict() // one encoding per id: no aliases
	sessionIDLen    = sessionEncoding.EncodedLen(sessionRawLen)
)

// newSessions derives the session key from the JWT secret, and from the
// previous one when set. Without a secret the key is random, and ids are
// then valid only in this process.
func newSessions(secret, previous string) (*sessions, error) {
	ss, err := newSessionKey(secret)
	if err != nil || previous == "" || previous == secret {
		return ss, err
	}
	if ss.prev, err = newSessionKey(previous); err != nil {
		return nil, err
	}
	return ss, nil
}

func newSessionKey(secret string) (*sessions, error) {
	key := make([]byte, sha256.Size)
	if secret == "" {
		if _, err := rand.Read(key); err != nil {
			return nil, fmt.Errorf("session key: %w", err)
		}
	} else {
		m := hmac.New(sha256.New, []byte(secret))
		m.Write([]byte("mcpgateway/mcp-session/v2"))
		key = m.Sum(key[:0])
	}
	ss := &sessions{key: key}
	ss.macs.New = func() any { return hmac.New(sha256.New, ss.key) }
	return ss, nil
}

func (ss *sessions) mac(dst *[sha256.Size]byte, head []byte, subject string) {
	h := ss.macs.Get().(hash.Hash)
	h.Reset()
	h.Write(head)
	h.Write([]byte(subject))
	h.Sum(dst[:0])
	ss.macs.Put(h)
}

func (ss *sessions) issue(subject string, rev revision, now time.Time) string {
	var raw [sessionRawLen]byte
	_, _ = rand.Read(raw[:16]) // crypto/rand.Read never fails (Go 1.24+)
	binary.BigEndian.PutUint64(raw[16:24], uint64(now.Unix()))
	raw[24] = byte(rev)
	var sum [sha256.Size]byte
	ss.mac(&sum, raw[:sessionHeadLen], subject)
	copy(raw[sessionHeadLen:], sum[:16])
	return sessionEncoding.EncodeToString(raw[:])
}

// decode checks an id's form, mac, revision and age.
func (ss *sessions) decode(id []byte, subject string, now time.Time) (session, bool) {
	var raw [sessionRawLen]byte
	if len(id) != sessionIDLen {
		return session{}, false
	}
	if n, err := sessionEncoding.Decode(raw[:], id); err != nil || n != sessionRawLen {
		return session{}, false
	}
	var sum [sha256.Size]byte
	ss.mac(&sum, raw[:sessionHeadLen], subject)
	if !hmac.Equal(sum[:16], raw[sessionHeadLen:]) {
		if ss.prev == nil {
			return session{}, false
		}
		ss.prev.mac(&sum, raw[:sessionHeadLen], subject)
		if !hmac.Equal(sum[:16], raw[sessionHeadLen:]) {
			return session{}, false
		}
	}
	rev := revision(raw[24])
	if rev == revNone || rev > revNewestSession {
		return session{}, false
	}
	issued := time.Unix(int64(binary.BigEndian.Uint64(raw[16:24])), 0)
	if now.Sub(issued) > sessionLifetime || issued.Sub(now) > sessionClockSkew {
		return session{}, false
	}
	// A second past the last one decode accepts (the store's Until is exclusive).
	return session{rev: rev, expires: issued.Add(sessionLifetime + time.Second)}, true
}
