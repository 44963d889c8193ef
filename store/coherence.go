package store

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"go.uber.org/zap"
)

// Coherence: every worker of every instance must see a change within one
// second. Each worker keeps a near cache and a lease: the near cache is only
// read while the lease is valid. A lease is granted for leaseDuration from the
// moment a check was SENT that proved the near cache had caught up with every
// write finished before that moment:
//   - memory / database: a poll of the cache epoch row, and the invalidations
//     it led to (every write bumps the epoch in its own transaction);
//   - redis: a PING answered on the connection that carries Redis's
//     invalidation pushes (pushes for earlier writes arrive before the PONG).
//
// So a value served from the near cache at time t is never older than a write
// that finished before t-leaseDuration. When the checks fail (database or
// Redis away) the lease runs out and lookups go to the database instead:
// slower, never stale.
const (
	checkInterval = 200 * time.Millisecond
	leaseDuration = time.Second
	checkTimeout  = 800 * time.Millisecond // one poll; a stuck poll must not outlive the lease by much
	keepChanges   = 1000                   // cache_changes rows kept (see pollEpoch)
)

// Cache keys. The same strings name entries in cache_changes and, behind
// CachePrefix, keys in Redis.
const toolsKey = "tools"

func userKey(email string) string { return "user:" + email }

func cutUserKey(key string) (string, bool) { return strings.CutPrefix(key, "user:") }

// bumpEpoch is called inside every write transaction: it increments the epoch
// and records which keys changed. The UPDATE takes the row lock, so writers
// are serialised on it and epochs become visible in order: a poller that sees
// epoch N has also seen every change up to N.
func bumpEpoch(ctx context.Context, q querier, keys ...string) (int64, error) {
	var epoch int64
	if err := queryOne(ctx, q, "UPDATE cache_epoch SET epoch = epoch + 1 WHERE id = 1 RETURNING epoch",
		nil, &epoch); err != nil {
		return 0, fmt.Errorf("bump cache epoch: %w", err)
	}
	seen := map[string]bool{}
	for _, k := range keys {
		if seen[k] {
			continue
		}
		seen[k] = true
		if _, err := q.exec(ctx, "INSERT INTO cache_changes (epoch, cache_key) VALUES ($1, $2)", epoch, k); err != nil {
			return 0, fmt.Errorf("record cache change: %w", err)
		}
	}
	if _, err := q.exec(ctx, "DELETE FROM cache_changes WHERE epoch <= $1", epoch-keepChanges); err != nil {
		return 0, fmt.Errorf("prune cache changes: %w", err)
	}
	return epoch, nil
}

// every runs check at each interval, and when woken (wake, may be nil),
// until the store closes: the epoch poll (memory, database) or the Redis
// heartbeat that renews the lease.
func (s *Store) every(interval time.Duration, wake <-chan struct{}, check func(context.Context)) {
	defer s.wg.Done()
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
			check(s.bg)
		case <-wake:
			check(s.bg)
		}
	}
}

// pollOnce reads the epoch and, if it moved, drops what changed. Only the
// poll goroutine (and Open, before it starts) call it, so lastEpoch needs no
// lock.
func (s *Store) pollOnce(parent context.Context) {
	sent, mark := s.now(), s.localMark()
	ctx, cancel := context.WithTimeout(parent, checkTimeout)
	defer cancel()
	err := s.noteDB(s.pollEpoch(ctx))
	if err != nil {
		s.checkFailed(err)
		return
	}
	s.checkOK(sent)
	if s.redis == nil { // with Redis, the epoch poll (pollRedisEpoch) is the one that catches up
		s.seenLocal.Store(mark)
	}
}

func (s *Store) pollEpoch(ctx context.Context) error {
	var epoch int64
	if err := queryOne(ctx, s.db, "SELECT epoch FROM cache_epoch WHERE id = 1", nil, &epoch); err != nil {
		return fmt.Errorf("poll cache epoch: %w", err)
	}
	last := s.lastEpoch
	switch {
	case epoch == last:
		return nil
	case last < 0 || epoch < last || s.o.CacheType == CacheMemory:
		// First poll, a database restored from an older backup, or the
		// memory cache type: drop everything.
		s.near.invalidateAll()
	default:
		if err := s.dropChanged(ctx, last, epoch); err != nil {
			return err
		}
	}
	s.lastEpoch = epoch
	return nil
}

// dropChanged drops the keys changed by epochs (last, epoch]. If the log no
// longer holds all of them (pruned while this worker was not polling), it
// drops everything.
func (s *Store) dropChanged(ctx context.Context, last, epoch int64) error {
	keys, complete, err := s.changedKeys(ctx, last, epoch)
	if err != nil {
		return err
	}
	if !complete {
		s.near.invalidateAll()
		return nil
	}
	for _, k := range keys {
		s.near.invalidateKey(k)
	}
	return nil
}

// changedKeys reads the keys changed by epochs (last, epoch]; complete is
// false when the log no longer holds every one of those epochs.
func (s *Store) changedKeys(ctx context.Context, last, epoch int64) (keys []string, complete bool, err error) {
	r, err := s.db.query(ctx, "SELECT epoch, cache_key FROM cache_changes WHERE epoch > $1 AND epoch <= $2",
		last, epoch)
	if err != nil {
		return nil, false, fmt.Errorf("read cache changes: %w", err)
	}
	defer r.Close()
	epochs := map[int64]bool{}
	for r.Next() {
		var e int64
		var k string
		if err := r.Scan(&e, &k); err != nil {
			return nil, false, fmt.Errorf("read cache changes: %w", err)
		}
		epochs[e] = true
		keys = append(keys, k)
	}
	if err := r.Err(); err != nil {
		return nil, false, fmt.Errorf("read cache changes: %w", err)
	}
	return keys, int64(len(epochs)) == epoch-last, nil
}

// checkOK renews the lease after a successful coherence check sent at sent.
func (s *Store) checkOK(sent int64) {
	s.lease.Store(sent + int64(leaseDuration))
	if s.checkErr.Swap(nil) != nil {
		s.log.Info("cache coherence restored", zap.String("cache_type", s.o.CacheType))
	}
}

// checkFailed records a failed check. The lease is not renewed, so the near
// cache stops being used once it runs out; the error is logged once per
// outage, not every 200 ms.
func (s *Store) checkFailed(err error) {
	if errors.Is(err, context.Canceled) && s.closed.Load() {
		return
	}
	if s.checkErr.Swap(&err) == nil {
		s.log.Warn("cache coherence check failing; lookups go to the database until it recovers",
			zap.String("cache_type", s.o.CacheType), zap.Error(err))
	}
}
