package rpc

import (
	"crypto/rand"
	"errors"
	"fmt"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/mcpgateway/mcpgateway/internal/jwtkey"
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
	Algorithm string        // HS256 (default), HS384, HS512, RS256/384/512, ES256/384/512
	Secret    string        // HS*: the key (JWT_SECRET_KEY)
	// PrivateKeyPEM is the signing key of RS* and ES* (JWT_PRIVATE_KEY_PATH's
	// content).
	PrivateKeyPEM []byte
	Audience      string // default DefaultAudience
	Issuer        string // default DefaultIssuer
}

// MintToken signs a token with the claims sub, iat, jti (random), aud, iss,
// exp (when Expires > 0) and is_admin (when Admin). It always signs with
// the current key: a previous key (rotation) only verifies.
func MintToken(r TokenRequest) (string, error) {
	if r.Algorithm == "" {
		r.Algorithm = "HS256"
	}
	method, err := jwtkey.Method(r.Algorithm)
	if err != nil {
		return "", fmt.Errorf("token: %w", err)
	}
	var key any
	if jwtkey.IsHMAC(r.Algorithm) {
		if r.Secret == "" {
			return "", errors.New("token: a secret key is required")
		}
		key = []byte(r.Secret)
	} else {
		if len(r.PrivateKeyPEM) == 0 {
			return "", fmt.Errorf("token: %s signs with a private key (JWT_PRIVATE_KEY_PATH)", r.Algorithm)
		}
		if key, err = jwtkey.ParsePrivate(r.Algorithm, r.PrivateKeyPEM); err != nil {
			return "", fmt.Errorf("token: %w", err)
		}
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
	return jwt.NewWithClaims(method, claims).SignedString(key)
}

// TokenKeys are the keys that verify tokens: the settings JWT_ALGORITHM,
// JWT_SECRET_KEY and JWT_SECRET_KEY_PREVIOUS (HS*), or the PEM public keys
// read from JWT_PUBLIC_KEY_PATH and JWT_PUBLIC_KEY_PATH_PREVIOUS (RS*, ES*).
type TokenKeys struct {
	Algorithm      string // default HS256
	Secret         string
	SecretPrevious string
	PublicKeyPEM   string // one or more PEM blocks, the current key first
}

// verifier is what TokenKeys resolve to: the signing method and the key
// (or jwt.VerificationKeySet) that golang-jwt verifies with.
type verifier struct {
	method jwt.SigningMethod
	key    any
}

func (k TokenKeys) verifier() (verifier, error) {
	alg := k.Algorithm
	if alg == "" {
		alg = "HS256"
	}
	method, err := jwtkey.Method(alg)
	if err != nil {
		return verifier{}, err
	}
	var keys []jwt.VerificationKey
	if jwtkey.IsHMAC(alg) {
		if k.Secret == "" {
			return verifier{}, errors.New("a secret key is required")
		}
		keys = append(keys, []byte(k.Secret))
		if k.SecretPrevious != "" {
			keys = append(keys, []byte(k.SecretPrevious))
		}
	} else {
		for _, block := range jwtkey.Blocks([]byte(k.PublicKeyPEM)) {
			pub, err := jwtkey.ParsePublic(alg, block)
			if err != nil {
				return verifier{}, err
			}
			keys = append(keys, pub)
		}
		if len(keys) == 0 {
			return verifier{}, fmt.Errorf("%s verifies with a public key: none given (JWT_PUBLIC_KEY_PATH)", alg)
		}
	}
	if len(keys) == 1 {
		return verifier{method, keys[0]}, nil
	}
	return verifier{method, jwt.VerificationKeySet{Keys: keys}}, nil
}

// keyFunc hands golang-jwt the keys. WithValidMethods has checked the "alg"
// header already; comparing the method as well costs nothing and guards
// against a mistake there.
func (v verifier) keyFunc(t *jwt.Token) (any, error) {
	if t.Method != v.method {
		return nil, errors.New("unexpected signing method")
	}
	return v.key, nil
}

// DecodeToken verifies a token's signature and algorithm with k and returns
// its claims. It does not check exp, aud or iss, so that `mcpgateway token
// --decode` can show why a token is refused (expired, wrong audience...).
func DecodeToken(token string, k TokenKeys) (map[string]any, error) {
	v, err := k.verifier()
	if err != nil {
		return nil, fmt.Errorf("token: %w", err)
	}
	claims := jwt.MapClaims{}
	_, err = jwt.ParseWithClaims(token, claims, v.keyFunc,
		jwt.WithValidMethods([]string{v.method.Alg()}), jwt.WithoutClaimsValidation())
	if err != nil {
		return nil, fmt.Errorf("token: %w", err)
	}
	return claims, nil
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
