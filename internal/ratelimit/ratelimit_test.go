package ratelimit

import (
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestExactUnderConcurrency: many goroutines at once on one key get exactly
// burst tokens, on a heap table and on two mappings of one shared file.
func TestExactUnderConcurrency(t *testing.T) {
	shared := filepath.Join(t.TempDir(), "rl")
	a, err := OpenShared(shared, 1024)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, err := OpenShared(shared, 1024)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if a.base != b.base {
		t.Fatalf("bases differ: %d %d", a.base, b.base)
	}
	for name, tables := range map[string][]*Table{"heap": {New(1024)}, "shared": {a, b}} {
		t.Run(name, func(t *testing.T) {
			const burst, n = 10, 64
			l := PerMinute(60, burst) // one token a second: none refills during the test
			key := Key('t', "get_system_time")
			var ok, denied atomic.Int64
			var wg sync.WaitGroup
			for g := 0; g < n; g++ {
				wg.Add(1)
				go func(tb *Table) {
					defer wg.Done()
					for i := 0; i < 5; i++ {
						r := tb.Take(key, l, tb.Now())
						if r.Full {
							t.Error("table full")
						}
						if r.OK {
							ok.Add(1)
						} else {
							denied.Add(1)
							if r.Wait <= 0 || r.Wait > time.Second {
								t.Errorf("wait %v", r.Wait)
							}
						}
					}
				}(tables[g%len(tables)])
			}
			wg.Wait()
			if ok.Load() != burst || denied.Load() != 5*n-burst {
				t.Fatalf("allowed %d, denied %d; want %d and %d", ok.Load(), denied.Load(), burst, 5*n-burst)
			}
		})
	}
}

func TestRefillAndRefund(t *testing.T) {
	tb := New(64)
	l := PerMinute(60, 2) // period 1 s
	k := Key('u', "a@example.com")
	now := int64(1e6)
	for i := 0; i < 2; i++ {
		if r := tb.Take(k, l, now); !r.OK {
			t.Fatalf("take %d refused", i)
		}
	}
	r := tb.Take(k, l, now)
	if r.OK || r.Wait != time.Second {
		t.Fatalf("third take: %+v, want refused with 1s wait", r)
	}
	if r := tb.Take(k, l, now+999_999); r.OK {
		t.Fatal("refilled early")
	}
	r = tb.Take(k, l, now+1e6)
	if !r.OK {
		t.Fatal("not refilled after a period")
	}
	tb.Refund(r, l)
	if r := tb.Take(k, l, now+1e6); !r.OK {
		t.Fatal("refund did not give the token back")
	}
	// Other keys are independent.
	if r := tb.Take(Key('t', "a@example.com"), l, now); !r.OK {
		t.Fatal("another kind of key shares the bucket")
	}
}

// TestFullWindow: with every slot of a window refilling, a new key is let
// through (Full); once buckets are full again their slots are reused.
func TestFullWindow(t *testing.T) {
	tb := New(Window) // one window: every key shares it
	l := PerMinute(60, 5)
	now := int64(1e6)
	used := map[uint64]bool{}
	for i := 0; len(used) < Window; i++ {
		k := Key('t', string(rune('a'+i)))
		if r := tb.Take(k, l, now); r.OK && !r.Full {
			used[k] = true
		}
	}
	r := tb.Take(Key('t', "another"), l, now)
	if !r.OK || !r.Full {
		t.Fatalf("full table: %+v, want allowed and Full", r)
	}
	later := now + 2e6 // every bucket refilled
	if r := tb.Take(Key('t', "another"), l, later); !r.OK || r.Full {
		t.Fatalf("after refill: %+v, want a slot", r)
	}
}

func TestSharedLayoutMismatch(t *testing.T) {
	p := filepath.Join(t.TempDir(), "rl")
	a, err := OpenShared(p, 64)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	if _, err := OpenShared(p, 128); err == nil {
		t.Fatal("a table of another size was accepted")
	}
}
