package worker

import (
	"net"
	"sync"
)

// inflightRequest is one admitted request, in the order requests started.
type inflightRequest struct {
	prev, next *inflightRequest
	start      int64 // Nanotime
	conn       net.Conn
	abandoned  bool // answered 504 by the watchdog
}

// tracker is the list of in-flight requests, oldest first: the watchdog
// reads only its head, the hot path does an append and an unlink.
type tracker struct {
	mu         sync.Mutex
	head, tail *inflightRequest
	pool       sync.Pool
}

func (t *tracker) begin(c net.Conn, start int64) *inflightRequest {
	r, _ := t.pool.Get().(*inflightRequest)
	if r == nil {
		r = new(inflightRequest)
	}
	r.start, r.conn = start, c
	t.mu.Lock()
	r.prev = t.tail
	if t.tail != nil {
		t.tail.next = r
	} else {
		t.head = r
	}
	t.tail = r
	t.mu.Unlock()
	return r
}

// end unlinks a request and reports whether the watchdog had answered it.
func (t *tracker) end(r *inflightRequest) (abandoned bool) {
	t.mu.Lock()
	if r.prev != nil {
		r.prev.next = r.next
	} else {
		t.head = r.next
	}
	if r.next != nil {
		r.next.prev = r.prev
	} else {
		t.tail = r.prev
	}
	abandoned = r.abandoned
	t.mu.Unlock()
	*r = inflightRequest{}
	t.pool.Put(r)
	return abandoned
}

// oldest is the start of the oldest request still running (0: none), not
// counting those already answered by the watchdog.
func (t *tracker) oldest() int64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	for r := t.head; r != nil; r = r.next {
		if !r.abandoned {
			return r.start
		}
	}
	return 0
}

// expire marks every request started before the deadline as abandoned and
// returns their connections for the caller to answer and close.
func (t *tracker) expire(deadline int64) []net.Conn {
	t.mu.Lock()
	defer t.mu.Unlock()
	var conns []net.Conn
	for r := t.head; r != nil && r.start < deadline; r = r.next {
		if !r.abandoned {
			r.abandoned = true
			conns = append(conns, r.conn)
		}
	}
	return conns
}
