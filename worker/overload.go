package worker

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/mcpgateway/mcpgateway/supervisor/protocol"
)

// Admission control: what keeps an overloaded worker from queueing.
//
// A fast handler finishes before the next one starts, so an in-flight count
// never sees the queue that builds under CPU saturation: it sits in socket
// buffers, the accept queue and Go's run queue. What does see it is each
// request's queueing delay, from the kernel's timestamp of its first bytes
// (SO_TIMESTAMPNS, trackedConn.Read) to its handler starting; the shedder
// acts on it as CoDel does. Slow handlers that wait on I/O are bounded by
// the in-flight limit, fixed or adapted to measured latency (limiter).

// shedInterval is CoDel's interval, how often the shedder looks at the
// queueing delays of the requests since its last look.
const shedInterval = 100 * time.Millisecond

// shedAfter is how many intervals in a row must show a standing queue
// before the worker sheds: a queue that lasts 200 ms is overload; one
// that lasts a single interval is a hiccup (a replacement worker warming
// up, a stall of the machine), which a queue is there to absorb.
const shedAfter = 2

// pressedMinSeen is how many requests an interval must have seen so far
// before the look of pressedSoFar trusts its quarter.
const pressedMinSeen = 8

// shedCalm is how many intervals in a row without a standing queue end
// shedding: a second.
const shedCalm = 10

// shedder decides from each request's queueing delay whether it may run.
//
// The decision is made once an interval from the worker's queue-delay
// histogram, which the hot path fills anyway: a request costs two atomic
// loads of words written once an interval, where counting per request in
// a shared counter cost about 8% of the guide payload's throughput (cache
// lines bouncing between the worker's threads; measured with make bench).
// The first request past the interval's end makes it, not a goroutine of
// its own: under the saturation it is there to see, such a goroutine waits
// in the same run queue as the requests, and looked every second instead
// of every 100 ms (measured).
//
// A standing queue is one where more than a quarter of an interval's
// requests waited longer than the target. CoDel proper looks at the
// smallest delay of an interval; a worker with many connections always
// has a few requests whose bytes just arrived while the rest wait: with
// hey at 1000 connections on one busy core, 40% of the requests waited
// under 1 ms and a quarter over 10 ms (measured). The smallest delay
// stays low and a real queue is never seen, and so does the median; the
// test is on the 75th percentile.
type shedder struct {
	target    int64 // ns; 0: never shed
	interval  int64 // ns
	shedding  atomic.Bool
	watching  atomic.Bool  // the last interval looked like a queue's start
	windowEnd atomic.Int64 // Nanotime when the next look is due
	row       *protocol.Row

	// The look's own state.
	mu       sync.Mutex
	last     []uint64 // the histogram at the last look
	refused  uint64   // the queue-delay refusals at the last look
	standing int      // intervals in a row with a standing queue
	recent   int      // intervals left in which shedding stopped recently
	calm     int      // intervals in a row without a standing queue while shedding
}

func newShedder(target time.Duration, row *protocol.Row) *shedder {
	return &shedder{target: int64(target), interval: int64(max(shedInterval, target)), row: row,
		last: make([]uint64, protocol.NumQueueBuckets)}
}

// recordQueueDelay counts a request's queueing delay in the worker's
// histogram: what /metrics reports and what the shedder reads.
func recordQueueDelay(row *protocol.Row, delay int64) {
	row.Add(protocol.CQueueSum, uint64(delay))
	row.Add(protocol.CQueueBucket0+protocol.Field(protocol.QueueBucketIndex(delay)), 1)
}

// admit says whether a request that waited delay may run. While the
// worker watches (the last interval looked like the start of a queue), a
// request that waited past the target is refused: shedding proper needs
// two intervals past the target, and at 2x capacity the queue grows by an
// interval's worth of waiting each interval meanwhile; without the cut,
// the requests served in those 200 ms alone broke the p99 (measured:
// served p99 115-345 ms at 2x). A hiccup that does not last costs nothing:
// what is refused already waited past the target. While the
// worker sheds, a request that waited longer than half the target is
// refused, or longer than the interval for an essential one, which is
// admitted first but still not from an unbounded queue. Half: a queue
// detected at the target and then kept just under it would serve every
// request with nearly the whole target in waiting (measured: served p50
// 45 ms at 2x capacity with a 50 ms target); drained to half of it, what
// is served waits half as long.
func (s *shedder) admit(now, delay int64, essential bool) bool {
	if s.target == 0 {
		return true
	}
	if end := s.windowEnd.Load(); now >= end && s.windowEnd.CompareAndSwap(end, now+s.interval) {
		s.tick()
	}
	if essential {
		return delay <= s.interval || !(s.shedding.Load() || s.watching.Load())
	}
	if s.shedding.Load() {
		return 2*delay <= s.target
	}
	if 4*delay <= 3*s.target {
		return true
	}
	return !s.watching.Load() && (delay <= s.target || !s.pressedSoFar())
}

// pressedSoFar is the look of tick over the interval so far, for a request
// that waited past the target before any look saw a queue: the first
// interval of an overload lets the queue grow past the target (at 10x
// capacity, to 90 ms in 100 ms), and what it served then was the tail of
// the run (measured). Only such requests pay for the look, which a worker
// under its target never makes. It watches from then on.
func (s *shedder) pressedSoFar() bool {
	if !s.mu.TryLock() {
		return false
	}
	defer s.mu.Unlock()
	var seen, pastHalf uint64
	for i := range s.last {
		d := s.row.Load(protocol.CQueueBucket0+protocol.Field(i)) - s.last[i]
		seen += d
		if i > 0 && 2*int64(protocol.QueueBuckets[i-1]*1e9) >= s.target {
			pastHalf += d
		}
	}
	pressed := seen >= pressedMinSeen && 4*pastHalf > seen
	if pressed {
		s.watching.Store(true)
	}
	return pressed
}

// tick is the look every interval. Late is past the target while not
// shedding, and past half of it while shedding: shedding starts on a queue
// that reached the target and lasts until the queue is back under the
// half it drains to, not merely under the target again, which under
// sustained overload would stop it every other interval and let the queue
// grow back. The histogram's bounds round the threshold up to the next
// bound (with the default 50 ms target: 50 and 25 ms, both bounds).
func (s *shedder) tick() {
	if s.target == 0 || !s.mu.TryLock() {
		return
	}
	defer s.mu.Unlock()
	shedding := s.shedding.Load()
	threshold := s.target
	if shedding {
		threshold = s.target / 2
	}
	var seen, late, pastHalf uint64
	for i := range s.last {
		n := s.row.Load(protocol.CQueueBucket0 + protocol.Field(i))
		d := n - s.last[i]
		s.last[i] = n
		seen += d
		// Bucket i holds delays above bound i-1: late when that bound is
		// at or past the threshold.
		if i == 0 {
			continue
		}
		bound := int64(protocol.QueueBuckets[i-1] * 1e9)
		if bound >= threshold {
			late += d
		}
		if 2*bound >= s.target {
			pastHalf += d
		}
	}
	// What the early cut of watching refused (past 3/4 of the target) is
	// a standing queue too, though the histogram's bounds put most of it
	// under the target: without it, watching would hold the queue at 3/4
	// of the target for good and shedding would never start.
	refused := s.row.Load(protocol.CRefusedQueueDelay)
	refusedNow := refused - s.refused
	s.refused = refused
	if seen > 0 && 4*max(late, refusedNow) > seen {
		s.standing++
	} else {
		s.standing = 0
	}
	// A queue that comes back within a second of shedding is the same
	// overload, not a hiccup: shedding resumes after one interval (CoDel
	// resumes dropping at its last rate for the same reason).
	after := shedAfter
	if s.recent > 0 {
		after, s.recent = 1, s.recent-1
	}
	// Shedding ends after a second without a standing queue, not at the
	// first calm interval: while shedding, only requests that waited past
	// half the target are refused, so with the queue drained it refuses
	// nothing, and stopping at once let the queue of an overload that goes
	// on grow back for the intervals it takes to see it again (served p99
	// 115-345 ms at 2x capacity, measured).
	if shedding && s.standing == 0 {
		s.calm++
	} else {
		s.calm = 0
	}
	shed := s.standing >= after || (shedding && s.calm < shedCalm)
	if shedding && !shed {
		s.recent = int(time.Second / shedInterval)
	}
	s.shedding.Store(shed)
	// Watching: a quarter of the interval waited past half the target,
	// the way a queue that grows at any rate starts.
	s.watching.Store(!shed && seen > 0 && 4*pastHalf > seen)
	s.row.Store(protocol.FQueueOverTarget, late*1000/max(seen, 1))
	s.row.Store(protocol.FShedding, b2u(shed))
}

func b2u(b bool) uint64 {
	if b {
		return 1
	}
	return 0
}
