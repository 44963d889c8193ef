package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"time"

	"github.com/mcpgateway/mcpgateway/cmd/mcpgateway/gateway"
	"github.com/mcpgateway/mcpgateway/config"
	"github.com/mcpgateway/mcpgateway/store"
	"github.com/mcpgateway/mcpgateway/supervisor"
	"github.com/mcpgateway/mcpgateway/supervisor/protocol"
	"github.com/mcpgateway/mcpgateway/worker"
	"go.uber.org/zap"
)

// load resolves the configuration; on error it prints it and returns the
// exit status, before anything is bound or opened.
func load(args []string) (*config.Resolved, int) {
	res, err := config.Load(config.Input{Args: args, Environ: os.Environ(), Dir: "."})
	if errors.Is(err, flag.ErrHelp) {
		config.Usage(os.Stderr)
		return nil, 0
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "mcpgateway: %v\n", err)
		return nil, 1
	}
	return res, -1
}

func serve(args []string) int {
	res, code := load(args)
	if res == nil {
		return code
	}
	s := res.Settings
	log, err := protocol.NewLogger(s.LogLevel, s.ErrorLogFile)
	if err != nil {
		fmt.Fprintf(os.Stderr, "mcpgateway: %v\n", err)
		return 1
	}
	defer log.Sync()
	for _, w := range res.Warnings {
		log.Warn("configuration", zap.String("warning", w))
	}
	opts, err := serverOptions(res, log)
	if err != nil {
		log.Error("cannot start", zap.Error(err))
		return 1
	}
	opts.Reload = func() (supervisor.Options, error) { return reloadOptions(args, res, log) }
	opts.ReopenLogs = func() {
		if err := protocol.ReopenLogFiles(); err != nil {
			log.Error("reopen log files", zap.Error(err))
		}
	}
	err = supervisor.Run(context.Background(), opts)
	var halt *supervisor.HaltError
	switch {
	case errors.As(err, &halt):
		return halt.Code
	case err != nil:
		log.Error("cannot start", zap.Error(err))
		return 1
	}
	return 0
}

// reloadOptions resolves the configuration again for HUP: gunicorn.conf.go
// and .env are read anew; the environment and flags are the ones the master
// started with. A key the master generated stays, or every token would die.
func reloadOptions(args []string, first *config.Resolved, log *zap.Logger) (supervisor.Options, error) {
	res, err := config.Load(config.Input{Args: args, Environ: os.Environ(), Dir: "."})
	if err != nil {
		return supervisor.Options{}, err
	}
	if res.Sources["JWTSecretKey"].Kind == "generated" && first.Sources["JWTSecretKey"].Kind == "generated" {
		res.Settings.JWTSecretKey = first.Settings.JWTSecretKey
	}
	for _, w := range res.Warnings {
		log.Warn("configuration", zap.String("warning", w))
	}
	return serverOptions(res, log)
}

// serverOptions maps the resolved settings onto the supervisor.
func serverOptions(res *config.Resolved, log *zap.Logger) (supervisor.Options, error) {
	s := res.Settings
	payload, err := json.Marshal(s)
	if err != nil {
		return supervisor.Options{}, fmt.Errorf("encode settings for workers: %w", err)
	}
	tlsOpts, err := checkTLS(res, log)
	if err != nil {
		return supervisor.Options{}, err
	}
	return supervisor.Options{
		Binds: s.Bind, Backlog: s.Backlog, ReusePort: s.ReusePort,
		Workers: s.Workers, Timeout: s.Timeout, GracefulTimeout: s.GracefulTimeout,
		MaxRequests: s.MaxRequests, MaxRequestsJitter: s.MaxRequestsJitter,
		RespawnFailed: s.RespawnFailed, Pidfile: s.Pidfile,
		MaxWorkerLifetime: s.MaxWorkerLifetime, MaxWorkerRSS: int64(s.MaxWorkerRSS) << 20,
		Worker: protocol.WorkerOptions{
			Backpressure: s.Backpressure, WorkerConnections: s.WorkerConnections,
			KeepAlive: s.KeepAlive, Threads: s.Threads, MaxHeaderSize: s.HTTP1BufferSize,
			MaxRequestBodySize: s.MaxRequestBodySize, LogLevel: s.LogLevel, LogFile: s.ErrorLogFile,
			AccessLog: !s.DisableAccessLog || s.AccessLogFile != "", AccessLogFile: s.AccessLogFile,
			Version: version, HTTP: s.HTTP, TLS: tlsOpts,
		},
		Payload: payload,
		Args:    []string{"worker"},
		Logger:  log,
		Prepare: func(ctx context.Context) error { return runMigrate(ctx, payload, log) },
	}, nil
}

// checkTLS loads the certificate once in the master when SSL is on, so a
// missing, unreadable, mismatched or wrongly protected file stops the
// server before it binds (and a HUP reload keeps the running workers).
func checkTLS(res *config.Resolved, log *zap.Logger) (*protocol.TLS, error) {
	s := res.Settings
	if !s.SSL {
		return nil, nil
	}
	cert, err := worker.LoadCertificate(s.CertFile, s.KeyFile, s.KeyFilePassword)
	if err != nil {
		var ce *worker.CertError
		if errors.As(err, &ce) {
			return nil, fmt.Errorf("SSL is on but %v (%s is from %s)", err, ce.Setting, res.Sources[ce.Setting])
		}
		return nil, fmt.Errorf("SSL: %w", err)
	}
	if warn := worker.CertificateWarning(cert, s.CertFile); warn != "" {
		log.Warn("configuration", zap.String("warning", warn))
	}
	return &protocol.TLS{CertFile: s.CertFile, KeyFile: s.KeyFile, KeyFilePassword: s.KeyFilePassword}, nil
}

// runMigrate runs the migrations once, before any worker starts, in a
// short-lived child: the master itself never loads a database driver, which
// keeps it small for its whole life.
func runMigrate(ctx context.Context, settings []byte, log *zap.Logger) error {
	start := time.Now()
	cmd := exec.CommandContext(ctx, "/proc/self/exe", "migrate")
	cmd.Stdin = bytes.NewReader(settings)
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("database migrations failed (their error is logged above): %w", err)
	}
	log.Info("database ready", zap.Duration("took", time.Since(start)))
	return nil
}

// migrate is the child side of runMigrate.
func migrate() int {
	raw, err := io.ReadAll(os.Stdin)
	var s config.Settings
	if err == nil {
		err = json.Unmarshal(raw, &s)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "mcpgateway migrate: read settings from the master: %v\n", err)
		return 1
	}
	log, err := protocol.NewLogger(s.LogLevel, s.ErrorLogFile)
	if err != nil {
		fmt.Fprintf(os.Stderr, "mcpgateway migrate: %v\n", err)
		return 1
	}
	log = log.With(zap.String("proc", "migrate"), zap.Int("pid", os.Getpid()))
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	o := gateway.StoreOptions(s, log)
	if err := store.CheckCapacity(ctx, o, s.Workers); err != nil {
		log.Error("database cannot serve this many workers", zap.Error(err))
		return 1
	}
	if err := store.Migrate(ctx, o); err != nil {
		log.Error("database migration failed", zap.Error(err))
		return 1
	}
	return 0
}

// setupWorker builds the gateway in each worker process.
func setupWorker(ctx context.Context, info worker.Info) (worker.App, error) {
	var s config.Settings
	if err := json.Unmarshal(info.Payload, &s); err != nil {
		return worker.App{}, fmt.Errorf("decode settings from the master: %w", err)
	}
	srv, st, err := gateway.Open(ctx, s, version, info.Logger, info.CountPanic)
	if err != nil {
		return worker.App{}, err
	}
	return worker.App{Handler: srv.Handler, Close: func() { st.Close() }}, nil
}

func printConfig(args []string) int {
	res, code := load(args)
	if res == nil {
		return code
	}
	fmt.Printf("profile: %s\n", res.Profile)
	res.Print(os.Stdout)
	for _, w := range res.Warnings {
		fmt.Fprintf(os.Stderr, "warning: %s\n", w)
	}
	return 0
}
