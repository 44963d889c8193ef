package rpc

import (
	"crypto/rand"
	"errors"
	"fmt"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// Defaults of MintToken, the same as the gateway's settings' defaults.
const (
	DefaultAudience = "mcpgateway-api"
	DefaultIssuer   = "mcpgateway"
)

// TokenRequest describes a token for MintToken.
type TokenRequest struct {
	Email     string
	Expires   time.Duration // lifetime; 0: the token has no exp
	Admin     bool          // adds "is_admin": true
	Secret    string
	Algorithm string // HS256 (default), HS384 or HS512
	Audience  string // default DefaultAudience
	Issuer    string // default DefaultIssuer
}

// MintToken signs a token with the claims sub, iat, jti (random), aud, iss,
// exp (when Expires > 0) and is_admin (when Admin).
func MintToken(r TokenRequest) (string, error) {
	method, err := signingMethod(r.Algorithm)
	if err != nil {
		return "", err
	}
	if r.Secret == "" {
		return "", errors.New("token: a secret key is required")
	}
	if !isEmail(r.Email) {
		return "", fmt.Errorf("token: %q is not an email address", r.Email)
	}
	if r.Expires < 0 {
		return "", errors.New("token: negative expiry")
	}
	if r.Audience == "" {
		r.Audience = DefaultAudience
	}
	if r.Issuer == "" {
		r.Issuer = DefaultIssuer
	}
	now := time.Now()
	// MapClaims rather than RegisteredClaims: it writes aud as a plain string,
	// as the Python gateway's tokens have it, without touching jwt's globals.
	claims := jwt.MapClaims{
		"sub": r.Email,
		"iat": now.Unix(),
		"jti": newUUID(),
		"aud": r.Audience,
		"iss": r.Issuer,
	}
	if r.Expires > 0 {
		claims["exp"] = now.Add(r.Expires).Unix()
	}
	if r.Admin {
		claims["is_admin"] = true
	}
	return jwt.NewWithClaims(method, claims).SignedString([]byte(r.Secret))
}

// DecodeToken verifies a token's signature and algorithm and returns its
// claims. It does not check exp, aud or iss, so that `mcpgateway token
// --decode` can show why a token is refused (expired, wrong audience...).
func DecodeToken(token, secret, algorithm string) (map[string]any, error) {
	method, err := signingMethod(algorithm)
	if err != nil {
		return nil, err
	}
	if secret == "" {
		return nil, errors.New("token: a secret key is required")
	}
	claims := jwt.MapClaims{}
	_, err = jwt.ParseWithClaims(token, claims, func(t *jwt.Token) (any, error) {
		return []byte(secret), nil
	}, jwt.WithValidMethods([]string{method.Alg()}), jwt.WithoutClaimsValidation())
	if err != nil {
		return nil, fmt.Errorf("token: %w", err)
	}
	return claims, nil
}

func signingMethod(alg string) (*jwt.SigningMethodHMAC, error) {
	if alg == "" {
		alg = "HS256"
	}
	m, ok := hmacMethods[alg]
	if !ok {
		return nil, fmt.Errorf("token: unsupported algorithm %q (use HS256, HS384 or HS512)", alg)
	}
	return m, nil
}

// newUUID returns a random (version 4) UUID, the jti format of the Python
// gateway's tokens.
func newUUID() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails (Go 1.24+)
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}
