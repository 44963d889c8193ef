package supervisor

import (
	"fmt"
	"net"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/mcpgateway/mcpgateway/supervisor/protocol"
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

	srv *http.Server
	ln  net.Listener
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
}

func (h *health) close() {
	if h != nil {
		h.srv.Close()
	}
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
