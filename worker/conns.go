package worker

import (
	"bufio"
	"bytes"
	"cmp"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mcpgateway/mcpgateway/supervisor/protocol"
	"github.com/valyala/fasthttp"
	"go.uber.org/zap"
)

// trackedConn remembers when its connection last finished a request, so a
// draining worker can tell quiet connections from busy ones, and when its
// current write began, so that a client that takes nothing for
// writeTimeout loses the connection (connSet.closeStalledWriters).
type trackedConn struct {
	net.Conn
	idleSince atomic.Int64 // Nanotime when it became idle; 0 while a request is active

	// writeTimeout is how long one write may wait for the client to take
	// bytes (0: not bounded here).
	writeTimeout time.Duration
	writeSince   atomic.Int64 // Nanotime when the current write began; 0: none
	userDeadline atomic.Bool  // a write deadline of the conn's user is set
	abandoned    atomic.Bool  // its request was answered 504 by the watchdog

	stamps *stampedReader // reads with the kernel's receive timestamps; nil: plain reads
	kept   atomic.Bool    // idle after a request: a keep-alive connection, not a new one whose request is still on its way
	// streamed: its last answer is a stream (account); a draining worker
	// closes the connection when it ends (connState).
	streamed atomic.Bool
}

// connClaimed in idleSince marks a quiet connection that a drain or the
// connection cap is closing. The close races with a request that may just
// have arrived: fasthttp has read its first bytes and will run it, though
// its answer can no longer be written. claim and the StateActive hook
// decide who won, and handle drops a request that lost: one processed
// and then lost with its connection would be a side effect the client
// never hears of (and may retry).
const connClaimed = -1

// claim marks a quiet connection for closing; false if a request made it
// active first.
func (c *trackedConn) claim() bool {
	t := c.idleSince.Load()
	return t > 0 && c.idleSince.CompareAndSwap(t, connClaimed)
}

// claimedForClose is true for a connection whose request arrived as it was
// being closed (see connClaimed).
func claimedForClose(nc net.Conn) bool {
	c, ok := nc.(*trackedConn)
	return ok && c.idleSince.Load() == connClaimed
}

// Read reads through recvmsg when the connection has receive timestamps.
func (c *trackedConn) Read(p []byte) (int, error) {
	if c.stamps == nil {
		return c.Conn.Read(p)
	}
	return c.stamps.read(c.Conn, p)
}

// SetWriteDeadline passes a deadline on, except a zero one on a conn that
// has none: handle sets one per request to make fasthttp flush each answer
// (see handle), and it must cost nothing. The bound on writes is not a
// deadline: a deadline per write is a timer update per answer, where the
// sweeper reads one word per connection a second.
func (c *trackedConn) SetWriteDeadline(t time.Time) error {
	if t.IsZero() && !c.userDeadline.Load() {
		return nil
	}
	c.userDeadline.Store(!t.IsZero())
	return c.Conn.SetWriteDeadline(t)
}

func (c *trackedConn) SetDeadline(t time.Time) error {
	c.userDeadline.Store(!t.IsZero())
	return c.Conn.SetDeadline(t)
}

// writeChunk is the most one write hands the kernel before its clock
// restarts. net.Conn.Write loops until all of p is written, so without
// chunks a large body would have one writeTimeout for its whole transfer: a
// slow but reading client would be cut. A client must take 64 KiB per
// writeTimeout, about 1 KiB/s at 60 s.
const writeChunk = 64 << 10

// Write records when each chunk's write began: the bound is on progress,
// not on the whole response (fasthttp's WriteTimeout is one deadline for a
// whole response, which would cut server-sent event streams and large
// bodies).
func (c *trackedConn) Write(p []byte) (int, error) {
	if c.writeTimeout <= 0 {
		return c.Conn.Write(p)
	}
	written := 0
	defer c.writeSince.Store(0)
	for len(p) > 0 {
		chunk := p[:min(len(p), writeChunk)]
		c.writeSince.Store(protocol.Nanotime())
		n, err := c.Conn.Write(chunk)
		written += n
		if err != nil {
			return written, err
		}
		p = p[n:]
	}
	return written, nil
}

// closeRaw closes the TCP connection under any TLS layer: a writer stuck
// in tls.Conn.Write holds the lock that tls.Conn.Close needs for its alert.
func (c *trackedConn) closeRaw() {
	conn := c.Conn
	if tc, ok := conn.(*tls.Conn); ok {
		conn = tc.NetConn()
	}
	if inner, ok := conn.(*trackedConn); ok {
		conn = inner.Conn
	}
	_ = conn.Close()
}

// connSet is every open connection of the worker.
type connSet struct {
	mu        sync.Mutex
	conns     map[*trackedConn]struct{}
	count     atomic.Int64
	abandoned atomic.Int64 // open connections whose request the watchdog answered
	row       *protocol.Row
}

// busy is how many connections a drain waits for: the open ones, less
// those whose handler is stuck past the timeout (answered, closed, and
// perhaps never given back by their goroutine).
func (s *connSet) busy() int64 { return s.count.Load() - s.abandoned.Load() }

// abandon marks the connection of a request the watchdog answered.
func (s *connSet) abandon(c net.Conn) {
	tc, ok := c.(*trackedConn)
	if !ok {
		if t, isTLS := c.(*tls.Conn); isTLS {
			tc, ok = t.NetConn().(*trackedConn)
		}
	}
	s.mu.Lock()
	_, present := s.conns[tc]
	s.mu.Unlock()
	if ok && present && tc.abandoned.CompareAndSwap(false, true) {
		s.abandoned.Add(1)
	}
}

// closeStalledWriters closes every connection whose current write has
// waited longer than its writeTimeout: a client that reads nothing must not
// hold a connection, a goroutine and a drain for ever.
func (s *connSet) closeStalledWriters(now int64) int {
	s.mu.Lock()
	var stalled []*trackedConn
	for c := range s.conns {
		if since := c.writeSince.Load(); since != 0 && c.writeTimeout > 0 && now-since > int64(c.writeTimeout) {
			stalled = append(stalled, c)
		}
	}
	s.mu.Unlock()
	for _, c := range stalled {
		c.closeRaw()
	}
	return len(stalled)
}

func (s *connSet) add(c *trackedConn) {
	c.idleSince.Store(protocol.Nanotime())
	s.mu.Lock()
	if s.conns == nil {
		s.conns = make(map[*trackedConn]struct{})
	}
	s.conns[c] = struct{}{}
	s.mu.Unlock()
	n := s.count.Add(1)
	if s.row != nil {
		s.row.Store(protocol.FConns, uint64(n))
	}
}

func (s *connSet) open() int64 { return s.count.Load() }

// state is fasthttp's ConnState hook: per request it only stores a time.
func (s *connSet) state(nc net.Conn, st fasthttp.ConnState) {
	c, ok := nc.(*trackedConn)
	if !ok {
		return
	}
	switch st {
	case fasthttp.StateActive:
		// A request's first bytes arrived; unless a drain claimed the
		// connection first (closeIdle), which leaves its mark for handle.
		for {
			old := c.idleSince.Load()
			if old == connClaimed || c.idleSince.CompareAndSwap(old, 0) {
				break
			}
		}
	case fasthttp.StateIdle:
		c.idleSince.Store(protocol.Nanotime())
		c.kept.Store(true)
	case fasthttp.StateClosed, fasthttp.StateHijacked:
		s.mu.Lock()
		_, present := s.conns[c]
		delete(s.conns, c)
		s.mu.Unlock()
		if present {
			if c.abandoned.Load() {
				s.abandoned.Add(-1)
			}
			n := s.count.Add(-1)
			if s.row != nil {
				s.row.Store(protocol.FConns, uint64(n))
			}
		}
	}
}

// drainIdle is how many idle connections a worker at its cap closes to
// make room (nginx closes up to 32).
const drainIdle = 32

// closeOldestIdle closes up to n of the keep-alive connections idle the
// longest (never a new one, whose first request may be on its way), and
// says how many it closed.
func (s *connSet) closeOldestIdle(n int) int {
	s.mu.Lock()
	var idle []*trackedConn
	for c := range s.conns {
		if c.idleSince.Load() > 0 && c.kept.Load() {
			idle = append(idle, c)
		}
	}
	s.mu.Unlock()
	if len(idle) > n {
		slices.SortFunc(idle, func(a, b *trackedConn) int { return cmp.Compare(a.idleSince.Load(), b.idleSince.Load()) })
		idle = idle[:n]
	}
	closed := 0
	for _, c := range idle {
		if c.claim() {
			c.Close()
			closed++
		}
	}
	return closed
}

// closeIdle closes connections idle since before the given Nanotime.
func (s *connSet) closeIdle(before int64) {
	s.mu.Lock()
	var quiet []*trackedConn
	for c := range s.conns {
		if t := c.idleSince.Load(); t > 0 && t < before {
			quiet = append(quiet, c)
		}
	}
	s.mu.Unlock()
	for _, c := range quiet {
		if c.claim() {
			c.Close()
		}
	}
}

// gatedListener accepts only while this worker is under its connection cap
// and, in the shared-socket layout, not above its fair share of the
// server's connections. There every worker waits on the same socket and the
// kernel wakes them all, so a worker that holds back leaves the connection
// to one with fewer. With SO_REUSEPORT the kernel has already chosen this
// worker's socket: holding back would only delay the connection, so only the
// cap applies.
type gatedListener struct {
	net.Listener
	w *worker
}

// maxAcceptWait bounds how long a worker holds back: balance is a
// preference, not a reason to leave a connection waiting.
const maxAcceptWait = 20 * time.Millisecond

// Accept also rides out temporary errors (EMFILE, ENFILE, ECONNABORTED)
// itself: fasthttp takes any error that is not a timeout as the end of its
// Serve, which would leave the worker with a dead listener.
func (l *gatedListener) Accept() (net.Conn, error) {
	if !l.w.opts.ReusePort {
		for waited := time.Duration(0); waited < maxAcceptWait && !l.w.mayAccept(); waited += time.Millisecond {
			time.Sleep(time.Millisecond)
		}
	}
	var backoff time.Duration
	for {
		c, err := l.Listener.Accept()
		if err == nil {
			if l.w.shedConnection(l.Listener) {
				l.w.refuseConn(c)
				continue
			}
			tc := &trackedConn{Conn: c, writeTimeout: l.w.writeTimeout(), stamps: newStampedReader(c)}
			l.w.conns.add(tc)
			return tc, nil
		}
		var te interface{ Temporary() bool }
		if l.w.draining.Load() || errors.Is(err, net.ErrClosed) || !errors.As(err, &te) || !te.Temporary() {
			return nil, err
		}
		backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
		l.w.log.Warn("accept failed; retrying", zap.Error(err), zap.Duration("in", backoff))
		time.Sleep(backoff)
	}
}

// shedConnection says whether a connection just accepted from ln is to be
// refused (refuseConn) rather than served: the worker is at its
// connection cap, or the accept queue behind it is deep. Left in the
// kernel's queue instead, a connection waits until its client gives up,
// and one the kernel drops (a full queue) costs the client a SYN
// retransmission, 1 to 3 s.
func (w *worker) shedConnection(ln net.Listener) bool {
	if w.draining.Load() {
		return false // a drain serves what it accepts
	}
	if w.conns.open() >= int64(max(w.opts.WorkerConnections, 1)) {
		// As nginx does when it runs out of connections: idle keep-alive
		// connections make room for new ones, and only a worker whose
		// connections are all busy refuses. Clients that open a
		// connection whenever theirs are busy (an open-loop load) would
		// otherwise fill the cap with idle ones and be refused for ever.
		return w.conns.closeOldestIdle(drainIdle) == 0
	}
	return w.acceptQueueDeep(ln)
}

// acceptQueueDeep reads the listener's accept queue (TCP_INFO) at most
// every acceptQueueEvery: deep is more than half the backlog waiting.
func (w *worker) acceptQueueDeep(ln net.Listener) bool {
	now := protocol.Nanotime()
	if last := w.queueCheckedAt.Load(); now-last < int64(acceptQueueEvery) || !w.queueCheckedAt.CompareAndSwap(last, now) {
		return w.queueDeep.Load()
	}
	deep := false
	for _, q := range ListenQueues([]net.Listener{ln}) {
		deep = q.Limit > 0 && q.Length > q.Limit/2
	}
	w.queueDeep.Store(deep)
	return deep
}

const acceptQueueEvery = 10 * time.Millisecond

// maxRefusers bounds the connections being refused at once (a goroutine
// and a 4 KiB buffer each). Past it the accept loop waits for one to
// finish, and new connections wait in the kernel's queue: memory stays
// bounded whatever arrives. A refusal lasts about a round trip, and at most
// refuseWithin + refuseLinger: 256 of them refuse a few thousand
// connections a second even from slow clients.
const maxRefusers = 256

// refuseConn answers a new connection with a 503 and closes it cleanly,
// on its own goroutine: it reads the request head (bounded in size and
// time), answers with Connection: close, shuts its side down and reads
// what else the client sends until it closes too, so that the client gets
// the answer, never a reset.
//
// Probes are the exception: /health, /ready and /metrics are never refused,
// so a connection that carries one gets its answer, and is closed after it.
func (w *worker) refuseConn(c net.Conn) {
	w.refusers <- struct{}{}
	go func() {
		defer func() { <-w.refusers }()
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(refuseWithin))
		buf := make([]byte, 4096)
		n := 0
		for n < len(buf) {
			m, err := c.Read(buf[n:])
			n += m
			if err != nil || bytes.Contains(buf[:n], headEnd) {
				break
			}
		}
		if !w.answerProbeConn(c, buf[:n]) {
			w.row.Add(protocol.CRefused, 1)
			w.row.Add(protocol.CRefusedConnections, 1)
			w.row.Add(protocol.C5xx, 1)
			w.row.Add(protocol.CServed, 1)
			if _, err := c.Write(refusedConnResponse); err != nil {
				return
			}
		}
		if tc, ok := c.(interface{ CloseWrite() error }); ok {
			_ = tc.CloseWrite()
		}
		// What the client still sends (a body) is read and dropped until
		// it closes, so that the close is not a reset that could destroy
		// the answer before the client reads it; briefly, since a client
		// that keeps its end open would otherwise hold the refuser.
		_ = c.SetReadDeadline(time.Now().Add(refuseLinger))
		_, _ = io.CopyBuffer(io.Discard, io.LimitReader(c, 64<<10), buf)
	}()
}

// answerProbeConn answers the request whose head is in head if it is a
// probe (isProbe), and says whether it did.
func (w *worker) answerProbeConn(c net.Conn, head []byte) bool {
	var req fasthttp.Request
	if err := req.Header.Read(bufio.NewReader(bytes.NewReader(head))); err != nil || !isProbe(&req) {
		return false
	}
	ctx := new(fasthttp.RequestCtx)
	ctx.Init(&req, c.RemoteAddr(), nil)
	start := protocol.Nanotime()
	func() {
		defer func() {
			if p := recover(); p != nil { // the application's /ready
				w.row.Add(protocol.CPanics, 1)
				ctx.Response.Reset()
				ctx.SetStatusCode(fasthttp.StatusInternalServerError)
			}
		}()
		if !w.answerProbe(ctx) {
			w.app.Handler(ctx)
		}
	}()
	w.account(ctx, start)
	ctx.Response.SetConnectionClose()
	ctx.Response.SkipBody = req.Header.IsHead()
	bw := bufio.NewWriter(c)
	if ctx.Response.Write(bw) == nil {
		_ = bw.Flush()
	}
	return true
}

// refuseWithin bounds reading the head and writing the answer of a
// refused connection; refuseLinger, waiting for the client's close after it.
const (
	refuseWithin = time.Second
	refuseLinger = 100 * time.Millisecond
)

var (
	headEnd             = []byte("\r\n\r\n")
	refusedConnBody     = `{"detail":"server busy: this worker takes no more connections now; retry shortly","status":503}`
	refusedConnResponse = []byte("HTTP/1.1 503 Service Unavailable\r\nServer: mcpgateway\r\nContent-Type: application/json\r\nRetry-After: 1\r\nConnection: close\r\nContent-Length: " +
		strconv.Itoa(len(refusedConnBody)) + "\r\n\r\n" + refusedConnBody)
)

// mayAccept is false while this worker holds clearly more connections than
// the average ready worker.
func (w *worker) mayAccept() bool {
	mine := w.conns.open()
	if mine < 2 {
		return true
	}
	var total, workers int64
	for i := 1; i <= w.table.MaxRow(); i++ {
		r := w.table.Row(i)
		if st := r.Load(protocol.FState); st == protocol.StateReady || st == protocol.StateRetiring {
			total += int64(r.Load(protocol.FConns))
			workers++
		}
	}
	if workers <= 1 {
		return true
	}
	avg := total / workers
	return mine <= avg+max(1, avg/10) // within 10%, or one connection, of the average
}
