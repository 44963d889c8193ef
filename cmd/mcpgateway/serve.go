package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"

	"github.com/mcpgateway/mcpgateway/cmd/mcpgateway/gateway"
	"github.com/mcpgateway/mcpgateway/config"
	"github.com/mcpgateway/mcpgateway/store"
	"github.com/mcpgateway/mcpgateway/supervisor"
	"github.com/mcpgateway/mcpgateway/supervisor/logging"
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
	log, err := logging.New(s.LogLevel, s.ErrorLogFile, s.LogFormat)
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
	opts.Reload = func(ctx context.Context) (supervisor.Options, error) { return reloadOptions(ctx, args, res, log) }
	opts.ReopenLogs = func() {
		if err := logging.ReopenFiles(); err != nil {
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
// Then the migrations run, and the database says how many workers may be
// replaced at once: old and new pools overlap while a slot is replaced.
func reloadOptions(ctx context.Context, args []string, first *config.Resolved, log *zap.Logger) (supervisor.Options, error) {
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
	o, err := serverOptions(res, log)
	if err != nil {
		return o, err
	}
	if o.ReloadSurge, err = runMigrate(ctx, o.Payload, true, log); err != nil {
		return o, err
	}
	return o, nil
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
	controlSocket := s.ControlSocket
	if controlSocket == config.ControlSocketOff {
		controlSocket = ""
	}
	return supervisor.Options{
		Binds: s.Bind, Backlog: s.Backlog, ReusePort: s.ReusePort,
		Workers: s.Workers, Timeout: s.Timeout, GracefulTimeout: s.GracefulTimeout,
		ShutdownDelay: s.ShutdownDelay, HealthBind: s.HealthBind,
		MaxRequests: s.MaxRequests, MaxRequestsJitter: s.MaxRequestsJitter,
		RespawnFailed: s.RespawnFailed, Pidfile: s.Pidfile, ControlSocket: controlSocket,
		MaxWorkerLifetime: s.MaxWorkerLifetime, MaxWorkerRSS: int64(s.MaxWorkerRSS) << 20,
		Worker: protocol.WorkerOptions{
			// With auto and no number, BackpressureLimit is the ceiling WorkerConnections.
			Backpressure: s.BackpressureLimit(), BackpressureAuto: s.BackpressureAuto, MaxQueueDelay: s.MaxQueueDelay,
			WorkerConnections: s.WorkerConnections, KeepAlive: s.KeepAlive, Threads: s.Threads, MaxHeaderSize: s.HTTP1BufferSize,
			MaxRequestBodySize: s.MaxRequestBodySize, LogLevel: s.LogLevel, LogFile: s.ErrorLogFile, LogFormat: s.LogFormat,
			AccessLog: !s.DisableAccessLog || s.AccessLogFile != "", AccessLogFile: s.AccessLogFile,
			Version: version, HTTP: s.HTTP, TLS: tlsOpts,
			LimitRequestLine: s.LimitRequestLine, LimitRequestFields: s.RequestFieldsLimit(), LimitRequestFieldSize: s.LimitRequestFieldSize,
			MetricsToken: s.MetricsToken, MetricsPublic: s.MetricsPublic,
		},
		Payload:    payload,
		Args:       []string{"worker"},
		Logger:     log,
		Prepare:    func(ctx context.Context) error { _, err := runMigrate(ctx, payload, false, log); return err },
		UpgradeEnv: upgradeEnv(res),
	}, nil
}

// upgradeEnv is what a new master started by USR2 must inherit beyond the
// environment: a key this master generated (no JWT_SECRET_KEY anywhere),
// without which the new one would generate another, and the tokens and MCP
// session ids signed with this one would die with the old master.
func upgradeEnv(res *config.Resolved) []string {
	if res.Sources["JWTSecretKey"].Kind != "generated" {
		return nil
	}
	return []string{"JWT_SECRET_KEY=" + res.Settings.JWTSecretKey}
}

// checkTLS reads the certificate and key once in the master when SSL is
// on, so a missing, unreadable, mismatched or wrongly protected file stops
// the server before it binds (and a HUP reload keeps the running workers).
// Workers get the bytes read here, checked: a worker started later
// (recycling, a crash) never reads a file that may be mid-rotation.
func checkTLS(res *config.Resolved, log *zap.Logger) (*protocol.TLS, error) {
	s := res.Settings
	if !s.SSL {
		return nil, nil
	}
	certPEM, keyPEM, err := worker.ReadCertificateFiles(s.CertFile, s.KeyFile)
	var cert tls.Certificate
	if err == nil {
		cert, err = worker.ParseCertificate(certPEM, keyPEM, s.KeyFilePassword, s.CertFile, s.KeyFile)
	}
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
	return &protocol.TLS{CertFile: s.CertFile, KeyFile: s.KeyFile, KeyFilePassword: s.KeyFilePassword,
		CertPEM: certPEM, KeyPEM: keyPEM}, nil
}

// runMigrate runs the migrations in a short-lived child: the master itself
// never loads a database driver, which keeps it small for its whole life.
// It runs once before any worker starts, and on every HUP (reload true),
// when it also answers how many workers the database lets a reload replace
// at once.
func runMigrate(ctx context.Context, settings []byte, reload bool, log *zap.Logger) (surge int, err error) {
	start := time.Now()
	args := []string{"migrate"}
	if reload {
		args = append(args, "--reload")
	}
	cmd := exec.CommandContext(ctx, "/proc/self/exe", args...)
	cmd.Stdin = bytes.NewReader(settings)
	// The child's sessions carry this master's name, so that a reload tells
	// this server's own connections from other clients'.
	cmd.Env = append(os.Environ(), protocol.EnvMasterPID+"="+strconv.Itoa(os.Getpid()))
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, os.Stderr
	if err := cmd.Run(); err != nil {
		return 0, fmt.Errorf("database migrations failed (their error is logged above): %w", err)
	}
	// The answer is the "surge N" line; anything else (a log sent to
	// standard output) goes where it was meant to.
	answered := false
	for _, line := range strings.SplitAfter(out.String(), "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "surge "); ok && !answered {
			surge, err = strconv.Atoi(v)
			answered = err == nil
			continue
		}
		os.Stdout.WriteString(line)
	}
	if reload && !answered {
		return 0, errors.New("database migrations: the migrate step did not say how many workers a reload may replace at once")
	}
	log.Info("database ready", zap.Duration("took", time.Since(start)))
	return surge, nil
}

// migrate is the child side of runMigrate: the capacity check and the
// migrations. With --reload it prints "surge N": the most workers a reload
// may replace at once with the database's connections.
func migrate(args []string) int {
	reload := len(args) == 1 && args[0] == "--reload"
	if len(args) > 0 && !reload {
		fmt.Fprintf(os.Stderr, "mcpgateway migrate: unexpected arguments %q\n", args)
		return 2
	}
	raw, err := io.ReadAll(os.Stdin)
	var s config.Settings
	if err == nil {
		err = json.Unmarshal(raw, &s)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "mcpgateway migrate: read settings from the master: %v\n", err)
		return 1
	}
	log, err := logging.New(s.LogLevel, s.ErrorLogFile, s.LogFormat)
	if err != nil {
		fmt.Fprintf(os.Stderr, "mcpgateway migrate: %v\n", err)
		return 1
	}
	log = log.With(zap.String("proc", "migrate"), zap.Int("pid", os.Getpid()))
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	o := gateway.StoreOptions(s, log)
	surge := 0
	if reload {
		// The fastest roll that fits: every slot at once if the database
		// holds old and new pools together, else fewer at a time.
		for k := s.Workers; k >= 1; k-- {
			if err = store.CheckReloadCapacity(ctx, o, s.Workers, k); err == nil {
				surge = k
				break
			}
		}
	} else {
		err = store.CheckCapacity(ctx, o, s.Workers)
	}
	if err != nil {
		log.Error("database cannot serve this many workers", zap.Error(err))
		return 1
	}
	if err := store.Migrate(ctx, o); err != nil {
		log.Error("database migration failed", zap.Error(err))
		return 1
	}
	if reload {
		if surge < s.Workers {
			log.Info("reload: the database holds the pools of this many replacements at once", zap.Int("at_once", surge), zap.Int("workers", s.Workers))
		}
		fmt.Printf("surge %d\n", surge)
	}
	return 0
}

// setupWorker builds the gateway in each worker process.
func setupWorker(ctx context.Context, info worker.Info) (worker.App, error) {
	var s config.Settings
	if err := json.Unmarshal(info.Payload, &s); err != nil {
		return worker.App{}, fmt.Errorf("decode settings from the master: %w", err)
	}
	return gateway.Worker(ctx, s, version, info)
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
