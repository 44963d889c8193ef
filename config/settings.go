// Package config builds the one resolved configuration of mcpgateway, in the
// master process, from these layers (later wins):
//
//	profile defaults (HTTP_SERVER) < gunicorn.conf.go < .env file < environment < flags
//
// Workers never re-read files: the master hands them the resolved Settings
// (they round-trip through JSON exactly).
package config

import (
	"flag"
	"time"
)

// Log formats accepted in LogFormat.
const (
	LogFormatAuto    = "auto"
	LogFormatJSON    = "json"
	LogFormatConsole = "console"
)

// Profiles select the defaults of the server they are named after.
const (
	ProfileGunicorn = "gunicorn"
	ProfileGranian  = "granian"
)

// Settings is the resolved configuration. Field names are the names used in
// gunicorn.conf.go, in Resolved.Sources and in `mcpgateway config`.
//
// Tags: `env` holds a name read in every profile, `gunicorn` and `granian` the
// names of that server (both are read in every profile; the active profile's
// name wins when both are set), `flag` the long and short flag names.
// caarlos0/env reads the three environment tags; see envlayer.go.
type Settings struct {
	// Process model.
	HTTPServer string   `env:"HTTP_SERVER" flag:"http-server"`
	Bind       []string `gunicorn:"GUNICORN_BIND" flag:"bind,b"`
	Host       string   `env:"HOST" granian:"GRANIAN_HOST" flag:"host"`
	Port       int      `env:"PORT" granian:"GRANIAN_PORT" flag:"port"`
	// Workers is always >= 1 after Load ("auto" is resolved). Its environment
	// names are on envTarget.Workers, because their text may be "auto".
	Workers           int           `flag:"workers,w"`
	Threads           int           `gunicorn:"GUNICORN_THREADS" granian:"GRANIAN_RUNTIME_THREADS" flag:"threads"`
	Timeout           time.Duration `gunicorn:"GUNICORN_TIMEOUT" flag:"timeout,t"`
	GracefulTimeout   time.Duration `gunicorn:"GUNICORN_GRACEFUL_TIMEOUT" granian:"GRANIAN_WORKERS_KILL_TIMEOUT" flag:"graceful-timeout"`
	ShutdownDelay     time.Duration `env:"SHUTDOWN_DELAY" gunicorn:"GUNICORN_SHUTDOWN_DELAY" granian:"GRANIAN_SHUTDOWN_DELAY" flag:"shutdown-delay"`
	HealthBind        string        `env:"HEALTH_BIND" gunicorn:"GUNICORN_HEALTH_BIND" granian:"GRANIAN_HEALTH_BIND" flag:"health-bind"` // "" : no health port
	MaxRequests       int           `gunicorn:"GUNICORN_MAX_REQUESTS" flag:"max-requests"`
	MaxRequestsJitter int           `gunicorn:"GUNICORN_MAX_REQUESTS_JITTER" flag:"max-requests-jitter"`
	MaxWorkerLifetime time.Duration `granian:"GRANIAN_WORKERS_LIFETIME" flag:"max-worker-lifetime"`
	MaxWorkerRSS      int           `granian:"GRANIAN_WORKERS_MAX_RSS" flag:"max-worker-rss"` // MiB
	Backlog           int           `gunicorn:"GUNICORN_BACKLOG" granian:"GRANIAN_BACKLOG" flag:"backlog"`
	// Backpressure is the in-flight limit per worker (0: off) or, with
	// BackpressureAuto, the ceiling of the adaptive limit (0: WorkerConnections;
	// see BackpressureLimit). Its text may be "auto" or "auto:N", so its
	// environment names are on envTarget.Backpressure. BackpressureAuto is
	// derived from that text and cannot be set on its own.
	Backpressure      int `flag:"backpressure"`
	BackpressureAuto  bool
	MaxQueueDelay     time.Duration `env:"MAX_QUEUE_DELAY" gunicorn:"GUNICORN_MAX_QUEUE_DELAY" granian:"GRANIAN_MAX_QUEUE_DELAY" flag:"max-queue-delay"` // 0: no shedding by queueing delay
	WorkerConnections int           `gunicorn:"GUNICORN_WORKER_CONNECTIONS" flag:"worker-connections"`
	KeepAlive         time.Duration `env:"GUNICORN_KEEPALIVE" gunicorn:"GUNICORN_KEEP_ALIVE" flag:"keep-alive"`
	PreloadApp        bool          `gunicorn:"GUNICORN_PRELOAD_APP" flag:"preload"`
	RespawnFailed     bool          `granian:"GRANIAN_RESPAWN_FAILED" flag:"respawn-failed"`
	HTTP1BufferSize   int           `granian:"GRANIAN_HTTP1_BUFFER_SIZE" flag:"http1-buffer-size"`
	HTTP              string        `granian:"GRANIAN_HTTP" flag:"http"`
	ReusePort         bool          `gunicorn:"GUNICORN_REUSE_PORT" granian:"GRANIAN_REUSE_PORT" flag:"reuse-port"`
	Pidfile           string        `gunicorn:"GUNICORN_PIDFILE" granian:"GRANIAN_PID_FILE" flag:"pidfile,p"`
	ControlSocket     string        `env:"CONTROL_SOCKET" gunicorn:"GUNICORN_CONTROL_SOCKET" flag:"control-socket"` // "" is derived from Bind by Load; "off": none
	ConfigFile        string        `gunicorn:"GUNICORN_CONFIG" flag:"config,c"`
	EnvFile           string        `env:"ENV_FILE" flag:"env-file"`
	LogLevel          string        `env:"LOG_LEVEL" gunicorn:"GUNICORN_LOG_LEVEL" granian:"GRANIAN_LOG_LEVEL" flag:"log-level"`
	LogFormat         string        `env:"LOG_FORMAT" flag:"log-format"` // LogFormatAuto: each process looks at its own stderr
	DisableAccessLog  bool          `env:"DISABLE_ACCESS_LOG" flag:"disable-access-log"`
	AccessLogFile     string        `gunicorn:"GUNICORN_ACCESS_LOGFILE" flag:"access-logfile"`
	ErrorLogFile      string        `gunicorn:"GUNICORN_ERROR_LOGFILE" flag:"error-logfile"`
	SSL               bool          `env:"SSL" flag:"ssl"`
	CertFile          string        `env:"CERT_FILE" flag:"certfile"`
	KeyFile           string        `env:"KEY_FILE" flag:"keyfile"`
	KeyFilePassword   string        `env:"KEY_FILE_PASSWORD"`

	// Request-head limits, Gunicorn's names (read in both profiles); 0 is
	// unlimited (LimitRequestFields: the maximum, 32768), HTTP1BufferSize
	// capping the whole head in any case.
	LimitRequestLine      int `gunicorn:"GUNICORN_LIMIT_REQUEST_LINE" flag:"limit-request-line"`
	LimitRequestFields    int `gunicorn:"GUNICORN_LIMIT_REQUEST_FIELDS" flag:"limit-request-fields"`
	LimitRequestFieldSize int `gunicorn:"GUNICORN_LIMIT_REQUEST_FIELD_SIZE" flag:"limit-request-field-size"`

	// /metrics on the main port: with MetricsToken, the bearer token only;
	// else with MetricsPublic, anyone; else local clients only. The health
	// port (HealthBind) always serves it, with the token when one is set.
	MetricsToken  string `env:"METRICS_TOKEN"`
	MetricsPublic bool   `env:"METRICS_PUBLIC" flag:"metrics-public"`

	// Gateway.
	AuthRequired              bool          `env:"AUTH_REQUIRED"`
	JWTSecretKey              string        `env:"JWT_SECRET_KEY"`
	JWTAlgorithm              string        `env:"JWT_ALGORITHM"`
	JWTAudience               string        `env:"JWT_AUDIENCE"`
	JWTIssuer                 string        `env:"JWT_ISSUER"`
	JWTLeeway                 time.Duration `env:"JWT_LEEWAY"`              // clock skew allowed on exp, nbf, iat
	JWTSecretKeyPrevious      string        `env:"JWT_SECRET_KEY_PREVIOUS"` // still verifies (never signs) during a rotation
	JWTPublicKeyPath          string        `env:"JWT_PUBLIC_KEY_PATH"`     // RS*/ES*: PEM public key that verifies tokens
	JWTPublicKeyPathPrevious  string        `env:"JWT_PUBLIC_KEY_PATH_PREVIOUS"`
	JWTPrivateKeyPath         string        `env:"JWT_PRIVATE_KEY_PATH"` // RS*/ES*: PEM private key `mcpgateway token` signs with
	JWTPublicKeyPEM           string        // derived: the PEM keys of the two paths above, read by the master (workers read no files)
	RequireTokenExpiration    bool          `env:"REQUIRE_TOKEN_EXPIRATION"`
	RequireJTI                bool          `env:"REQUIRE_JTI"`
	RequireUserInDB           bool          `env:"REQUIRE_USER_IN_DB"`
	PlatformAdminEmail        string        `env:"PLATFORM_ADMIN_EMAIL"`
	DatabaseURL               string        `env:"DATABASE_URL"`
	DBPoolSize                int           `env:"DB_POOL_SIZE"`
	DBMaxOverflow             int           `env:"DB_MAX_OVERFLOW"`
	DBPoolTimeout             time.Duration `env:"DB_POOL_TIMEOUT"`
	DBPoolRecycle             time.Duration `env:"DB_POOL_RECYCLE"`
	DBConnectTimeout          time.Duration `env:"DB_CONNECT_TIMEOUT"` // the longest a request waits to reach the database (then 503)
	CacheType                 string        `env:"CACHE_TYPE"`
	CachePrefix               string        `env:"CACHE_PREFIX"`
	CacheTTL                  time.Duration `env:"CACHE_TTL"`
	CacheStaleIfError         time.Duration `env:"CACHE_STALE_IF_ERROR"` // serve cached users and tools this long into a database outage (0: off)
	RedisURL                  string        `env:"REDIS_URL"`
	RedisMaxConnections       int           `env:"REDIS_MAX_CONNECTIONS"`
	RedisSocketTimeout        time.Duration `env:"REDIS_SOCKET_TIMEOUT"`
	RedisSocketConnectTimeout time.Duration `env:"REDIS_SOCKET_CONNECT_TIMEOUT"`
	RedisHealthCheckInterval  time.Duration `env:"REDIS_HEALTH_CHECK_INTERVAL"`
	MaxRequestBodySize        int           `env:"MAX_REQUEST_BODY_SIZE" flag:"max-request-body-size"`
	MaxBatchSize              int           `env:"JSONRPC_MAX_BATCH_SIZE"`
	AllowedOrigins            []string      `env:"ALLOWED_ORIGINS"` // "" : same-origin only; "*": any
	CORSEnabled               bool          `env:"CORS_ENABLED"`

	// Rate limits on tool calls, in calls per minute (0: off, the default),
	// token buckets shared by the workers of an instance; RateLimitBurst is
	// the bucket size (0: the limit itself). See docs/security.md.
	UserRateLimit  int `env:"USER_RATE_LIMIT"`
	ToolRateLimit  int `env:"TOOL_RATE_LIMIT"`
	RateLimitBurst int `env:"RATE_LIMIT_BURST"`

	// Federation (docs/federation.md): the secret that seals upstream
	// credentials in the database, the separator of namespaced tool names
	// (<gateway><sep><tool>), and the timeout of a call to an upstream.
	AuthEncryptionSecret     string        `env:"AUTH_ENCRYPTION_SECRET"`
	GatewayToolNameSeparator string        `env:"GATEWAY_TOOL_NAME_SEPARATOR"`
	FederationTimeout        time.Duration `env:"FEDERATION_TIMEOUT"`
	HealthCheckInterval      time.Duration `env:"HEALTH_CHECK_INTERVAL"` // upstreams' tool lists read again this often (0: never)
	GatewaysFile             string        `env:"GATEWAYS_FILE"`         // upstreams to register, JSON (docs/federation.md)
	GatewaysJSON             string        // derived: GatewaysFile as the master read and checked it (workers read no files)
}

// Source says where a setting's value came from.
type Source struct {
	Kind string // "default", "file", "dotenv", "env", "flag", "generated", "derived"
	Name string // e.g. "GUNICORN_WORKERS", "--workers", "gunicorn.conf.go:12"
}

func (s Source) String() string {
	if s.Name == "" {
		return s.Kind
	}
	return s.Kind + " " + s.Name
}

// Resolved is the outcome of Load.
type Resolved struct {
	Settings Settings
	Sources  map[string]Source // by Go field name
	Warnings []string
	Profile  string
	Args     []string // positional arguments, when Input.Command is set
}

// Input is everything Load reads besides the files it finds.
type Input struct {
	Args    []string // flags only, after the subcommand
	Environ []string // os.Environ() form
	Dir     string   // where ./gunicorn.conf.go and ./.env are looked for; relative paths are taken from here
	NumCPU  int      // CPUs for Workers "auto"; 0 means runtime.GOMAXPROCS(0), which follows a container's CPU limit

	// Command, when not nil, holds the flags of a command other than serve
	// (mcpgateway status --pid): they are parsed together with serve's,
	// which tell the command where the server is (--bind, --control-socket,
	// --config, --env-file), and positional arguments are kept in
	// Resolved.Args instead of refused. Its flag names must differ from
	// serve's.
	Command *flag.FlagSet

	// NoSecretCheck skips the weak-JWT_SECRET_KEY rule (security.go) for a
	// command that serves nothing: token, healthcheck. The rule is skipped
	// for Command too (status, reload, scale, stop only find the server).
	NoSecretCheck bool
}

// workersAuto is how "auto" is held until Load resolves it.
const workersAuto = 0

// Overload defaults, the same in both profiles. They are figures to tune by
// measurement (make bench): change them here only.
const (
	// DefaultMaxQueueDelay is MaxQueueDelay's default.
	DefaultMaxQueueDelay = 50 * time.Millisecond
	// DefaultBackpressureAuto is BackpressureAuto's default: true makes the
	// default Backpressure "auto", whose ceiling is the profile's number
	// (granian 512; gunicorn 0, so WorkerConnections).
	DefaultBackpressureAuto = false
)

// BackpressureLimit is the in-flight limit a worker gets
// (protocol.WorkerOptions.Backpressure): Backpressure, except that with
// BackpressureAuto and no number the ceiling is WorkerConnections.
func (s *Settings) BackpressureLimit() int {
	if s.BackpressureAuto && s.Backpressure == 0 {
		return s.WorkerConnections
	}
	return s.Backpressure
}

// Defaults returns the defaults of a profile ("gunicorn" or "granian"), with
// Workers still "auto" (0) and JWTSecretKey still empty.
func Defaults(profile string) (Settings, error) {
	s := Settings{
		HTTPServer:        ProfileGunicorn,
		Host:              "0.0.0.0",
		Port:              4444,
		Workers:           workersAuto,
		Threads:           1,
		Timeout:           600 * time.Second,
		GracefulTimeout:   30 * time.Second,
		MaxRequests:       100000,
		MaxRequestsJitter: 100,
		Backlog:           2048,
		Backpressure:      0,
		BackpressureAuto:  DefaultBackpressureAuto,
		MaxQueueDelay:     DefaultMaxQueueDelay,
		WorkerConnections: 1000,
		KeepAlive:         5 * time.Second,
		RespawnFailed:     true,
		HTTP1BufferSize:   8192,
		HTTP:              "auto",
		EnvFile:           ".env",
		LogLevel:          "info",
		LogFormat:         LogFormatAuto,
		DisableAccessLog:  true,
		ErrorLogFile:      "-",
		CertFile:          "certs/cert.pem",
		KeyFile:           "certs/key.pem",

		// Gunicorn's request-head limits (granian's below).
		LimitRequestLine:      4094,
		LimitRequestFields:    100,
		LimitRequestFieldSize: 8190,

		AuthRequired:              true,
		JWTAlgorithm:              "HS256",
		JWTAudience:               "mcpgateway-api",
		JWTIssuer:                 "mcpgateway",
		JWTLeeway:                 DefaultJWTLeeway,
		RequireTokenExpiration:    true,
		RequireJTI:                true,
		RequireUserInDB:           true,
		PlatformAdminEmail:        "admin@example.com",
		DatabaseURL:               "sqlite:///./mcp.db",
		DBPoolSize:                5,
		DBMaxOverflow:             5,
		DBPoolTimeout:             30 * time.Second,
		DBPoolRecycle:             3600 * time.Second,
		DBConnectTimeout:          2 * time.Second,
		CacheType:                 "database",
		CachePrefix:               "mcpgw:",
		CacheTTL:                  60 * time.Second,
		CacheStaleIfError:         5 * time.Minute,
		RedisURL:                  "redis://localhost:6379/0",
		RedisMaxConnections:       50,
		RedisSocketTimeout:        2 * time.Second,
		RedisSocketConnectTimeout: 2 * time.Second,
		RedisHealthCheckInterval:  30 * time.Second,
		MaxRequestBodySize:        4 << 20,
		MaxBatchSize:              100,
		CORSEnabled:               true,
		GatewayToolNameSeparator:  "-",
		FederationTimeout:         120 * time.Second,
		HealthCheckInterval:       60 * time.Second,
	}
	switch profile {
	case ProfileGunicorn:
	case ProfileGranian:
		// Granian does not recycle by request count, refuses work past its
		// backpressure limit, and reads requests into a 512 KiB buffer.
		s.HTTPServer = ProfileGranian
		s.MaxRequests = 0
		s.MaxRequestsJitter = 0
		s.Backpressure = 512
		s.HTTP1BufferSize = 512 << 10
		// Granian (hyper) has no request-line or field-size limit of its
		// own, only its buffer, and takes at most 100 header fields.
		s.LimitRequestLine = 0
		s.LimitRequestFieldSize = 0
	default:
		return Settings{}, &Error{Setting: "HTTPServer", Source: "profile", Value: profile,
			Accepted: rules["HTTPServer"].accepted, Err: ErrInvalidValue}
	}
	return s, nil
}
