package worker

import (
	"net"
	"sync"
)

// inflightRequest is one admitted request, in the order requests started.
type inflightRequest struct {
	prev, next *inflightRequest
	start      int64    // Nanotime
	conn       net.Conn // HTTP/1.1: where the watchdog writes its 504
	onTimeout  func()   // HTTP/2: answers the stream with the watchdog's 504
	abandoned  bool     // given up on by the watchdog
}

// tracker is the list of in-flight requests, oldest first: the watchdog
// reads only its head, the hot path does an append and an unlink.
type tracker struct {
	mu         sync.Mutex
	head, tail *inflightRequest
	pool       sync.Pool
}

// begin adds a request. If it overruns the timeout before end, the
// watchdog answers it once: through onTimeout when set (it must not
// block), else on conn.
func (t *tracker) begin(start int64, conn net.Conn, onTimeout func()) *inflightRequest {
	r, _ := t.pool.Get().(*inflightRequest)
	if r == nil {
		r = new(inflightRequest)
	}
	r.start, r.conn, r.onTimeout = start, conn, onTimeout
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

// end unlinks a request and reports whether the watchdog had given up on it.
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
	// The watchdog copied conn and onTimeout under the lock, so reusing r
	// cannot redirect a late answer to another request.
	*r = inflightRequest{}
	t.pool.Put(r)
	return abandoned
}

// oldest is the start of the oldest request still running (0: none), not
// counting those already given up on by the watchdog.
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

// expired is what the watchdog needs to answer a request it gave up on.
type expired struct {
	conn      net.Conn
	onTimeout func()
}

// expire marks every request started before the deadline as abandoned and
// returns how to answer each, for the caller to do outside the lock.
func (t *tracker) expire(deadline int64) []expired {
	t.mu.Lock()
	defer t.mu.Unlock()
	var out []expired
	for r := t.head; r != nil && r.start < deadline; r = r.next {
		if !r.abandoned {
			r.abandoned = true
			out = append(out, expired{conn: r.conn, onTimeout: r.onTimeout})
		}
	}
	return out
}
