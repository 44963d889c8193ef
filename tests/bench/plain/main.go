// Command plain is the ceiling that `make bench` compares the gateway with:
// the same rpc handler as an mcpgateway worker, built from the same settings
// the same way (cmd/mcpgateway's setupWorker), served by ONE default
// fasthttp.Server in ONE process with GOMAXPROCS = every core. No master, no
// status table, no backpressure, no balancing: what the supervisor costs is
// the difference.
//
// The settings are read like `mcpgateway serve` reads them (config.Load:
// profile defaults, gunicorn.conf.go and .env of the working directory, the
// environment); -addr replaces the bind address. The database is migrated
// first (store.Migrate, what `serve` runs in its migrate child).
//
//	go run ./tests/bench/plain -addr 127.0.0.1:8080 [-pprof 127.0.0.1:6060]
package main

import (
	"context"
	"flag"
	"fmt"
	"net"
	"net/http"
	_ "net/http/pprof" // served only with -pprof, on its own port
	"os"
	"os/signal"
	"runtime"
	"syscall"
	"time"

	"github.com/mcpgateway/mcpgateway/cmd/mcpgateway/gateway"
	"github.com/mcpgateway/mcpgateway/config"
	"github.com/mcpgateway/mcpgateway/store"
	"github.com/mcpgateway/mcpgateway/supervisor/logging"
	"github.com/valyala/fasthttp"
	"go.uber.org/zap"
)

// version is what cmd/mcpgateway reports without -ldflags.
const version = "0.1.0-dev"

// Experiments only (the bench runs the default server): what a worker's
// per-connection buffers cost.
var (
	readBuffer   int
	reduceMemory bool
	readTimeout  time.Duration
	idleTimeout  time.Duration
)

func main() {
	addr := flag.String("addr", "127.0.0.1:8080", "address to serve the gateway on")
	pprofAddr := flag.String("pprof", "", "serve net/http/pprof on this address too (e.g. 127.0.0.1:6060)")
	migrate := flag.Bool("migrate", true, "run the database migrations before serving")
	flag.IntVar(&readBuffer, "read-buffer", 0, "experiment: fasthttp ReadBufferSize (0: fasthttp's default)")
	flag.BoolVar(&reduceMemory, "reduce-memory", false, "experiment: fasthttp ReduceMemoryUsage")
	flag.DurationVar(&readTimeout, "read-timeout", 0, "experiment: fasthttp ReadTimeout (the worker sets 1m)")
	flag.DurationVar(&idleTimeout, "idle-timeout", 0, "experiment: fasthttp IdleTimeout (the worker sets the keep-alive, 5s)")
	flag.Parse()
	if err := run(*addr, *pprofAddr, *migrate); err != nil {
		fmt.Fprintf(os.Stderr, "plain: %v\n", err)
		os.Exit(1)
	}
}

func run(addr, pprofAddr string, migrate bool) error {
	res, err := config.Load(config.Input{Environ: os.Environ(), Dir: "."})
	if err != nil {
		return err
	}
	s := res.Settings
	log, err := logging.New(s.LogLevel, s.ErrorLogFile, s.LogFormat)
	if err != nil {
		return err
	}
	defer log.Sync()
	log = log.With(zap.String("proc", "plain"), zap.Int("pid", os.Getpid()))

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if migrate {
		if err := store.Migrate(ctx, gateway.StoreOptions(s, log)); err != nil {
			return fmt.Errorf("migrate: %w", err)
		}
	}
	// What setupWorker does in each worker.
	srv, st, err := gateway.Open(ctx, s, version, log, nil)
	if err != nil {
		return err
	}
	defer st.Close()

	if pprofAddr != "" {
		go func() {
			if err := http.ListenAndServe(pprofAddr, nil); err != nil {
				log.Error("pprof", zap.Error(err))
			}
		}()
	}
	ln, err := net.Listen("tcp4", addr)
	if err != nil {
		return err
	}
	server := &fasthttp.Server{Handler: srv.Handler, ReadBufferSize: readBuffer, ReduceMemoryUsage: reduceMemory,
		ReadTimeout: readTimeout, IdleTimeout: idleTimeout}
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		<-sigs
		_ = server.Shutdown()
	}()
	log.Info("plain fasthttp server ready", zap.String("addr", ln.Addr().String()),
		zap.Int("gomaxprocs", runtime.GOMAXPROCS(0)), zap.String("database", st.Dialect()),
		zap.String("cache_type", st.CacheType()))
	return server.Serve(ln)
}
