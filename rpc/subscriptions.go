package rpc

import (
	"context"
	"slices"
	"sync"
	"time"

	"github.com/valyala/fasthttp"
	"go.uber.org/zap"
)

// Resource subscriptions of legacy sessions (docs/federation.md, "Resource
// subscriptions"). resources/subscribe lands on any worker: it records the
// URI in the session's list in the store (store.SetSessionSubscriptions).
// The worker that holds the session's standing stream (GET /mcp) reads the
// list every subsPoll, subscribes on its own upstream session for each URI
// (once per worker, however many of its clients want it), listens to that
// upstream's standing stream (federation_watch.go), and writes the
// upstream's notifications/resources/updated to the streams of the
// sessions that subscribed. A session without a standing stream gets no
// updates: the specification sends them on it.

// subsBackend keeps sessions' subscriptions (*store.Store).
type subsBackend interface {
	SetSessionSubscriptions(ctx context.Context, sid string, uris []string, until time.Time) error
	SessionSubscriptions(ctx context.Context, sid string) ([]string, error)
}

// subsPoll is how often a standing stream reads its session's subscriptions.
var subsPoll = time.Second

// subscriptions are this worker's subscriptions on its upstream sessions,
// by URI, with the standing streams that receive each one's updates.
type subscriptions struct {
	mu    sync.Mutex
	byURI map[string]*subscription
}

type subscription struct {
	gateway   string
	receivers map[chan []byte]struct{}
}

// deliver passes an upstream's notifications/resources/updated to the
// streams subscribed to uri (a full stream misses it: updates are hints).
func (ss *subscriptions) deliver(uri string, note []byte) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	sub := ss.byURI[uri]
	if sub == nil {
		return
	}
	for ch := range sub.receivers {
		select {
		case ch <- note:
		default:
		}
	}
}

// subscribeMethod answers resources/subscribe and resources/unsubscribe of a
// legacy session: the URI joins or leaves the session's list in the store.
func (s *Server) subscribeMethod(ctx *fasthttp.RequestCtx, params []byte, buf *buffers, subscribe bool, out []byte) ([]byte, *rpcError) {
	sb, ok := s.backend.(subsBackend)
	if !ok || buf.sid == nil { // /rpc, 2026-07-28 (no sessions), or a Backend that keeps none
		method := "resources/unsubscribe"
		if subscribe {
			method = "resources/subscribe"
		}
		return out, &rpcError{code: codeMethodNotFound, msg: "Method not found: " + method}
	}
	uri := member(params, "uri")
	if uri == nil || uri[0] != '"' {
		return out, &rpcError{code: codeInvalidParams, msg: "Invalid params: a uri (a string) is required"}
	}
	u := string(unquote(uri))
	if subscribe {
		owner, rerr := s.resourceOwner(ctx, u, buf.vs.servesAnyFunc(u))
		if rerr != nil {
			return out, rerr
		}
		if owner == "" || buf.vs != nil && !buf.vs.servesURI(owner, u) && !buf.vs.servesTemplate(owner, u) {
			return out, &rpcError{code: codeResourceNotFound, msg: "Resource not found: " + u}
		}
	}
	sid := string(buf.sid)
	uris, err := sb.SessionSubscriptions(ctx, sid)
	if err != nil {
		return out, s.storeError(ctx, "reading the session's subscriptions", err)
	}
	i := slices.Index(uris, u)
	switch {
	case subscribe && i < 0:
		uris = append(uris, u)
	case !subscribe && i >= 0:
		uris = slices.Delete(uris, i, i+1)
	default:
		return append(out, "{}"...), nil // already so
	}
	until := time.Now().Add(sessionLifetime + sessionClockSkew)
	if err := sb.SetSessionSubscriptions(ctx, sid, uris, until); err != nil {
		return out, s.storeError(ctx, "recording the session's subscriptions", err)
	}
	return append(out, "{}"...), nil
}

// followSubscriptions keeps this worker subscribed to what the session sid
// subscribes to, for a standing stream that receives the updates on ch,
// until the returned stop; refresh reads the session's list again (every
// subsPoll).
func (s *Server) followSubscriptions(sid string, ch chan []byte) (refresh, stop func()) {
	sb, ok := s.backend.(subsBackend)
	if !ok {
		return func() {}, func() {}
	}
	var mine []string // the URIs ch receives
	var scratch fasthttp.RequestCtx
	scratch.Init(&fasthttp.Request{}, nil, nil)
	refresh = func() {
		ctx, cancel := context.WithTimeout(context.Background(), storeOpTimeout)
		defer cancel()
		want, err := sb.SessionSubscriptions(ctx, sid)
		if err != nil {
			return
		}
		for _, u := range mine {
			if !slices.Contains(want, u) {
				s.unsubscribeHere(u, ch)
			}
		}
		kept := mine[:0]
		for _, u := range mine {
			if slices.Contains(want, u) {
				kept = append(kept, u)
			}
		}
		mine = kept
		for _, u := range want {
			if !slices.Contains(mine, u) && s.subscribeHere(&scratch, u, ch) {
				mine = append(mine, u)
			}
		}
	}
	stop = func() {
		for _, u := range mine {
			s.unsubscribeHere(u, ch)
		}
		mine = nil
	}
	return refresh, stop
}

// subscribeHere adds ch to the receivers of uri, subscribing this worker's
// upstream session to it first when ch is the first.
func (s *Server) subscribeHere(ctx *fasthttp.RequestCtx, uri string, ch chan []byte) bool {
	ss := &s.subs
	ss.mu.Lock()
	sub := ss.byURI[uri]
	if sub != nil {
		sub.receivers[ch] = struct{}{}
		ss.mu.Unlock()
		return true
	}
	ss.mu.Unlock()
	owner, rerr := s.resourceOwner(ctx, uri, nil)
	if rerr != nil || owner == "" {
		return false
	}
	c, err := s.upstreamClient(ctx, owner)
	if err == nil {
		cctx, cancel := context.WithTimeout(context.Background(), storeOpTimeout)
		err = c.Subscribe(cctx, uri)
		cancel()
	}
	if err != nil {
		s.upstreamErrors.log(s.log, "resource subscription failed", zap.String("gateway", owner), zap.Error(err))
		return false
	}
	ss.mu.Lock()
	if ss.byURI == nil {
		ss.byURI = map[string]*subscription{}
	}
	if sub = ss.byURI[uri]; sub == nil { // another stream may have subscribed meanwhile
		sub = &subscription{gateway: owner, receivers: map[chan []byte]struct{}{}}
		ss.byURI[uri] = sub
		s.holdListener(owner, false)
	}
	sub.receivers[ch] = struct{}{}
	ss.mu.Unlock()
	return true
}

// unsubscribeHere removes ch from the receivers of uri, and the worker's
// upstream subscription with the last one.
func (s *Server) unsubscribeHere(uri string, ch chan []byte) {
	ss := &s.subs
	ss.mu.Lock()
	sub := ss.byURI[uri]
	if sub == nil {
		ss.mu.Unlock()
		return
	}
	delete(sub.receivers, ch)
	last := len(sub.receivers) == 0
	if last {
		delete(ss.byURI, uri)
	}
	ss.mu.Unlock()
	if !last {
		return
	}
	s.releaseListener(sub.gateway, false)
	ctx, cancel := context.WithTimeout(context.Background(), storeOpTimeout)
	defer cancel()
	if c, err := s.upstreamClient(ctx, sub.gateway); err == nil {
		_ = c.Unsubscribe(ctx, uri) // best effort: its updates now reach nobody
	}
}
