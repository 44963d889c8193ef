package store

import (
	"context"
	"errors"
	"strconv"

	"github.com/redis/rueidis"
)

// Rate-limit leases of CACHE_TYPE=redis (internal/ratelimit.Leases): the
// buckets shared by instances are GCRA theoretical arrival times in Redis,
// one key each, taken in batches by a script so that a batch is one
// atomic step whatever the other instances do. The script reads Redis's own
// clock, so the instances' clocks need not agree.
var leaseScript = rueidis.NewLuaScript(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local period, tau, want = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0') or 0
if tat < now then tat = now end
local granted = math.floor((now + tau - tat) / period)
if granted > want then granted = want end
if granted < 0 then granted = 0 end
if granted > 0 then
  tat = tat + granted * period
  redis.call('SET', KEYS[1], string.format('%d', tat), 'PX', math.ceil((tat - now) / 1000) + 1000)
end
local wait = 0
if granted < want then wait = tat + period - tau - now end
return {granted, wait}
`)

// ErrNoSharedLimits is LeaseRateTokens's error when the cache is not Redis.
var ErrNoSharedLimits = errors.New("rate limits: no shared store (CACHE_TYPE is not redis)")

// SharesRateLimits says whether LeaseRateTokens reaches a store shared by
// instances (CACHE_TYPE=redis).
func (s *Store) SharesRateLimits() bool { return s.redis != nil }

// RateLimitKey is the Redis key of a shared bucket: under the cache prefix,
// by the key's hash (ratelimit.Key: user names and tool names can be long).
func (s *Store) RateLimitKey(hash uint64) string {
	return s.o.CachePrefix + "rl:" + strconv.FormatUint(hash, 16)
}

// LeaseRateTokens takes up to want tokens of a shared bucket (period and
// tau in µs): granted, and the µs until it has a token again when fewer.
func (s *Store) LeaseRateTokens(ctx context.Context, key string, want, period, tau int64) (granted, wait int64, err error) {
	r := s.redis
	if r == nil {
		return 0, 0, ErrNoSharedLimits
	}
	if r.down.Load() {
		return 0, 0, errors.New("rate limits: redis is down")
	}
	cctx, cancel := context.WithTimeout(ctx, r.opTimeout)
	defer cancel()
	v, err := leaseScript.Exec(cctx, r.client, []string{key}, []string{
		strconv.FormatInt(period, 10), strconv.FormatInt(tau, 10), strconv.FormatInt(want, 10)}).AsIntSlice()
	if err != nil {
		return 0, 0, err
	}
	if len(v) != 2 {
		return 0, 0, errors.New("rate limits: unexpected lease reply")
	}
	return v[0], v[1], nil
}
