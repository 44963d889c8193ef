package rpc

import (
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mcpgateway/mcpgateway/internal/adaptive"
	"github.com/mcpgateway/mcpgateway/store"
	"github.com/mcpgateway/mcpgateway/upstream"
)

// REST endpoints get what an upstream MCP server's client has
// (docs/federation.md, "REST tools"): a circuit breaker, so that an API
// that fails is not called by every request while it is down, and an
// adaptive limit of calls in flight, so that one whose latency grows with
// load is not queued into. They are kept per origin (scheme, host and
// port): the REST tools of one API share its health and its capacity.

// restGuard is one origin's breaker and in-flight limit in this worker.
type restGuard struct {
	breaker  *upstream.Breaker
	limit    *adaptive.Limit
	inFlight atomic.Int64
}

type restGuards struct {
	mu   sync.Mutex
	m    map[string]*restGuard
	base time.Time // origin of the limits' clock
}

// restOrigin is the scheme, host and port of an endpoint's URL template
// (placeholders are in its path: checked at registration).
func restOrigin(t store.Tool) string {
	raw := t.REST.URL
	if u, err := url.Parse(raw); err == nil && u.Host != "" {
		return u.Scheme + "://" + u.Host
	}
	if i := strings.Index(raw, "://"); i >= 0 { // a template url.Parse refuses
		if j := strings.IndexByte(raw[i+3:], '/'); j >= 0 {
			return raw[:i+3+j]
		}
	}
	return raw
}

// guard returns the breaker and limit of t's endpoint origin.
func (s *Server) restGuard(t store.Tool) *restGuard {
	origin := restOrigin(t)
	g := &s.rest
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.m == nil {
		g.m, g.base = map[string]*restGuard{}, time.Now()
	}
	r := g.m[origin]
	if r == nil {
		r = &restGuard{breaker: upstream.NewBreaker(upstream.DefaultBreaker),
			limit: adaptive.New(upstream.DefaultMaxInFlight, upstream.LimitSlack, nil)}
		g.m[origin] = r
	}
	return r
}

// restCircuitsOpen counts the REST origins whose circuit is not closed.
func (s *Server) restCircuitsOpen() int {
	g := &s.rest
	g.mu.Lock()
	defer g.mu.Unlock()
	n := 0
	for _, r := range g.m {
		if r.breaker.State() != upstream.Closed {
			n++
		}
	}
	return n
}
