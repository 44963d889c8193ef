package protocol

import (
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"time"
)

// File descriptors a worker inherits, in this order (exec.Cmd.ExtraFiles
// starts at 3). Listeners follow, one per bound address in bind order.
const (
	FDConfig    = 3 // memfd: the Envelope as JSON, read once at start
	FDStatus    = 4 // memfd: the status table, mapped shared
	FDMaster    = 5 // pipe write end: Message lines to the master
	FDListeners = 6 // first listening socket
)

// Environment names set on each worker process.
const (
	EnvSlot        = "MCPGATEWAY_WORKER_SLOT"         // logical worker index, 0..workers-1
	EnvGeneration  = "MCPGATEWAY_WORKER_GENERATION"   // how many workers this slot has had
	EnvRow         = "MCPGATEWAY_WORKER_ROW"          // its row in the status table
	EnvListeners   = "MCPGATEWAY_WORKER_LISTENERS"    // number of inherited listeners
	EnvMasterPID   = "MCPGATEWAY_MASTER_PID"          // the parent it must outlive no longer than a second
	EnvMaxRequests = "MCPGATEWAY_WORKER_MAX_REQUESTS" // this worker's limit, jitter applied (0 = none)
)

// Messages as string prefixes, the grammar before Message.
//

// Reasons a worker is retired or exits, used in logs and metrics.
const (
	ReasonRecycled = "recycled" // max_requests reached
	ReasonLifetime = "lifetime" // max worker lifetime reached
	ReasonRSS      = "rss"      // max worker RSS exceeded
	ReasonTimeout  = "timeout"  // a request overran the timeout, or the heartbeat stopped
	ReasonCrashed  = "crashed"  // exited on its own
	ReasonReload   = "reload"   // HUP
	ReasonScale    = "scale"    // TTOU
	ReasonShutdown = "shutdown" // the master is stopping
	ReasonBootFail = "boot"     // failed to start
	ReasonUpgrade  = "upgrade"  // WINCH after USR2: the new master's workers took over
	ReasonListener = "listener" // a listener failed while the worker was serving
)

// ExitBootError is the worker's exit status when its application fails to
// initialise; the master halts instead of respawning (Gunicorn's
// WORKER_BOOT_ERROR).
const ExitBootError = 3

// WorkerOptions is what a worker needs to know about serving; the master
// hands the same value to every worker.
type WorkerOptions struct {
	Binds           []string      `json:"binds"`
	Timeout         time.Duration `json:"timeout"`
	GracefulTimeout time.Duration `json:"graceful_timeout"`
	Backpressure    int           `json:"backpressure"` // in-flight limit per worker (0: none); with BackpressureAuto, the ceiling

	// BackpressureAuto adapts the in-flight limit to the measured latency
	// (worker/overload.go), up to Backpressure (or WorkerConnections when
	// that is 0).
	BackpressureAuto bool `json:"backpressure_auto"`

	// MaxQueueDelay is the queueing delay (a request's first bytes at the
	// host to its handler starting) past which the worker sheds: while the
	// smallest delay of an interval stays above it, requests that waited
	// longer get an immediate 503. 0: no shedding by delay.
	MaxQueueDelay      time.Duration `json:"max_queue_delay"`
	WorkerConnections  int           `json:"worker_connections"`
	KeepAlive          time.Duration `json:"keep_alive"`
	Threads            int           `json:"threads"`
	MaxHeaderSize      int           `json:"max_header_size"`
	MaxRequestBodySize int           `json:"max_request_body_size"`
	LogLevel           string        `json:"log_level"`
	LogFile            string        `json:"log_file"`        // "" = standard error
	LogFormat          string        `json:"log_format"`      // auto, json or console (logging.New)
	AccessLog          bool          `json:"access_log"`      // one line per request
	AccessLogFile      string        `json:"access_log_file"` // "" = the main log
	Version            string        `json:"version"`         // for build_info

	// ReusePort: each worker slot has its own SO_REUSEPORT socket, so the
	// kernel has already chosen this worker; holding back an accept only
	// delays the connection (no balancing wait, the connection cap stays).
	ReusePort bool `json:"reuse_port"`

	// HTTP is "auto", "1" or "2" (GRANIAN_HTTP). With TLS, auto offers h2
	// and http/1.1 through ALPN; without TLS, 2 means h2c.
	HTTP string `json:"http"`
	TLS  *TLS   `json:"tls,omitempty"` // nil: plain HTTP

	// Limits on the request head (Gunicorn's limit_request_line,
	// limit_request_fields and limit_request_field_size), checked by the
	// worker before the application runs: past them 414 or 431 and the
	// connection closed (worker/limits.go). 0: no such limit; MaxHeaderSize
	// caps the whole head in any case.
	LimitRequestLine      int `json:"limit_request_line,omitempty"`
	LimitRequestFields    int `json:"limit_request_fields,omitempty"`
	LimitRequestFieldSize int `json:"limit_request_field_size,omitempty"`

	// Who gets /metrics on the main port (worker/limits.go): with
	// MetricsToken, a request with "Authorization: Bearer <MetricsToken>";
	// else, with MetricsPublic, anyone; else local clients only (loopback
	// or unix socket, not forwarded by a proxy). The master's health port
	// serves it to anyone, with the token when there is one.
	MetricsToken  string `json:"metrics_token,omitempty"`
	MetricsPublic bool   `json:"metrics_public,omitempty"`
}

// TLS is the certificate a worker serves. The master reads the files (at
// start and on HUP) and hands the bytes over, so a worker's boot depends on
// nothing mutable on disk: a key file half-rewritten by a rotation cannot
// fail a recycled worker. The file names are kept for messages.
type TLS struct {
	CertFile        string `json:"cert_file"`
	KeyFile         string `json:"key_file"`
	KeyFilePassword string `json:"key_file_password,omitempty"`
	CertPEM         []byte `json:"cert_pem"`
	KeyPEM          []byte `json:"key_pem"`
}

// Envelope is the configuration memfd's content.
type Envelope struct {
	Worker WorkerOptions   `json:"worker"`
	App    json.RawMessage `json:"app,omitempty"` // the embedding program's own settings
}

// Identity is what the environment tells a worker about itself.
type Identity struct {
	Slot, Generation, Row, Listeners, MasterPID, MaxRequests int
}

// Env renders the identity as environment entries.
func (id Identity) Env() []string {
	return []string{
		EnvSlot + "=" + strconv.Itoa(id.Slot),
		EnvGeneration + "=" + strconv.Itoa(id.Generation),
		EnvRow + "=" + strconv.Itoa(id.Row),
		EnvListeners + "=" + strconv.Itoa(id.Listeners),
		EnvMasterPID + "=" + strconv.Itoa(id.MasterPID),
		EnvMaxRequests + "=" + strconv.Itoa(id.MaxRequests),
	}
}

// ReadIdentity reads the identity from the process environment.
func ReadIdentity() (Identity, error) {
	var id Identity
	for _, f := range []struct {
		name string
		dst  *int
	}{
		{EnvSlot, &id.Slot}, {EnvGeneration, &id.Generation}, {EnvRow, &id.Row},
		{EnvListeners, &id.Listeners}, {EnvMasterPID, &id.MasterPID}, {EnvMaxRequests, &id.MaxRequests},
	} {
		v, ok := os.LookupEnv(f.name)
		if !ok {
			return id, fmt.Errorf("%s is not set: a worker is started by its master, not by hand", f.name)
		}
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			return id, fmt.Errorf("%s=%q: want a whole number", f.name, v)
		}
		*f.dst = n
	}
	return id, nil
}
