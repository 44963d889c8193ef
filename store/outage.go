package store

import (
	"context"
	"errors"

	"go.uber.org/zap"
)

// Database outages (docs/store.md, "When something is down").
//
// Fail fast: a lookup made for a request (a near-cache miss) runs its
// database step under DB_CONNECT_TIMEOUT as a whole (a free connection,
// dialling, the query), so a request never waits longer than that for a
// database that does not answer; the error wraps ErrUnavailable, which the
// gateway answers with 503. A refused connection fails at once anyway.
//
// Keep serving what is cached: while the database cannot be reached the
// coherence lease runs out (the epoch poll fails), and lookups would all go
// to the database and fail. With CACHE_STALE_IF_ERROR > 0 they are answered
// from the near cache instead, for entries that expired or lost their lease
// less than that long ago: a request whose user and tool were cached (the
// guide's hey payload) keeps working. This gives up the one-second
// coherence bound for the length of the outage: a change written through
// another instance that can still reach the database is not seen until this
// one reaches it again. Nothing can be written through a database no
// instance reaches, so in a plain outage nothing is missed.
//
// The store knows the database is down from the latest database operation
// of any kind (epoch poll, lookup, readiness ping, write) that failed with
// ErrUnavailable, and up again after the next one that got an answer. While
// it is down, lookups with a stale entry do not try the database at all
// (they would each wait up to DB_CONNECT_TIMEOUT on a black-holed server);
// lookups without one try it, and so do the poll and the readiness check,
// which notice the recovery.

// noteDB records the outcome of a database operation and returns err,
// wrapped as ErrUnavailable when it says the database cannot be reached.
func (s *Store) noteDB(err error) error {
	if err != nil && errors.Is(err, context.Canceled) {
		return err // the caller gave up: says nothing about the database
	}
	err = markUnavailable(err)
	if errors.Is(err, ErrUnavailable) {
		if s.dbDown.CompareAndSwap(0, s.now()|1) {
			s.log.Warn("database unreachable: lookups fail fast with 503"+s.staleNote(), zap.Error(err))
		}
		return err
	}
	if since := s.dbDown.Load(); since != 0 && s.dbDown.CompareAndSwap(since, 0) {
		s.log.Info("database reachable again")
	}
	return err
}

func (s *Store) staleNote() string {
	if s.near == nil || s.o.StaleIfError <= 0 {
		return ""
	}
	return ", cached users and tools are served for up to CACHE_STALE_IF_ERROR " + s.o.StaleIfError.String()
}

// DatabaseDown reports whether the latest database operation failed
// because the database could not be reached.
func (s *Store) DatabaseDown() bool { return s.dbDown.Load() != 0 }

// lookupContext bounds the database step of a lookup made for a request
// (see above). It does not inherit the caller's cancellation: a shared
// (single-flight) load must not fail for every waiter when the first one
// gives up; each waiter still honours its own ctx.
func (s *Store) lookupContext(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(ctx), s.o.ConnectTimeout)
}

// staleGrace is how long past its expiry a near-cache entry may be served
// while the database is down; 0 when stale answers are off.
func (s *Store) staleGrace() int64 {
	if s.near == nil || s.o.StaleIfError <= 0 {
		return 0
	}
	return int64(s.o.StaleIfError)
}

// staleTools returns the catalogue the near cache still holds, if stale
// answers are on and it expired less than CACHE_STALE_IF_ERROR ago.
func (s *Store) staleTools() *toolSnapshot {
	grace := s.staleGrace()
	if grace == 0 {
		return nil
	}
	snap := s.near.tools.Load()
	if snap == nil || s.now() >= snap.expires+grace {
		return nil
	}
	return snap
}

// staleUser is staleTools for one user (found or not).
func (s *Store) staleUser(email string) *userEntry {
	grace := s.staleGrace()
	if grace == 0 {
		return nil
	}
	v, ok := s.near.users.Load().m.Load(email)
	if !ok {
		return nil
	}
	e := v.(*userEntry)
	if s.now() >= e.expires+grace {
		return nil
	}
	return e
}

// toolsWhileDown answers a tools lookup from the near cache without trying
// the database when it is known to be down.
func (s *Store) toolsWhileDown() *toolSnapshot {
	if s.dbDown.Load() == 0 {
		return nil
	}
	return s.staleTools()
}

// userWhileDown is toolsWhileDown for a user.
func (s *Store) userWhileDown(email string) *userEntry {
	if s.dbDown.Load() == 0 {
		return nil
	}
	return s.staleUser(email)
}

// writeContext bounds a write (the admin API) as a whole by DB_POOL_TIMEOUT:
// a write may wait for the epoch row's lock behind other writers, but not
// forever on a connection that a partition silenced. Its dial is still
// bounded by DB_CONNECT_TIMEOUT, and a refused connection fails at once.
func (s *Store) writeContext(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, s.o.PoolTimeout)
}
