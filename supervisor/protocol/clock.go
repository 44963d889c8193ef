package protocol

import (
	"fmt"
	"time"

	"golang.org/x/sys/unix"
)

// Nanotime is CLOCK_MONOTONIC in nanoseconds. All times in the status table
// use it: it is the same clock in every process of the machine, and unlike
// the wall clock it never jumps, so a clock change cannot make every
// heartbeat look stale.
//
// It is on the request path (a few calls per request), and reading
// CLOCK_MONOTONIC through unix.ClockGettime is a real system call, not the
// vDSO: about 50 times the cost of Go's own monotonic clock (see
// BenchmarkNanotime). So the absolute value is read from the kernel once,
// at start, and Go's monotonic clock (time.Since, which reads the vDSO's
// CLOCK_MONOTONIC on Linux) measures the time since. Unlike the
// go:linkname to runtime.nanotime this replaces, it relies only on public
// APIs; TestNanotimeIsClockMonotonic checks that the two clocks agree.
func Nanotime() int64 { return clockBase + int64(time.Since(clockStart)) }

var clockBase, clockStart = anchorClock()

// anchorClock pairs a kernel reading of CLOCK_MONOTONIC with a time.Time.
// The pair is only as good as the gap between the two readings (a
// preemption there would offset this process's clock from the others'), so
// it brackets the kernel reading with two time.Now and keeps the tightest
// of a few tries, taking the midpoint.
func anchorClock() (int64, time.Time) {
	var base int64
	var start time.Time
	best := time.Duration(-1)
	for range 5 {
		before := time.Now()
		mono, err := clockMonotonic()
		after := time.Now()
		if err != nil {
			// Only a kernel without CLOCK_MONOTONIC (none that Go supports)
			// gets here, and the status table cannot work without it.
			panic(fmt.Sprintf("mcpgateway: read CLOCK_MONOTONIC: %v", err))
		}
		if gap := after.Sub(before); best < 0 || gap < best {
			best = gap
			base, start = mono, before.Add(gap/2)
		}
		if best < 10*time.Microsecond {
			break
		}
	}
	return base, start
}

func clockMonotonic() (int64, error) {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		return 0, err
	}
	return ts.Nano(), nil
}
