package gateway

import (
	"context"
	"sync/atomic"
	"time"

	"github.com/mcpgateway/mcpgateway/config"
	"github.com/mcpgateway/mcpgateway/internal/ratelimit"
	"github.com/mcpgateway/mcpgateway/internal/shm"
	"github.com/mcpgateway/mcpgateway/rpc"
	"github.com/mcpgateway/mcpgateway/supervisor"
	"github.com/mcpgateway/mcpgateway/supervisor/protocol"
	"github.com/mcpgateway/mcpgateway/worker"
	"go.uber.org/zap"
)

// The database check each worker runs in the background and publishes in
// its row of the status table (worker.Info.ReportDatabase): the whole
// server's readiness, on the master's health port too, fails while the
// latest check failed. The first runs as the worker boots, so a worker is
// never ready without one.
const (
	checkEvery   = 5 * time.Second
	checkTimeout = 2 * time.Second
)

// watchEvery is how soon an upstream registered since gets its watcher
// (rpc.Server.WatchGateways).
const watchEvery = 5 * time.Second

// rateLimitCounters are the status-table words of the rate-limit events.
var rateLimitCounters = [...]protocol.Field{
	rpc.RateLimitedUser: protocol.CRateLimitedUser, rpc.RateLimitedTool: protocol.CRateLimitedTool,
	rpc.RateLimitFull: protocol.CRateLimitFull, rpc.RateLimitLeased: protocol.CRateLeases,
	rpc.RateLimitLeaseFailed: protocol.CRateLeaseFailures,
}

// Worker builds what a worker process of cmd/mcpgateway serves: the store,
// the rpc server over it, the database check published in the status
// table, /ready decided by supervisor.ReadinessOf over that table (the same
// definition as the master's health port) with this worker's cache check
// added, and MCP request priority (App.Essential). Close stops the checks
// and closes the store.
func Worker(ctx context.Context, s config.Settings, version string, info worker.Info) (worker.App, error) {
	// Rate-limit buckets: one shared-memory file for all the workers of
	// this master (the master removes it when it exits).
	var limits *ratelimit.Table
	if (s.UserRateLimit > 0 || s.ToolRateLimit > 0) && info.Table != nil {
		var err error
		if limits, err = ratelimit.OpenShared(info.Table.SharedPath("ratelimit"), ratelimit.DefaultSlots); err != nil {
			return worker.App{}, err
		}
	}
	// The instance's count of store writes, shared by its workers: one
	// worker's write (a DELETE /mcp, a revoked token) is seen by the next
	// request on any other at once (store.Options.LocalWrites).
	var localWrites *atomic.Uint64
	var writes *shm.Counter
	if info.Table != nil {
		var err error
		if writes, err = shm.OpenCounter(info.Table.SharedPath("writes")); err != nil {
			if limits != nil {
				limits.Close()
			}
			return worker.App{}, err
		}
		localWrites = writes.Word()
	}
	srv, st, err := open(ctx, s, version, info.Logger, localWrites, func(o *rpc.Options) {
		o.OnPanic = info.CountPanic
		o.RateLimits = limits
		if info.SetGauge != nil {
			o.OnStreams = func(n int) { info.SetGauge(protocol.FOpenStreams, uint64(n)) }
		}
		if info.Count != nil {
			o.OnRateLimit = func(e rpc.RateLimitEvent) {
				info.Count(rateLimitCounters[e], 1)
			}
			o.OnUpstream = func(e rpc.UpstreamEvent) {
				info.Count(protocol.CUpstreamAnswered+protocol.Field(e), 1)
				if e == rpc.UpstreamBusy { // a refusal of the in-flight kind
					info.Count(protocol.CRefused, 1)
					info.Count(protocol.CRefusedInFlight, 1)
				}
			}
		}
		if info.Table != nil {
			o.Readiness = func(b []byte) ([]byte, bool) {
				r := supervisor.ReadinessOf(info.Table)
				return r.AppendFields(b, protocol.Nanotime()), r.OK()
			}
		}
	})
	if err != nil {
		if limits != nil {
			limits.Close()
		}
		if writes != nil {
			writes.Close()
		}
		return worker.App{}, err
	}
	c := startChecks(ctx, srv, info.ReportDatabase, info.Logger)
	var stops []func()
	if info.SetGauge != nil {
		stops = append(stops, every(time.Second, func(context.Context) {
			info.SetGauge(protocol.FUpstreamsOpen, uint64(srv.UpstreamsOpen()))
			// Set at every change too; concurrent changes may store out of
			// order, which this corrects within a second.
			info.SetGauge(protocol.FOpenStreams, uint64(srv.OpenStreams()))
		}))
	}
	if info.Slot == 0 {
		// One worker of each instance registers the upstreams of
		// GATEWAYS_FILE and refreshes the upstreams' tool lists: the others
		// see the result through the store's catalogue.
		specs, err := config.ParseGateways(s.GatewaysJSON)
		if err != nil { // the master wrote it: cannot happen
			info.Logger.Error("GATEWAYS_FILE: unreadable as handed over", zap.Error(err))
		}
		if len(specs) > 0 {
			stops = append(stops, once(func(ctx context.Context) { srv.SyncGateways(ctx, specs) }))
		}
		// Upstreams' list changes, on their standing streams: a notified
		// tool list is read again at once (rpc/federation_watch.go).
		stops = append(stops, once(srv.WatchGateways), every(watchEvery, srv.WatchGateways), srv.StopWatching)
		if s.HealthCheckInterval > 0 {
			stops = append(stops, every(s.HealthCheckInterval, func(ctx context.Context) {
				srv.SyncGateways(ctx, specs)
				srv.RefreshGateways(ctx)
			}))
		}
	}
	stopRefresh := func() {
		for _, stop := range stops {
			stop()
		}
	}
	return worker.App{
		Handler:   srv.Handler,
		Essential: srv.Essential,
		Drain:     srv.Drain,
		Close: func() {
			srv.Close() // streamed calls record their last events before the store closes
			stopRefresh()
			c.stop()
			st.Close()
			if limits != nil {
				limits.Close()
			}
			if writes != nil {
				writes.Close()
			}
		},
	}, nil
}

// checks runs rpc.Server.CheckBackend periodically and reports the
// database's outcome.
type checks struct {
	srv    *rpc.Server
	report func(ok bool) // may be nil
	log    *zap.Logger
	last   bool   // the previous outcome, for logging changes only
	stop   func() // ends the checks and waits for one under way (at most checkTimeout)
}

// startChecks runs the first check now, then one every checkEvery until
// stop.
func startChecks(ctx context.Context, srv *rpc.Server, report func(bool), log *zap.Logger) *checks {
	c := &checks{srv: srv, report: report, log: log, last: true}
	c.check(ctx)
	c.stop = every(checkEvery, c.check)
	return c
}

func (c *checks) check(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, checkTimeout)
	defer cancel()
	ok, detail := c.srv.CheckBackend(ctx)
	if c.report != nil {
		c.report(ok)
	}
	switch {
	case !ok && c.last:
		c.log.Warn("database check failed", zap.String("error", detail))
	case ok && !c.last:
		c.log.Info("database check passed again", zap.String("database", detail))
	}
	c.last = ok
}

// every runs f every interval, with a context cancelled by the returned
// stop, which waits for a run under way.
func every(interval time.Duration, f func(ctx context.Context)) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		tick := time.NewTicker(interval)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
				f(ctx)
			}
		}
	}()
	return func() { cancel(); <-done }
}

// once runs f in the background, with a context cancelled by the returned
// stop, which waits for it.
func once(f func(ctx context.Context)) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		f(ctx)
	}()
	return func() { cancel(); <-done }
}
