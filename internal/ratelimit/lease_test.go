package ratelimit

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// sharedStore stands for Redis: one Table whose buckets several Leases
// (workers of several instances) lease from.
type sharedStore struct {
	t      *Table
	fail   atomic.Bool
	leases atomic.Int64
}

func (s *sharedStore) lease(_ context.Context, key string, want, period, tau int64) (int64, int64, error) {
	s.leases.Add(1)
	if s.fail.Load() {
		return 0, 0, errors.New("down")
	}
	l := Limit{period: period, tau: tau}
	k := Key('s', key)
	var got int64
	for got < want {
		r := s.t.Take(k, l, s.t.Now())
		if !r.OK {
			return got, int64(r.Wait / time.Microsecond), nil
		}
		got++
	}
	return got, 0, nil
}

// settle waits until no lease of ls is on its way.
func settle(t *testing.T, ls ...*Leases) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		busy := false
		for _, l := range ls {
			l.banks.Range(func(_, v any) bool {
				busy = busy || v.(*bank).leasing.Load()
				return !busy
			})
		}
		if !busy {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("a lease never came back")
		}
		time.Sleep(time.Millisecond)
	}
}

func keyName(h uint64) string { return string(rune('a' + h%26)) }

// Four workers leasing from one bucket of burst 10 (and a rate so slow that
// it does not refill during the test) allow exactly 10 calls in all once
// their leases settle between calls: what one ran on credit is paid back.
func TestLeasesShareOneBucket(t *testing.T) {
	st := &sharedStore{t: New(64)}
	clock := New(8)
	var workers []*Leases
	for range 4 {
		workers = append(workers, NewLeases(st.lease, keyName, clock.Now))
	}
	l := PerMinute(1, 10)
	ok := 0
	for i := range 40 {
		w := workers[i%4]
		if w.Take(7, l, clock.Now()).OK {
			ok++
		}
		settle(t, workers...)
	}
	if ok != 10 {
		t.Fatalf("%d calls allowed over 4 workers, want exactly the burst of 10", ok)
	}
	// Refused calls carry a wait: the next token is a minute away.
	if r := workers[0].Take(7, l, clock.Now()); r.OK || r.Wait < 50*time.Second {
		t.Errorf("after the burst: %+v, want a refusal with about a minute to wait", r)
	}
}

// Calls never wait for a lease, and what runs on credit while leases are
// on their way is at most one batch per worker.
func TestLeasesCreditIsOneBatch(t *testing.T) {
	st := &sharedStore{t: New(64)}
	clock := New(8)
	block := make(chan struct{})
	slow := func(ctx context.Context, key string, want, period, tau int64) (int64, int64, error) {
		<-block
		return st.lease(ctx, key, want, period, tau)
	}
	ls := NewLeases(slow, keyName, clock.Now)
	l := PerMinute(1, 10) // batch 1
	ok := 0
	for range 5 {
		if ls.Take(9, l, clock.Now()).OK {
			ok++
		}
	}
	close(block)
	settle(t, ls)
	if ok != int(l.Batch()) {
		t.Errorf("%d calls ran before the first lease came back, want one batch (%d)", ok, l.Batch())
	}
}

// When the shared store fails, calls are let through a batch at a time
// (the instance's own Table still limits them), and it is counted.
func TestLeasesFailOpen(t *testing.T) {
	st := &sharedStore{t: New(64)}
	st.fail.Store(true)
	clock := New(8)
	ls := NewLeases(st.lease, keyName, clock.Now)
	var failed atomic.Int64
	var mu sync.Mutex
	ls.OnLease = func(f bool) {
		mu.Lock()
		defer mu.Unlock()
		if f {
			failed.Add(1)
		}
	}
	l := PerMinute(1, 10)
	for i := range 20 {
		if !ls.Take(3, l, clock.Now()).OK {
			t.Fatalf("call %d refused while the shared store is down", i)
		}
		settle(t, ls)
	}
	if failed.Load() == 0 {
		t.Error("no failed lease reported")
	}
}

func TestBatch(t *testing.T) {
	for _, c := range []struct {
		rate, burst int
		want        int64
	}{{1, 10, 1}, {60, 10, 1}, {6000, 6000, 10}, {600000, 1000, 125}, {600000, 10, 1}} {
		if got := PerMinute(c.rate, c.burst).Batch(); got != c.want {
			t.Errorf("PerMinute(%d, %d).Batch() = %d, want %d", c.rate, c.burst, got, c.want)
		}
	}
}
