package protocol

import (
	_ "unsafe" // for go:linkname
)

// Nanotime is CLOCK_MONOTONIC in nanoseconds. All times in the status table
// use it: it is the same clock in every process of the machine, and unlike
// the wall clock it never jumps, so a clock change cannot make every
// heartbeat look stale.
//
//go:linkname Nanotime runtime.nanotime
func Nanotime() int64
