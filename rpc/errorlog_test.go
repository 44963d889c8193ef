package rpc

import (
	"errors"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
)

// A burst of the same failure is one line a second, which says how many
// were left out.
func TestErrorLogOncePerSecond(t *testing.T) {
	core, logs := observer.New(zap.ErrorLevel)
	l := zap.New(core)
	var e errorLog
	for range 100 {
		e.log(l, "looking up user", zap.Error(errors.New("connection refused")))
	}
	if n := logs.Len(); n != 1 {
		t.Fatalf("%d lines for a burst of 100, want 1", n)
	}
	time.Sleep(1100 * time.Millisecond)
	e.log(l, "looking up user", zap.Error(errors.New("connection refused")))
	all := logs.All()
	if len(all) != 2 || all[1].ContextMap()["similar_left_out"] != int64(99) {
		t.Fatalf("lines %d, second %v; want 2, the second with similar_left_out 99", len(all), all[len(all)-1].ContextMap())
	}
}
