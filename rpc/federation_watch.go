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

type watchers struct {
	mu     sync.Mutex
	cancel map[string]context.CancelFunc // by upstream name
	wg     sync.WaitGroup
}

// WatchGateways starts a watcher for every enabled upstream that has none
// and stops those of upstreams removed or disabled since. It returns at
// once; call it periodically, and StopWatching when the worker stops.
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
	defer w.mu.Unlock()
	if w.cancel == nil {
		w.cancel = map[string]context.CancelFunc{}
	}
	for name, cancel := range w.cancel {
		if !want[name] {
			cancel()
			delete(w.cancel, name)
		}
	}
	for name := range want {
		if w.cancel[name] != nil {
			continue
		}
		wctx, cancel := context.WithCancel(s.life)
		w.cancel[name] = cancel
		w.wg.Add(1)
		go func() {
			defer w.wg.Done()
			s.watch(wctx, name)
		}()
	}
}

// StopWatching ends every watcher and waits for them.
func (s *Server) StopWatching() {
	w := &s.watching
	w.mu.Lock()
	for name, cancel := range w.cancel {
		cancel()
		delete(w.cancel, name)
	}
	w.mu.Unlock()
	w.wg.Wait()
}

// watch listens to the upstream name's standing stream until ctx ends.
func (s *Server) watch(ctx context.Context, name string) {
	for ctx.Err() == nil {
		c, err := s.upstreamClient(ctx, name)
		if err == nil {
			err = c.ListenOnce(ctx, func(note json.RawMessage) {
				var m struct {
					Method string `json:"method"`
				}
				if json.Unmarshal(note, &m) == nil && m.Method == "notifications/tools/list_changed" {
					s.refreshOne(ctx, name)
				}
			})
		}
		if errors.Is(err, upstream.ErrNoStream) {
			s.log.Debug("upstream offers no standing stream: its tools are read again every HEALTH_CHECK_INTERVAL",
				zap.String("gateway", name))
			<-ctx.Done() // until it is removed or the worker stops
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
