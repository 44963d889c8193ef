package store

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
)

func TestUnavailableErrors(t *testing.T) {
	for _, c := range []struct {
		err  error
		want bool
	}{
		{nil, false},
		{ErrNotFound, false},
		{fmt.Errorf("get user: %w", errNoRows), false},
		{errors.New("syntax error"), false},
		{&pgconn.PgError{Code: "42P01", Message: "relation does not exist"}, false},
		{&pgconn.PgError{Code: "23505"}, false},
		{&pgconn.PgError{Code: "28P01"}, false}, // bad password: a configuration error, not an outage
		{&pgconn.PgError{Code: "57P01", Message: "terminating connection due to administrator command"}, true},
		{&pgconn.PgError{Code: "57P03", Message: "the database system is starting up"}, true},
		{&pgconn.PgError{Code: "53300", Message: "too many connections"}, true},
		{&pgconn.PgError{Code: "08006"}, true},
		{fmt.Errorf("postgresql query: %w", io.ErrUnexpectedEOF), true},
		{fmt.Errorf("x: %w", syscall.ECONNREFUSED), true},
		{fmt.Errorf("x: %w", context.DeadlineExceeded), true},
		{fmt.Errorf("x: %w", context.Canceled), false},
		{fmt.Errorf("x: %w", pgconn.ErrConnClosed), true},
		{&net.OpError{Op: "dial", Err: syscall.ECONNREFUSED}, true},
	} {
		got := errors.Is(markUnavailable(c.err), ErrUnavailable)
		if got != c.want {
			t.Errorf("%v: unavailable %v, want %v", c.err, got, c.want)
		}
		if c.err != nil && markUnavailable(c.err).Error() != c.err.Error() {
			t.Errorf("%v: the text changed to %v", c.err, markUnavailable(c.err))
		}
	}
}

// tcpProxy stands between the store and the shared PostgreSQL, so a test
// can make the database unreachable for its own store only: refuse (the
// server is stopped: connections reset, new ones refused) or blackHole
// (packets dropped: connections accepted and never answered, established
// ones silent).
type tcpProxy struct {
	t      testing.TB
	target string
	addr   string

	mu    sync.Mutex
	ln    net.Listener
	hole  bool
	conns map[net.Conn]bool
}

func startProxy(t testing.TB, target string) *tcpProxy {
	t.Helper()
	p := &tcpProxy{t: t, target: target, conns: map[net.Conn]bool{}}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p.addr = ln.Addr().String()
	p.serve(ln)
	t.Cleanup(func() {
		p.refuse()
	})
	return p
}

func (p *tcpProxy) serve(ln net.Listener) {
	p.mu.Lock()
	p.ln = ln
	p.mu.Unlock()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			p.mu.Lock()
			p.conns[c] = true
			hole := p.hole
			p.mu.Unlock()
			if hole {
				continue // held open, never answered
			}
			go p.pipe(c)
		}
	}()
}

func (p *tcpProxy) pipe(c net.Conn) {
	up, err := net.Dial("tcp", p.target)
	if err != nil {
		c.Close()
		return
	}
	p.mu.Lock()
	p.conns[up] = true
	p.mu.Unlock()
	copyUnlessHoled := func(dst, src net.Conn) {
		buf := make([]byte, 32<<10)
		for {
			n, err := src.Read(buf)
			if n > 0 {
				p.mu.Lock()
				hole := p.hole
				p.mu.Unlock()
				if !hole { // in a black hole, bytes vanish
					if _, err := dst.Write(buf[:n]); err != nil {
						break
					}
				}
			}
			if err != nil {
				break
			}
		}
		dst.Close()
		src.Close()
	}
	go copyUnlessHoled(up, c)
	copyUnlessHoled(c, up)
}

// closeAll closes every connection; ln too when refusing.
func (p *tcpProxy) closeAll(listener bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for c := range p.conns {
		c.Close()
	}
	p.conns = map[net.Conn]bool{}
	if listener && p.ln != nil {
		p.ln.Close()
		p.ln = nil
	}
}

// refuse: as a stopped server, connections reset and new ones refused.
func (p *tcpProxy) refuse() {
	p.mu.Lock()
	p.hole = false
	p.mu.Unlock()
	p.closeAll(true)
}

// blackHole: as a partition, nothing answers any more.
func (p *tcpProxy) blackHole() {
	p.mu.Lock()
	p.hole = true
	p.mu.Unlock()
}

// restore: the server is back (held and silent connections are dropped, as
// they would be once a partition heals).
func (p *tcpProxy) restore() {
	p.mu.Lock()
	p.hole = false
	p.mu.Unlock()
	p.closeAll(false)
	p.mu.Lock()
	listening := p.ln != nil
	p.mu.Unlock()
	if listening {
		return
	}
	ln, err := net.Listen("tcp", p.addr)
	if err != nil {
		p.t.Fatalf("listen again on %s: %v", p.addr, err)
	}
	p.serve(ln)
}

// proxiedPG is a fresh schema of the shared PostgreSQL, reached through a
// proxy of the test's own.
func proxiedPG(t *testing.T) (string, *tcpProxy) {
	t.Helper()
	u, err := url.Parse(pgURL(t))
	if err != nil {
		t.Fatal(err)
	}
	p := startProxy(t, u.Host)
	u.Host = p.addr
	return u.String(), p
}

// lookup runs fn and returns its error and how long it took.
func lookup(fn func() error) (error, time.Duration) {
	start := time.Now()
	err := fn()
	return err, time.Since(start)
}

// A stopped database: lookups of cached users and tools keep answering
// (CACHE_STALE_IF_ERROR), others fail at once with ErrUnavailable; the
// store notices, and recovers by itself when the database returns.
func TestOutageRefused(t *testing.T) {
	u, proxy := proxiedPG(t)
	o := testOptions(t, u, CacheDatabase)
	o.ConnectTimeout = 500 * time.Millisecond
	o.StaleIfError = time.Minute
	s := openMigrated(t, o)
	ctx := context.Background()
	if _, err := s.User(ctx, "admin@example.com"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Tool(ctx, "convert_time"); err != nil {
		t.Fatal(err)
	}
	proxy.refuse()
	down := time.Now()
	// Through the loss of the lease and beyond: the cached lookups answer,
	// fast.
	for time.Since(down) < 2*time.Second {
		if err, took := lookup(func() error { _, err := s.User(ctx, "admin@example.com"); return err }); err != nil || took > 200*time.Millisecond {
			t.Fatalf("cached user %v after the outage began: %v (took %v)", time.Since(down), err, took)
		}
		if err, took := lookup(func() error { _, err := s.Tool(ctx, "convert_time"); return err }); err != nil || took > 200*time.Millisecond {
			t.Fatalf("cached tool %v after the outage began: %v (took %v)", time.Since(down), err, took)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if !s.DatabaseDown() || s.trusted(s.now()) {
		t.Fatalf("2 s into the outage: down %v, lease valid %v", s.DatabaseDown(), s.trusted(s.now()))
	}
	err, took := lookup(func() error { _, err := s.User(ctx, "nobody@example.com"); return err })
	if !errors.Is(err, ErrUnavailable) || took > time.Second {
		t.Fatalf("uncached user: %v after %v, want ErrUnavailable at once", err, took)
	}
	if c := s.Ready(ctx); c[0].OK {
		t.Fatalf("Ready during the outage: %+v", c)
	}
	if err := s.PutUser(ctx, User{Email: "new@example.com", Active: true}); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("PutUser during the outage: %v", err)
	}

	proxy.restore()
	waitFor(t, 3*time.Second, "the store back on the database", func() bool {
		_, err := s.User(ctx, "nobody@example.com")
		return errors.Is(err, ErrNotFound) && !s.DatabaseDown() && s.trusted(s.now())
	})
}

// A black-holed database (connections accepted, never answered; the
// established ones silent): no lookup waits longer than DB_CONNECT_TIMEOUT,
// cached ones answer, and everything recovers.
func TestOutageBlackHole(t *testing.T) {
	u, proxy := proxiedPG(t)
	o := testOptions(t, u, CacheDatabase)
	o.ConnectTimeout = 500 * time.Millisecond
	o.StaleIfError = time.Minute
	s := openMigrated(t, o)
	ctx := context.Background()
	if _, err := s.User(ctx, "admin@example.com"); err != nil {
		t.Fatal(err)
	}
	proxy.blackHole()
	down := time.Now()
	limit := o.ConnectTimeout + 400*time.Millisecond
	var slowestCached, slowestUncached time.Duration
	for i := 0; time.Since(down) < 3*time.Second; i++ {
		err, took := lookup(func() error { _, err := s.User(ctx, "admin@example.com"); return err })
		if err != nil || took > limit {
			t.Fatalf("cached user %v after the partition began: %v (took %v)", time.Since(down), err, took)
		}
		slowestCached = max(slowestCached, took)
		err, took = lookup(func() error { _, err := s.User(ctx, fmt.Sprintf("u%d@example.com", i)); return err })
		if !errors.Is(err, ErrUnavailable) && !errors.Is(err, ErrNotFound) || took > limit {
			t.Fatalf("uncached user %v after the partition began: %v (took %v, limit %v)", time.Since(down), err, took, limit)
		}
		slowestUncached = max(slowestUncached, took)
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("slowest lookup in the partition: cached %v, uncached %v (DB_CONNECT_TIMEOUT %v)", slowestCached, slowestUncached, o.ConnectTimeout)
	if !s.DatabaseDown() {
		t.Fatal("the store did not notice the partition")
	}
	proxy.restore()
	waitFor(t, 4*time.Second, "the store back on the database", func() bool {
		_, err := s.User(ctx, "nobody@example.com")
		return errors.Is(err, ErrNotFound) && !s.DatabaseDown() && s.trusted(s.now())
	})
}

// With CACHE_STALE_IF_ERROR off, the one-second coherence promise holds
// through an outage: once the lease lapses, cached users are not served.
func TestOutageWithoutStaleAnswers(t *testing.T) {
	u, proxy := proxiedPG(t)
	o := testOptions(t, u, CacheMemory)
	o.ConnectTimeout = 500 * time.Millisecond
	s := openMigrated(t, o)
	ctx := context.Background()
	if _, err := s.User(ctx, "admin@example.com"); err != nil {
		t.Fatal(err)
	}
	proxy.refuse()
	waitFor(t, 2*time.Second, "cached lookups failing", func() bool {
		_, err := s.User(ctx, "admin@example.com")
		return errors.Is(err, ErrUnavailable)
	})
	proxy.restore()
	waitFor(t, 3*time.Second, "lookups answering again", func() bool {
		_, err := s.User(ctx, "admin@example.com")
		return err == nil
	})
}
