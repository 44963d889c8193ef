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
	"github.com/mcpgateway/mcpgateway/internal/adaptive"
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

	"github.com/mcpgateway/mcpgateway/supervisor/logging"
	"github.com/mcpgateway/mcpgateway/supervisor/protocol"
	"github.com/valyala/fasthttp"
	"go.uber.org/zap"
	"golang.org/x/sys/unix"
)

// App is what the embedding program serves in a worker.
type App struct {
	Handler fasthttp.RequestHandler
	Close   func() // called after the last request, may be nil

	// Drain, when set, is called once when the worker starts to drain,
	// with the time by which the drain must end (the graceful timeout):
	// the application ends the long-lived answers that clients can resume
	// elsewhere, so that they do not hold the drain.
	Drain func(deadline time.Time)

	// Essential, when set, picks the requests a shedding worker admits
	// first (for MCP: initialize, ping, tools/list before tools/call). It
	// runs before admission on every request, so it must be cheap: read a
	// header, peek at the body, never block.
	Essential func(ctx *fasthttp.RequestCtx) bool
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

	// Count adds n to one of the application's counters in this worker's
	// row (protocol.CRateLimitedUser and the like), which /metrics reports.
	Count func(f protocol.Field, n uint64)

	// SetGauge sets one of the application's gauges in this worker's row
	// (protocol.FUpstreamsOpen and the like).
	SetGauge func(f protocol.Field, v uint64)

	// ReportDatabase publishes the outcome of the application's latest
	// database check in this worker's row: readiness, also the master's on
	// the health port, fails while the latest check of the server failed.
	ReportDatabase func(ok bool)
}

// Setup builds the application once per worker process. An error is a boot
// failure: the worker exits with protocol.ExitBootError, which the master
// takes as a failure to boot, not as a crash.
type Setup func(ctx context.Context, info Info) (App, error)

// worker is one running worker process.
type worker struct {
	id      protocol.Identity
	opts    protocol.WorkerOptions
	log     *zap.Logger
	access  *zap.Logger // access lines: the main log or AccessLogFile
	table   *protocol.Table
	row     *protocol.Row
	master  io.Writer // pipe to the master
	payload json.RawMessage
	app     App
	metrics fasthttp.RequestHandler // /metrics for the whole server
	getppid func() int              // os.Getppid; tests stand in for a dead master

	server    *fasthttp.Server
	listeners []net.Listener
	tls       *tls.Config // nil: plain HTTP (tls.go)
	httpMode  string      // HTTPAuto, HTTP1 or HTTP2
	conns     connSet
	inflight  tracker
	shed      *shedder        // by queueing delay (overload.go)
	limiter   *adaptive.Limit // the adaptive in-flight limit; nil: fixed (opts.Backpressure)
	refusers  chan struct{}   // connections being refused (refuseConn), at most maxRefusers

	queueCheckedAt atomic.Int64   // Nanotime of the last look at the accept queue
	queueDeep      atomic.Bool    // what it showed
	timeoutBody    string         // the JSON-RPC error of the watchdog's 504
	serving        sync.WaitGroup // the serve goroutines, one per listener
	timeoutRaw     []byte         // the whole 504, as the watchdog writes it on an HTTP/1.1 connection

	maxRequests uint64
	admitted    atomic.Uint64 // requests that reached the application: what max_requests counts
	retireOnce  sync.Once
	retired     atomic.Bool // retire ran: the state stays retiring
	draining    atomic.Bool
	stopped     chan struct{} // closed when the worker stops: ends the watchdog
	stopOnce    sync.Once
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
	// The master's fds reach this process without close-on-exec (ExtraFiles
	// are dup2'ed into place). Set it back on every one before anything
	// else, so that no subprocess of a handler inherits the status table
	// (which it could scribble on), the master pipe (where it could forge
	// messages, and whose write end it would keep open after this worker
	// exits) or a listening socket.
	for fd := protocol.FDConfig; fd < protocol.FDListeners+id.Listeners; fd++ {
		unix.CloseOnExec(fd)
	}
	setProcessName(id.Slot)
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
	log, err := logging.New(env.Worker.LogLevel, env.Worker.LogFile, env.Worker.LogFormat)
	if err != nil {
		return nil, err
	}
	w := &worker{
		id: id, opts: env.Worker, table: table, row: table.Row(id.Row),
		master:      os.NewFile(protocol.FDMaster, "master"),
		maxRequests: uint64(id.MaxRequests), payload: env.App,
		stopped: make(chan struct{}), getppid: os.Getppid,
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
		access, err := logging.New("info", env.Worker.AccessLogFile, env.Worker.LogFormat)
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
		CountPanic:     func() { w.row.Add(protocol.CPanics, 1) },
		Count:          func(f protocol.Field, n uint64) { w.row.Add(f, n) },
		SetGauge:       w.row.Store,
		ReportDatabase: w.reportDatabase,
	})
	if err != nil {
		w.log.Error("worker failed to boot", zap.Error(err))
		return protocol.ExitBootError
	}
	if app.Handler != nil {
		w.app = app
	}
	w.metrics = MetricsHandler(w.table, BuildInfo{Version: w.opts.Version}, w.listeners)
	if w.masterGone() {
		// The master died while this worker booted (a slow setup): do not
		// start accepting connections nobody will look after.
		w.log.Warn("master is gone, not serving")
		w.closeApp(time.Now().Add(w.opts.GracefulTimeout), sigs)
		return 0
	}
	w.serve()
	w.markReady()
	w.send(protocol.EncodeReady())
	w.log.Info("worker ready", zap.Int("listeners", len(w.listeners)))
	return w.loop(sigs)
}

// heartbeatInterval is how often a worker beats, and checks its master.
const heartbeatInterval = 100 * time.Millisecond

// loop is a serving worker's life after boot: signals, the heartbeat and
// the parent check, until it stops. It does nothing that can block: the
// watchdog runs on its own goroutine (serve.go). Under CPU saturation the
// tick may come late, but the scheduler preempts busy goroutines every
// 10 ms, so the 100 ms tick keeps a tenfold margin on the promise that a
// worker whose master died stops accepting within a second; the master's
// parent-death signal (TERM) usually comes first anyway.
func (w *worker) loop(sigs <-chan os.Signal) int {
	tick := time.NewTicker(heartbeatInterval)
	defer tick.Stop()
	for {
		select {
		case sig := <-sigs:
			switch sig {
			case syscall.SIGTERM:
				return w.drain("signal TERM", sigs)
			case syscall.SIGINT:
				return w.fastStop("INT")
			case syscall.SIGUSR1:
				w.reopenLogs()
			}
		case <-tick.C:
			w.heartbeat()
			if w.masterGone() {
				w.log.Warn("master is gone, stopping")
				return w.drain("master gone", sigs)
			}
		}
	}
}

// masterGone is true once this worker has been reparented: its master died.
func (w *worker) masterGone() bool { return w.getppid() != w.id.MasterPID }

// fastStop is INT: exit now, in-flight requests or not.
func (w *worker) fastStop(sig string) int {
	w.log.Info("worker fast stop", zap.String("signal", sig))
	w.stop()
	return 0
}

// stop ends what runs beside the servers (the watchdog).
func (w *worker) stop() { w.stopOnce.Do(func() { close(w.stopped) }) }

func (w *worker) reopenLogs() {
	if err := logging.ReopenFiles(); err != nil {
		w.log.Error("reopen log files", zap.Error(err))
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

// send writes one message line (protocol.Encode...) to the master; a
// broken pipe means the master is gone, which the parent check handles.
func (w *worker) send(line []byte) {
	if w.master == nil {
		return
	}
	if _, err := w.master.Write(line); err != nil {
		w.log.Debug("message to master failed", zap.ByteString("message", line), zap.Error(err))
	}
}

// markReady publishes that this worker serves: ready, or retiring if it
// asked to be replaced already (a listener that failed at once).
func (w *worker) markReady() {
	w.row.Store(protocol.FState, protocol.StateReady)
	if w.retired.Load() { // retire may have run before, or run now: both end retiring
		w.row.CompareAndSwap(protocol.FState, protocol.StateReady, protocol.StateRetiring)
	}
}

// retire asks the master, once, for a replacement; this worker keeps serving
// until the master stops it.
func (w *worker) retire(reason string) {
	w.retireOnce.Do(func() {
		w.retired.Store(true)
		w.row.CompareAndSwap(protocol.FState, protocol.StateReady, protocol.StateRetiring)
		w.log.Info("worker asks to be replaced", zap.String("reason", reason),
			zap.Uint64("served", w.row.Load(protocol.CServed)), zap.Uint64("admitted", w.admitted.Load()))
		w.send(protocol.EncodeRetire(reason))
	})
}

// drainPoll is how often a drain looks at its connections.
const drainPoll = 10 * time.Millisecond

// drain stops accepting, lets in-flight requests finish and closes
// keep-alive connections cleanly, within the graceful timeout. INT on sigs
// cuts it short: the worker exits at once.
func (w *worker) drain(why string, sigs <-chan os.Signal) int {
	start := time.Now()
	w.draining.Store(true)
	w.row.Store(protocol.FState, protocol.StateDraining)
	for _, ln := range w.listeners {
		ln.Close() // the master still holds the socket: queued connections wait for the others
	}
	w.log.Info("worker draining", zap.String("why", why), zap.Int64("open_connections", w.conns.open()))
	deadline := start.Add(w.opts.GracefulTimeout)
	if w.app.Drain != nil {
		w.app.Drain(deadline)
	}
	tick := time.NewTicker(drainPoll)
	defer tick.Stop()
	lastBeat := time.Now()
	for {
		w.conns.closeIdle(protocol.Nanotime() - int64(w.quietLife()))
		if w.conns.busy() <= 0 {
			break
		}
		if time.Now().After(deadline) {
			w.log.Warn("graceful timeout: closing remaining connections",
				zap.Int64("open_connections", w.conns.open()), zap.Duration("graceful_timeout", w.opts.GracefulTimeout))
			break
		}
		select {
		case sig := <-sigs:
			switch sig {
			case syscall.SIGINT: // the master escalates a stop: no more waiting
				return w.fastStop("INT")
			case syscall.SIGUSR1:
				w.reopenLogs()
			} // TERM: draining already
		case <-tick.C:
			if time.Since(lastBeat) >= heartbeatInterval {
				w.heartbeat() // /metrics and `status` still show this worker's numbers
				lastBeat = time.Now()
			}
		}
	}
	w.stop()
	if !w.closeApp(deadline, sigs) {
		return w.fastStop("INT")
	}
	w.log.Info("worker stopped", zap.String("why", why), zap.Duration("drain", time.Since(start)),
		zap.Uint64("served", w.row.Load(protocol.CServed)))
	return 0
}

// quietLife is how long a quiet connection (idle between requests, or
// never active: a client that connected and sent nothing, or stalled in its
// TLS handshake) may live during a drain. Decided on each pass: the server
// may start stopping, or the master die, while this worker drains.
//
// Each busy connection's next answer says "Connection: close", so busy ones
// go away cleanly. A quiet keep-alive connection is a different matter: a
// client may pick it from its pool and write a request at the very moment
// it is closed, and a POST that meets a closed connection is not retried.
// So when the server goes on (recycling, reload, scaling) a quiet
// connection lives as long as the keep-alive idle timeout would let it
// live without the drain, and no longer. When the server is stopping or
// the master is gone nothing will serve them afterwards, and quiet ones
// close at once.
func (w *worker) quietLife() time.Duration {
	if w.table.Header().Load(protocol.HStopping) == 1 || w.masterGone() {
		return quietBeforeClose
	}
	if w.opts.KeepAlive > 0 {
		return w.opts.KeepAlive
	}
	return time.Second // no keep-alive: a client has had ample time to send its request
}

// minCloseTime is what app.Close gets even when the drain used up the
// graceful timeout: the master kills a worker one second (killDelay) after
// its graceful timeout, so half of that still ends before the kill.
const minCloseTime = 500 * time.Millisecond

// closeApp runs the application's Close within the graceful deadline. It
// can block on what stuck handlers hold (pgxpool.Close waits for every
// connection to be returned); past the deadline the worker exits without
// it, its connections closed by the kernel, rather than being killed. INT
// on sigs cuts it short too: then it returns false.
func (w *worker) closeApp(deadline time.Time, sigs <-chan os.Signal) bool {
	if w.app.Close == nil {
		return true
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		w.app.Close()
	}()
	limit := max(time.Until(deadline), minCloseTime)
	timer := time.NewTimer(limit)
	defer timer.Stop()
	for {
		select {
		case <-done:
			return true
		case <-timer.C:
			w.log.Warn("application close timed out; exiting without it", zap.Duration("waited", limit))
			return true
		case sig := <-sigs:
			if sig == syscall.SIGINT {
				return false
			}
		}
	}
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

// reportDatabase records the application's latest database check: the
// outcome first, then its time, which readers take as the check's identity.
func (w *worker) reportDatabase(ok bool) {
	v := uint64(protocol.DBCheckFailed)
	if ok {
		v = protocol.DBCheckOK
	}
	w.row.Store(protocol.FDBCheck, v)
	w.row.Store(protocol.FDBCheckAt, uint64(protocol.Nanotime()))
}
