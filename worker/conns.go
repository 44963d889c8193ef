package worker

import (
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mcpgateway/mcpgateway/supervisor/protocol"
	"github.com/valyala/fasthttp"
)

// trackedConn remembers when its connection last finished a request, so a
// draining worker can tell quiet connections from busy ones.
type trackedConn struct {
	net.Conn
	idleSince atomic.Int64 // Nanotime when it became idle; 0 while a request is active
}

// connSet is every open connection of the worker.
type connSet struct {
	mu    sync.Mutex
	conns map[*trackedConn]struct{}
	count atomic.Int64
	row   *protocol.Row
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
		c.idleSince.Store(0)
	case fasthttp.StateIdle:
		c.idleSince.Store(protocol.Nanotime())
	case fasthttp.StateClosed, fasthttp.StateHijacked:
		s.mu.Lock()
		_, present := s.conns[c]
		delete(s.conns, c)
		s.mu.Unlock()
		if present {
			n := s.count.Add(-1)
			if s.row != nil {
				s.row.Store(protocol.FConns, uint64(n))
			}
		}
	}
}

// closeIdle closes connections idle since before the given Nanotime.
func (s *connSet) closeIdle(before int64) {
	s.mu.Lock()
	var quiet []*trackedConn
	for c := range s.conns {
		if t := c.idleSince.Load(); t != 0 && t < before {
			quiet = append(quiet, c)
		}
	}
	s.mu.Unlock()
	for _, c := range quiet {
		c.Close()
	}
}

// gatedListener accepts only while this worker is under its connection cap
// and not above its fair share of the server's connections. Every worker
// waits on the same socket and the kernel wakes them all, so a worker that
// holds back leaves the connection to one with fewer.
type gatedListener struct {
	net.Listener
	w *worker
}

// maxAcceptWait bounds how long a worker holds back: balance is a
// preference, not a reason to leave a connection waiting.
const maxAcceptWait = 20 * time.Millisecond

func (l *gatedListener) Accept() (net.Conn, error) {
	for waited := time.Duration(0); waited < maxAcceptWait && !l.w.mayAccept(); waited += time.Millisecond {
		time.Sleep(time.Millisecond)
	}
	for l.w.conns.open() >= int64(max(l.w.opts.WorkerConnections, 1)) && !l.w.draining.Load() {
		time.Sleep(time.Millisecond) // at the cap: the backlog holds the connection, memory stays bounded
	}
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	tc := &trackedConn{Conn: c}
	l.w.conns.add(tc)
	return tc, nil
}

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
