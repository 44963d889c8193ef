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
)

// POST /mcp is the MCP Streamable HTTP transport (revisions 2025-03-26 and
// later) in its JSON response mode: every POST is answered with one
// application/json body (or 202 when there is nothing to answer), and no SSE
// stream is offered (GET /mcp answers 405, which the specification allows).

const (
	headerSessionID       = "Mcp-Session-Id"
	headerProtocolVersion = "Mcp-Protocol-Version"
)

func (s *Server) serveMCP(ctx *fasthttp.RequestCtx) {
	post, del := ctx.IsPost(), ctx.IsDelete()
	if !post && !del {
		ctx.Response.Header.Set("Allow", "POST, DELETE")
		msg := "Method Not Allowed"
		if ctx.IsGet() {
			msg = "Method Not Allowed: this server answers in JSON and offers no SSE stream"
		}
		writeDetail(ctx, fasthttp.StatusMethodNotAllowed, msg)
		return
	}
	p, ok := s.authorize(ctx)
	if !ok {
		return
	}
	if pv := ctx.Request.Header.Peek(headerProtocolVersion); len(pv) > 0 {
		if _, ok := supportedVersion(pv); !ok {
			mcpError(ctx, fasthttp.StatusBadRequest, codeInvalidRequest, fmt.Sprintf(
				"Bad Request: unsupported MCP-Protocol-Version %q (supported: %s)",
				pv, strings.Join(protocolVersions, ", ")))
			return
		}
	}
	now := requestTime(ctx)
	sid := ctx.Request.Header.Peek(headerSessionID)

	if del {
		if s.checkSession(ctx, sid, p, now) {
			s.sessions.end(sid, now)
			ctx.Response.SetStatusCode(fasthttp.StatusNoContent)
		}
		return
	}

	if accept := ctx.Request.Header.Peek("Accept"); len(accept) > 0 && !acceptsJSON(accept) {
		writeDetail(ctx, fasthttp.StatusNotAcceptable, "Not Acceptable: the client must accept application/json")
		return
	}
	body, ok := s.checkBody(ctx)
	if !ok {
		return
	}
	buf := getBuffers()
	defer putBuffers(buf)
	buf.user = p.email
	if err := validate(body); err != nil {
		buf.out = appendError(buf.out[:0], nil, codeParseError, "Parse error: "+err.Error())
		writeJSON(ctx, fasthttp.StatusBadRequest, buf.out)
		return
	}
	v := trimValue(body)
	if isInitialize(v) {
		// A new session. An Mcp-Session-Id sent along is ignored: the client
		// is starting over.
		ctx.Response.Header.Set(headerSessionID, s.sessions.issue(p.email, now))
	} else if !s.checkSession(ctx, sid, p, now) {
		return
	}
	status, answered := s.processValue(ctx, v, buf, transportMCP)
	finish(ctx, status, answered, buf.out)
}

// checkSession answers 400 for a missing session id and 404 for an unknown,
// expired, ended or someone else's one, as the transport specification asks
// (on 404 a client starts a new session).
func (s *Server) checkSession(ctx *fasthttp.RequestCtx, sid []byte, p principal, now time.Time) bool {
	if len(sid) == 0 {
		mcpError(ctx, fasthttp.StatusBadRequest, codeInvalidRequest,
			"Bad Request: the Mcp-Session-Id header is required (send initialize first)")
		return false
	}
	if !s.sessions.valid(sid, p.email, now) {
		mcpError(ctx, fasthttp.StatusNotFound, codeSessionNotFound, "Session not found")
		return false
	}
	return true
}

func isInitialize(v []byte) bool {
	if v[0] != '{' {
		return false
	}
	m, perr := parseMessage(v)
	return perr == nil && !m.response && m.id != nil && string(m.method) == "initialize"
}

func acceptsJSON(accept []byte) bool {
	return bytes.Contains(accept, []byte("application/json")) ||
		bytes.Contains(accept, []byte("application/*")) ||
		bytes.Contains(accept, []byte("*/*"))
}

// mcpError answers a transport-level failure with a JSON-RPC error body, the
// form the MCP SDKs read.
func mcpError(ctx *fasthttp.RequestCtx, status, code int, msg string) {
	writeJSON(ctx, status, appendError(nil, nil, code, msg))
}

// --- Sessions ---------------------------------------------------------------------

// Sessions are self-validating so that they work across worker processes:
// the N workers share one listening socket, and a client's consecutive
// requests land on any of them. A session id carries its own proof:
//
//	base64url( random[16] | issued[8] (Unix seconds, big endian) | mac[16] )
//	mac = HMAC-SHA256(key, random | issued | subject)[:16]
//	key = HMAC-SHA256(JWT secret, "mcpgateway/mcp-session/v1")
//
// During a key rotation (JWT_SECRET_KEY_PREVIOUS set) ids are issued under
// the current key and verified under either, so sessions survive it.
//
// Any worker holding the secret can check an id without shared state. The
// mac binds the id to the token's subject, so one user cannot use another's
// session id. Ids expire sessionLifetime after issue; clients then get 404
// and, as the specification requires, start a new session.
//
// Ending a session (DELETE) is recorded in the process that received it
// only: another worker process keeps accepting the id until it expires.
// Nothing is attached to a session here (every method is stateless), so the
// cost of that is a 404 not given, never state kept or leaked.
type sessions struct {
	key  []byte
	macs sync.Pool // hash.Hash: HMAC-SHA256 with key (hmac.New allocates a lot)
	prev *sessions // the previous key's, during a rotation; nil otherwise

	mu    sync.Mutex
	ended map[[16]byte]int64 // random part → Unix time at which the id expires anyway
}

const (
	sessionLifetime  = 24 * time.Hour
	sessionClockSkew = time.Minute // issue times this far in the future still pass
	sessionRawLen    = 16 + 8 + 16
	maxEndedSessions = 1 << 16
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
			return nil, err
		}
	} else {
		m := hmac.New(sha256.New, []byte(secret))
		m.Write([]byte("mcpgateway/mcp-session/v1"))
		key = m.Sum(key[:0])
	}
	ss := &sessions{key: key, ended: make(map[[16]byte]int64)}
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

func (ss *sessions) issue(subject string, now time.Time) string {
	var raw [sessionRawLen]byte
	_, _ = rand.Read(raw[:16]) // crypto/rand.Read never fails (Go 1.24+)
	binary.BigEndian.PutUint64(raw[16:24], uint64(now.Unix()))
	var sum [sha256.Size]byte
	ss.mac(&sum, raw[:24], subject)
	copy(raw[24:], sum[:16])
	return sessionEncoding.EncodeToString(raw[:])
}

// decode checks an id's form, mac and age, and returns its raw bytes.
func (ss *sessions) decode(id []byte, subject string, now time.Time) (raw [sessionRawLen]byte, ok bool) {
	if len(id) != sessionIDLen {
		return raw, false
	}
	if n, err := sessionEncoding.Decode(raw[:], id); err != nil || n != sessionRawLen {
		return raw, false
	}
	var sum [sha256.Size]byte
	ss.mac(&sum, raw[:24], subject)
	if !hmac.Equal(sum[:16], raw[24:]) {
		if ss.prev == nil {
			return raw, false
		}
		ss.prev.mac(&sum, raw[:24], subject)
		if !hmac.Equal(sum[:16], raw[24:]) {
			return raw, false
		}
	}
	issued := time.Unix(int64(binary.BigEndian.Uint64(raw[16:24])), 0)
	if now.Sub(issued) > sessionLifetime || issued.Sub(now) > sessionClockSkew {
		return raw, false
	}
	return raw, true
}

// valid reports whether id is a live session of subject.
func (ss *sessions) valid(id []byte, subject string, now time.Time) bool {
	raw, ok := ss.decode(id, subject, now)
	if !ok {
		return false
	}
	ss.mu.Lock()
	_, ended := ss.ended[[16]byte(raw[:16])]
	ss.mu.Unlock()
	return !ended
}

// end records that a (valid) session was ended in this process. The record
// is kept until the id would have expired anyway.
func (ss *sessions) end(id []byte, now time.Time) {
	var raw [sessionRawLen]byte
	if n, err := sessionEncoding.Decode(raw[:], id); err != nil || n != sessionRawLen {
		return
	}
	expires := int64(binary.BigEndian.Uint64(raw[16:24])) + int64(sessionLifetime/time.Second)
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if len(ss.ended) >= maxEndedSessions {
		for k, exp := range ss.ended {
			if exp <= now.Unix() {
				delete(ss.ended, k)
			}
		}
		// Still full: forget one, arbitrarily. Memory stays bounded; the cost
		// is that one ended id is accepted again until it expires.
		for k := range ss.ended {
			if len(ss.ended) < maxEndedSessions {
				break
			}
			delete(ss.ended, k)
		}
	}
	ss.ended[[16]byte(raw[:16])] = expires
}
