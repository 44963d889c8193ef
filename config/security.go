package config

import (
	"errors"
	"fmt"
	"net"
	"strings"

	"github.com/mcpgateway/mcpgateway/internal/jwtkey"
)

// ErrWeakSecret is carried in Error.Err when JWT_SECRET_KEY is refused.
var ErrWeakSecret = errors.New("weak JWT_SECRET_KEY")

// MinSecretBytes is the shortest JWT_SECRET_KEY a server reachable from
// other hosts accepts: 32 bytes, the size of an HS256 key.
const MinSecretBytes = 32

// knownSecrets are public development keys (of this project, of the Python
// gateway, of tutorials and placeholders): whoever knows them can mint
// tokens. Compared without case and surrounding space.
var knownSecrets = []string{
	"my-test-key", "my-secret-key", "test-secret", "test-key", "testkey", "secret",
	"secret-key", "secretkey", "jwt-secret", "jwt_secret", "changeme", "change-me",
	"change_me", "changethis", "change-this", "password", "admin", "default",
	"replace-me", "replace_me", "replaceme", "your-secret-key", "your-256-bit-secret",
	"dev", "development", "mcpgateway",
}

// placeholderPrefixes mark a value that was meant to be replaced, whatever
// follows (the .env.example and secret.yaml placeholders start this way).
var placeholderPrefixes = []string{"replace-me", "change-me", "changeme"}

// WeakSecret says why key must not guard a server that other hosts can
// reach, or "" when it is good enough: shorter than MinSecretBytes, or a
// known public default or placeholder.
func WeakSecret(key string) string {
	k := strings.ToLower(strings.TrimSpace(key))
	for _, p := range placeholderPrefixes {
		if strings.HasPrefix(k, p) {
			return "it is a placeholder"
		}
	}
	for _, known := range knownSecrets {
		if k == known {
			return "it is a known public default"
		}
	}
	if len(key) < MinSecretBytes {
		return fmt.Sprintf("it is %d bytes long, shorter than %d", len(key), MinSecretBytes)
	}
	return ""
}

// LoopbackOnly reports whether every listen address is a loopback one
// (127.0.0.0/8, ::1 or localhost), so that only this host can connect.
// A unix socket is not: a reverse proxy usually publishes it. An empty
// host ("":4444) is every interface.
func LoopbackOnly(binds []string) bool {
	if len(binds) == 0 {
		return false
	}
	for _, b := range binds {
		if strings.HasPrefix(b, "unix:") {
			return false
		}
		host, _, err := net.SplitHostPort(b)
		if err != nil || !IsLoopbackHost(host) {
			return false
		}
	}
	return true
}

// IsLoopbackHost reports whether host (a name or an IP address, without a
// port; IPv6 with or without brackets) is this machine: localhost, a name
// under .localhost (RFC 6761: browsers resolve it to loopback themselves),
// 127.0.0.0/8 or ::1.
func IsLoopbackHost(host string) bool {
	host = strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
	host = strings.TrimSuffix(strings.ToLower(host), ".")
	if host == "localhost" || strings.HasSuffix(host, ".localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// checkSecret refuses a weak JWT_SECRET_KEY on a server that other hosts can
// reach. A weak key on loopback binds is allowed (development, tests).
// The rule is for HS* algorithms only: with RS* and ES* tokens are verified
// with a public key, and the secret only keys MCP session ids, which are
// bound to a verified token's subject and grant nothing by themselves. The
// previous key of a rotation (JWTSecretKeyPrevious) verifies tokens as the
// current one does, so it must be as good.
func (b *builder) checkSecret() error {
	s := &b.s
	if !jwtkey.IsHMAC(s.JWTAlgorithm) || LoopbackOnly(s.Bind) {
		return nil
	}
	field, key := "JWTSecretKey", s.JWTSecretKey
	why := WeakSecret(key)
	if why == "" && s.JWTSecretKeyPrevious != "" {
		field, key = "JWTSecretKeyPrevious", s.JWTSecretKeyPrevious
		why = WeakSecret(key)
	}
	if why == "" {
		return nil
	}
	return &Error{
		Setting: field,
		Source:  b.sources[field].String(),
		Value:   maskValue(field, key),
		Err: fmt.Errorf("%w (%s) on %s, which other hosts can reach: anyone who knows the key can mint tokens",
			ErrWeakSecret, why, strings.Join(s.Bind, ", ")),
		Accepted: fmt.Sprintf("JWT_SECRET_KEY of at least %d random bytes, not a known default "+
			"(make one with `mcpgateway secret` or `openssl rand -base64 32`), "+
			"or a loopback-only Bind (127.0.0.1) for development", MinSecretBytes),
	}
}

// validOrigin accepts "*" or scheme://host[:port], as browsers send Origin.
func validOrigin(o string) bool {
	if o == "*" {
		return true
	}
	scheme, rest, ok := strings.Cut(o, "://")
	if !ok || scheme == "" || rest == "" || strings.ContainsAny(rest, "/?#@ ") {
		return false
	}
	return !strings.ContainsAny(scheme, ":/ ")
}

// normaliseOrigins lower-cases each entry and drops a trailing slash, the
// form browsers send in Origin.
func normaliseOrigins(list []string) []string {
	out := list[:0:0]
	for _, o := range list {
		o = strings.TrimSuffix(strings.ToLower(strings.TrimSpace(o)), "/")
		if o != "" {
			out = append(out, o)
		}
	}
	return out
}
