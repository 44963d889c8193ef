package store

import (
	"context"
	"encoding/json"
	"fmt"
	"time"
)

// An MCP session's resource subscriptions (resources/subscribe) are one row
// of the revocations table of kind RevokedSubs, keyed by the session id,
// with the subscribed URIs as a JSON array in reason: the request that
// subscribes lands on any worker, and the worker that holds the session's
// standing stream reads them, as the session's log level is kept
// (loglevel.go). A later write replaces the list; it expires with the
// session.

// MaxSubscriptions bounds a session's subscribed URIs.
const MaxSubscriptions = 100

// SetSessionSubscriptions records the URIs the MCP session sid subscribes
// to until the given time, replacing the list; an empty one ends them.
func (s *Store) SetSessionSubscriptions(ctx context.Context, sid string, uris []string, until time.Time) error {
	if sid == "" || len(sid) > MaxRevocationIDLen || len(uris) > MaxSubscriptions {
		return fmt.Errorf("%w: the session id must have 1 to %d bytes, and a session at most %d subscriptions",
			ErrBadRevocation, MaxRevocationIDLen, MaxSubscriptions)
	}
	if uris == nil {
		uris = []string{}
	}
	list, err := json.Marshal(uris)
	if err != nil {
		return err
	}
	r := Revocation{Kind: RevokedSubs, ID: sid, Reason: string(list)}
	return s.writeRevocation(ctx, r, max(until.Unix(), 1), `INSERT INTO revocations (kind, id, expires_at, revoked_at, revoked_by, reason)
			VALUES ($1, $2, $3, $4, $5, $6)
			ON CONFLICT (kind, id) DO UPDATE SET expires_at = excluded.expires_at,
				revoked_at = excluded.revoked_at, reason = excluded.reason`)
}

// SessionSubscriptions returns the URIs the MCP session sid subscribes to
// (none when it has none, or they expired), from the near cache on the hot
// path.
func (s *Store) SessionSubscriptions(ctx context.Context, sid string) ([]string, error) {
	if sid == "" || len(sid) > MaxRevocationIDLen {
		return nil, nil
	}
	e, err := s.lookupRevoked(ctx, kindIndex(RevokedSubs), sid)
	if err != nil || !e.active() {
		return nil, err
	}
	var uris []string
	if err := json.Unmarshal([]byte(e.value), &uris); err != nil {
		return nil, fmt.Errorf("session subscriptions: %w", err)
	}
	return uris, nil
}
