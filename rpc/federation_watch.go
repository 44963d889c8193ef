package rpc

import (
	"context"
	"encoding/json"
	"errors"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/mcpgateway/mcpgateway/store"
	"github.com/mcpgateway/mcpgateway/upstream"
)

// Watching upstreams' list changes (docs/federation.md, "Keeping the
// catalogue fresh"). One worker of each instance (slot 0, which also runs
// the periodic refresh) keeps the standing stream of every enabled upstream
// open; notifications/tools/list_changed on it has that upstream's tool
// list read again and stored at once, so that every worker of every
// instance serves it within the cache's coherence bound, rather than after
// HEALTH_CHECK_INTERVAL. An upstream without a standing stream (405, or the
// sse transport) is left to the periodic refresh.

// watchPause is how long a watcher waits before opening a stream again
// after it ended or failed.
var watchPause = 2 * time.Second

// watchers are this worker's listeners on upstreams' standing streams, one
// per upstream (a server may allow one standing stream per session: the
// TypeScript SDK's answers a second with 409), held for list changes
// (slot 0, WatchGateways) and for resource subscriptions (subscriptions.go).
type watchers struct {
	mu sync.Mutex
	ls map[string]*listener // by upstream name
	wg sync.WaitGroup
}

type listener struct {
	cancel context.CancelFunc
	watch  bool // list changes are this worker's to apply
	subs   int  // resource subscriptions that need it
}

// holdListener starts the listener of upstream name, or marks the one
// running, for list changes (watch) or for one more subscription.
func (s *Server) holdListener(name string, watch bool) {
	w := &s.watching
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.ls == nil {
		w.ls = map[string]*listener{}
	}
	l := w.ls[name]
	if l == nil {
		ctx, cancel := context.WithCancel(s.life)
		l = &listener{cancel: cancel}
		w.ls[name] = l
		w.wg.Add(1)
		go func() {
			defer w.wg.Done()
			s.listen(ctx, name)
		}()
	}
	if watch {
		l.watch = true
	} else {
		l.subs++
	}
}

// releaseListener undoes a holdListener; the listener stops when nothing
// holds it.
func (s *Server) releaseListener(name string, watch bool) {
	w := &s.watching
	w.mu.Lock()
	defer w.mu.Unlock()
	l := w.ls[name]
	if l == nil {
		return
	}
	if watch {
		l.watch = false
	} else if l.subs > 0 {
		l.subs--
	}
	if !l.watch && l.subs == 0 {
		l.cancel()
		delete(w.ls, name)
	}
}

// watches reports whether the listener of name applies list changes.
func (s *Server) watches(name string) bool {
	w := &s.watching
	w.mu.Lock()
	defer w.mu.Unlock()
	l := w.ls[name]
	return l != nil && l.watch
}

// WatchGateways has every enabled upstream's list changes watched and
// stops watching those removed or disabled since. It returns at once; call
// it periodically, and StopWatching when the worker stops.
func (s *Server) WatchGateways(ctx context.Context) {
	gb, ok := s.backend.(gatewayBackend)
	if !ok {
		return
	}
	gateways, err := gb.Gateways(ctx, nil)
	if err != nil {
		return
	}
	want := map[string]bool{}
	for _, g := range gateways {
		if g.Enabled && g.Transport != upstream.TransportSSE {
			want[g.Name] = true
		}
	}
	w := &s.watching
	w.mu.Lock()
	var stop, start []string
	for name, l := range w.ls {
		if l.watch && !want[name] {
			stop = append(stop, name)
		}
	}
	for name := range want {
		if l := w.ls[name]; l == nil || !l.watch {
			start = append(start, name)
		}
	}
	w.mu.Unlock()
	for _, name := range stop {
		s.releaseListener(name, true)
	}
	for _, name := range start {
		s.holdListener(name, true)
	}
}

// StopWatching ends every listener and waits for them.
func (s *Server) StopWatching() {
	w := &s.watching
	w.mu.Lock()
	for name, l := range w.ls {
		l.cancel()
		delete(w.ls, name)
	}
	w.mu.Unlock()
	w.wg.Wait()
}

// listen follows the upstream name's standing stream until ctx ends: list
// changes refresh its tools (when watched here), resource updates go to
// the subscribed clients' streams.
func (s *Server) listen(ctx context.Context, name string) {
	for ctx.Err() == nil {
		c, err := s.upstreamClient(ctx, name)
		if err == nil {
			err = c.ListenOnce(ctx, func(note json.RawMessage) {
				var m struct {
					Method string `json:"method"`
					Params struct {
						URI string `json:"uri"`
					} `json:"params"`
				}
				if json.Unmarshal(note, &m) != nil {
					return
				}
				switch m.Method {
				case "notifications/tools/list_changed":
					if s.watches(name) {
						s.refreshOne(ctx, name)
					}
				case "notifications/resources/updated":
					s.subs.deliver(m.Params.URI, note) // subscriptions.go
				}
			})
		}
		if errors.Is(err, upstream.ErrNoStream) {
			s.log.Debug("upstream offers no standing stream: its tools are read again every HEALTH_CHECK_INTERVAL, and its resources cannot be subscribed to",
				zap.String("gateway", name))
			<-ctx.Done() // until nothing holds it, or the worker stops
			return
		}
		select {
		case <-ctx.Done():
		case <-time.After(watchPause):
		}
	}
}

// refreshOne reads the tool list of the upstream name again and stores it
// when it changed.
func (s *Server) refreshOne(ctx context.Context, name string) {
	gb, ok := s.backend.(gatewayBackend)
	all, ok2 := s.backend.(allToolsBackend)
	if !ok || !ok2 {
		return
	}
	current, err := all.AllTools(ctx)
	if err != nil {
		return
	}
	g, err := gb.Gateway(ctx, name, s.opt.UpstreamKey)
	if err != nil {
		return
	}
	if changed, err := s.refreshGateway(ctx, gb, g, current); err == nil && changed {
		s.log.Info("upstream tool list changed (notified)", zap.String("gateway", name))
	}
}

// refreshGateway lists g's tools and stores them when they differ from the
// catalogue's (current).
func (s *Server) refreshGateway(ctx context.Context, gb gatewayBackend, g store.Gateway, current []store.Tool) (bool, error) {
	c, err := s.upstreamClient(ctx, g.Name)
	if err != nil {
		return false, err
	}
	listed, err := c.ListTools(ctx)
	if err != nil {
		s.upstreamErrors.log(s.log, "gateway refresh: the upstream did not answer", zap.String("gateway", g.Name), zap.Error(err))
		return false, err
	}
	tools, _, _ := s.namespacedTools(g.Name, listed)
	if sameTools(tools, current, g.Name) {
		return false, nil
	}
	if err := gb.PutGateway(ctx, g, tools, s.opt.UpstreamKey); err != nil {
		s.log.Warn("gateway refresh: storing the new tool list failed", zap.String("gateway", g.Name), zap.Error(err))
		return false, err
	}
	s.log.Info("gateway refresh: tool list changed", zap.String("gateway", g.Name), zap.Int("tools", len(tools)))
	return true, nil
}
