package rpc

import (
	"bytes"
	"errors"
	"strings"
	"sync"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/valyala/fasthttp"
	"go.uber.org/zap"

	"github.com/mcpgateway/mcpgateway/store"
)

// hmacMethods are the signing algorithms a gateway may be configured with.
// Exactly one of them is accepted at a time (Options.JWTAlgorithm).
var hmacMethods = map[string]*jwt.SigningMethodHMAC{
	"HS256": jwt.SigningMethodHS256,
	"HS384": jwt.SigningMethodHS384,
	"HS512": jwt.SigningMethodHS512,
}

// principal is who a verified token speaks for.
type principal struct {
	email string
	exp   time.Time // zero: the token does not expire
}

const (
	maxTokenLen       = 8 << 10 // longer Authorization values are refused outright
	maxCachedTokenLen = 2 << 10 // longer tokens are verified every time, not kept
	tokenCacheSize    = 4096    // verified tokens kept per process
)

// authenticator checks bearer tokens.
//
// Verifying a JWT (base64, JSON, HMAC) costs several microseconds, more than
// the rest of a request, and a client sends the same token again and again.
// So a token that verified is kept, keyed by its exact text: the same bytes
// with the same key always verify the same way, so only the checks that
// depend on time and on the store are made again on each use, the expiry and
// the user's state. Invalid tokens are never kept.
type authenticator struct {
	opt     *Options
	backend Backend
	log     *zap.Logger
	parser  *jwt.Parser
	key     []byte

	mu    sync.RWMutex
	cache map[string]principal
}

func newAuthenticator(o *Options, b Backend) *authenticator {
	opts := []jwt.ParserOption{jwt.WithValidMethods([]string{o.JWTAlgorithm})}
	if o.JWTAudience != "" {
		opts = append(opts, jwt.WithAudience(o.JWTAudience))
	}
	if o.JWTIssuer != "" {
		opts = append(opts, jwt.WithIssuer(o.JWTIssuer))
	}
	if o.RequireTokenExpiration {
		opts = append(opts, jwt.WithExpirationRequired())
	}
	return &authenticator{
		opt:     o,
		backend: b,
		log:     o.Logger,
		parser:  jwt.NewParser(opts...),
		key:     []byte(o.JWTSecretKey),
		cache:   make(map[string]principal),
	}
}

// authError is a refused request: its HTTP status and {"detail"} text.
type authError struct {
	status int
	detail string
}

func unauthorized(detail string) *authError {
	return &authError{fasthttp.StatusUnauthorized, detail}
}

var (
	errNotAuthenticated = unauthorized("Not authenticated")
	errBadScheme        = unauthorized("Invalid authorization header: expected a Bearer token")
	errExpired          = unauthorized("Token has expired")
	errTokenTooLong     = unauthorized("Invalid token: too long")
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
		return principal{}, errTokenTooLong
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
	return p, a.checkUser(ctx, p)
}

// verify checks a token's signature, algorithm and claims.
func (a *authenticator) verify(tok string) (principal, *authError) {
	var c jwt.RegisteredClaims // other claims (is_admin, teams...) are not used here
	if _, err := a.parser.ParseWithClaims(tok, &c, a.keyFunc); err != nil {
		if errors.Is(err, jwt.ErrTokenExpired) {
			return principal{}, errExpired
		}
		return principal{}, unauthorized("Invalid token: " + err.Error())
	}
	if !isEmail(c.Subject) {
		return principal{}, unauthorized("Invalid token: sub must be an email address")
	}
	if a.opt.RequireJTI && c.ID == "" {
		return principal{}, unauthorized("Invalid token: jti is required")
	}
	p := principal{email: c.Subject}
	if c.ExpiresAt != nil {
		p.exp = c.ExpiresAt.Time
	}
	return p, nil
}

func (a *authenticator) keyFunc(t *jwt.Token) (any, error) {
	// WithValidMethods has checked the "alg" header already; checking the
	// method's type as well costs nothing and guards against a mistake there.
	if _, ok := t.Method.(*jwt.SigningMethodHMAC); !ok || t.Method.Alg() != a.opt.JWTAlgorithm {
		return nil, errors.New("unexpected signing method")
	}
	return a.key, nil
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
		a.log.Error("looking up user", zap.String("email", p.email), zap.Error(err))
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
