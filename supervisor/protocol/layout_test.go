package protocol

import (
	"bufio"
	"fmt"
	"os"
	"runtime/debug"
	"strings"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

func TestLayoutLeavesTheDocumentedRoom(t *testing.T) {
	if HRowWords >= counterStart {
		t.Errorf("header scalars reach word %d, into the totals at %d", HRowWords, counterStart)
	}
	if FQueueOverTarget >= counterStart {
		t.Errorf("row gauges reach word %d, into the counters at %d", FQueueOverTarget, counterStart)
	}
	if CRefusedConnections >= CQueueSum {
		t.Errorf("refusal reasons reach word %d, into the queue-delay histogram at %d", CRefusedConnections, CQueueSum)
	}
	if end := int(CQueueBucket0) + NumQueueBuckets; end > 96 {
		t.Errorf("queue-delay histogram ends at word %d, into the rate-limit counters at 96", end)
	}
	if end := int(CBucket0) + NumBuckets; end > reservedFrom {
		t.Errorf("duration histogram ends at word %d, into the reserved counters at %d", end, reservedFrom)
	}
	if HStarts != counterEnd || HExitListener >= 192 {
		t.Errorf("master counters at %d..%d, want within 128..191", HStarts, HExitListener)
	}
	for _, r := range ExitReasons {
		if f := ExitField(r); f < HStarts || f > HExitListener {
			t.Errorf("exit reason %s at word %d, outside the master counters", r, f)
		}
	}
	if HeaderWords < 256 || headerMinBytes%4096 != 0 || headerBytes()%os.Getpagesize() != 0 {
		t.Errorf("header of %d words (%d bytes on %d-byte pages)", HeaderWords, headerBytes(), os.Getpagesize())
	}
}

// attachAs maps tb's memfd a second time, as a worker (writable rows) or
// as `mcpgateway status` (read-only), through its own file description, so
// that closing the view leaves tb alone.
func attachAs(t *testing.T, tb *Table, writable bool) *Table {
	t.Helper()
	mode := os.O_RDONLY
	if writable {
		mode = os.O_RDWR
	}
	f, err := os.OpenFile(fmt.Sprintf("/proc/self/fd/%d", tb.File().Fd()), mode, 0)
	if err != nil {
		t.Fatal(err)
	}
	view, err := AttachTable(f, writable)
	if err != nil {
		f.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() { view.Close() })
	return view
}

func newTable(t *testing.T, n int) *Table {
	t.Helper()
	tb, err := CreateTable(n)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tb.Close() })
	return tb
}

// mappingPerms reads the permissions of the mapping that starts at p from
// /proc/self/maps, e.g. "r--s".
func mappingPerms(t *testing.T, p unsafe.Pointer) string {
	t.Helper()
	f, err := os.Open("/proc/self/maps")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	start := fmt.Sprintf("%x-", uintptr(p))
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if line := sc.Text(); strings.HasPrefix(line, start) {
			return strings.Fields(line)[1]
		}
	}
	t.Fatalf("no mapping starts at %#x", uintptr(p))
	return ""
}

func TestWorkerMapsTheHeaderReadOnly(t *testing.T) {
	tb := newTable(t, 4)
	worker := attachAs(t, tb, true)
	status := attachAs(t, tb, false)

	for _, c := range []struct {
		name         string
		tb           *Table
		header, rows string
	}{
		{"master", tb, "rw-s", "rw-s"},
		{"worker", worker, "r--s", "rw-s"},
		{"status", status, "r--s", "r--s"},
	} {
		if got := mappingPerms(t, unsafe.Pointer(c.tb.Header())); got != c.header {
			t.Errorf("%s: header mapped %s, want %s", c.name, got, c.header)
		}
		if got := mappingPerms(t, unsafe.Pointer(c.tb.Row(1))); got != c.rows {
			t.Errorf("%s: rows mapped %s, want %s", c.name, got, c.rows)
		}
	}

	// The rows start on a page of their own, so the header's protection
	// cannot cover a row, nor a row's the header.
	if off := uintptr(unsafe.Pointer(worker.Row(1))) % uintptr(os.Getpagesize()); off != 0 {
		t.Errorf("row 1 is %d bytes into a page", off)
	}

	// And the worker's row writes reach the master.
	worker.Row(3).Store(FConns, 7)
	if got := tb.Row(3).Load(FConns); got != 7 {
		t.Errorf("master reads %d conns in row 3, want 7", got)
	}
}

func TestWorkerWriteToTheHeaderFaults(t *testing.T) {
	tb := newTable(t, 2)
	worker := attachAs(t, tb, true)
	h := worker.Header()

	faulted := func(write func()) (err any) {
		defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
		defer func() { err = recover() }()
		write()
		return nil
	}
	// A plain store: an atomic one under -race runs in the race runtime's
	// C code, where a fault cannot be recovered.
	err := faulted(func() { *(*uint64)(unsafe.Pointer(&h[HMaxRow])) = 1 << 40 })
	if err == nil {
		t.Fatal("a worker wrote the header")
	}
	if re, ok := err.(interface{ Addr() uintptr }); !ok || re.Addr() != uintptr(unsafe.Pointer(&h[HMaxRow])) {
		t.Fatalf("write faulted with %v, want a fault at the header", err)
	}
	if got := tb.Header().Load(HMaxRow); got != 0 {
		t.Fatalf("HMaxRow = %d after a refused write", got)
	}
}

func TestCorruptMaxRowIsClamped(t *testing.T) {
	tb := newTable(t, 3)
	worker := attachAs(t, tb, true)
	for _, max := range []uint64{4, 1 << 40, 1<<64 - 1} {
		tb.Header().Store(HMaxRow, max)
		for _, view := range []*Table{tb, worker} {
			if got := view.MaxRow(); got != 3 {
				t.Errorf("HMaxRow %d: MaxRow() = %d, want Len() 3", max, got)
			}
			view.Row(3).Store(FPid, 42)
			s := view.Snapshot() // panicked with index out of range
			if len(s.Workers) != 1 || s.Workers[0].Row != 3 {
				t.Errorf("HMaxRow %d: snapshot workers %+v", max, s.Workers)
			}
		}
	}
}

func TestOddFoldSeqDoesNotHangSnapshot(t *testing.T) {
	tb := newTable(t, 2)
	worker := attachAs(t, tb, true)
	tb.Header().Store(HFoldSeq, 1) // a fold that never ends
	tb.Header().Store(HMaxRow, 2)
	tb.Row(1).Store(FPid, 10)
	tb.Row(1).Store(CServed, 5)
	for _, view := range []*Table{tb, worker} {
		done := make(chan Snapshot, 1)
		go func() { done <- view.Snapshot() }()
		select {
		case s := <-done:
			if !s.Torn || s.Total.Served != 5 || len(s.Workers) != 1 {
				t.Errorf("snapshot torn=%v served=%d workers=%d, want a best-effort read marked torn", s.Torn, s.Total.Served, len(s.Workers))
			}
		case <-time.After(time.Second):
			t.Fatal("Snapshot spins on an odd HFoldSeq")
		}
	}
	tb.Header().Store(HFoldSeq, 2)
	if s := tb.Snapshot(); s.Torn {
		t.Error("a settled table read as torn")
	}
}

func TestForgedHeartbeatIsStale(t *testing.T) {
	now := Nanotime()
	for _, c := range []struct {
		name string
		hb   int64
		want time.Duration
	}{
		{"fresh", now - int64(time.Second), time.Second},
		{"now", now, 0},
		{"just written, after the reader's clock", now + 1000, 0},
		{"future", now + int64(2*time.Second), MaxHeartbeatAge},
		{"far future", 1<<63 - 1, MaxHeartbeatAge},
		{"never", 0, MaxHeartbeatAge},
		{"negative", -1 << 62, MaxHeartbeatAge},
	} {
		if got := HeartbeatAge(now, c.hb); got != c.want {
			t.Errorf("%s: HeartbeatAge = %v, want %v", c.name, got, c.want)
		}
	}
	// The way the master reads it: a row word, written by the worker.
	tb := newTable(t, 1)
	attachAs(t, tb, true).Row(1).Store(FHeartbeat, uint64(now+int64(time.Hour)))
	if age := HeartbeatAge(Nanotime(), int64(tb.Row(1).Load(FHeartbeat))); age <= time.Hour {
		t.Errorf("a heartbeat an hour in the future is %v old", age)
	}
}

func TestFoldAddsEveryCounterWord(t *testing.T) {
	tb := newTable(t, 2)
	h := tb.Header()
	h.Store(HMaxRow, 2)
	r := tb.Row(2)
	for f := range Field(RowWords) {
		r.Store(f, uint64(1000+f))
	}
	h.Store(CServed, 1) // an earlier fold
	tb.Fold(2)
	for f := range Field(RowWords) {
		if got := r.Load(f); got != 0 {
			t.Errorf("row word %d = %d after the fold, want 0", f, got)
		}
	}
	for f := Field(counterStart); f < counterEnd; f++ {
		want := uint64(1000 + f)
		if f == CServed {
			want++
		}
		if got := h.Load(f); got != want {
			t.Errorf("header word %d = %d, want %d", f, got, want)
		}
	}
	if h.Load(HMagic) != magic || h.Load(HRows) != 2 || h.Load(HFoldSeq) != 2 {
		t.Errorf("fold touched the header scalars: magic %#x rows %d seq %d", h.Load(HMagic), h.Load(HRows), h.Load(HFoldSeq))
	}
}

func TestAttachChecksTheLayout(t *testing.T) {
	for _, c := range []struct {
		name  string
		spoil func(*Table)
		want  string
	}{
		{"magic", func(tb *Table) { tb.Header().Store(HMagic, 1) }, "bad magic"},
		{"version", func(tb *Table) { tb.Header().Store(HVersion, 1) }, "layout version 1"},
		{"row words", func(tb *Table) { tb.Header().Store(HRowWords, 64) }, "rows of 64 words"},
		{"rows", func(tb *Table) { tb.Header().Store(HRows, 1<<40) }, "do not make its size"},
		{"no rows", func(tb *Table) { tb.Header().Store(HRows, 0) }, "do not make its size"},
		{"header", func(tb *Table) { tb.Header().Store(HHeaderBytes, 100) }, "header size 100"},
		{"size", func(tb *Table) { tb.File().Truncate(int64(headerBytes() + 3*rowBytes + 8)) }, "do not make its size"},
		{"tiny", func(tb *Table) { tb.File().Truncate(64) }, "smaller than its header"},
	} {
		t.Run(c.name, func(t *testing.T) {
			tb := newTable(t, 3)
			c.spoil(tb)
			f, err := os.Open(fmt.Sprintf("/proc/self/fd/%d", tb.File().Fd()))
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			view, err := AttachTable(f, false)
			if err == nil {
				view.Close()
				t.Fatal("attached a spoilt table")
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %q, want it to say %q", err, c.want)
			}
		})
	}
}

func TestAttachMarksTheFileCloseOnExec(t *testing.T) {
	tb := newTable(t, 1)
	fd, err := unix.Dup(int(tb.File().Fd())) // dup: no close-on-exec, as a worker inherits it
	if err != nil {
		t.Fatal(err)
	}
	view, err := AttachTable(os.NewFile(uintptr(fd), "status"), true)
	if err != nil {
		t.Fatal(err)
	}
	defer view.Close()
	flags, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0)
	if err != nil || flags&unix.FD_CLOEXEC == 0 {
		t.Fatalf("fd flags %#x, %v: want FD_CLOEXEC", flags, err)
	}
}
