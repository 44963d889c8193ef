// Package supervisor is the master process: it opens the listening sockets,
// starts workers by re-executing its own binary, and keeps the right number
// of them serving: respawning the dead, recycling the worn, killing the stuck,
// and stopping them all gracefully on request. It knows nothing of what the
// workers serve.
package supervisor

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/mcpgateway/mcpgateway/supervisor/protocol"
	"go.uber.org/zap"
)

// Options configure a master.
type Options struct {
	Binds     []string // host:port, [v6]:port, or unix:/path
	Backlog   int      // listen queue length per socket
	ReusePort bool     // set SO_REUSEPORT on the sockets

	Workers           int
	Timeout           time.Duration // heartbeat and request timeout
	GracefulTimeout   time.Duration // how long a stopping worker may drain
	ShutdownDelay     time.Duration // after TERM, serve this long (readiness failing) before refusing new connections
	HealthBind        string        // host:port where the master answers /health and /ready itself; "" for none
	MaxRequests       int           // recycle a worker after this many requests (0: never)
	MaxRequestsJitter int           // plus a random [0, jitter], so workers do not recycle together
	MaxWorkerLifetime time.Duration // recycle a worker after this long, +0-10% (0: never)
	MaxWorkerRSS      int64         // recycle a worker whose RSS stays above this many bytes (0: never)
	RespawnFailed     bool          // respawn workers that die on their own
	Pidfile           string
	ControlSocket     string // unix socket for status, reload, scale N and stop; "" for none

	// ReloadSurge is how many slots a reload (HUP) replaces at once, make
	// before break: each old worker stops once its successor is ready, and
	// the next slot's successor starts when it has exited. 0 replaces every
	// slot at once (the fastest roll, and twice the workers for a moment).
	// The embedding program sets it from what its resources hold, e.g. the
	// database connections that old and new pools need together.
	ReloadSurge int

	Worker  protocol.WorkerOptions // handed to every worker (Binds is filled in)
	Payload json.RawMessage        // the embedding program's settings, handed to every worker

	Executable string   // default: this binary (/proc/self/exe)
	Args       []string // arguments that make the binary a worker, e.g. {"worker"}

	// UpgradeEnv is added to the environment of a new master started by
	// USR2 (KEY=value; it wins over this process's own): what this master
	// made up itself and its successor must keep, such as a generated key.
	UpgradeEnv []string
	Logger     *zap.Logger

	// Prepare, when set, runs once after the sockets are bound and before
	// any worker starts (database migrations); an error stops the master.
	Prepare func(ctx context.Context) error

	// Reload, when set, gives the configuration HUP switches to, ready to
	// serve: it reads and checks the configuration and does what Prepare
	// does at start (migrations), and may set ReloadSurge from what it
	// finds. It runs beside the master's loop; ctx ends when the master
	// stops. An error refuses the reload and the running workers keep
	// serving. The returned Prepare is not run.
	Reload func(ctx context.Context) (Options, error)

	// ReopenLogs, when set, reopens the master's log files on USR1.
	ReopenLogs func()

	// Ready, when set, is called once, when every worker has first reported
	// ready, with the addresses actually bound (port 0 resolved).
	Ready func(addrs []string)
}

// HaltError stops the master when workers cannot run; Code is the exit
// status the program should use.
type HaltError struct {
	Reason string
	Code   int
}

func (e *HaltError) Error() string { return e.Reason }

// killDelay is how long a worker sent SIGQUIT for its stack dump has before
// SIGKILL; and the margin past graceful_timeout before a draining worker is
// killed (the worker enforces graceful_timeout itself).
const killDelay = time.Second

// Run serves until ctx is cancelled (graceful stop) or a stop signal
// arrives. It returns nil after a clean stop, a *HaltError when workers
// cannot be kept running, or an error when the server cannot start.
func Run(ctx context.Context, o Options) error {
	if err := o.check(); err != nil {
		return err
	}
	m, err := newMaster(o)
	if err != nil {
		return err
	}
	return m.run(ctx)
}

func (o *Options) check() error {
	switch {
	case len(o.Binds) == 0:
		return errors.New("no address to bind")
	case o.Workers < 1:
		return fmt.Errorf("workers must be at least 1, not %d", o.Workers)
	case o.Timeout < 0:
		return fmt.Errorf("timeout must not be negative (0: no timeout), not %s", o.Timeout)
	case o.Workers > maxWorkers:
		return fmt.Errorf("workers must be at most %d, not %d", maxWorkers, o.Workers)
	case o.ShutdownDelay < 0:
		return fmt.Errorf("shutdown delay must not be negative, not %s", o.ShutdownDelay)
	case o.GracefulTimeout < 0:
		return fmt.Errorf("graceful timeout must not be negative, not %s", o.GracefulTimeout)
	case o.ReloadSurge < 0:
		return fmt.Errorf("reload surge must not be negative, not %d", o.ReloadSurge)
	case len(o.Args) == 0:
		return errors.New("no worker arguments: the master cannot start workers")
	}
	if o.Backlog <= 0 {
		o.Backlog = 2048
	}
	if o.Executable == "" {
		o.Executable = "/proc/self/exe" // the binary this master runs, even if the file was replaced
	}
	if o.Logger == nil {
		o.Logger = zap.NewNop()
	}
	o.Worker.Binds = o.Binds
	o.Worker.Timeout = o.Timeout
	o.Worker.GracefulTimeout = o.GracefulTimeout
	o.Worker.ReusePort = o.ReusePort
	if t := o.Worker.TLS; t != nil && (len(t.CertPEM) == 0 || len(t.KeyPEM) == 0) {
		// Workers get the bytes, read here once: a worker started later
		// (recycling, a crash) never depends on files that may be mid-rotation.
		c := *t
		var err error
		if c.CertPEM, err = os.ReadFile(c.CertFile); err != nil {
			return fmt.Errorf("read certificate: %w", err)
		}
		if c.KeyPEM, err = os.ReadFile(c.KeyFile); err != nil {
			return fmt.Errorf("read key: %w", err)
		}
		o.Worker.TLS = &c
	}
	return nil
}

// tableRows bounds the status table: workers plus their replacements
// during make-before-break; maxWorkers leaves room for a whole roll.
const (
	tableRows  = 1024
	maxWorkers = tableRows / 2
)

func writePidfile(path string) error {
	if path == "" {
		return nil
	}
	if err := os.WriteFile(path, fmt.Appendf(nil, "%d\n", os.Getpid()), 0o644); err != nil {
		return fmt.Errorf("write pidfile: %w", err)
	}
	return nil
}

// removePidfile removes the pidfile only while it still names this process:
// a newer master may have written its own.
func removePidfile(path string) {
	if path == "" {
		return
	}
	if b, err := os.ReadFile(path); err == nil && string(b) == fmt.Sprintf("%d\n", os.Getpid()) {
		os.Remove(path)
	}
}
