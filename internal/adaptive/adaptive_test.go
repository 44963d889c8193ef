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
	l := New(64, 0, func(v int64) { reported = v })
	now := int64(1e9)
	run := func(windows int, inFlight int64, rtt func(inFlight int64) int64) {
		feed(l, &now, windows, inFlight, rtt)
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

// With slack, calls that answer in microseconds and are slowed to a few
// milliseconds by a busy machine are not taken for a queue (an upstream's
// limit, measured: 92% of calls refused without it); a real queue, past the
// slack, still brings the limit down.
func TestSlackIgnoresFastCallsSlowedByTheMachine(t *testing.T) {
	const us, ms = int64(time.Microsecond), int64(time.Millisecond)
	for _, slack := range []time.Duration{0, 20 * time.Millisecond} {
		l := New(64, slack, nil)
		now := int64(1e9)
		run := func(windows int, inFlight int64, rtt func(n int64) int64) { feed(l, &now, windows, inFlight, rtt) }
		run(10, 1, func(int64) int64 { return 25 * us })
		run(30, 50, func(n int64) int64 { return 50 * us * n }) // 2.5 ms at 50 in flight
		switch {
		case slack == 0 && l.Current() >= 50:
			t.Errorf("no slack: limit %d, want it down", l.Current())
		case slack > 0 && l.Current() < 50:
			t.Errorf("slack %v: limit %d for calls of 2.5 ms, want it kept", slack, l.Current())
		}
		if slack > 0 {
			run(60, 50, func(n int64) int64 { return 2 * ms * n }) // 100 ms at 50: a queue
			if l.Current() > 20 {                                  // it settles where the queue adds about the slack
				t.Errorf("slack %v: limit %d while calls queue to 100 ms, want it down", slack, l.Current())
			}
		}
	}
}

// feed samples windows of 20 requests, 5 ms apart, with inFlight of them
// (or the limit) running, each taking rtt(in flight).
func feed(l *Limit, now *int64, windows int, inFlight int64, rtt func(inFlight int64) int64) {
	for range windows {
		for range 20 {
			*now += 5 * int64(time.Millisecond)
			n := min(inFlight, l.Current())
			l.Sample(*now, rtt(n), n)
		}
	}
}
