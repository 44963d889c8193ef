package rpc

import (
	"context"
	"errors"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/valyala/fasthttp"
	"go.uber.org/zap"

	"github.com/mcpgateway/mcpgateway/store"
)

// Token revocation (docs/security.md, "Revoking a token").
//
//	POST /admin/tokens/revoke        {"jti":"...","exp":1767225600,"reason":"..."}
//	                                 or {"token":"<the JWT>","reason":"..."}
//	GET  /admin/tokens/revoked/{jti}
//
// A revoked jti is refused on every authenticated request of every worker
// and instance within the cache's coherence bound (one second). The record
// is kept until the token expires (its exp plus the leeway), then purged;
// without an exp it is kept for good.

// revocationBackend is a Backend that keeps revocations (*store.Store).
// Without it the routes answer 501 and no request checks revocations.
type revocationBackend interface {
	IsRevoked(ctx context.Context, kind, id string) (bool, error)
	Revoke(ctx context.Context, r store.Revocation) error
	Revocation(ctx context.Context, kind, id string) (store.Revocation, error)
}

type revokeRequest struct {
	JTI    string `json:"jti"`
	Token  string `json:"token"`
	Exp    *int64 `json:"exp"` // Unix seconds, as in the token
	Reason string `json:"reason"`
}

const maxRevokeReason = 1024

var errNoRevocations = &authError{fasthttp.StatusNotImplemented, "Token revocation is not supported by this backend"}

// serveTokens answers /admin/tokens/...: rest is what follows "tokens/".
func (s *Server) serveTokens(ctx *fasthttp.RequestCtx, rest string) {
	jti, isGet := strings.CutPrefix(rest, "revoked/")
	switch {
	case rest == "revoke":
		if !ctx.IsPost() {
			methodNotAllowed(ctx, "POST")
			return
		}
	case isGet && jti != "":
		if !ctx.IsGet() {
			methodNotAllowed(ctx, "GET")
			return
		}
	default:
		writeDetail(ctx, fasthttp.StatusNotFound, "Not Found")
		return
	}
	caller, ok := s.authorizeAdmin(ctx)
	if !ok {
		return
	}
	rb, ok := s.backend.(revocationBackend)
	if !ok {
		writeDetail(ctx, errNoRevocations.status, errNoRevocations.detail)
		return
	}
	if isGet {
		s.adminGetRevocation(ctx, rb, jti)
		return
	}
	s.adminRevoke(ctx, rb, caller)
}

func (s *Server) adminGetRevocation(ctx *fasthttp.RequestCtx, rb revocationBackend, jti string) {
	r, err := rb.Revocation(ctx, store.RevokedJTI, jti)
	switch {
	case errors.Is(err, store.ErrNotFound):
		writeDetail(ctx, fasthttp.StatusNotFound, "Not revoked")
	case err != nil:
		s.storeFailed(ctx, "reading revocation", err)
	default:
		writeAdminJSON(ctx, fasthttp.StatusOK, r)
	}
}

func (s *Server) adminRevoke(ctx *fasthttp.RequestCtx, rb revocationBackend, caller principal) {
	var req revokeRequest
	if !s.readAdminBody(ctx, &req) {
		return
	}
	if (req.JTI == "") == (req.Token == "") {
		writeDetail(ctx, fasthttp.StatusBadRequest, `Send either "jti" or "token"`)
		return
	}
	if len(req.Reason) > maxRevokeReason {
		writeDetail(ctx, fasthttp.StatusBadRequest, "reason is too long")
		return
	}
	jti, exp := req.JTI, req.Exp
	if req.Token != "" {
		if exp != nil {
			writeDetail(ctx, fasthttp.StatusBadRequest, `"exp" is taken from the token: send it with "jti" only`)
			return
		}
		var aerr *authError
		if jti, exp, aerr = s.tokenToRevoke(req.Token); aerr != nil {
			writeDetail(ctx, aerr.status, aerr.detail)
			return
		}
	}
	if len(jti) > store.MaxRevocationIDLen {
		writeDetail(ctx, fasthttp.StatusBadRequest, "jti is too long: no token with it is accepted anyway")
		return
	}
	r := store.Revocation{Kind: store.RevokedJTI, ID: jti, By: caller.email, Reason: req.Reason}
	if exp != nil {
		// Until the token would be refused as expired anyway.
		r.Until = time.Unix(*exp, 0).Add(s.opt.JWTLeeway + time.Second)
	}
	if err := rb.Revoke(ctx, r); err != nil {
		s.storeFailed(ctx, "revoking token", err)
		return
	}
	s.log.Info("admin: token revoked", zap.String("by", caller.email), zap.String("jti", jti),
		zap.Time("until", r.Until), zap.String("reason", req.Reason))
	rec, err := rb.Revocation(ctx, store.RevokedJTI, jti)
	if err != nil { // written but not readable back (expired already, or a hiccup)
		rec = r
		rec.RevokedAt = time.Now().UTC()
	}
	writeAdminJSON(ctx, fasthttp.StatusOK, rec)
}

// tokenToRevoke takes jti and exp from a token given whole. It must verify
// with the gateway's keys (so nobody records a made-up exp), but its claims
// are not validated: an expired or not-yet-valid token can be revoked too.
func (s *Server) tokenToRevoke(tok string) (string, *int64, *authError) {
	bad := &authError{fasthttp.StatusBadRequest, "The token does not verify with this gateway's keys"}
	if len(tok) > maxTokenLen || !s.opt.AuthRequired {
		return "", nil, bad
	}
	var c jwt.RegisteredClaims
	_, err := jwt.ParseWithClaims(tok, &c, s.auth.keys.keyFunc,
		jwt.WithValidMethods([]string{s.opt.JWTAlgorithm}), jwt.WithoutClaimsValidation())
	if err != nil {
		s.log.Debug("admin: token to revoke does not verify", zap.Error(err))
		return "", nil, bad
	}
	if c.ID == "" {
		return "", nil, &authError{fasthttp.StatusBadRequest,
			"The token has no jti and cannot be revoked: deactivate its user (PUT /admin/users/{email})"}
	}
	var exp *int64
	if c.ExpiresAt != nil {
		e := c.ExpiresAt.Unix()
		exp = &e
	}
	return c.ID, exp, nil
}

var _ revocationBackend = (*store.Store)(nil)
