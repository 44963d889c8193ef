package store

import (
	"context"
	"fmt"
	"time"
)

// Session log levels (MCP logging/setLevel, 2025-03-26 to 2025-11-25) are
// rows of the revocations table of kind RevokedLogLevel, keyed by the
// session id, with the level in reason. A session's requests land on any
// worker of any instance, and the session id is immutable, so the level set
// by one request must be a record that every worker reads, changed by a
// later setLevel: the tombstones' table gives that with their coherence
// (one second), near cache and purge, without a table of its own. Rows
// expire with the session (Until).

// SetSessionLogLevel records level for the MCP session sid until the given
// time, replacing any level set before.
func (s *Store) SetSessionLogLevel(ctx context.Context, sid, level string, until time.Time) error {
	if sid == "" || len(sid) > MaxRevocationIDLen || level == "" {
		return fmt.Errorf("%w: the session id must have 1 to %d bytes and the level some", ErrBadRevocation, MaxRevocationIDLen)
	}
	r := Revocation{Kind: RevokedLogLevel, ID: sid, Reason: level}
	return s.writeRevocation(ctx, r, max(until.Unix(), 1), `INSERT INTO revocations (kind, id, expires_at, revoked_at, revoked_by, reason)
			VALUES ($1, $2, $3, $4, $5, $6)
			ON CONFLICT (kind, id) DO UPDATE SET expires_at = excluded.expires_at,
				revoked_at = excluded.revoked_at, reason = excluded.reason`)
}

// SessionLogLevel returns the level set for the MCP session sid, or "" when
// none is (or it has expired). It is read like IsRevoked: from the near
// cache on the hot path.
func (s *Store) SessionLogLevel(ctx context.Context, sid string) (string, error) {
	if sid == "" || len(sid) > MaxRevocationIDLen {
		return "", nil
	}
	e, err := s.lookupRevoked(ctx, kindIndex(RevokedLogLevel), sid)
	if err != nil || !e.active() {
		return "", err
	}
	return e.value, nil
}
