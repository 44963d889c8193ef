package rpc

import (
	"bytes"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/valyala/fasthttp"
	"go.uber.org/zap"

	"github.com/mcpgateway/mcpgateway/store"
)

// principal is who a verified token speaks for.
type principal struct {
	email string
	jti   string    // "" when the token has none (it cannot be revoked)
	exp   time.Time // exp plus the leeway; zero: the token does not expire
}

const (
	maxTokenLen       = 8 << 10 // longer Authorization values are refused outright
	maxCachedTokenLen = 2 << 10 // longer tokens are verified every time, not kept
	tokenCacheSize    = 4096    // verified tokens kept per process
)

// authenticator checks bearer tokens.
//
// Verifying a JWT (base64, JSON, HMAC or RSA/ECDSA) costs several
// microseconds, more than the rest of a request, and a client sends the same
// token again and again. So a token that verified is kept, keyed by its exact
// text: the same bytes with the same keys always verify the same way, so only
// the checks that depend on time and on the store are made again on each use:
// the expiry, the revocation of its jti and the user's state. Invalid tokens
// are never kept.
type authenticator struct {
	opt     *Options
	backend Backend
	revoked revocationBackend // nil: the Backend keeps no revocations
	log     *zap.Logger
	parser  *jwt.Parser
	keys    verifier

	mu    sync.RWMutex
	cache map[string]principal

	backendErrors errorLog // store failures of the auth path
}

// errorLog logs an error at most once a second, with how many it left out
// meanwhile: during a database outage every request fails the same way,
// and a line each flooded the log with thousands a second.
type errorLog struct {
	next    atomic.Int64 // unix ns before which lines are left out
	skipped atomic.Int64
}

func (e *errorLog) log(l *zap.Logger, msg string, fields ...zap.Field) {
	now := time.Now().UnixNano()
	if n := e.next.Load(); now < n || !e.next.CompareAndSwap(n, now+int64(time.Second)) {
		e.skipped.Add(1)
		return
	}
	l.Error(msg, append(fields, zap.Int64("similar_left_out", e.skipped.Swap(0)))...)
}

func newAuthenticator(o *Options, b Backend, keys verifier) *authenticator {
	opts := []jwt.ParserOption{jwt.WithValidMethods([]string{o.JWTAlgorithm}),
		// The leeway applies to exp, nbf and iat alike; iat in the future
		// (past the leeway) is refused, as PyJWT does.
		jwt.WithLeeway(o.JWTLeeway), jwt.WithIssuedAt()}
	if o.JWTAudience != "" {
		opts = append(opts, jwt.WithAudience(o.JWTAudience))
	}
	if o.JWTIssuer != "" {
		opts = append(opts, jwt.WithIssuer(o.JWTIssuer))
	}
	if o.RequireTokenExpiration {
		opts = append(opts, jwt.WithExpirationRequired())
	}
	a := &authenticator{
		opt:     o,
		backend: b,
		log:     o.Logger,
		parser:  jwt.NewParser(opts...),
		keys:    keys,
		cache:   make(map[string]principal),
	}
	a.revoked, _ = b.(revocationBackend)
	return a
}

// authError is a refused request: its HTTP status and {"detail"} text.
type authError struct {
	status int
	detail string
}

func unauthorized(detail string) *authError {
	return &authError{fasthttp.StatusUnauthorized, detail}
}

// The answers to refused tokens are fixed texts: what the JWT library found
// wrong (audience, issuer, signature...) is logged at debug level, never
// sent, so an unauthenticated caller learns nothing of what is checked.
var (
	errNotAuthenticated = unauthorized("Not authenticated")
	errBadScheme        = unauthorized("Invalid authorization header: expected a Bearer token")
	errInvalidToken     = unauthorized("Invalid token")
	errExpired          = unauthorized("Token has expired")
	errRevoked          = unauthorized("Token has been revoked")
	errUserNotFound     = unauthorized("User not found")
	errUserInactive     = unauthorized("User account is inactive")
	errCookieCSRF       = &authError{fasthttp.StatusUnsupportedMediaType,
		"Content-Type must be application/json when the token is sent in a cookie"}
	errAuthBackend = &authError{fasthttp.StatusServiceUnavailable, "Authentication backend unavailable"}
)

// authorize authenticates the request, or answers it (401 and friends) and
// returns false. With authentication off everyone is the anonymous principal.
func (s *Server) authorize(ctx *fasthttp.RequestCtx) (principal, bool) {
	if !s.opt.AuthRequired {
		return principal{}, true
	}
	p, aerr := s.auth.authenticate(ctx, requestTime(ctx))
	if aerr != nil {
		if aerr.status == fasthttp.StatusUnauthorized {
			ctx.Response.Header.Set("WWW-Authenticate", "Bearer")
		}
		writeDetail(ctx, aerr.status, aerr.detail)
		return principal{}, false
	}
	return p, true
}

var bearerPrefix = []byte("bearer ")

// authenticate finds the token (Authorization: Bearer, else the jwt_token
// cookie), verifies it or finds it verified, and checks its user.
func (a *authenticator) authenticate(ctx *fasthttp.RequestCtx, now time.Time) (principal, *authError) {
	var tok []byte
	if h := ctx.Request.Header.Peek("Authorization"); len(h) > 0 {
		if len(h) < len(bearerPrefix) || !bytes.EqualFold(h[:len(bearerPrefix)], bearerPrefix) {
			return principal{}, errBadScheme
		}
		tok = bytes.TrimSpace(h[len(bearerPrefix):])
	} else if tok = ctx.Request.Header.Cookie("jwt_token"); len(tok) > 0 {
		// A browser sends cookies with cross-site form posts, which cannot
		// carry Content-Type: application/json without a CORS preflight.
		if ctx.IsPost() && !isJSON(ctx.Request.Header.ContentType()) {
			return principal{}, errCookieCSRF
		}
	}
	if len(tok) == 0 {
		return principal{}, errNotAuthenticated
	}
	if len(tok) > maxTokenLen {
		a.log.Debug("token refused", zap.String("reason", "longer than 8 KiB"))
		return principal{}, errInvalidToken
	}

	a.mu.RLock()
	p, hit := a.cache[string(tok)]
	a.mu.RUnlock()
	if hit {
		if !p.exp.IsZero() && !now.Before(p.exp) {
			a.mu.Lock()
			delete(a.cache, string(tok))
			a.mu.Unlock()
			return principal{}, errExpired
		}
	} else {
		var aerr *authError
		if p, aerr = a.verify(string(tok)); aerr != nil {
			return principal{}, aerr
		}
		a.remember(string(tok), p)
	}
	if aerr := a.checkRevoked(ctx, p); aerr != nil {
		return principal{}, aerr
	}
	return p, a.checkUser(ctx, p)
}

// verify checks a token's signature, algorithm and claims.
func (a *authenticator) verify(tok string) (principal, *authError) {
	var c jwt.RegisteredClaims // other claims (is_admin, teams...) are not used here
	if _, err := a.parser.ParseWithClaims(tok, &c, a.keys.keyFunc); err != nil {
		if errors.Is(err, jwt.ErrTokenExpired) && !errors.Is(err, jwt.ErrTokenSignatureInvalid) {
			return principal{}, errExpired
		}
		return principal{}, a.invalid(zap.Error(err))
	}
	if !isEmail(c.Subject) {
		return principal{}, a.invalid(zap.String("reason", "sub must be an email address"))
	}
	if a.opt.RequireJTI && c.ID == "" {
		return principal{}, a.invalid(zap.String("reason", "jti is required"))
	}
	if len(c.ID) > store.MaxRevocationIDLen {
		return principal{}, a.invalid(zap.String("reason", "jti is too long to be revoked"))
	}
	p := principal{email: c.Subject, jti: c.ID}
	if c.ExpiresAt != nil {
		p.exp = c.ExpiresAt.Time.Add(a.opt.JWTLeeway)
	}
	return p, nil
}

// invalid logs why a token was refused, at debug level, and answers the
// fixed "Invalid token".
func (a *authenticator) invalid(reason zap.Field) *authError {
	a.log.Debug("token refused", reason)
	return errInvalidToken
}

// remember keeps a verified token. When the cache is full an arbitrary entry
// goes (Go's map iteration starts at a random place): simple, and fair enough
// for a cache whose entries are all equally cheap to rebuild.
func (a *authenticator) remember(tok string, p principal) {
	if len(tok) > maxCachedTokenLen {
		return
	}
	a.mu.Lock()
	if len(a.cache) >= tokenCacheSize {
		for k := range a.cache {
			delete(a.cache, k)
			break
		}
	}
	a.cache[tok] = p
	a.mu.Unlock()
}

// checkRevoked refuses a token whose jti was revoked (POST
// /admin/tokens/revoke), on every request, cached token or not. The store
// answers from its near cache: a map lookup.
func (a *authenticator) checkRevoked(ctx *fasthttp.RequestCtx, p principal) *authError {
	if p.jti == "" || a.revoked == nil {
		return nil
	}
	revoked, err := a.revoked.IsRevoked(ctx, store.RevokedJTI, p.jti)
	switch {
	case err != nil:
		a.backendErrors.log(a.log, "looking up token revocation", zap.String("email", p.email), zap.Error(err))
		return errAuthBackend
	case revoked:
		a.log.Debug("token refused", zap.String("reason", "revoked"), zap.String("email", p.email))
		return errRevoked
	}
	return nil
}

// checkUser applies the user's state on every request, cached token or not:
// a deactivated account is refused at once. A user missing from the store is
// refused only with RequireUserInDB (as in the Python gateway, tokens for
// users that live only in the token are otherwise allowed).
func (a *authenticator) checkUser(ctx *fasthttp.RequestCtx, p principal) *authError {
	u, err := a.backend.User(ctx, p.email)
	switch {
	case err == nil:
		if !u.Active {
			return errUserInactive
		}
		return nil
	case errors.Is(err, store.ErrNotFound):
		if a.opt.RequireUserInDB {
			return errUserNotFound
		}
		return nil
	default:
		a.backendErrors.log(a.log, "looking up user", zap.String("email", p.email), zap.Error(err))
		return errAuthBackend
	}
}

// isEmail is a deliberately plain check: one @, something on each side, no
// spaces or control characters. The store decides whether the user exists.
func isEmail(s string) bool {
	at := strings.IndexByte(s, '@')
	if at <= 0 || at == len(s)-1 || strings.IndexByte(s[at+1:], '@') >= 0 || len(s) > 320 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] <= ' ' || s[i] == 0x7f {
			return false
		}
	}
	return true
}

// isJSON reports whether a Content-Type is application/json (any parameters).
func isJSON(ct []byte) bool {
	if i := bytes.IndexByte(ct, ';'); i >= 0 {
		ct = ct[:i]
	}
	return bytes.EqualFold(bytes.TrimSpace(ct), contentTypeJSON)
}
