package proctest

import (
	"context"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// KeptErrors is how many failures a load keeps (the first ones).
const KeptErrors = 10

// KeepAliveClient is a client for conns concurrent keep-alive connections
// to one server. It never retries behind the caller's back: a POST is not
// replayable, so a connection the server drops shows up as an error instead
// of a silent second attempt.
func KeepAliveClient(conns int, timeout time.Duration) *http.Client {
	return &http.Client{Timeout: timeout, Transport: &http.Transport{
		MaxIdleConns: conns, MaxIdleConnsPerHost: conns, MaxConnsPerHost: conns,
		DialContext: (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
	}}
}

// Load is a running load: conns goroutines, each making one call after the
// other (each, typically, over its own keep-alive connection).
type Load struct {
	stop    chan struct{}
	stopped sync.Once
	wg      sync.WaitGroup
	start   time.Time
	took    time.Duration

	next, ok, failed atomic.Int64
	mu               sync.Mutex
	errs             []error
}

// LoadResult is what a load saw.
type LoadResult struct {
	Calls  int     // calls made
	OK     int     // calls that returned nil
	Failed int     // calls that returned an error
	Errors []error // the first KeptErrors of those errors, in order
	Took   time.Duration
}

// First is the first failure, or nil.
func (r LoadResult) First() error {
	if len(r.Errors) == 0 {
		return nil
	}
	return r.Errors[0]
}

// StartLoad starts conns goroutines that each call call (with the
// goroutine's number, 0 to conns-1, for state of its own such as a
// connection) one call after the other, until n calls have been made in all
// (n <= 0: no limit), Stop is called or ctx ends. A call that returns an
// error counts as failed; the load goes on.
func StartLoad(ctx context.Context, conns, n int, call func(conn int) error) *Load {
	l := &Load{stop: make(chan struct{}), start: time.Now()}
	for c := range conns {
		l.wg.Go(func() {
			for ctx.Err() == nil {
				select {
				case <-l.stop:
					return
				default:
				}
				if i := l.next.Add(1); n > 0 && i > int64(n) {
					return
				}
				if err := call(c); err != nil {
					l.mu.Lock()
					if l.failed.Add(1) <= KeptErrors {
						l.errs = append(l.errs, err)
					}
					l.mu.Unlock()
				} else {
					l.ok.Add(1)
				}
			}
		})
	}
	return l
}

// RunLoad is StartLoad, then Wait.
func RunLoad(ctx context.Context, conns, n int, call func(conn int) error) LoadResult {
	return StartLoad(ctx, conns, n, call).Wait()
}

// Wait waits until the load ends by itself (its n calls are made, or ctx
// ended) and returns what it saw.
func (l *Load) Wait() LoadResult {
	l.wg.Wait()
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.took == 0 {
		l.took = time.Since(l.start)
	}
	ok, failed := int(l.ok.Load()), int(l.failed.Load())
	return LoadResult{Calls: ok + failed, OK: ok, Failed: failed, Errors: append([]error(nil), l.errs...), Took: l.took}
}

// Stop stops the load: no call starts any more; it waits for the calls
// under way and returns what the load saw.
func (l *Load) Stop() LoadResult {
	l.stopped.Do(func() { close(l.stop) })
	return l.Wait()
}
