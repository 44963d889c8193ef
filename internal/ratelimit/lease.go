package ratelimit

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
)

// Leases make a limit shared by several instances (CACHE_TYPE=redis): the
// bucket lives in Redis, and each worker leases tokens from it in small
// batches ahead of use, so that a call takes a leased token with one atomic
// add and never waits for Redis. A worker leases again, in the background,
// when its stock runs low.
//
// The first call of a key in a worker, and calls while a lease is on its
// way, run on credit: at most one batch, which the next lease pays back
// first. So across instances a limit can be passed by at most one batch
// per worker and key at once, never over time; and tokens a worker leased
// but did not use are lost to the others (at most a batch each, about a
// tenth of a second of the rate): the limit is then slightly stricter.
//
// When Redis fails, the lease is given up and calls run on credit only;
// the instance's own Table (checked first) still holds every instance to
// the limit by itself.
type Leases struct {
	lease LeaseFunc
	keyOf func(hash uint64) string // the shared store's key of a bucket
	banks sync.Map                 // Key hash -> *bank
	// OnLease, when set, is told of every lease round trip and whether it
	// failed.
	OnLease func(failed bool)
	timeout time.Duration
	now     func() int64 // µs, the Table's clock
	pruneAt atomic.Int64 // µs: when idle banks are next dropped
}

// LeaseFunc takes up to want tokens of the bucket key (period and tau in
// µs, as Limit) in one atomic step at the shared store; it returns how
// many it got and, when fewer, the µs until the bucket has one again.
type LeaseFunc func(ctx context.Context, key string, want, period, tau int64) (granted, wait int64, err error)

// bank is one key's leased tokens in this worker.
type bank struct {
	tokens    atomic.Int64 // leased and unused; below 0: calls run on credit
	denyUntil atomic.Int64 // µs: the shared bucket was empty until then
	lastUse   atomic.Int64 // µs
	leasing   atomic.Bool
}

// bankIdle is how long a bank goes unused before it is dropped: its
// tokens, if any, are lost (they would have been after a minute anyway,
// the bucket having refilled meanwhile).
const bankIdle = int64(time.Minute / time.Microsecond)

// NewLeases leases through lease, of the bucket keyOf names; now is the
// clock of the calls' Take (a Table's Now).
func NewLeases(lease LeaseFunc, keyOf func(hash uint64) string, now func() int64) *Leases {
	return &Leases{lease: lease, keyOf: keyOf, timeout: time.Second, now: now}
}

// Batch is how many tokens a worker leases at once: a tenth of a second of
// the rate, at least 1 and at most an eighth of the burst, so that what a
// worker holds unused, or owes, stays a small part of the limit.
func (l Limit) Batch() int64 {
	b := int64(100*time.Millisecond/time.Microsecond) / l.period
	return max(1, min(b, l.tau/l.period/8))
}

// Take takes one token of key (a Key hash) at now.
func (ls *Leases) Take(key uint64, l Limit, now int64) Result {
	v, ok := ls.banks.Load(key)
	if !ok {
		v, _ = ls.banks.LoadOrStore(key, &bank{})
	}
	b := v.(*bank)
	b.lastUse.Store(now)
	if p := ls.pruneAt.Load(); now >= p && ls.pruneAt.CompareAndSwap(p, now+bankIdle) {
		ls.prune(now)
	}
	batch := l.Batch()
	if deny := b.denyUntil.Load(); now < deny && b.tokens.Load() <= 0 {
		return Result{Wait: time.Duration(deny-now) * time.Microsecond}
	}
	n := b.tokens.Add(-1)
	if n < -batch {
		b.tokens.Add(1)
		ls.refill(key, b, l, batch)
		return Result{Wait: time.Duration(l.period) * time.Microsecond}
	}
	if n < (batch+1)/2 {
		ls.refill(key, b, l, batch)
	}
	return Result{OK: true}
}

// prune drops the banks unused for bankIdle, so that a worker that has
// seen many users holds only the recent ones.
func (ls *Leases) prune(now int64) {
	ls.banks.Range(func(k, v any) bool {
		if b := v.(*bank); now-b.lastUse.Load() > bankIdle && !b.leasing.Load() {
			ls.banks.Delete(k)
		}
		return true
	})
}

// Refund gives back a token Take took for a call that does not run.
func (ls *Leases) Refund(key uint64) {
	if v, ok := ls.banks.Load(key); ok {
		v.(*bank).tokens.Add(1)
	}
}

// refill leases up to a batch plus what is owed, in the background, unless
// a lease of the key is already on its way.
func (ls *Leases) refill(key uint64, b *bank, l Limit, batch int64) {
	if !b.leasing.CompareAndSwap(false, true) {
		return
	}
	go func() {
		defer b.leasing.Store(false)
		want := batch - min(b.tokens.Load(), 0)
		ctx, cancel := context.WithTimeout(context.Background(), ls.timeout)
		granted, wait, err := ls.lease(ctx, ls.keyOf(key), want, l.period, l.tau)
		cancel()
		if ls.OnLease != nil {
			ls.OnLease(err != nil)
		}
		if err != nil {
			// Fail open: a batch as if leased. The instance's own Table
			// still applies; the next lease tries Redis again.
			b.tokens.Add(want)
			return
		}
		b.tokens.Add(granted)
		if granted < want {
			b.denyUntil.Store(ls.now() + max(wait, 1))
		}
	}()
}
