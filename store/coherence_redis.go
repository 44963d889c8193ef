package store

import (
	"context"
	"errors"
	"fmt"
	"strconv"

	"github.com/redis/rueidis"
	"go.uber.org/zap"
)

// CACHE_TYPE=redis also polls the database epoch (docs/store.md, "A writer
// that cannot reach Redis").
//
// A write commits to the database, bumping the epoch, and then tombstones
// its key in Redis. If the tombstone never lands (the writer cannot reach
// Redis, or dies in between), Redis keeps the old value and pushes nothing,
// and the PING lease alone would let every other worker serve the old value
// for up to CACHE_TTL. So every worker also polls the epoch, every
// checkInterval, as the database cache type does, and for each key changed
// since its last poll: writes the tombstone itself (any worker may; a
// tombstone only ever sends readers to the database), with a PING after them
// so their invalidation pushes have reached this connection, then drops the
// key from its near cache. The near cache is read only while both leases
// hold (Store.trusted): a PING and an epoch poll, each sent less than
// leaseDuration ago. A value served at t therefore reflects every write
// committed before t - leaseDuration, with or without its writer's
// tombstone.
//
// A worker that starts catches up from the epoch recorded in Redis
// (epochKey) by the pollers before it, so a write whose tombstone was lost
// while no worker was polling (the whole fleet restarting) is repaired too.
// When the change log no longer reaches back that far, this worker reads
// nothing from Redis until every value there has been refilled since
// (CACHE_TTL plus the fill window).

var errRedisDown = errors.New("redis is down")

const epochKey = "coherence:epoch" // behind CachePrefix: the latest epoch whose tombstones are in Redis

// usable reports whether Redis values may be read at now.
func (r *redisCache) usable(now int64) bool { return now >= r.distrustUntil.Load() }

// distrust stops reading Redis values until every one may have been refilled.
func (r *redisCache) distrust(why string) {
	until := r.s.now() + int64(r.s.o.CacheTTL+redisFillWindow+r.opTimeout)
	r.distrustUntil.Store(until)
	r.s.log.Warn("redis values may be stale ("+why+"); reading the database instead for a while",
		zap.Duration("for", r.s.o.CacheTTL+redisFillWindow+r.opTimeout))
}

// pollRedisEpoch is the epoch poll of CACHE_TYPE=redis.
func (s *Store) pollRedisEpoch(parent context.Context) {
	r := s.redis
	sent, mark := s.now(), s.localMark()
	ctx, cancel := context.WithTimeout(parent, checkTimeout)
	defer cancel()
	if err := s.syncRedisEpoch(ctx); err != nil {
		if s.closed.Load() || errors.Is(err, errRedisDown) {
			return // Redis's own lease is gone: the heartbeat logs and recovers
		}
		if r.epochErr.Swap(&err) == nil {
			s.log.Warn("cache epoch poll failing; lookups go to the database until it recovers",
				zap.String("cache_type", s.o.CacheType), zap.Error(err))
		}
		return
	}
	r.epochLease.Store(sent + int64(leaseDuration))
	s.seenLocal.Store(mark)
	if r.epochErr.Swap(nil) != nil {
		s.log.Info("cache epoch poll restored", zap.String("cache_type", s.o.CacheType))
	}
}

// syncRedisEpoch reads the epoch and applies what changed since the last
// poll to Redis and to the near cache. Only the poll goroutine (and Open,
// before it starts) call it, so lastEpoch needs no lock.
func (s *Store) syncRedisEpoch(ctx context.Context) error {
	r := s.redis
	if r.down.Load() {
		// Nothing is read from the near cache or Redis until the heartbeat
		// reaches Redis again; the next poll after that catches up. Skipping
		// keeps a black-holed Redis from holding this goroutine.
		return errRedisDown
	}
	var epoch int64
	err := s.noteDB(queryOne(ctx, s.db, "SELECT epoch FROM cache_epoch WHERE id = 1", nil, &epoch))
	if err != nil {
		return fmt.Errorf("poll cache epoch: %w", err)
	}
	last := s.lastEpoch
	if last < 0 {
		applied, found, err := r.appliedEpoch(ctx)
		if err != nil {
			r.failed(ctx, err)
			return fmt.Errorf("read the applied cache epoch from redis %s: %w", r.addr, err)
		}
		last = epoch // a new (or flushed) Redis holds no old values
		switch {
		case found && applied <= epoch:
			last = applied
		case found:
			// Redis has seen a later epoch than the database holds: a
			// database restored from an older backup.
			s.near.invalidateAll()
			r.distrust("redis has seen a later cache epoch than the database holds")
		}
	}
	written := true
	switch {
	case epoch == last:
	case epoch < last:
		// A database restored from an older backup: anything may differ.
		s.near.invalidateAll()
		r.distrust("the database epoch went back")
		written = false
	default:
		keys, complete, err := s.changedKeys(ctx, last, epoch)
		if err = s.noteDB(err); err != nil {
			return err
		}
		if !complete {
			s.near.invalidateAll()
			r.distrust("the change log no longer holds every change since the last poll")
			written = false
			break
		}
		if len(keys) > 0 {
			err := r.tombstoneAll(ctx, keys)
			for _, k := range keys {
				s.near.invalidateKey(k)
			}
			if err != nil {
				// lastEpoch stays: the next poll writes them again, and
				// until one succeeds the epoch lease is not renewed.
				r.failed(ctx, err)
				return fmt.Errorf("write the tombstones of %d changed keys to redis %s: %w", len(keys), r.addr, err)
			}
		}
	}
	if written && epoch != s.lastEpoch {
		if err := r.setAppliedEpoch(ctx, epoch); err != nil {
			r.failed(ctx, err)
		}
	}
	s.lastEpoch = epoch
	return nil
}

// tombstoneAll writes the tombstones of keys, then a PING: its reply comes
// after the invalidation pushes the writes caused on this connection.
func (r *redisCache) tombstoneAll(ctx context.Context, keys []string) error {
	cmds := make(rueidis.Commands, 0, len(keys)+1)
	for _, k := range keys {
		cmds = append(cmds, r.client.B().Set().Key(r.prefix+k).Value(redisTombstone).Px(r.tombLife).Build())
	}
	cmds = append(cmds, r.client.B().Ping().Build())
	cctx, cancel := context.WithTimeout(ctx, r.opTimeout)
	defer cancel()
	for _, res := range r.client.DoMulti(cctx, cmds...) {
		if err := res.Error(); err != nil {
			return err
		}
	}
	return nil
}

func (r *redisCache) appliedEpoch(ctx context.Context) (int64, bool, error) {
	cctx, cancel := context.WithTimeout(ctx, r.opTimeout)
	defer cancel()
	v, err := r.client.Do(cctx, r.client.B().Get().Key(r.prefix+epochKey).Build()).ToString()
	if rueidis.IsRedisNil(err) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, err
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil {
		return 0, false, nil // not ours: start from now
	}
	return n, true, nil
}

// setAppliedEpoch records that Redis holds the tombstones of every epoch up
// to epoch. Pollers race; an older value written last only makes a new
// worker write a few tombstones again.
func (r *redisCache) setAppliedEpoch(ctx context.Context, epoch int64) error {
	cctx, cancel := context.WithTimeout(ctx, r.opTimeout)
	defer cancel()
	return r.client.Do(cctx, r.client.B().Set().Key(r.prefix+epochKey).Value(strconv.FormatInt(epoch, 10)).Build()).Error()
}
