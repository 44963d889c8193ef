package worker

import (
	"net"
	"testing"
	"time"

	"github.com/mcpgateway/mcpgateway/supervisor/protocol"
)

func testRow(t *testing.T) *protocol.Row {
	t.Helper()
	tb, err := protocol.CreateTable(1)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tb.Close() })
	return tb.Row(1)
}

// A burst passes; a standing queue (a quarter of the delays of two
// intervals in a row above the target) starts shedding, which refuses what
// waited past half the target (past the interval for essential requests),
// and lasts until an interval where a quarter or fewer waited past half
// the target.
func TestShedderActsOnAStandingQueueOnly(t *testing.T) {
	const ms = int64(time.Millisecond)
	row := testRow(t)
	s := newShedder(50*time.Millisecond, row)
	interval := func(n int, delay func(i int) int64) {
		for i := range n {
			recordQueueDelay(row, delay(i))
		}
		s.tick()
	}
	// Bursts: fewer than a quarter late in every interval; then a single
	// interval of a standing queue, a hiccup.
	for range 5 {
		interval(100, func(i int) int64 { return map[bool]int64{true: 80 * ms, false: ms}[i%5 == 0] })
	}
	interval(100, func(int) int64 { return 80 * ms })
	interval(100, func(int) int64 { return ms })
	if s.shedding.Load() || !s.admit(-1, 80*ms, false) {
		t.Fatal("shedding after bursts and a hiccup")
	}
	// A standing queue: shedding from the second interval.
	interval(100, func(int) int64 { return 60 * ms })
	if s.shedding.Load() {
		t.Fatal("shedding after one interval")
	}
	interval(100, func(int) int64 { return 60 * ms })
	if !s.shedding.Load() || row.Load(protocol.FShedding) != 1 || row.Load(protocol.FQueueOverTarget) != 1000 {
		t.Fatalf("standing queue: shedding %v, FQueueOverTarget %d", s.shedding.Load(), row.Load(protocol.FQueueOverTarget))
	}
	if !s.admit(-1, 20*ms, false) || s.admit(-1, 30*ms, false) || !s.admit(-1, 90*ms, true) || s.admit(-1, 200*ms, true) {
		t.Fatal("while shedding: want others admitted up to half the target, essential up to the interval")
	}
	// Drained to under the target but not to half of it: still shedding.
	interval(100, func(int) int64 { return 40 * ms })
	if !s.shedding.Load() {
		t.Fatal("stopped shedding with the queue above half the target")
	}
	for range shedCalm - 1 {
		interval(100, func(int) int64 { return 10 * ms })
	}
	if !s.shedding.Load() || s.admit(-1, 30*ms, false) {
		t.Fatal("stopped shedding before a second of calm")
	}
	interval(100, func(int) int64 { return 10 * ms })
	if s.shedding.Load() || !s.admit(-1, 200*ms, false) {
		t.Fatal("still shedding after a second under half the target")
	}

	// A target longer than the interval is looked at once a target.
	long := newShedder(300*time.Millisecond, testRow(t))
	long.admit(1, 0, false)
	if got := long.windowEnd.Load(); got != 1+int64(300*time.Millisecond) {
		t.Errorf("next look of a 300 ms target at %d ns, want %d", got, 1+int64(300*time.Millisecond))
	}

	off := newShedder(0, testRow(t))
	for range 5 {
		for range 100 {
			recordQueueDelay(off.row, int64(time.Second))
		}
		off.tick()
	}
	if !off.admit(-1, int64(time.Second), false) {
		t.Fatal("--max-queue-delay 0 refused a request")
	}
}

func TestQueueDelayOfPlainConnsIsZero(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	if d := queueDelay(a); d != 0 {
		t.Fatalf("delay %d for a conn without timestamps", d)
	}
}

// The kernel's receive timestamp counts the time bytes wait in the socket
// before anyone reads them: what a read-time clock misses under CPU
// saturation.
func TestReceiveTimestampsCountTheWaitInTheSocket(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	if err := enableStamps(ln); err != nil {
		t.Fatal(err)
	}
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	sc, err := ln.Accept() // inherits SO_TIMESTAMPNS from the listener
	if err != nil {
		t.Fatal(err)
	}
	defer sc.Close()
	tc := &trackedConn{Conn: sc, stamps: newStampedReader(sc)}
	for _, wait := range []time.Duration{0, 200 * time.Millisecond} {
		if _, err := c.Write([]byte("GET / HTTP/1.1\r\n\r\n")); err != nil {
			t.Fatal(err)
		}
		time.Sleep(wait)
		buf := make([]byte, 64)
		_ = tc.SetReadDeadline(time.Now().Add(5 * time.Second))
		if n, err := tc.Read(buf); err != nil || n != 18 {
			t.Fatalf("read %d, %v", n, err)
		}
		d := time.Duration(queueDelay(tc))
		if d < wait || d > wait+time.Second {
			t.Errorf("bytes that waited %s in the socket: delay %s", wait, d)
		}
	}
	c.Close()
	if _, err := tc.Read(make([]byte, 8)); err == nil || err.Error() != "EOF" {
		t.Errorf("read after the peer closed: %v, want EOF", err)
	}
	_ = tc.SetReadDeadline(time.Now().Add(-time.Second))
	if _, err := tc.Read(make([]byte, 8)); err == nil {
		t.Error("read past a deadline did not fail")
	}
}
