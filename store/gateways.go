package store

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
)

// Gateway is an upstream MCP server registered with the gateway (the
// Python gateway's resource name). Its tools are rows of the tools table
// whose gateway column names it, under the gateway's names for them.
type Gateway struct {
	Name      string `json:"name"`
	URL       string `json:"url"`
	Transport string `json:"transport"` // "streamablehttp"
	Enabled   bool   `json:"enabled"`

	// AuthHeaderName and AuthHeaderValue are sent with every request to
	// the upstream ("Authorization" and "Bearer …", or a header of its
	// own). The value is stored sealed (SealSecret) and never listed.
	AuthHeaderName  string `json:"authHeaderName,omitempty"`
	AuthHeaderValue string `json:"-"`
}

// Gateways lists the registered upstreams, with their credentials opened
// with key (nil: credentials left out).
func (s *Store) Gateways(ctx context.Context, key []byte) ([]Gateway, error) {
	return s.queryGateways(ctx, key, "ORDER BY name")
}

// Gateway returns one upstream, its credentials opened with key: one row
// read, and only its credential opened, so another upstream whose
// credential no longer opens does not make this one unusable.
func (s *Store) Gateway(ctx context.Context, name string, key []byte) (Gateway, error) {
	gs, err := s.queryGateways(ctx, key, "WHERE name = $1", name)
	if err != nil {
		return Gateway{}, err
	}
	if len(gs) == 0 {
		return Gateway{}, ErrNotFound
	}
	return gs[0], nil
}

func (s *Store) queryGateways(ctx context.Context, key []byte, where string, args ...any) ([]Gateway, error) {
	lctx, cancel := s.lookupContext(ctx)
	defer cancel()
	r, err := s.db.query(lctx, "SELECT name, url, transport, auth_header_name, auth_header_value, enabled FROM gateways "+where, args...)
	if err = s.noteDB(err); err != nil {
		return nil, fmt.Errorf("read gateways: %w", err)
	}
	defer r.Close()
	out := []Gateway{}
	for r.Next() {
		var g Gateway
		var sealed string
		if err := r.Scan(&g.Name, &g.URL, &g.Transport, &g.AuthHeaderName, &sealed, &g.Enabled); err != nil {
			return nil, fmt.Errorf("read gateways: %w", err)
		}
		if sealed != "" && key != nil {
			if g.AuthHeaderValue, err = OpenSecret(key, sealed); err != nil {
				return nil, fmt.Errorf("gateway %s: %w", g.Name, err)
			}
		}
		out = append(out, g)
	}
	return out, r.Err()
}

// PutGateway registers (or replaces) an upstream with the tools it lists,
// in one transaction: the tools it served before and no longer lists are
// removed, and every worker of every instance forgets the old catalogue.
// A tool name already taken by a tool of another gateway, or of the
// gateway itself, is refused. key seals the credentials.
func (s *Store) PutGateway(ctx context.Context, g Gateway, tools []Tool, key []byte) error {
	if strings.TrimSpace(g.Name) == "" || g.URL == "" {
		return errors.New("put gateway: name and url are required")
	}
	sealed := ""
	if g.AuthHeaderValue != "" {
		if key == nil {
			return errors.New("put gateway: credentials need AUTH_ENCRYPTION_SECRET")
		}
		var err error
		if sealed, err = SealSecret(key, g.AuthHeaderValue); err != nil {
			return fmt.Errorf("put gateway %s: %w", g.Name, err)
		}
	}
	ctx, cancel := s.writeContext(ctx)
	defer cancel()
	err := s.db.tx(ctx, func(q querier) error {
		if _, err := q.exec(ctx, `INSERT INTO gateways (name, url, transport, auth_header_name, auth_header_value, enabled)
			VALUES ($1, $2, $3, $4, $5, $6)
			ON CONFLICT (name) DO UPDATE SET url = excluded.url, transport = excluded.transport,
			auth_header_name = excluded.auth_header_name, auth_header_value = excluded.auth_header_value,
			enabled = excluded.enabled, updated_at = CURRENT_TIMESTAMP`,
			g.Name, g.URL, g.Transport, g.AuthHeaderName, sealed, g.Enabled); err != nil {
			return err
		}
		if _, err := q.exec(ctx, "DELETE FROM tools WHERE gateway = $1", g.Name); err != nil {
			return err
		}
		for _, t := range tools {
			var owner string
			err := queryOne(ctx, q, "SELECT COALESCE(gateway, '') FROM tools WHERE name = $1", []any{t.Name}, &owner)
			switch {
			case err == nil:
				return fmt.Errorf("%w: tool %q is already served by %s", ErrConflict, t.Name, describeOwner(owner))
			case !errors.Is(err, errNoRows):
				return err
			}
			schema := string(t.InputSchema)
			if schema == "" || !json.Valid(t.InputSchema) {
				schema = `{"type":"object"}`
			}
			var output any
			if len(t.OutputSchema) > 0 && json.Valid(t.OutputSchema) {
				output = string(t.OutputSchema)
			}
			if _, err := q.exec(ctx, `INSERT INTO tools (name, description, input_schema, enabled, gateway, upstream_name, output_schema)
				VALUES ($1, $2, $3, $4, $5, $6, $7)`,
				t.Name, t.Description, schema, g.Enabled, g.Name, t.UpstreamName, output); err != nil {
				return err
			}
		}
		_, err := bumpEpoch(ctx, q, toolsKey)
		return err
	})
	if err = s.noteDB(err); err != nil {
		return fmt.Errorf("put gateway %s: %w", g.Name, err)
	}
	s.afterWrite(ctx, toolsKey)
	return nil
}

// DeleteGateway removes an upstream and its tools.
func (s *Store) DeleteGateway(ctx context.Context, name string) error {
	ctx, cancel := s.writeContext(ctx)
	defer cancel()
	found := false
	err := s.db.tx(ctx, func(q querier) error {
		n, err := q.exec(ctx, "DELETE FROM gateways WHERE name = $1", name)
		if err != nil {
			return err
		}
		found = n > 0
		if _, err := q.exec(ctx, "DELETE FROM tools WHERE gateway = $1", name); err != nil {
			return err
		}
		_, err = bumpEpoch(ctx, q, toolsKey)
		return err
	})
	if err = s.noteDB(err); err != nil {
		return fmt.Errorf("delete gateway %s: %w", name, err)
	}
	s.afterWrite(ctx, toolsKey)
	if !found {
		return ErrNotFound
	}
	return nil
}

// ErrConflict is a write refused because a name is taken.
var ErrConflict = errors.New("conflict")

func describeOwner(gateway string) string {
	if gateway == "" {
		return "the gateway itself"
	}
	return "gateway " + gateway
}

// Credentials of upstreams are sealed with AES-256-GCM under a key derived
// from AUTH_ENCRYPTION_SECRET (SHA-256 of it, labelled), as the Python
// gateway encrypts them with its AUTH_ENCRYPTION_SECRET: a copy of the
// database alone does not give them away.

// SecretKey derives the sealing key from the secret setting; nil for "".
func SecretKey(secret string) []byte {
	if secret == "" {
		return nil
	}
	k := sha256.Sum256([]byte("mcpgateway/upstream-credentials/v1\x00" + secret))
	return k[:]
}

// SealSecret encrypts a credential: base64 of nonce | ciphertext.
func SealSecret(key []byte, plain string) (string, error) {
	gcm, err := newGCM(key)
	if err != nil {
		return "", err
	}
	nonce := make([]byte, gcm.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return "", err
	}
	return base64.StdEncoding.EncodeToString(gcm.Seal(nonce, nonce, []byte(plain), nil)), nil
}

// OpenSecret decrypts what SealSecret wrote.
func OpenSecret(key []byte, sealed string) (string, error) {
	gcm, err := newGCM(key)
	if err != nil {
		return "", err
	}
	b, err := base64.StdEncoding.DecodeString(sealed)
	if err != nil || len(b) < gcm.NonceSize() {
		return "", errors.New("stored credential is not readable")
	}
	plain, err := gcm.Open(nil, b[:gcm.NonceSize()], b[gcm.NonceSize():], nil)
	if err != nil {
		return "", errors.New("stored credential does not open with AUTH_ENCRYPTION_SECRET (was it changed?)")
	}
	return string(plain), nil
}

func newGCM(key []byte) (cipher.AEAD, error) {
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("credential key: %w", err)
	}
	return cipher.NewGCM(block)
}
