package protocol

import (
	"encoding/binary"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The status table is one shared memory region (a memfd) of 64-bit words in
// two parts: the header, on page(s) of its own, then fixed-size worker rows.
//
// The header belongs to the master. It holds the server's identity and
// settings, the master's own counters and the counters folded in from
// workers that have exited, so that totals never go backwards. Workers map
// it read-only, so a stray write faults in the worker instead of corrupting
// the server's state. That mapping is not a wall against a hostile worker,
// which still holds a writable fd of the same memfd (it can pwrite, or map
// again): so every reader also bounds what it takes from the header
// (MaxRow is clamped, Snapshot's wait is bounded), and a corrupt header
// cannot crash or freeze the master or the other workers.
//
// Rows 1..N belong to worker processes: the master assigns a free row at
// spawn, the worker writes it, the master folds and frees it after reaping.
// Rows are mapped read-write in workers, so anything the master reads from
// a row is checked before it is trusted (see HeartbeatAge).
//
// Every word is read and written atomically; a whole-table read (Snapshot)
// is made consistent against Fold by a seqlock (HFoldSeq), which has a
// single writer: the master.
const (
	// Version is the layout's version, HVersion. Change it whenever a word
	// moves, so that `mcpgateway status` of another release refuses to read
	// garbage instead of printing it.
	Version = 2

	// HeaderWords is the header's size in words: one 4 KiB page. On a
	// machine with larger pages the rows start at the next page boundary
	// (HHeaderBytes), and the words in between are unused.
	HeaderWords = 512
	// RowWords is a row's size in words (1 KiB).
	RowWords = 128

	headerMinBytes = HeaderWords * 8
	rowBytes       = RowWords * 8
	tableName      = "mcpgateway-status"
	magic          = 0x6d63706777737431 // "mcpgwst1"
)

// Field is a word index inside the header or a row.
type Field int

// Header fields, words 0..31 (scalars). Words 11..31 are free.
const (
	HMagic Field = iota
	HVersion
	HRows          // number of worker rows
	HMasterPID     //
	HMasterStarted // Nanotime
	HFoldSeq       // odd while the master folds a row into the totals
	HWorkersTarget //
	HMaxRow        // highest row index ever handed out, so readers scan no further; read it through MaxRow, which clamps it
	HStopping      // 1 once the master is stopping the whole server, not replacing workers: a worker may then close idle connections at once
	HHeaderBytes   // byte offset of row 1: the header's size, whole pages
	HRowWords      // RowWords of the writer, checked at attach
)

// Header words 32..127 hold the counters of exited workers, each at the
// same index as in a row (CServed..., see counterStart), so that Fold is a
// word-by-word sum and covers every counter field, present and future.
//
// Master counters, words 128..191: worker starts and exits by reason.
// Words 139..191 are free for master counters; words 192..511 are free.
const (
	HStarts Field = 128 + iota
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
	HExitListener

	// HStopResets counts the connections that were in a listening socket's
	// queue when a stop shut it down (the kernel resets them): the few
	// that arrive between the workers' last accept and the shutdown.
	HStopResets Field = 160
)

// Worker fields (rows 1..N), words 0..31: gauges and identity, which Fold
// does not add up. Words 17..31 are free for gauges.
const (
	FPid Field = iota
	FSlot
	FGeneration
	FState
	FStarted   // Nanotime, written by the master at spawn
	FHeartbeat // Nanotime; judge it with HeartbeatAge
	FInFlight
	FOldestStart // Nanotime of the oldest in-flight request, 0 when idle
	FConns       // open connections
	FRSS         // bytes, sampled by the worker

	// The application's last database check (Info.ReportDatabase): when
	// (Nanotime, 0 for none yet) and how it went (DBCheckOK or
	// DBCheckFailed). Readiness, on the health port too, needs the latest
	// check of any ready worker to have passed.
	FDBCheckAt
	FDBCheck

	// Admission (worker/overload.go): the in-flight limit in force (the
	// fixed backpressure, or the adaptive one; 0: none), 1 while the worker
	// sheds by queueing delay, and the share of the last interval's
	// requests that waited past the target, in thousandths: the figure
	// shedding is decided on.
	FLimit
	FShedding
	FQueueOverTarget

	// Federation (rpc/federation.go): how many upstreams this worker's
	// circuit breakers hold open now.
	FUpstreamsOpen

	// MCP (rpc/mcp_stream.go): the SSE answers this worker is writing now.
	// They are not requests in flight: their handler has returned.
	FOpenStreams
)

// FDBCheck values.
const (
	DBCheckOK     = 1
	DBCheckFailed = 2
)

// Counter fields, words 32..127 of a row, and the totals of exited workers
// at the same words of the header. Every word in this range is a counter:
// Fold adds all of them, so a new counter needs only its constant here (and
// a line in Counters.add to be reported).
//
// Layout of the counter words:
//
//	32..56   in use: served .. the last duration bucket (+Inf)
//	57..59   refusals by reason (queue_delay, in_flight, connections); 60..63 reserved for more
//	64..95   the queue-delay histogram: sum, then QueueBuckets (up to 31 buckets)
//	96..100  rate limits: refused by the user's and the tool's limit, let
//	         through with no slot, Redis leases, failed leases; to 103 reserved
//	104..107 calls to upstream MCP servers: answered, failed, refused by an
//	         open circuit, refused by its in-flight limit; to 111 reserved
//	112..127 free
//
// CRefused stays the total of refusals; the per-reason words split it.
const (
	CServed Field = counterStart + iota
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

// Refusals by reason: each refusal adds to CRefused and to one of these.
const (
	CRefusedQueueDelay  Field = reservedFrom + iota // the request waited past the target (--max-queue-delay)
	CRefusedInFlight                                // the worker was at its in-flight limit (--backpressure)
	CRefusedConnections                             // a new connection met a full worker or a deep accept queue
)

// Rate limits (rpc/ratelimit.go), in the order of RateLimitCounts.
const (
	CRateLimitedUser Field = 96 + iota
	CRateLimitedTool
	CRateLimitFull
	CRateLeases
	CRateLeaseFailures
)

// Calls to upstream MCP servers (rpc/federation.go), in the order of
// Counters.Upstream.
const (
	CUpstreamAnswered Field = 104 + iota
	CUpstreamFailed
	CUpstreamCircuitOpen
	CUpstreamBusy
)

// The queue-delay histogram: the time from a request's first bytes reaching
// the host to its handler starting.
const (
	CQueueSum     Field = 64 // nanoseconds
	CQueueBucket0 Field = 65 // NumQueueBuckets follow
)

const (
	counterStart = 32       // first counter word, in rows and header
	counterEnd   = RowWords // one past the last counter word

	// reservedFrom is the first reserved counter word: the duration
	// histogram must end before it (checked by a test).
	reservedFrom = 57
)

// Buckets are the request-duration histogram's upper bounds in seconds; the
// last counter bucket is +Inf. At most 24 bounds fit before reservedFrom.
var Buckets = []float64{0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10}

// NumBuckets counts the histogram's counter words, +Inf included.
var NumBuckets = len(Buckets) + 1

// QueueBuckets are the queue-delay histogram's upper bounds in seconds; the
// last counter bucket is +Inf. At most 30 bounds fit before word 96.
var QueueBuckets = []float64{0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5}

// NumQueueBuckets counts the queue-delay histogram's words, +Inf included.
var NumQueueBuckets = len(QueueBuckets) + 1

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
	case ReasonListener:
		return HExitListener
	}
	return HExitCrashed
}

// ExitReasons lists the reasons in header order, for metrics.
var ExitReasons = []string{ReasonRecycled, ReasonLifetime, ReasonRSS, ReasonTimeout, ReasonCrashed, ReasonReload, ReasonScale, ReasonShutdown, ReasonBootFail, ReasonUpgrade, ReasonListener}

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

// MaxHeartbeatAge is what HeartbeatAge answers for a heartbeat that cannot
// be true.
const MaxHeartbeatAge = time.Duration(math.MaxInt64)

// HeartbeatAge is how long ago a worker last beat, for the master to judge
// it against the timeout. now and hb are Nanotime values; hb is read from
// the worker's row, which the worker (or anything it runs) can write. A
// heartbeat from the future, or none at all (0 or negative), is stale:
// MaxHeartbeatAge. Without this a forged future value made the age negative
// and the worker was never timed out.
func HeartbeatAge(now, hb int64) time.Duration {
	switch {
	case hb <= 0 || hb-now > int64(heartbeatSkew):
		return MaxHeartbeatAge
	case hb > now:
		return 0 // written after the reader took its clock: fresh
	}
	return time.Duration(now - hb)
}

// heartbeatSkew is how far in the future a heartbeat may be and still count
// as fresh: a worker may beat between the master reading the clock and
// reading the row. Further than that, the row is corrupt.
const heartbeatSkew = time.Second

// Row is one worker row, living in shared memory: use its methods, which
// are atomic, never plain reads or writes.
type Row [RowWords]uint64

func (r *Row) Load(f Field) uint64          { return atomic.LoadUint64(&r[f]) }
func (r *Row) Store(f Field, v uint64)      { atomic.StoreUint64(&r[f], v) }
func (r *Row) Add(f Field, d uint64) uint64 { return atomic.AddUint64(&r[f], d) }
func (r *Row) Sub(f Field, d uint64) uint64 { return atomic.AddUint64(&r[f], ^(d - 1)) }
func (r *Row) CompareAndSwap(f Field, old, new uint64) bool {
	return atomic.CompareAndSwapUint64(&r[f], old, new)
}

// Header is the table's header page, in shared memory, with the same atomic
// methods as a Row. In a worker it is mapped read-only: a store faults.
type Header [HeaderWords]uint64

func (h *Header) Load(f Field) uint64          { return atomic.LoadUint64(&h[f]) }
func (h *Header) Store(f Field, v uint64)      { atomic.StoreUint64(&h[f], v) }
func (h *Header) Add(f Field, d uint64) uint64 { return atomic.AddUint64(&h[f], d) }
func (h *Header) Sub(f Field, d uint64) uint64 { return atomic.AddUint64(&h[f], ^(d - 1)) }
func (h *Header) CompareAndSwap(f Field, old, new uint64) bool {
	return atomic.CompareAndSwapUint64(&h[f], old, new)
}

// Table is the mapped status table.
type Table struct {
	file    *os.File
	hdrMem  []byte // the header mapping
	rowsMem []byte // the rows mapping
	header  *Header
	rows    []Row // rows[0] is worker row 1
}

// headerBytes is the header's size for a new table: one page, or more if a
// page is smaller than the header, so that the rows can be mapped at their
// own offset (mmap offsets are whole pages).
func headerBytes() int {
	page := os.Getpagesize()
	return (headerMinBytes + page - 1) / page * page
}

// CreateTable makes a table with room for n worker rows, for the master,
// which maps all of it read-write.
func CreateTable(n int) (*Table, error) {
	if n < 1 {
		return nil, fmt.Errorf("create status table: %d rows, want at least 1", n)
	}
	fd, err := unix.MemfdCreate(tableName, unix.MFD_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("create status table: %w", err)
	}
	f := os.NewFile(uintptr(fd), "memfd:"+tableName)
	hb := headerBytes()
	if err := f.Truncate(int64(hb + n*rowBytes)); err != nil {
		f.Close()
		return nil, fmt.Errorf("size status table: %w", err)
	}
	rw := unix.PROT_READ | unix.PROT_WRITE
	t, err := mapTable(f, hb, n, rw, rw)
	if err != nil {
		f.Close()
		return nil, err
	}
	h := t.Header()
	h.Store(HVersion, Version)
	h.Store(HRows, uint64(n))
	h.Store(HHeaderBytes, uint64(hb))
	h.Store(HRowWords, RowWords)
	h.Store(HMasterPID, uint64(os.Getpid()))
	h.Store(HMagic, magic) // last: a reader that sees it sees the layout words too
	return t, nil
}

// AttachTable maps a table from an inherited or opened file. The header is
// always mapped read-only; writable maps the rows read-write, for a worker.
// The layout is checked against this binary's (magic, version, sizes), so a
// table of another release is refused with a clear error. It marks the file
// close-on-exec, since nothing a process runs should inherit it. On success
// the Table owns f (Close closes it); on error the caller still does.
func AttachTable(f *os.File, writable bool) (*Table, error) {
	fd := int(f.Fd())
	unix.CloseOnExec(fd)
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("stat status table: %w", err)
	}
	size := st.Size()
	if size < headerMinBytes {
		return nil, fmt.Errorf("status table: size %d is smaller than its header (%d): not a mcpgateway status table", size, headerMinBytes)
	}
	hb, n, err := readLayout(fd, size)
	if err != nil {
		return nil, err
	}
	prot := unix.PROT_READ
	if writable {
		prot |= unix.PROT_WRITE
	}
	// Only the sizes checked here count from now on (Len), so a later
	// change of HRows or HMaxRow cannot make a reader overrun.
	return mapTable(f, hb, n, unix.PROT_READ, prot)
}

// readLayout checks the header's layout words, read with pread so that
// nothing is mapped before the sizes are known to be sane.
func readLayout(fd int, size int64) (headerBytes, rows int, err error) {
	buf := make([]byte, 8*(int(HRowWords)+1))
	if _, err := unix.Pread(fd, buf, 0); err != nil {
		return 0, 0, fmt.Errorf("read status table header: %w", err)
	}
	word := func(f Field) uint64 { return binary.NativeEndian.Uint64(buf[8*int(f):]) }
	if word(HMagic) != magic {
		return 0, 0, fmt.Errorf("status table: bad magic %#x: not a mcpgateway status table", word(HMagic))
	}
	if v := word(HVersion); v != Version {
		return 0, 0, fmt.Errorf("status table: layout version %d, this binary reads version %d: the master runs another release of mcpgateway", v, Version)
	}
	if w := word(HRowWords); w != RowWords {
		return 0, 0, fmt.Errorf("status table: rows of %d words, want %d", w, RowWords)
	}
	page := uint64(os.Getpagesize())
	hb, n := word(HHeaderBytes), word(HRows)
	if hb < headerMinBytes || hb%page != 0 || hb > uint64(size) {
		return 0, 0, fmt.Errorf("status table: header size %d is not whole pages of at least %d bytes within the table's %d", hb, headerMinBytes, size)
	}
	if n < 1 || n > (uint64(size)-hb)/rowBytes || hb+n*rowBytes != uint64(size) {
		return 0, 0, fmt.Errorf("status table: %d rows of %d bytes after a %d-byte header do not make its size, %d", n, rowBytes, hb, size)
	}
	return int(hb), int(n), nil
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
		t, err := AttachTable(f, false)
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("master %d: %w", pid, err)
		}
		return t, nil
	}
	return nil, fmt.Errorf("master %d has no status table (is it a mcpgateway master?)", pid)
}

// mapTable maps the header and the rows as two mappings of the file, so
// that the header can be read-only while the rows are writable.
func mapTable(f *os.File, hb, n, hdrProt, rowsProt int) (*Table, error) {
	hdr, err := unix.Mmap(int(f.Fd()), 0, headerMinBytes, hdrProt, unix.MAP_SHARED)
	if err != nil {
		return nil, fmt.Errorf("map status table header: %w", err)
	}
	rows, err := unix.Mmap(int(f.Fd()), int64(hb), n*rowBytes, rowsProt, unix.MAP_SHARED)
	if err != nil {
		_ = unix.Munmap(hdr)
		return nil, fmt.Errorf("map status table rows: %w", err)
	}
	return &Table{
		file:    f,
		hdrMem:  hdr,
		rowsMem: rows,
		header:  (*Header)(unsafe.Pointer(&hdr[0])),
		rows:    unsafe.Slice((*Row)(unsafe.Pointer(&rows[0])), n),
	}, nil
}

// File is the memfd, to hand to workers.
func (t *Table) File() *os.File { return t.file }

// Header is the header page. Only the master may write it: in any other
// process the mapping is read-only and a store faults.
func (t *Table) Header() *Header { return t.header }

// Len is the number of worker rows.
func (t *Table) Len() int { return len(t.rows) }

// Row returns worker row i, 1-based; i outside 1..Len() panics.
func (t *Table) Row(i int) *Row { return &t.rows[i-1] }

// MaxRow is the highest worker row in use so far, clamped to Len(): the
// header word is only trusted as far as it cannot make a reader overrun.
func (t *Table) MaxRow() int {
	m := t.header.Load(HMaxRow)
	if m > uint64(len(t.rows)) {
		return len(t.rows)
	}
	return int(m)
}

// Close unmaps the table and closes its file.
func (t *Table) Close() error {
	if t.hdrMem == nil {
		return nil
	}
	err := unix.Munmap(t.hdrMem)
	if err2 := unix.Munmap(t.rowsMem); err == nil {
		err = err2
	}
	t.hdrMem, t.rowsMem, t.header, t.rows = nil, nil, nil, nil
	if err2 := t.file.Close(); err == nil {
		err = err2
	}
	if err != nil {
		return fmt.Errorf("close status table: %w", err)
	}
	return nil
}

// Fold adds the counters of an exited worker's row to the header's totals
// and frees the row. Readers that take a Snapshot never see the counters
// twice. Every word of the counter range is added, so a counter field added
// later is folded without a change here. Master only.
func (t *Table) Fold(i int) {
	h, r := t.Header(), t.Row(i)
	h.Add(HFoldSeq, 1)
	for f := Field(counterStart); f < counterEnd; f++ {
		h.Add(f, r.Load(f))
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

	// RefusedBy splits Refused: queue_delay, in_flight, connections.
	RefusedBy    [3]uint64
	QueueSum     uint64   // ns
	QueueBuckets []uint64 // per bucket, not cumulative; last is +Inf

	// RateLimits: refused by the user's limit, by the tool's, let through
	// with no slot in the table, Redis leases, failed leases.
	RateLimits [5]uint64

	// Upstream: calls to upstream MCP servers answered, failed, refused at
	// once by an open circuit, and by the upstream's in-flight limit.
	Upstream [4]uint64
}

// RefusalReasons names Counters.RefusedBy, in order, for metrics.
var RefusalReasons = []string{"queue_delay", "in_flight", "connections"}

// words is a header or a row: the counters sit at the same indices in both.
type words interface{ Load(Field) uint64 }

func (c *Counters) add(r words) {
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
	for i := range c.RefusedBy {
		c.RefusedBy[i] += r.Load(CRefusedQueueDelay + Field(i))
	}
	c.QueueSum += r.Load(CQueueSum)
	if c.QueueBuckets == nil {
		c.QueueBuckets = make([]uint64, NumQueueBuckets)
	}
	for i := range c.QueueBuckets {
		c.QueueBuckets[i] += r.Load(CQueueBucket0 + Field(i))
	}
	for i := range c.RateLimits {
		c.RateLimits[i] += r.Load(CRateLimitedUser + Field(i))
	}
	for i := range c.Upstream {
		c.Upstream[i] += r.Load(CUpstreamAnswered + Field(i))
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

	DBCheckAt       int64  // Nanotime of the last database check; 0: none
	DBCheck         uint64 // DBCheckOK, DBCheckFailed or 0
	Limit           uint64 // in-flight limit in force; 0: none
	Shedding        bool   // shedding by queueing delay
	QueueOverTarget uint64 // thousandths of the last interval's requests that waited past the target
	UpstreamsOpen   uint64 // upstreams whose circuit this worker holds open
	OpenStreams     uint64 // SSE answers this worker is writing
}

// Snapshot is a consistent view of the whole server.
type Snapshot struct {
	MasterPID     int
	MasterStarted int64
	Target        int
	Starts        uint64
	StopResets    uint64 // queued connections a stop's shutdown reset (HStopResets)
	Exits         map[string]uint64
	Retired       Counters // workers that have exited
	Total         Counters // retired + live
	Workers       []WorkerStatus

	// Torn is true when the fold sequence never settled within the
	// snapshot's patience: the figures are a best-effort read, and a
	// worker folded meanwhile may be counted twice or not at all. It
	// happens only if the master stalls mid-fold, or HFoldSeq is corrupt.
	Torn bool
}

// A fold takes microseconds, so a reader that still sees one in progress
// after this long is looking at a stalled master or a corrupt sequence, and
// settles for what it read rather than freeze /metrics or the master.
const (
	snapshotTries    = 1000
	snapshotPatience = 10 * time.Millisecond
)

// Snapshot reads the table. It retries while the master is folding a row,
// within a bound (see Torn).
func (t *Table) Snapshot() Snapshot {
	h := t.Header()
	deadline := time.Now().Add(snapshotPatience)
	for try := 1; ; try++ {
		seq := h.Load(HFoldSeq)
		s := t.read()
		if seq%2 == 0 && h.Load(HFoldSeq) == seq {
			return s
		}
		if try >= snapshotTries || time.Now().After(deadline) {
			s.Torn = true
			return s
		}
		runtime.Gosched() // let the folding master run, if it shares our CPU
	}
}

// read is one pass over the table, consistent only if no fold ran meanwhile.
func (t *Table) read() Snapshot {
	h := t.Header()
	s := Snapshot{
		MasterPID:     int(h.Load(HMasterPID)),
		MasterStarted: int64(h.Load(HMasterStarted)),
		Target:        int(h.Load(HWorkersTarget)),
		Starts:        h.Load(HStarts),
		StopResets:    h.Load(HStopResets),
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
			DBCheckAt:   int64(r.Load(FDBCheckAt)), DBCheck: r.Load(FDBCheck),
			Limit: r.Load(FLimit), Shedding: r.Load(FShedding) == 1, QueueOverTarget: r.Load(FQueueOverTarget),
			UpstreamsOpen: r.Load(FUpstreamsOpen), OpenStreams: r.Load(FOpenStreams),
		}
		w.Counters.add(r)
		s.Total.add(r)
		s.Workers = append(s.Workers, w)
	}
	return s
}

var (
	bucketNanos      = toNanos(Buckets)
	queueBucketNanos = toNanos(QueueBuckets)
)

func toNanos(seconds []float64) []int64 {
	ns := make([]int64, len(seconds))
	for i, b := range seconds {
		ns[i] = int64(b * 1e9)
	}
	return ns
}

// bucketOf is the index of the first bound ns is within; past them all,
// the +Inf bucket after the last.
func bucketOf(ns int64, bounds []int64) int {
	for i, b := range bounds {
		if ns <= b {
			return i
		}
	}
	return len(bounds)
}

// BucketIndex is the duration histogram bucket of a duration in nanoseconds.
func BucketIndex(ns int64) int { return bucketOf(ns, bucketNanos) }

// QueueBucketIndex is the queue-delay histogram bucket of a delay in
// nanoseconds.
func QueueBucketIndex(ns int64) int { return bucketOf(ns, queueBucketNanos) }
