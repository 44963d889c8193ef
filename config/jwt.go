package config

import (
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/mcpgateway/mcpgateway/internal/jwtkey"
)

// ErrJWTKey is carried in Error.Err when a JWT key file cannot be used.
var ErrJWTKey = errors.New("unusable JWT key")

// DefaultJWTLeeway is JWTLeeway's default: how far exp, nbf and iat may be
// off because the clocks of the minting and the checking host differ. NTP
// keeps hosts within milliseconds; VMs resumed from a pause and containers on
// hosts without time sync drift by seconds to tens of seconds. 30 s absorbs
// that while adding only 30 s to a token's life (tokens live minutes to
// days). MCP session ids have their own, fixed, minute of skew.
const DefaultJWTLeeway = 30 * time.Second

// MaxJWTLeeway bounds JWTLeeway: a longer one would quietly extend every
// short-lived token by that much.
const MaxJWTLeeway = 5 * time.Minute

// loadJWTKeys reads the public keys of an RS* or ES* JWTAlgorithm, once, in
// the process that runs Load (the master at start and on HUP, `mcpgateway
// token`), checks them against the algorithm, and keeps them in
// JWTPublicKeyPEM for the workers, which never read files. The private key
// (JWTPrivateKeyPath), when set, is read and checked too, so a wrong one stops
// the master rather than `mcpgateway token` later; it is not kept.
// For HS* algorithms the key-path settings are ignored, with a warning.
func (b *builder) loadJWTKeys(dir string) error {
	s := &b.s
	s.JWTPublicKeyPEM = ""
	b.sources["JWTPublicKeyPEM"] = Source{Kind: "derived", Name: "from JWTPublicKeyPath and JWTPublicKeyPathPrevious"}
	b.raw["JWTPublicKeyPEM"] = ""
	if jwtkey.IsHMAC(s.JWTAlgorithm) {
		for _, f := range []string{"JWTPublicKeyPath", "JWTPublicKeyPathPrevious", "JWTPrivateKeyPath"} {
			if b.sources[f].Kind != "default" && b.raw[f] != "" {
				b.warn(fmt.Sprintf("%s (%s) is ignored: JWTAlgorithm %s signs with JWT_SECRET_KEY", f, b.sources[f], s.JWTAlgorithm))
			}
		}
		return nil
	}
	if b.sources["JWTSecretKey"].Kind == "generated" {
		// Tokens do not depend on it: only MCP session ids do.
		for i, w := range b.warnings {
			if strings.HasPrefix(w, "JWT_SECRET_KEY is not set") {
				b.warnings[i] = "JWT_SECRET_KEY is not set: a random key was generated for MCP session ids, which are then valid on this instance only, until it restarts; set JWT_SECRET_KEY when several instances serve the same clients"
			}
		}
	}
	if s.JWTSecretKeyPrevious != "" {
		b.warn(fmt.Sprintf("JWTSecretKeyPrevious (%s) only verifies MCP session ids: JWTAlgorithm %s verifies tokens with JWTPublicKeyPath and JWTPublicKeyPathPrevious",
			b.sources["JWTSecretKeyPrevious"], s.JWTAlgorithm))
	}
	if s.JWTPublicKeyPath == "" {
		return b.keyError("JWTPublicKeyPath", "", fmt.Errorf("%w: JWTAlgorithm %s (%s) verifies tokens with a public key: set JWT_PUBLIC_KEY_PATH",
			ErrJWTKey, s.JWTAlgorithm, b.sources["JWTAlgorithm"]))
	}
	var out strings.Builder
	for _, k := range []struct{ field, path string }{
		{"JWTPublicKeyPath", s.JWTPublicKeyPath}, {"JWTPublicKeyPathPrevious", s.JWTPublicKeyPathPrevious},
	} {
		if k.path == "" {
			continue
		}
		data, err := os.ReadFile(resolvePath(dir, k.path))
		if err == nil {
			_, err = jwtkey.ParsePublic(s.JWTAlgorithm, data)
		}
		if err != nil {
			return b.keyError(k.field, k.path, fmt.Errorf("%w: %s: %w", ErrJWTKey, k.path, err))
		}
		block, _ := jwtkey.KeyBlock(data)
		out.Write(pem.EncodeToMemory(block))
	}
	s.JWTPublicKeyPEM = out.String()
	if s.JWTPrivateKeyPath != "" {
		if _, err := ReadJWTPrivateKey(s, dir); err != nil {
			return b.keyError("JWTPrivateKeyPath", s.JWTPrivateKeyPath, err)
		}
	}
	return nil
}

func (b *builder) keyError(field, path string, err error) error {
	return &Error{Setting: field, Source: b.sources[field].String(), Value: path, Err: err, Accepted: rules[field].accepted}
}

// ReadJWTPrivateKey reads JWTPrivateKeyPath (relative paths from dir) and
// returns the PEM of its key after checking that it fits JWTAlgorithm and is
// the private half of the first key in JWTPublicKeyPEM. `mcpgateway token`
// signs with it.
func ReadJWTPrivateKey(s *Settings, dir string) ([]byte, error) {
	if s.JWTPrivateKeyPath == "" {
		return nil, fmt.Errorf("%w: JWTAlgorithm %s signs with a private key: set JWT_PRIVATE_KEY_PATH", ErrJWTKey, s.JWTAlgorithm)
	}
	data, err := os.ReadFile(resolvePath(dir, s.JWTPrivateKeyPath))
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrJWTKey, err)
	}
	priv, err := jwtkey.ParsePrivate(s.JWTAlgorithm, data)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrJWTKey, s.JWTPrivateKeyPath, err)
	}
	if s.JWTPublicKeyPEM != "" {
		pub, err := jwtkey.ParsePublic(s.JWTAlgorithm, []byte(s.JWTPublicKeyPEM))
		if err == nil && !jwtkey.Matches(priv, pub) {
			return nil, fmt.Errorf("%w: %s is not the private key of JWTPublicKeyPath %s: tokens it signs would be refused",
				ErrJWTKey, s.JWTPrivateKeyPath, s.JWTPublicKeyPath)
		}
	}
	return data, nil
}
