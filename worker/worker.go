// Package worker is the child side of the process model: it takes the
// sockets, status row and configuration its master hands it, serves HTTP with
// fasthttp until told to stop, and drains without dropping a request.
//
// A program embeds it by dispatching its internal "worker" command to Run
// with a Setup that builds the application's handler.
package worker

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/mcpgateway/mcpgateway/supervisor/protocol"
	"github.com/valyala/fasthttp"
	"go.uber.org/zap"
)

// App is what the embedding program serves in a worker.
type App struct {
	Handler fasthttp.RequestHandler
	Close   func() // called after the last request, may be nil
}

// Info is what a Setup learns about its worker.
type Info struct {
	Payload    json.RawMessage // the embedding program's settings, as the master resolved them
	Slot       int             // logical worker index
	Generation int             // how many workers the slot has had
	Logger     *zap.Logger     // tagged with slot, pid and generation
	Table      *protocol.Table // the whole server's status, for metrics
	Options    protocol.WorkerOptions

	// CountPanic counts a panic the application recovered itself, in this
	// worker's row of the status table, as the worker counts the ones it
	// recovers: /metrics reports both.
	CountPanic func()
}

// Setup builds the application once per worker process. An error is a boot
// failure: the worker exits with protocol.ExitBootError and the master halts.
type Setup func(ctx context.Context, info Info) (App, error)

// worker is one running worker process.
type worker struct {
	id      protocol.Identity
	opts    protocol.WorkerOptions
	log     *zap.Logger
	access  *zap.Logger // access lines: the main log or AccessLogFile
	table   *protocol.Table
	row     *protocol.Row
	master  *os.File // pipe to the master
	payload json.RawMessage
	app     App
	metrics fasthttp.RequestHandler // /metrics for the whole server

	server    *fasthttp.Server
	listeners []net.Listener
	tls       *tls.Config // nil: plain HTTP (tls.go)
	httpMode  string      // HTTPAuto, HTTP1 or HTTP2
	conns     connSet
	inflight  tracker

	maxRequests uint64
	retireOnce  sync.Once
	draining    atomic.Bool
	abandoned   atomic.Int64 // requests answered 504 whose handler is still running
	stopped     chan struct{}
}

// Run is the whole life of a worker process; it returns the exit status.
func Run(setup Setup) int {
	w, err := attach()
	if err != nil {
		fmt.Fprintf(os.Stderr, "mcpgateway worker: %v\n", err)
		return 1
	}
	return w.run(setup)
}

// attach reads what the master handed over: identity, configuration, status
// row, pipe and listeners.
func attach() (*worker, error) {
	id, err := protocol.ReadIdentity()
	if err != nil {
		return nil, err
	}
	if os.Getppid() != id.MasterPID {
		return nil, fmt.Errorf("master %d is gone", id.MasterPID)
	}
	// Every worker shares the memfd's file offset, so read at offsets.
	cfg := os.NewFile(protocol.FDConfig, "config")
	raw, err := io.ReadAll(io.NewSectionReader(cfg, 0, 1<<30))
	cfg.Close()
	if err != nil {
		return nil, fmt.Errorf("read configuration from master: %w", err)
	}
	var env protocol.Envelope
	if err := json.Unmarshal(raw, &env); err != nil {
		return nil, fmt.Errorf("decode configuration from master: %w", err)
	}
	table, err := protocol.AttachTable(os.NewFile(protocol.FDStatus, "status"), true)
	if err != nil {
		return nil, err
	}
	if id.Row < 1 || id.Row > table.Len() {
		return nil, fmt.Errorf("status row %d out of range 1..%d", id.Row, table.Len())
	}
	log, err := protocol.NewLogger(env.Worker.LogLevel, env.Worker.LogFile)
	if err != nil {
		return nil, err
	}
	w := &worker{
		id: id, opts: env.Worker, table: table, row: table.Row(id.Row),
		master:      os.NewFile(protocol.FDMaster, "master"),
		maxRequests: uint64(id.MaxRequests), payload: env.App,
		stopped: make(chan struct{}),
		log: log.With(zap.String("proc", "worker"), zap.Int("slot", id.Slot),
			zap.Int("pid", os.Getpid()), zap.Int("generation", id.Generation)),
	}
	for i := 0; i < id.Listeners; i++ {
		f := os.NewFile(uintptr(protocol.FDListeners+i), "listener")
		ln, err := net.FileListener(f)
		f.Close()
		if err != nil {
			return nil, fmt.Errorf("inherit listener %d: %w", i, err)
		}
		w.listeners = append(w.listeners, ln)
	}
	w.conns.row = w.row
	w.access = w.log
	if env.Worker.AccessLogFile != "" {
		access, err := protocol.NewLogger("info", env.Worker.AccessLogFile)
		if err != nil {
			return nil, err
		}
		w.access = access.With(zap.Int("slot", id.Slot), zap.Int("pid", os.Getpid()))
	}
	w.app.Handler = func(*fasthttp.RequestCtx) {}
	return w, nil
}

func (w *worker) run(setup Setup) int {
	if w.opts.Threads > 0 {
		runtime.GOMAXPROCS(w.opts.Threads)
	}
	w.heartbeat()

	// Signals first, so a TERM during a slow boot is not lost.
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGUSR1)
	signal.Ignore(syscall.SIGHUP, syscall.SIGTTIN, syscall.SIGTTOU, syscall.SIGUSR2, syscall.SIGWINCH)

	if err := w.setupTLS(); err != nil {
		w.log.Error("worker failed to boot", zap.Error(err))
		return protocol.ExitBootError
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	app, err := setup(ctx, Info{
		Payload: w.payload, Slot: w.id.Slot, Generation: w.id.Generation,
		Logger: w.log, Table: w.table, Options: w.opts,
		CountPanic: func() { w.row.Add(protocol.CPanics, 1) },
	})
	if err != nil {
		w.log.Error("worker failed to boot", zap.Error(err))
		return protocol.ExitBootError
	}
	if app.Handler != nil {
		w.app = app
	}
	w.metrics = MetricsHandler(w.table, BuildInfo{Version: w.opts.Version}, w.listeners)
	w.serve()
	w.row.Store(protocol.FState, protocol.StateReady)
	w.send(protocol.MsgReady)
	w.log.Info("worker ready", zap.Int("listeners", len(w.listeners)))

	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case sig := <-sigs:
			switch sig {
			case syscall.SIGTERM:
				return w.drain("signal TERM")
			case syscall.SIGINT:
				w.log.Info("worker fast stop", zap.String("signal", "INT"))
				return 0
			case syscall.SIGUSR1:
				if err := protocol.ReopenLogFiles(); err != nil {
					w.log.Error("reopen log files", zap.Error(err))
				}
			}
		case <-tick.C:
			w.heartbeat()
			w.expireRequests()
			if os.Getppid() != w.id.MasterPID {
				w.log.Warn("master is gone, stopping")
				return w.drain("master gone")
			}
		}
	}
}

// heartbeat tells the master this process is alive, and publishes what the
// master and /metrics read: open connections, oldest request, memory.
func (w *worker) heartbeat() {
	now := protocol.Nanotime()
	w.row.Store(protocol.FHeartbeat, uint64(now))
	w.row.Store(protocol.FOldestStart, uint64(w.inflight.oldest()))
	if rss := readRSS(); rss > 0 {
		w.row.Store(protocol.FRSS, rss)
	}
}

// send writes one message line to the master; a broken pipe means the
// master is gone, which the parent check handles.
func (w *worker) send(msg string) {
	if _, err := w.master.WriteString(msg + "\n"); err != nil {
		w.log.Debug("message to master failed", zap.String("message", msg), zap.Error(err))
	}
}

// retire asks the master, once, for a replacement; this worker keeps serving
// until the master stops it.
func (w *worker) retire(reason string) {
	w.retireOnce.Do(func() {
		w.row.CompareAndSwap(protocol.FState, protocol.StateReady, protocol.StateRetiring)
		w.log.Info("worker asks to be replaced", zap.String("reason", reason),
			zap.Uint64("served", w.row.Load(protocol.CServed)))
		w.send(protocol.MsgRetire + reason)
	})
}

// drain stops accepting, lets in-flight requests finish and closes
// keep-alive connections cleanly, within the graceful timeout.
func (w *worker) drain(why string) int {
	start := time.Now()
	w.draining.Store(true)
	w.row.Store(protocol.FState, protocol.StateDraining)
	for _, ln := range w.listeners {
		ln.Close() // the master still holds the socket: queued connections wait for the others
	}
	w.log.Info("worker draining", zap.String("why", why), zap.Int64("open_connections", w.conns.open()))
	deadline := start.Add(w.opts.GracefulTimeout)
	// Each connection's next answer says "Connection: close", so busy ones
	// go away cleanly. A quiet keep-alive connection is a different matter: a
	// client may pick it from its pool and write a request at the very moment
	// it is closed, and a POST that meets a closed connection is not retried.
	// So when the server goes on (recycling, reload, scaling) this worker
	// closes none itself: the keep-alive idle timeout does, exactly as it
	// would without the drain. When the server is stopping or the master is
	// gone nothing will serve them afterwards, and quiet ones close at once.
	closeQuiet := w.table.Header().Load(protocol.HStopping) == 1 || os.Getppid() != w.id.MasterPID
	for {
		if closeQuiet {
			w.conns.closeIdle(protocol.Nanotime() - int64(quietBeforeClose))
		}
		if w.conns.open()-w.abandoned.Load() <= 0 {
			break
		}
		if time.Now().After(deadline) {
			w.log.Warn("graceful timeout: closing remaining connections",
				zap.Int64("open_connections", w.conns.open()), zap.Duration("graceful_timeout", w.opts.GracefulTimeout))
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if w.app.Close != nil {
		w.app.Close()
	}
	w.log.Info("worker stopped", zap.String("why", why), zap.Duration("drain", time.Since(start)),
		zap.Uint64("served", w.row.Load(protocol.CServed)))
	return 0
}

// quietBeforeClose is how long a connection must have been idle before a
// worker of a stopping server closes it without waiting for a request.
const quietBeforeClose = 100 * time.Millisecond

// readRSS reads this process's resident set size from /proc.
func readRSS() uint64 {
	b, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) < 2 {
		return 0
	}
	pages, err := strconv.ParseUint(f[1], 10, 64)
	if err != nil {
		return 0
	}
	return pages * uint64(os.Getpagesize())
}
