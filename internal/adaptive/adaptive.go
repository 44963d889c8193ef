// Package adaptive is the adaptive concurrency limit of the overload
// issue, shared by a worker's in-flight limit (--backpressure auto) and the
// per-upstream limit of federation.
package adaptive

import (
	"math"
	"sync"
	"sync/atomic"
	"time"
)

// Limit is an adaptive concurrency limit (a worker's --backpressure auto,
// an upstream's in-flight calls): TCP Vegas, as Netflix's concurrency-limits applies it to servers. Each
// window it compares the average handler latency with the smallest one
// seen (the latency without queueing), estimates how many requests queue
// inside the worker, in-flight × (1 − 1.5·min/avg), and nudges the limit: up
// while almost none queue and the limit is in use, down while more than a
// few do. Vegas rather than a gradient (Netflix's Gradient2, Envoy's
// filter): it needs no periodic drop of concurrency to re-measure the
// minimum (Envoy's probe refuses requests on purpose), and its estimate
// uses the in-flight count actually seen, so a limit far above what is
// used never shrinks on noise.
type Limit struct {
	ceiling, floor int64
	slack          float64 // ns of latency above the tolerated minimum that still count as no queue
	limit          atomic.Int64
	onChange       func(limit int64) // told of every new limit; may be nil

	// The current window, written on every admitted request.
	windowEnd   atomic.Int64
	sumRTT      atomic.Int64
	samples     atomic.Int64
	sumInFlight atomic.Int64
	maxInFlight atomic.Int64

	// The latency without queueing: the smallest single request of the
	// last epoch or so. It is renewed each epoch, so that a handler that
	// truly got slower (a slower database) is not taken for a queue.
	minRTT   atomic.Int64
	epochMin atomic.Int64
	epochEnd int64 // under mu
	mu       sync.Mutex
}

const (
	// limitTolerance is how much slower than the minimum the average may
	// be and still count as no queue (Netflix's Gradient2 uses the same
	// 1.5): timers and the scheduler of a busy machine add that much
	// without a single request waiting on another.
	limitTolerance = 1.5

	limitWindow     = 100 * time.Millisecond
	limitEpoch      = 10 * time.Second
	limitMinSamples = 10
	limitFloor      = 4
)

// New makes a limit that starts at its ceiling; onChange (may be nil) is
// told of it, and of every change. slack is latency above the tolerated
// minimum that still counts as no queue: an upstream's calls use it, since
// a call that answers in microseconds is slowed tenfold by the gateway's own
// scheduling when its cores are busy (measured: 25 µs to 2.5 ms at 100
// connections), which is no queue at the upstream, and refusing for it
// cost 92% of the calls (the queue-delay shedder is what answers the
// gateway's own saturation).
func New(ceiling int, slack time.Duration, onChange func(limit int64)) *Limit {
	l := &Limit{ceiling: int64(max(ceiling, 1)), slack: float64(slack), onChange: onChange}
	l.floor = min(limitFloor, l.ceiling)
	l.limit.Store(l.ceiling)
	l.minRTT.Store(math.MaxInt64)
	l.epochMin.Store(math.MaxInt64)
	if onChange != nil {
		onChange(l.ceiling)
	}
	return l
}

// Current is the limit in force.
func (l *Limit) Current() int64 { return l.limit.Load() }

// Sample records an admitted request that took rtt (ns) with inFlight
// requests running (itself included) when it started; now is a monotonic
// clock in ns.
func (l *Limit) Sample(now, rtt int64, inFlight int64) {
	for m := l.minRTT.Load(); rtt < m && !l.minRTT.CompareAndSwap(m, rtt); m = l.minRTT.Load() {
	}
	for m := l.epochMin.Load(); rtt < m && !l.epochMin.CompareAndSwap(m, rtt); m = l.epochMin.Load() {
	}
	l.sumRTT.Add(rtt)
	l.sumInFlight.Add(inFlight)
	for m := l.maxInFlight.Load(); inFlight > m && !l.maxInFlight.CompareAndSwap(m, inFlight); m = l.maxInFlight.Load() {
	}
	n := l.samples.Add(1)
	if end := l.windowEnd.Load(); now >= end && n >= limitMinSamples && l.windowEnd.CompareAndSwap(end, now+int64(limitWindow)) {
		l.update(now)
	}
}

// update closes a window: one Vegas step.
func (l *Limit) update(now int64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := l.samples.Swap(0)
	sum, inSum, peak := l.sumRTT.Swap(0), l.sumInFlight.Swap(0), l.maxInFlight.Swap(0)
	if n == 0 {
		return
	}
	if now >= l.epochEnd {
		if l.epochEnd != 0 {
			l.minRTT.Store(l.epochMin.Load())
		}
		l.epochMin.Store(math.MaxInt64)
		l.epochEnd = now + int64(limitEpoch)
	}
	avg, minRTT := float64(sum)/float64(n), float64(l.minRTT.Load())
	inFlight := float64(inSum) / float64(n)
	queued := max(0, inFlight*(1-(limitTolerance*minRTT+l.slack)/avg))
	limit := l.limit.Load()
	step := int64(max(1, math.Log10(float64(limit))))
	alpha, beta := 3*float64(step), 6*float64(step)
	next := limit
	switch {
	case queued > beta:
		// Down from what is actually used: a limit far above the
		// in-flight count would take many windows to start binding.
		next = min(limit, int64(math.Ceil(inFlight))) - step
	case 2*peak < limit:
		// The limit is not what holds the worker back: leave it.
	case queued <= 1:
		next = limit + int64(beta)
	case queued < alpha:
		next = limit + step
	}
	next = min(max(next, l.floor), l.ceiling)
	if next != limit {
		l.limit.Store(next)
		if l.onChange != nil {
			l.onChange(next)
		}
	}
}
