package protocol

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The status table is one shared memory region (a memfd) of fixed-size rows
// of 64-bit words. Row 0 is the header, which also holds the counters folded
// in from workers that have exited, so totals never go backwards. Rows 1..N
// belong to worker processes: the master assigns a free row at spawn, the
// worker writes it, the master folds and frees it after reaping.
const (
	RowWords  = 64
	rowBytes  = RowWords * 8
	tableName = "mcpgateway-status"
	magic     = 0x6d63706777737431 // "mcpgwst1"
)

// Field is a word index inside a row.
type Field int

// Header fields (row 0 only).
const (
	HMagic Field = iota
	HVersion
	HRows
	HMasterPID
	HMasterStarted // Nanotime
	HFoldSeq       // odd while the master folds a row into the totals
	HWorkersTarget
	HMaxRow   // highest row index ever handed out, so readers scan no further
	HStopping // 1 once the master is stopping the whole server, not replacing workers
)

// Worker fields (rows 1..N).
const (
	FPid Field = iota
	FSlot
	FGeneration
	FState
	FStarted   // Nanotime
	FHeartbeat // Nanotime
	FInFlight
	FOldestStart // Nanotime of the oldest in-flight request, 0 when idle
	FConns       // open connections
	FRSS         // bytes, sampled by the worker
)

// Counter fields, in worker rows and (as totals of exited workers) in row 0.
const (
	CServed Field = 16 + iota
	CRefused
	CTimeouts
	CPanics
	C1xx
	C2xx
	C3xx
	C4xx
	C5xx
	CDurationSum // nanoseconds
	CBucket0     // first histogram bucket; NumBuckets follow
)

// Buckets are the request-duration histogram's upper bounds in seconds; the
// last counter bucket is +Inf.
var Buckets = []float64{0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10}

// NumBuckets counts the histogram's counter words, +Inf included.
var NumBuckets = len(Buckets) + 1

// counterEnd is one past the last counter field.
var counterEnd = int(CBucket0) + NumBuckets

// Master counters in row 0, after the counters: worker starts and exits by reason.
const (
	HStarts Field = 48 + iota
	HExitRecycled
	HExitLifetime
	HExitRSS
	HExitTimeout
	HExitCrashed
	HExitReload
	HExitScale
	HExitShutdown
	HExitBoot
	HExitUpgrade
)

// ExitField maps an exit reason to its header counter.
func ExitField(reason string) Field {
	switch reason {
	case ReasonRecycled:
		return HExitRecycled
	case ReasonLifetime:
		return HExitLifetime
	case ReasonRSS:
		return HExitRSS
	case ReasonTimeout:
		return HExitTimeout
	case ReasonReload:
		return HExitReload
	case ReasonScale:
		return HExitScale
	case ReasonShutdown:
		return HExitShutdown
	case ReasonBootFail:
		return HExitBoot
	case ReasonUpgrade:
		return HExitUpgrade
	}
	return HExitCrashed
}

// ExitReasons lists the reasons in header order, for metrics.
var ExitReasons = []string{ReasonRecycled, ReasonLifetime, ReasonRSS, ReasonTimeout, ReasonCrashed, ReasonReload, ReasonScale, ReasonShutdown, ReasonBootFail, ReasonUpgrade}

// Worker states.
const (
	StateFree     = 0
	StateBooting  = 1
	StateReady    = 2
	StateRetiring = 3 // still serving; a replacement was asked for
	StateDraining = 4 // stopped accepting, finishing in-flight requests
)

// StateName names a state for people.
func StateName(s uint64) string {
	switch s {
	case StateBooting:
		return "booting"
	case StateReady:
		return "ready"
	case StateRetiring:
		return "retiring"
	case StateDraining:
		return "draining"
	}
	return "free"
}

// Row is one row of the table, living in shared memory: use its methods,
// which are atomic, never plain reads or writes.
type Row [RowWords]uint64

func (r *Row) Load(f Field) uint64          { return atomic.LoadUint64(&r[f]) }
func (r *Row) Store(f Field, v uint64)      { atomic.StoreUint64(&r[f], v) }
func (r *Row) Add(f Field, d uint64) uint64 { return atomic.AddUint64(&r[f], d) }
func (r *Row) Sub(f Field, d uint64) uint64 { return atomic.AddUint64(&r[f], ^(d - 1)) }
func (r *Row) CompareAndSwap(f Field, old, new uint64) bool {
	return atomic.CompareAndSwapUint64(&r[f], old, new)
}

// Table is the mapped status table.
type Table struct {
	file *os.File
	mem  []byte
	rows []Row // rows[0] is the header
}

// CreateTable makes a table with room for n worker rows, for the master.
func CreateTable(n int) (*Table, error) {
	fd, err := unix.MemfdCreate(tableName, unix.MFD_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("create status table: %w", err)
	}
	f := os.NewFile(uintptr(fd), "memfd:"+tableName)
	if err := f.Truncate(int64((n + 1) * rowBytes)); err != nil {
		f.Close()
		return nil, fmt.Errorf("size status table: %w", err)
	}
	t, err := mapTable(f, true)
	if err != nil {
		f.Close()
		return nil, err
	}
	h := t.Header()
	h.Store(HVersion, 1)
	h.Store(HRows, uint64(n))
	h.Store(HMasterPID, uint64(os.Getpid()))
	h.Store(HMagic, magic)
	return t, nil
}

// AttachTable maps a table from an inherited or opened file.
func AttachTable(f *os.File, writable bool) (*Table, error) {
	t, err := mapTable(f, writable)
	if err != nil {
		return nil, err
	}
	if t.Header().Load(HMagic) != magic {
		t.Close()
		return nil, errors.New("status table: bad magic, not a mcpgateway status table")
	}
	return t, nil
}

// OpenMasterTable finds and maps, read-only, the status table of a running
// master (for `mcpgateway status`), through /proc/PID/fd.
func OpenMasterTable(pid int) (*Table, error) {
	dir := filepath.Join("/proc", strconv.Itoa(pid), "fd")
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("read fds of master %d: %w", pid, err)
	}
	for _, e := range entries {
		target, err := os.Readlink(filepath.Join(dir, e.Name()))
		if err != nil || !strings.Contains(target, "memfd:"+tableName) {
			continue
		}
		f, err := os.Open(filepath.Join(dir, e.Name()))
		if err != nil {
			return nil, fmt.Errorf("open status table of master %d: %w", pid, err)
		}
		return AttachTable(f, false)
	}
	return nil, fmt.Errorf("master %d has no status table (is it a mcpgateway master?)", pid)
}

func mapTable(f *os.File, writable bool) (*Table, error) {
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("stat status table: %w", err)
	}
	size := int(st.Size())
	if size < 2*rowBytes || size%rowBytes != 0 {
		return nil, fmt.Errorf("status table: size %d is not a whole number of rows", size)
	}
	prot := unix.PROT_READ
	if writable {
		prot |= unix.PROT_WRITE
	}
	mem, err := unix.Mmap(int(f.Fd()), 0, size, prot, unix.MAP_SHARED)
	if err != nil {
		return nil, fmt.Errorf("map status table: %w", err)
	}
	rows := unsafe.Slice((*Row)(unsafe.Pointer(&mem[0])), size/rowBytes)
	return &Table{file: f, mem: mem, rows: rows}, nil
}

// File is the memfd, to hand to workers.
func (t *Table) File() *os.File { return t.file }

// Header is row 0.
func (t *Table) Header() *Row { return &t.rows[0] }

// Len is the number of worker rows.
func (t *Table) Len() int { return len(t.rows) - 1 }

// Row returns worker row i, 1-based.
func (t *Table) Row(i int) *Row { return &t.rows[i] }

// Close unmaps the table.
func (t *Table) Close() error {
	if t.mem == nil {
		return nil
	}
	err := unix.Munmap(t.mem)
	t.mem, t.rows = nil, nil
	t.file.Close()
	return err
}

// Fold adds the counters of an exited worker's row to the totals and frees
// the row. Readers that take a Snapshot never see the counters twice.
func (t *Table) Fold(i int) {
	h, r := t.Header(), t.Row(i)
	h.Add(HFoldSeq, 1)
	for f := int(CServed); f < counterEnd; f++ {
		h.Add(Field(f), r.Load(Field(f)))
	}
	for f := range r {
		r.Store(Field(f), 0)
	}
	h.Add(HFoldSeq, 1)
}

// Counters are the request counters of one worker or of the whole server.
type Counters struct {
	Served, Refused, Timeouts, Panics uint64
	Status                            [5]uint64 // 1xx..5xx
	DurationSum                       uint64    // ns
	Buckets                           []uint64  // per bucket, not cumulative; last is +Inf
}

func (c *Counters) add(r *Row) {
	c.Served += r.Load(CServed)
	c.Refused += r.Load(CRefused)
	c.Timeouts += r.Load(CTimeouts)
	c.Panics += r.Load(CPanics)
	for i := range c.Status {
		c.Status[i] += r.Load(C1xx + Field(i))
	}
	c.DurationSum += r.Load(CDurationSum)
	if c.Buckets == nil {
		c.Buckets = make([]uint64, NumBuckets)
	}
	for i := range c.Buckets {
		c.Buckets[i] += r.Load(CBucket0 + Field(i))
	}
}

// WorkerStatus is one live worker as a snapshot sees it.
type WorkerStatus struct {
	Row, Slot, Generation, Pid int
	State                      uint64
	Started, Heartbeat         int64 // Nanotime
	InFlight, Conns, RSS       uint64
	OldestStart                int64
	Counters                   Counters
}

// Snapshot is a consistent view of the whole server.
type Snapshot struct {
	MasterPID     int
	MasterStarted int64
	Target        int
	Starts        uint64
	Exits         map[string]uint64
	Retired       Counters // workers that have exited
	Total         Counters // retired + live
	Workers       []WorkerStatus
}

// Snapshot reads the table; it retries while the master is folding a row.
func (t *Table) Snapshot() Snapshot {
	h := t.Header()
	for {
		seq := h.Load(HFoldSeq)
		if seq%2 == 1 {
			continue
		}
		s := Snapshot{
			MasterPID:     int(h.Load(HMasterPID)),
			MasterStarted: int64(h.Load(HMasterStarted)),
			Target:        int(h.Load(HWorkersTarget)),
			Starts:        h.Load(HStarts),
			Exits:         make(map[string]uint64, len(ExitReasons)),
		}
		for _, reason := range ExitReasons {
			s.Exits[reason] = h.Load(ExitField(reason))
		}
		s.Retired.add(h)
		s.Total.add(h)
		for i := 1; i <= t.MaxRow(); i++ {
			r := t.Row(i)
			pid := r.Load(FPid)
			if pid == 0 {
				continue
			}
			w := WorkerStatus{
				Row: i, Slot: int(r.Load(FSlot)), Generation: int(r.Load(FGeneration)), Pid: int(pid),
				State: r.Load(FState), Started: int64(r.Load(FStarted)), Heartbeat: int64(r.Load(FHeartbeat)),
				InFlight: r.Load(FInFlight), Conns: r.Load(FConns), RSS: r.Load(FRSS),
				OldestStart: int64(r.Load(FOldestStart)),
			}
			w.Counters.add(r)
			s.Total.add(r)
			s.Workers = append(s.Workers, w)
		}
		if h.Load(HFoldSeq) == seq {
			return s
		}
	}
}

var bucketNanos = func() []int64 {
	ns := make([]int64, len(Buckets))
	for i, b := range Buckets {
		ns[i] = int64(b * 1e9)
	}
	return ns
}()

// BucketIndex is the histogram bucket of a duration in nanoseconds.
func BucketIndex(ns int64) int {
	for i, b := range bucketNanos {
		if ns <= b {
			return i
		}
	}
	return len(bucketNanos)
}

// MaxRow is the highest worker row in use so far.
func (t *Table) MaxRow() int { return int(t.Header().Load(HMaxRow)) }
