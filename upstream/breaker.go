package upstream

import (
	"errors"
	"sync"
	"time"
)

// ErrOpen is a call refused at once because the upstream's circuit is open.
var ErrOpen = errors.New("circuit open: the upstream failed repeatedly; retrying later")

// BreakerSettings: the circuit opens after Failures failures in a row, and
// after Cooldown lets one call through (half-open) whose outcome closes or
// reopens it.
type BreakerSettings struct {
	Failures int
	Cooldown time.Duration
}

// DefaultBreaker: 5 failures in a row, 10 s before a probe.
var DefaultBreaker = BreakerSettings{Failures: 5, Cooldown: 10 * time.Second}

// BreakerState is a circuit's state.
type BreakerState int

const (
	Closed   BreakerState = iota // calls go through
	Open                         // calls are refused until the cool-down ends
	HalfOpen                     // one probe call is on its way
)

func (s BreakerState) String() string {
	return [...]string{"closed", "open", "half_open"}[s]
}

// Breaker is a circuit breaker over consecutive failures. A failure is the
// upstream not answering (connection refused, timeout, 5xx, a broken
// stream); a JSON-RPC error is an answer.
type Breaker struct {
	set BreakerSettings
	now func() time.Time

	mu       sync.Mutex
	state    BreakerState
	failures int
	openedAt time.Time
	probing  bool
}

// NewBreaker makes a closed breaker.
func NewBreaker(set BreakerSettings) *Breaker {
	return &Breaker{set: set, now: time.Now}
}

// Allow says whether a call may go: always while closed; while open, one
// probe once the cool-down has passed.
func (b *Breaker) Allow() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	switch b.state {
	case Closed:
		return true
	case Open:
		if b.now().Sub(b.openedAt) < b.set.Cooldown {
			return false
		}
		b.state, b.probing = HalfOpen, true
		return true
	default: // half-open: the probe is out
		return false
	}
}

// Success records an answered call: the circuit closes.
func (b *Breaker) Success() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.state, b.failures, b.probing = Closed, 0, false
}

// Failure records a call the upstream did not answer.
func (b *Breaker) Failure() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.failures++
	if b.state == HalfOpen || b.failures >= b.set.Failures {
		b.state, b.openedAt, b.probing = Open, b.now(), false
	}
}

// State is the circuit's state now.
func (b *Breaker) State() BreakerState {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.state
}

// Release gives back a probe whose caller went away before the upstream
// answered: the next call probes at once.
func (b *Breaker) Release() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.state == HalfOpen {
		b.state, b.openedAt, b.probing = Open, b.now().Add(-b.set.Cooldown), false
	}
}
