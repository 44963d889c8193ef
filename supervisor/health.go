package supervisor

import (
	"bytes"
	"fmt"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mcpgateway/mcpgateway/supervisor/protocol"
	"github.com/mcpgateway/mcpgateway/worker"
	"go.uber.org/zap"
)

// health is the master's own health port (HealthBind): liveness and
// readiness answered by the master, which is idle, so that a probe never
// waits in a queue behind requests, and readiness fails the instant a stop
// begins. The loop publishes what the answers need in atomics; the HTTP
// goroutines read nothing else, so an answer never waits for the loop (nor
// the loop for an answer).
type health struct {
	loopBeat  atomic.Int64 // Nanotime of the loop's last tick
	workers   atomic.Int32 // live worker processes
	fresh     atomic.Int32 // of them, those whose heartbeat is recent
	readiness atomic.Pointer[Readiness]

	// /metrics: what the loop publishes for it (nil until the loop's
	// first pass), and the listen queues it read last. busy keeps the
	// status table mapped while an answer reads it: close takes it
	// before the master unmaps the table.
	scrape   atomic.Pointer[healthScrape]
	queues   atomic.Pointer[[]worker.ListenQueue]
	queuesAt int64 // loop only: Nanotime of the last read of the queues
	busy     sync.RWMutex
	closed   bool // under busy

	srv *http.Server
	ln  net.Listener
}

// healthScrape is what an answer of /metrics on the health port needs
// besides the queues.
type healthScrape struct {
	table   *protocol.Table
	version string
	token   string // METRICS_TOKEN: required when set
}

// liveFor is how old the loop's last tick and the newest worker heartbeat
// may be for liveness: the loop ticks every 100 ms, workers beat as often.
const liveFor = 5 * time.Second

// openHealth binds the health port. It is a reuse-port socket, so that a
// new master started by USR2 binds it too and both answer until the old
// one exits.
func openHealth(addr string, log *zap.Logger) (*health, error) {
	l, err := listenOne(addr, 128, true)
	if err != nil {
		return nil, fmt.Errorf("open health port (HealthBind) %s: %w", addr, err)
	}
	ln, err := net.FileListener(l.file)
	l.file.Close()
	if err != nil {
		return nil, fmt.Errorf("open health port (HealthBind) %s: %w", addr, err)
	}
	h := &health{ln: ln}
	h.loopBeat.Store(protocol.Nanotime())
	h.readiness.Store(&Readiness{})
	mux := http.NewServeMux()
	mux.HandleFunc("GET /health", h.serveHealth)
	mux.HandleFunc("GET /ready", h.serveReady)
	mux.HandleFunc("GET /metrics", h.serveMetrics)
	h.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 2 * time.Second, ReadTimeout: 5 * time.Second,
		WriteTimeout: 5 * time.Second, IdleTimeout: 30 * time.Second, MaxHeaderBytes: 8 << 10}
	go func() {
		if err := h.srv.Serve(ln); err != nil && err != http.ErrServerClosed {
			log.Warn("health port failed", zap.Error(err))
		}
	}()
	return h, nil
}

// publishHealth records, from the loop, what the health answers need. The
// readiness is the table's (ReadinessOf), the same that every worker's
// /ready reads, and is replaced only when it changes.
func (m *master) publishHealth() {
	h := m.health
	if h == nil {
		return
	}
	now := protocol.Nanotime()
	var fresh int32
	for _, p := range m.procs {
		if protocol.HeartbeatAge(now, int64(m.table.Row(p.row).Load(protocol.FHeartbeat))) < liveFor {
			fresh++
		}
	}
	h.loopBeat.Store(now)
	h.workers.Store(int32(len(m.procs)))
	h.fresh.Store(fresh)
	r := ReadinessOf(m.table)
	r.Stopping = r.Stopping || m.stopping || m.halt != nil
	if *h.readiness.Load() != r {
		h.readiness.Store(&r)
	}
	if sc := h.scrape.Load(); sc == nil || sc.table != m.table || sc.version != m.o.Worker.Version || sc.token != m.o.Worker.MetricsToken {
		h.scrape.Store(&healthScrape{table: m.table, version: m.o.Worker.Version, token: m.o.Worker.MetricsToken})
	}
	if now-h.queuesAt >= int64(100*time.Millisecond) {
		h.queuesAt = now
		q := m.listenQueues()
		h.queues.Store(&q)
	}
}

// listenQueues reads the accept queue of every TCP address the master
// serves: its shared socket, or with ReusePort the sum over the slots'
// sockets, so that the health port reports the whole server's queue. It
// runs on the loop, which alone opens and closes sockets.
func (m *master) listenQueues() []worker.ListenQueue {
	var out []worker.ListenQueue
	for i, b := range m.sockets.binds {
		if b.path != "" {
			continue // unix sockets have no TCP_INFO
		}
		ls := []*listener{b}
		if m.sockets.reusePort {
			ls = ls[:0]
			for _, slot := range m.sockets.slots {
				if i < len(slot) {
					ls = append(ls, slot[i])
				}
			}
		}
		sum, found := worker.ListenQueue{Addr: b.bound}, false
		for _, l := range ls {
			if l == nil || l.file == nil {
				continue
			}
			rc, err := l.file.SyscallConn()
			if err != nil {
				continue
			}
			_ = rc.Control(func(fd uintptr) {
				if q, ok := worker.ReadListenQueue(fd, b.bound); ok {
					sum.Length += q.Length
					sum.Limit += q.Limit
					found = true
				}
			})
		}
		if found {
			out = append(out, sum)
		}
	}
	return out
}

func (h *health) close() {
	if h != nil {
		h.srv.Close()
		h.busy.Lock() // an answer that reads the status table has finished
		h.closed = true
		h.busy.Unlock()
	}
}

// serveMetrics is the whole server's /metrics, as every worker answers it
// (worker.WriteMetrics, from a snapshot of the status table), but from the
// master: a Prometheus that scrapes the health port never waits behind
// requests, and the main port need not publish it. It needs the bearer
// token when METRICS_TOKEN is set, and nothing else: the health port is
// the operator's bind.
func (h *health) serveMetrics(w http.ResponseWriter, r *http.Request) {
	sc := h.scrape.Load()
	if sc == nil {
		writeHealth(w, http.StatusServiceUnavailable, "starting", "the master has not started yet")
		return
	}
	if sc.token != "" && !worker.MetricsTokenOK([]byte(r.Header.Get("Authorization")), sc.token) {
		w.Header().Set("WWW-Authenticate", `Bearer realm="metrics"`)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusUnauthorized)
		w.Write([]byte(`{"detail":"/metrics needs Authorization: Bearer <METRICS_TOKEN>","status":401}`))
		return
	}
	var queues []worker.ListenQueue
	if q := h.queues.Load(); q != nil {
		queues = *q
	}
	var buf bytes.Buffer
	h.busy.RLock()
	if h.closed {
		h.busy.RUnlock()
		writeHealth(w, http.StatusServiceUnavailable, "stopping", "the master is stopping")
		return
	}
	err := worker.WriteMetrics(&buf, sc.table.Snapshot(), protocol.Nanotime(), worker.BuildInfo{Version: sc.version}, queues)
	h.busy.RUnlock()
	if err != nil {
		http.Error(w, "metrics: "+err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", worker.MetricsContentType)
	w.Header().Set("Cache-Control", "no-store")
	w.Write(buf.Bytes())
}

// serveHealth is liveness: the master's loop runs, and if there are
// workers, at least one of them beats. A stopping server is still alive.
func (h *health) serveHealth(w http.ResponseWriter, _ *http.Request) {
	loopAge := protocol.HeartbeatAge(protocol.Nanotime(), h.loopBeat.Load())
	switch {
	case loopAge > liveFor:
		writeHealth(w, http.StatusServiceUnavailable, "unhealthy", fmt.Sprintf("the master's loop has not run for %s", loopAge.Round(time.Millisecond)))
	case h.workers.Load() > 0 && h.fresh.Load() == 0:
		writeHealth(w, http.StatusServiceUnavailable, "unhealthy", "no worker has a recent heartbeat")
	default:
		writeHealth(w, http.StatusOK, "healthy", "")
	}
}

// serveReady is readiness, as ReadinessOf defines it: 200 unless the server
// is stopping, no worker is ready or the latest database check failed.
func (h *health) serveReady(w http.ResponseWriter, _ *http.Request) {
	r := h.readiness.Load()
	code := http.StatusOK
	if !r.OK() {
		code = http.StatusServiceUnavailable
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	w.Write(r.AppendJSON(make([]byte, 0, 192), protocol.Nanotime()))
}

func writeHealth(w http.ResponseWriter, code int, status, detail string) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	if detail == "" {
		fmt.Fprintf(w, `{"status":%q}`, status)
		return
	}
	fmt.Fprintf(w, `{"status":%q,"detail":%q}`, status, detail)
}
