// Package jwtkey knows the JWT signing algorithms the gateway accepts and
// reads their keys: the HMAC ones (a shared secret) and the public-key ones
// (RS*, ES*: a PEM public key to verify, a PEM private key to sign). The
// master (config), the workers (rpc) and `mcpgateway token` use it, so a key
// that one accepts the others accept too.
package jwtkey

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"encoding/pem"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/golang-jwt/jwt/v5"
)

// Algorithms lists every accepted JWT_ALGORITHM, in the order shown to users.
var Algorithms = []string{"HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "ES256", "ES384", "ES512"}

// MinRSABits is the smallest RSA modulus accepted (NIST SP 800-131A).
const MinRSABits = 2048

// Method returns the signing method of alg, or an error naming the accepted
// ones. golang-jwt knows more names (PS*, EdDSA, none); only Algorithms pass.
func Method(alg string) (jwt.SigningMethod, error) {
	if m := jwt.GetSigningMethod(alg); m != nil && slices.Contains(Algorithms, alg) {
		return m, nil
	}
	return nil, fmt.Errorf("unsupported JWT algorithm %q (use one of %s)", alg, strings.Join(Algorithms, ", "))
}

// IsHMAC reports whether alg is signed with a shared secret (HS*).
func IsHMAC(alg string) bool { return strings.HasPrefix(alg, "HS") }

// curve is the curve an ES* algorithm requires.
func curve(alg string) elliptic.Curve {
	switch alg {
	case "ES256":
		return elliptic.P256()
	case "ES384":
		return elliptic.P384()
	case "ES512":
		return elliptic.P521()
	}
	return nil
}

// ParsePublic reads a PEM public key (PKIX "PUBLIC KEY", PKCS #1 "RSA PUBLIC
// KEY", or a "CERTIFICATE" whose key is taken) for alg and checks that it
// fits: RSA of at least MinRSABits for RS*, the algorithm's curve for ES*.
func ParsePublic(alg string, pemBytes []byte) (crypto.PublicKey, error) {
	b, err := KeyBlock(pemBytes)
	if err != nil {
		return nil, err
	}
	pemBytes = pem.EncodeToMemory(b)
	switch {
	case strings.HasPrefix(alg, "RS"):
		k, err := jwt.ParseRSAPublicKeyFromPEM(pemBytes)
		if err != nil {
			return nil, fmt.Errorf("not a PEM RSA public key (%s needs one): %w", alg, err)
		}
		return k, checkRSA(alg, k)
	case strings.HasPrefix(alg, "ES"):
		k, err := jwt.ParseECPublicKeyFromPEM(pemBytes)
		if err != nil {
			return nil, fmt.Errorf("not a PEM ECDSA public key (%s needs one on %s): %w", alg, curve(alg).Params().Name, err)
		}
		return k, checkCurve(alg, k)
	}
	return nil, fmt.Errorf("%s is not a public-key algorithm", alg)
}

// ParsePrivate reads a PEM private key (PKCS #8 "PRIVATE KEY", PKCS #1 "RSA
// PRIVATE KEY", SEC 1 "EC PRIVATE KEY"; not encrypted) for alg, with the same
// checks as ParsePublic.
func ParsePrivate(alg string, pemBytes []byte) (crypto.Signer, error) {
	b, err := KeyBlock(pemBytes)
	if err != nil {
		return nil, err
	}
	if strings.Contains(b.Headers["Proc-Type"], "ENCRYPTED") || b.Type == "ENCRYPTED PRIVATE KEY" {
		return nil, errors.New("the private key is encrypted: give an unencrypted one (openssl pkey -in key.pem -out plain.pem)")
	}
	pemBytes = pem.EncodeToMemory(b)
	switch {
	case strings.HasPrefix(alg, "RS"):
		k, err := jwt.ParseRSAPrivateKeyFromPEM(pemBytes)
		if err != nil {
			return nil, fmt.Errorf("not a PEM RSA private key (%s needs one): %w", alg, err)
		}
		return k, checkRSA(alg, &k.PublicKey)
	case strings.HasPrefix(alg, "ES"):
		k, err := jwt.ParseECPrivateKeyFromPEM(pemBytes)
		if err != nil {
			return nil, fmt.Errorf("not a PEM ECDSA private key (%s needs one on %s): %w", alg, curve(alg).Params().Name, err)
		}
		return k, checkCurve(alg, &k.PublicKey)
	}
	return nil, fmt.Errorf("%s is not a public-key algorithm", alg)
}

// Matches reports whether priv is the private half of pub.
func Matches(priv crypto.Signer, pub crypto.PublicKey) bool {
	type equaler interface{ Equal(crypto.PublicKey) bool }
	e, ok := priv.Public().(equaler)
	return ok && e.Equal(pub)
}

func checkRSA(alg string, k *rsa.PublicKey) error {
	if n := k.N.BitLen(); n < MinRSABits {
		return fmt.Errorf("the RSA key has %d bits; %s needs at least %d", n, alg, MinRSABits)
	}
	return nil
}

func checkCurve(alg string, k *ecdsa.PublicKey) error {
	want := curve(alg)
	if want == nil {
		return errors.New("unknown ECDSA algorithm " + alg)
	}
	if k.Curve != want {
		return fmt.Errorf("the ECDSA key is on %s; %s needs %s", k.Curve.Params().Name, alg, want.Params().Name)
	}
	return nil
}

// KeyBlock returns the first PEM block of data that holds a key or a
// certificate, skipping the "EC PARAMETERS" block `openssl ecparam -genkey`
// writes first.
func KeyBlock(data []byte) (*pem.Block, error) {
	for {
		var b *pem.Block
		b, data = pem.Decode(data)
		if b == nil {
			return nil, errors.New("no PEM key block found")
		}
		if b.Type != "EC PARAMETERS" {
			return b, nil
		}
	}
}

// Blocks returns every key block of data, in order (JWTPublicKeyPEM holds
// the current key first, then the previous one).
func Blocks(data []byte) [][]byte {
	var out [][]byte
	for {
		var b *pem.Block
		b, data = pem.Decode(data)
		if b == nil {
			return out
		}
		if b.Type != "EC PARAMETERS" {
			out = append(out, pem.EncodeToMemory(b))
		}
	}
}
