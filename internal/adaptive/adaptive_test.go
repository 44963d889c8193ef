package adaptive

import (
	"testing"
	"time"
)

// Vegas: the limit falls while latency grows with concurrency (a queue
// inside the worker), rises again once latency is back at its minimum and
// the limit is in use, and never moves on a limit far above what is used.
func TestLimiterFollowsLatency(t *testing.T) {
	const ms = int64(time.Millisecond)
	var reported int64
	l := New(64, func(v int64) { reported = v })
	now := int64(1e9)
	run := func(windows int, inFlight int64, rtt func(inFlight int64) int64) {
		for range windows {
			for range 20 {
				now += 5 * ms
				n := min(inFlight, l.Current())
				l.Sample(now, rtt(n), n)
			}
		}
	}
	run(10, 1, func(int64) int64 { return 2 * ms }) // the minimum, at low load
	if l.Current() != 64 {
		t.Fatalf("limit %d after light load, want the ceiling 64 (nothing to adapt to)", l.Current())
	}
	run(30, 40, func(n int64) int64 { return 2 * ms * n }) // a resource that slows with load
	low := l.Current()
	if low > 16 {
		t.Fatalf("limit %d while latency grows with concurrency, want it well below 40", low)
	}
	if reported != low {
		t.Errorf("onChange told %d, want %d", reported, low)
	}
	run(30, 40, func(int64) int64 { return 2 * ms }) // the resource recovered
	if l.Current() < 40 {
		t.Fatalf("limit %d after latency came back to its minimum, want >= 40 (from %d)", l.Current(), low)
	}
	for range 50 {
		run(1, 40, func(int64) int64 { return 2*ms + (now/ms%7)*ms/10 }) // noise, 40 in flight
	}
	if l.Current() < 40 {
		t.Fatalf("limit %d fell on latency noise", l.Current())
	}
}
