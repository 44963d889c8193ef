// Package ratelimit is the gateway's call-rate limiter: token buckets kept as
// GCRA "theoretical arrival times" (TAT), one 64-bit word per key, in a
// fixed-size open-addressing table that every worker process of an instance
// maps from one shared-memory file (OpenShared), so that a limit is exact
// across workers with nothing on the hot path but an atomic load and one
// CompareAndSwap per call.
//
// A slot's word is tag<<48 | tat: the key's 16-bit tag (never 0) and its TAT
// in microseconds since the table's base time (48 bits: about 8.9 years).
// The word 0 is an empty slot. A bucket whose TAT is not in the future is
// full, exactly as if it did not exist, so such a slot may be freed and
// taken by another key without changing anyone's limit.
//
// A key's slot is searched in a window of Window slots from hash&mask. When
// the whole window holds other keys with buckets still refilling, the call
// is allowed (fail open) and Take reports it (Full). Two keys with the same
// slot window and the same tag share a bucket (about 1 in 10^9 per pair of
// keys with the default size): sharing only makes them stricter.
package ratelimit

import (
	"errors"
	"fmt"
	"sync/atomic"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/mcpgateway/mcpgateway/internal/shm"
)

const (
	// DefaultSlots is the size of a shared table: 65536 keys (users plus
	// tools) whose buckets are refilling at once, 512 KiB.
	DefaultSlots = 1 << 16
	// Window is how many slots a key may live in.
	Window = 8

	headerWords = 8                  // magic, slots, base; the rest pads to a cache line
	magic       = 0x6d6370726c696d31 // "mcprlim1"
	tatBits     = 48
	tatMask     = 1<<tatBits - 1
)

// Table holds the buckets. It is safe for concurrent use, by goroutines and
// by processes mapping the same file.
type Table struct {
	slots []uint64 // len is a power of two
	mask  uint64
	base  int64  // CLOCK_MONOTONIC ns of TAT 0, shared by all mappers
	mem   []byte // the mapping; nil for a heap table
}

// Result is the outcome of Take.
type Result struct {
	OK   bool
	Wait time.Duration // !OK: until the next token
	Full bool          // OK because the key found no slot (fail open)
	slot int           // OK and !Full: where the token was taken, for Refund
	tag  uint64
}

// New returns a table for one process (tests, or when no shared file can
// be made). slots is rounded up to a power of two.
func New(slots int) *Table {
	n := roundSlots(slots)
	return &Table{slots: make([]uint64, n), mask: uint64(n - 1), base: monotonic()}
}

func roundSlots(slots int) int {
	n := Window
	for n < slots {
		n <<= 1
	}
	return n
}

// OpenShared maps the table in the file at path, creating it (mode 0600)
// when it does not exist: the first worker of an instance creates it, the
// others and later generations map the same memory. Every mapper must ask
// for the same number of slots.
func OpenShared(path string, slots int) (*Table, error) {
	n := roundSlots(slots)
	size := 8 * (headerWords + n)
	mem, err := shm.Map(path, size)
	if err != nil {
		return nil, fmt.Errorf("rate limits: shared table: %w", err)
	}
	words := unsafe.Slice((*uint64)(unsafe.Pointer(&mem[0])), headerWords+n)
	hdr := words[:headerWords]
	atomic.CompareAndSwapUint64(&hdr[1], 0, uint64(n))
	atomic.CompareAndSwapUint64(&hdr[2], 0, uint64(monotonic()))
	atomic.CompareAndSwapUint64(&hdr[0], 0, magic)
	if atomic.LoadUint64(&hdr[0]) != magic || atomic.LoadUint64(&hdr[1]) != uint64(n) {
		_ = unix.Munmap(mem)
		return nil, errors.New("rate limits: shared table " + path + " has another layout (another release?)")
	}
	return &Table{slots: words[headerWords:], mask: uint64(n - 1), base: int64(atomic.LoadUint64(&hdr[2])), mem: mem}, nil
}

// Close unmaps a shared table. The table must not be used afterwards.
func (t *Table) Close() error {
	if t.mem == nil {
		return nil
	}
	mem := t.mem
	t.mem, t.slots = nil, nil
	return unix.Munmap(mem)
}

func monotonic() int64 {
	var ts unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	return ts.Nano()
}

// Now is the current time on the table's clock, in microseconds.
func (t *Table) Now() int64 { return (monotonic() - t.base) / 1e3 }

// Limit is a token bucket: Rate calls per minute, Burst at once.
type Limit struct {
	period int64 // µs per token
	tau    int64 // period * burst
}

// PerMinute makes a Limit; rate and burst must be from 1 to 60,000,000.
func PerMinute(rate, burst int) Limit {
	p := int64(time.Minute/time.Microsecond) / int64(rate)
	if p < 1 {
		p = 1
	}
	return Limit{period: p, tau: p * int64(burst)}
}

// Key hashes a key's parts (FNV-1a, the same in every process).
func Key(kind byte, name string) uint64 {
	h := uint64(14695981039346656037)
	h = (h ^ uint64(kind)) * 1099511628211
	for i := 0; i < len(name); i++ {
		h = (h ^ uint64(name[i])) * 1099511628211
	}
	// Finalise (murmur3 fmix64) so that both the low bits (slot) and the
	// high bits (tag) are well mixed.
	h ^= h >> 33
	h *= 0xff51afd7ed558ccd
	h ^= h >> 33
	h *= 0xc4ceb9fe1a85ec53
	return h ^ h>>33
}

// Take takes one token of key's bucket at time now (Now).
func (t *Table) Take(key uint64, l Limit, now int64) Result {
	tag := key >> tatBits
	if tag == 0 {
		tag = 1
	}
	start := key & t.mask
	for {
		empty := -1
		for i := uint64(0); i < Window; i++ {
			j := int((start + i) & t.mask)
			w := atomic.LoadUint64(&t.slots[j])
			if w>>tatBits == tag {
				if r, again := t.takeAt(j, tag, l, now); !again {
					return r
				}
				empty = -2 // the slot changed hands: search again
				break
			}
			if w == 0 && empty == -1 {
				empty = j
			}
		}
		switch {
		case empty >= 0:
			// Not found: a new bucket, full, less the token taken now.
			if atomic.CompareAndSwapUint64(&t.slots[empty], 0, tag<<tatBits|uint64(now+l.period)&tatMask) {
				return Result{OK: true, slot: empty, tag: tag}
			}
		case empty == -1:
			if !t.freeOne(start, now) {
				return Result{OK: true, Full: true}
			}
		}
	}
}

// takeAt runs GCRA on slot j; again: the slot no longer holds the tag.
func (t *Table) takeAt(j int, tag uint64, l Limit, now int64) (r Result, again bool) {
	for {
		w := atomic.LoadUint64(&t.slots[j])
		if w>>tatBits != tag {
			return Result{}, true
		}
		tat := int64(w & tatMask)
		if tat < now {
			tat = now
		}
		next := tat + l.period
		if next-now > l.tau {
			return Result{Wait: time.Duration(next-now-l.tau) * time.Microsecond}, false
		}
		if atomic.CompareAndSwapUint64(&t.slots[j], w, tag<<tatBits|uint64(next)&tatMask) {
			return Result{OK: true, slot: j, tag: tag}, false
		}
	}
}

// freeOne empties a slot of the window whose bucket is full again (its TAT
// is not in the future): the same as no bucket at all.
func (t *Table) freeOne(start uint64, now int64) bool {
	for i := uint64(0); i < Window; i++ {
		j := int((start + i) & t.mask)
		w := atomic.LoadUint64(&t.slots[j])
		if w != 0 && int64(w&tatMask) <= now && atomic.CompareAndSwapUint64(&t.slots[j], w, 0) {
			return true
		}
	}
	return false
}

// Refund gives back the token a successful Take took (the call was refused
// by another limit).
func (t *Table) Refund(r Result, l Limit) {
	if !r.OK || r.Full {
		return
	}
	for {
		w := atomic.LoadUint64(&t.slots[r.slot])
		if w>>tatBits != r.tag || int64(w&tatMask) < l.period {
			return
		}
		if atomic.CompareAndSwapUint64(&t.slots[r.slot], w, w-uint64(l.period)) {
			return
		}
	}
}
