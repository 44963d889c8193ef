// Command testserver embeds the supervisor and worker packages with a test
// handler, as any program would; the process-level tests drive it.
//
// Routes: /slow?ms=N sleeps, /hang blocks for ever, /pid answers the
// worker's pid, /orphan leaves an orphaned grandchild process, /grow?mb=N
// keeps N more MiB alive, /burn?us=N burns about N µs of CPU, /contend?ms=N
// sleeps N ms for each /contend request in flight in the worker (a shared
// resource that slows down with load; &flat=1 sleeps N ms whatever the
// load), anything else answers "ok". Requests with the header
// "X-Essential: 1" are essential (App.Essential).
// TESTSERVER_BOOT_FAIL=1 makes every worker fail to boot; TESTSERVER_CRASH=1
// makes every worker exit before it is ready; TESTSERVER_BOOT_FAIL_FILE=F
// makes a worker fail to boot while the file F exists. TESTSERVER_UPGRADE_FAIL=1
// makes a new master (USR2) exit at once; TESTSERVER_UPGRADE_BOOT_FAIL=1
// makes a new master's workers fail to boot.
//
// With -plain ADDR it serves the same handler (setup's App.Handler) in ONE
// default fasthttp.Server process instead: no supervisor, no worker, no
// backpressure or shedding, GOMAXPROCS left at its default (every core the
// process may run on). make bench compares the supervised server with it.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"math"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/mcpgateway/mcpgateway/supervisor"
	"github.com/mcpgateway/mcpgateway/supervisor/logging"
	"github.com/mcpgateway/mcpgateway/worker"
	"github.com/valyala/fasthttp"
	"go.uber.org/zap"
)

func main() {
	if handled, code := supervisor.RunInit(); handled {
		os.Exit(code)
	}
	if len(os.Args) > 1 && os.Args[1] == "worker" {
		os.Exit(worker.Run(setup))
	}
	if os.Getenv("MCPGATEWAY_UPGRADE_FDS") != "" && os.Getenv("TESTSERVER_UPGRADE_FAIL") == "1" {
		logging.Exit(1, "testserver: failing as a new master (TESTSERVER_UPGRADE_FAIL=1)")
	}
	if os.Getenv("MCPGATEWAY_UPGRADE_FDS") != "" && os.Getenv("TESTSERVER_UPGRADE_BOOT_FAIL") == "1" {
		os.Setenv("TESTSERVER_BOOT_FAIL", "1") // for this new master's workers
	}
	var binds multiFlag
	fs := flag.NewFlagSet("testserver", flag.ExitOnError)
	fs.Var(&binds, "bind", "address (repeatable)")
	o := supervisor.Options{Args: []string{"worker"}, RespawnFailed: true}
	fs.IntVar(&o.Workers, "workers", 2, "")
	fs.DurationVar(&o.Timeout, "timeout", 30*time.Second, "")
	fs.DurationVar(&o.GracefulTimeout, "graceful-timeout", 5*time.Second, "")
	fs.DurationVar(&o.ShutdownDelay, "shutdown-delay", 0, "")
	fs.StringVar(&o.HealthBind, "health-bind", "", "")
	fs.IntVar(&o.MaxRequests, "max-requests", 0, "")
	fs.IntVar(&o.MaxRequestsJitter, "max-requests-jitter", 0, "")
	fs.IntVar(&o.Worker.Backpressure, "backpressure", 0, "")
	fs.BoolVar(&o.Worker.BackpressureAuto, "backpressure-auto", false, "adapt the in-flight limit, up to --backpressure")
	fs.DurationVar(&o.Worker.MaxQueueDelay, "max-queue-delay", 0, "shed requests that waited longer (0: off)")
	fs.IntVar(&o.Backlog, "backlog", 0, "")
	fs.IntVar(&o.Worker.WorkerConnections, "worker-connections", 1000, "")
	fs.BoolVar(&o.RespawnFailed, "respawn-failed", true, "")
	fs.BoolVar(&o.ReusePort, "reuse-port", false, "")
	fs.IntVar(&o.ReloadSurge, "reload-surge", 0, "slots a HUP replaces at once (0: all)")
	fs.StringVar(&o.Pidfile, "pidfile", "", "")
	fs.StringVar(&o.ControlSocket, "control-socket", "", "")
	fs.DurationVar(&o.MaxWorkerLifetime, "max-worker-lifetime", 0, "")
	maxRSS := fs.Int64("max-worker-rss", 0, "MiB")
	reloadFile := fs.String("reload-file", "", "HUP reads workers=N and boot_fail=1 from this file; a line 'bad' fails the reload")
	prepareDelay := fs.Duration("reload-prepare-delay", 0, "a HUP's Prepare (migrations) takes this long")
	calibrate := fs.Bool("calibrate", false, "print how many rounds of /burn's loop take a microsecond here, and exit")
	plain := fs.String("plain", "", "serve the handler on this address in one default fasthttp.Server process (no supervisor, no shedding); the other flags are ignored")
	fs.Parse(os.Args[1:])
	if *calibrate {
		fmt.Println(burnRounds())
		os.Exit(0)
	}
	if *plain != "" {
		os.Exit(servePlain(*plain))
	}
	o.MaxWorkerRSS = *maxRSS << 20
	if *reloadFile != "" {
		o.Reload = func(ctx context.Context) (supervisor.Options, error) {
			n := o
			select { // the migrations a reload runs
			case <-time.After(*prepareDelay):
			case <-ctx.Done():
				return n, ctx.Err()
			}
			b, err := os.ReadFile(*reloadFile)
			if err != nil {
				return n, err
			}
			for i, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
				k, v, _ := strings.Cut(line, "=")
				switch k {
				case "workers":
					if n.Workers, err = strconv.Atoi(v); err != nil {
						return n, fmt.Errorf("%s:%d: workers: %w", *reloadFile, i+1, err)
					}
				case "boot_fail": // the new configuration's workers cannot boot
					n.Payload = []byte(`{"boot_fail":true}`)
				default:
					return n, fmt.Errorf("%s:%d: bad setting %q", *reloadFile, i+1, line)
				}
			}
			return n, nil
		}
	}
	o.Binds = binds
	o.Worker.KeepAlive = 5 * time.Second
	o.Worker.Threads = 1
	o.Worker.MaxHeaderSize = 8192
	o.Worker.MaxRequestBodySize = 1 << 20
	o.Worker.LogLevel = "info"
	log, err := logging.New("info", "", logging.FormatJSON) // the tests read the lines
	if err != nil {
		logging.Exit(1, "%v", err)
	}
	o.Logger = log
	if err := supervisor.Run(context.Background(), o); err != nil {
		var h *supervisor.HaltError
		if errors.As(err, &h) {
			os.Exit(h.Code)
		}
		fmt.Fprintln(os.Stderr, "testserver:", err)
		os.Exit(1)
	}
}

// servePlain serves setup's handler on addr in one default fasthttp.Server
// until INT or TERM: the baseline the supervised server is compared with.
func servePlain(addr string) int {
	log, err := logging.New("info", "", logging.FormatJSON)
	if err != nil {
		logging.Exit(1, "%v", err)
	}
	app, err := setup(context.Background(), worker.Info{Logger: log, CountPanic: func() {}, ReportDatabase: func(bool) {}})
	if err != nil {
		fmt.Fprintln(os.Stderr, "testserver:", err)
		return 1
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		fmt.Fprintln(os.Stderr, "testserver:", err)
		return 1
	}
	srv := &fasthttp.Server{Handler: app.Handler}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	go func() {
		<-sig
		srv.Shutdown()
	}()
	log.Info("serving plain", zap.String("addr", ln.Addr().String()), zap.Int("pid", os.Getpid()))
	if err := srv.Serve(ln); err != nil {
		fmt.Fprintln(os.Stderr, "testserver:", err)
		return 1
	}
	if app.Close != nil {
		app.Close()
	}
	return 0
}

var grown [][]byte

func setup(ctx context.Context, info worker.Info) (worker.App, error) {
	if os.Getenv("TESTSERVER_CRASH") == "1" {
		os.Exit(1) // dies before ready, as a worker with a broken runtime would
	}
	if os.Getenv("TESTSERVER_BOOT_FAIL") == "1" {
		return worker.App{}, errors.New("handler failed to initialise (TESTSERVER_BOOT_FAIL=1)")
	}
	if f := os.Getenv("TESTSERVER_BOOT_FAIL_FILE"); f != "" {
		if _, err := os.Stat(f); err == nil {
			return worker.App{}, fmt.Errorf("handler failed to initialise (%s exists)", f)
		}
	}
	if strings.Contains(string(info.Payload), `"boot_fail":true`) {
		return worker.App{}, errors.New("handler failed to initialise (boot_fail in the configuration)")
	}
	pid := []byte(strconv.Itoa(os.Getpid()))
	var contending atomic.Int64
	return worker.App{Essential: func(ctx *fasthttp.RequestCtx) bool {
		return string(ctx.Request.Header.Peek("X-Essential")) == "1"
	}, Handler: func(ctx *fasthttp.RequestCtx) {
		switch string(ctx.Path()) {
		case "/burn":
			us, _ := strconv.Atoi(string(ctx.QueryArgs().Peek("us")))
			ctx.SetBodyString(strconv.FormatUint(burn(us), 10))
		case "/contend":
			ms, _ := strconv.Atoi(string(ctx.QueryArgs().Peek("ms")))
			n := contending.Add(1)
			if ctx.QueryArgs().Has("flat") {
				n = 1
			}
			time.Sleep(time.Duration(ms) * time.Millisecond * time.Duration(n))
			contending.Add(-1)
			ctx.SetBodyString("contended")
		case "/slow":
			ms, _ := strconv.Atoi(string(ctx.QueryArgs().Peek("ms")))
			time.Sleep(time.Duration(ms) * time.Millisecond)
			ctx.SetBodyString("slept")
		case "/hang":
			select {}
		case "/pid":
			ctx.SetBody(pid)
		case "/orphan": // a tool whose subprocess outlives it: the grandchild is orphaned
			if err := exec.Command("/bin/sh", "-c", "sleep 0.2 &").Run(); err != nil {
				ctx.SetStatusCode(fasthttp.StatusInternalServerError)
			}
		case "/panic":
			panic("test panic")
		case "/recovered-panic": // an application that recovers its own panics reports them
			func() {
				defer func() {
					if recover() != nil {
						info.CountPanic()
					}
				}()
				panic("recovered by the application")
			}()
			ctx.SetStatusCode(fasthttp.StatusInternalServerError)
		case "/grow":
			mb, _ := strconv.Atoi(string(ctx.QueryArgs().Peek("mb")))
			b := make([]byte, mb<<20)
			for i := range b {
				b[i] = 1
			}
			grown = append(grown, b)
			ctx.SetBodyString("grown")
		default:
			ctx.SetBodyString("ok")
		}
	}, Close: func() { info.Logger.Debug("app closed", zap.Int("pid", os.Getpid())) }}, nil
}

// burnRounds is how many rounds of burn's loop take a microsecond of CPU
// here, measured once per process.
var burnRounds = sync.OnceValue(func() float64 {
	// A program that compares servers gives them all the same figure, so
	// that each burns the same work (TESTSERVER_BURN_ROUNDS_PER_US, what
	// testserver -calibrate prints).
	if v, err := strconv.ParseFloat(os.Getenv("TESTSERVER_BURN_ROUNDS_PER_US"), 64); err == nil && v > 0 {
		return v
	}
	best := time.Duration(math.MaxInt64)
	const rounds = 5_000_000 // a few milliseconds: long enough for the clock, and for the CPU to reach its speed
	for range 5 {            // the best of five: the fastest is the least disturbed
		start := time.Now()
		spinSink ^= spin(rounds) // used, as a request's body uses it: no loop the compiler may drop
		best = min(best, time.Since(start))
	}
	return rounds / (float64(max(best, 1)) / 1e3)
})

var spinSink uint64

// burn spends about us microseconds of CPU: a fixed amount of work, so that
// under contention it takes longer, as real work does.
func burn(us int) uint64 { return spin(int(float64(us) * burnRounds())) }

func spin(rounds int) uint64 {
	x := uint64(88172645463325252)
	for range rounds { // xorshift: nothing the compiler can fold away
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
	}
	return x
}

type multiFlag []string

func (m *multiFlag) String() string     { return fmt.Sprint(*m) }
func (m *multiFlag) Set(s string) error { *m = append(*m, s); return nil }
