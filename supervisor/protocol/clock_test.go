package protocol

import (
	"testing"
	"time"
	_ "unsafe" // for go:linkname, to compare with what Nanotime replaced
)

func TestNanotimeIsClockMonotonic(t *testing.T) {
	// Across processes the clocks must agree, since the master judges the
	// workers' heartbeats with its own. The kernel's reading must fall
	// between two of Nanotime's, give or take the anchor's error.
	const slack = time.Millisecond
	for range 100 {
		before := Nanotime()
		kernel, err := clockMonotonic()
		after := Nanotime()
		if err != nil {
			t.Fatal(err)
		}
		if kernel < before-int64(slack) || kernel > after+int64(slack) {
			t.Fatalf("CLOCK_MONOTONIC %d outside Nanotime's [%d, %d] by more than %v", kernel, before, after, slack)
		}
	}
}

func TestNanotimeNeverGoesBack(t *testing.T) {
	last := Nanotime()
	for range 100000 {
		now := Nanotime()
		if now < last {
			t.Fatalf("Nanotime went back from %d to %d", last, now)
		}
		last = now
	}
}

//go:linkname runtimeNanotime runtime.nanotime
func runtimeNanotime() int64

var sinkTime int64

// BenchmarkNanotime compares Nanotime with the go:linkname it replaced and
// with a kernel call on each reading.
func BenchmarkNanotime(b *testing.B) {
	b.Run("Nanotime", func(b *testing.B) {
		for b.Loop() {
			sinkTime += Nanotime()
		}
	})
	b.Run("linkname-runtime.nanotime", func(b *testing.B) {
		for b.Loop() {
			sinkTime += runtimeNanotime()
		}
	})
	b.Run("unix.ClockGettime", func(b *testing.B) {
		for b.Loop() {
			n, _ := clockMonotonic()
			sinkTime += n
		}
	})
}
