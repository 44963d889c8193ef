package config

import (
	"fmt"
	"net"
	"net/url"
	"reflect"
	"strings"
	"time"

	"github.com/mcpgateway/mcpgateway/internal/jwtkey"
)

var settingsType = reflect.TypeFor[Settings]()

// rule is what Load knows about one setting besides its names: what it
// accepts (for errors and --help) and the range check run after merging.
type rule struct {
	accepted string
	help     string
	ok       func(v reflect.Value) bool // nil: any value of the field's type
}

const (
	durSyntax  = "seconds (600, 0.5) or a Go duration (10m, 1.5s)"
	boolSyntax = "true/false, 1/0, yes/no, on/off"
)

var rules = map[string]rule{
	// Process model.
	"HTTPServer": {`"gunicorn" or "granian"`, "profile whose defaults apply", oneOf(ProfileGunicorn, ProfileGranian)},
	"Bind":       {"host:port, [ipv6]:port or unix:/path (comma-separated in GUNICORN_BIND)", "address to listen on (repeatable); empty means Host:Port", nil},
	"Host":       {"a host name or IP address", "listen host when Bind is empty", nil},
	"Port":       {"a whole number from 0 to 65535", "listen port when Bind is empty", intIn(0, 65535)},
	"Workers":    {`"auto" or a whole number from 1 to 256`, "worker processes", intIn(1, maxWorkers)},
	"Threads":    {"a whole number from 1 to 1024", "GOMAXPROCS of each worker", intIn(1, 1024)},
	"Timeout": {"a duration of 0 or more (0 = no timeout): " + durSyntax,
		"kill a worker whose heartbeat or request is older than this (0: never, as in Gunicorn)", durAbove(-1)},
	"GracefulTimeout": {"a duration of 0 or more: " + durSyntax,
		"time a stopping worker has to finish in-flight requests", durAbove(-1)},
	"ShutdownDelay": {"a duration of 0 or more: " + durSyntax,
		"after TERM, keep serving this long (readiness already failing) before refusing new connections", durAbove(-1)},
	"HealthBind": {"host:port, [ipv6]:port, or empty for none",
		"the master's own health port: /health and /ready answered without waiting behind work", nil},
	"MaxRequests":       {"a whole number of 0 or more (0 = off)", "recycle a worker after this many requests", intIn(0, maxInt)},
	"MaxRequestsJitter": {"a whole number of 0 or more", "random 0..N added to MaxRequests per worker", intIn(0, maxInt)},
	"MaxWorkerLifetime": {"a duration of 0 or more (0 = off): " + durSyntax, "recycle a worker after this long", durAbove(-1)},
	"MaxWorkerRSS":      {"a whole number of MiB, 0 or more (0 = off)", "recycle a worker whose RSS exceeds this many MiB", intIn(0, maxInt)},
	"Backlog":           {"a whole number from 1 to 65535", "listen queue length of each socket", intIn(1, 65535)},
	"Backpressure": {`a whole number of 0 or more (a fixed limit; 0 = off), "auto" (adaptive, up to the profile's number: 512 in granian, WorkerConnections in gunicorn) or "auto:N" (adaptive, up to N of 1 or more)`,
		"in-flight requests per worker before 503 + Retry-After; auto: a limit adapted to measured latency, up to the number", intIn(0, maxInt)},
	"BackpressureAuto": {`nothing of its own: it is true when Backpressure is "auto" or "auto:N"`,
		"the in-flight limit adapts to measured latency (derived from Backpressure)", nil},
	"MaxQueueDelay": {"0 (off) or a duration from 1ms to 10s: " + durSyntax,
		"queueing delay past which a worker sheds new requests with 503 + Retry-After (0: off)", durZeroOrIn(time.Millisecond, 10*time.Second)},
	"WorkerConnections": {"a whole number of 1 or more", "open connections per worker", intIn(1, maxInt)},
	"KeepAlive":         {"a duration of 0 or more (0 = keep-alive off): " + durSyntax, "idle keep-alive timeout", durAbove(-1)},
	"PreloadApp": {boolSyntax,
		"accepted for Gunicorn compatibility; no effect (each worker builds its own app)", nil},
	"RespawnFailed":   {boolSyntax, "respawn workers that die", nil},
	"HTTP1BufferSize": {"a whole number of bytes from 1024 to 1048576", "max request head size", intIn(1024, 1<<20)},
	"HTTP":            {`"auto", "1" or "2"`, "HTTP version", oneOf("auto", "1", "2")},
	"ReusePort":       {boolSyntax, "one SO_REUSEPORT socket per worker slot (held by the master)", nil},
	"Pidfile":         {"a file path, or empty for none", "write the master's pid here", nil},
	"LimitRequestLine": {"a whole number of bytes from 0 (unlimited) to 8190",
		"longest request line (method, target and protocol); longer gets 414", intIn(0, MaxLimitRequestLine)},
	"LimitRequestFields": {"a whole number from 0 to 32768 (0 = 32768)",
		"most header fields in a request; more gets 431", intIn(0, MaxLimitRequestFields)},
	"LimitRequestFieldSize": {"a whole number of bytes, 0 (unlimited) or more",
		"longest header field (name, colon and value); longer gets 431", intIn(0, maxInt)},
	"MetricsToken": {"empty, or at least 16 visible ASCII characters (no spaces): make one with mcpgateway secret",
		"bearer token required on /metrics (main and health port) when set", validMetricsToken},
	"MetricsPublic": {boolSyntax,
		"serve /metrics on the main port to any client (default: local clients only) when MetricsToken is empty", nil},
	"ControlSocket": {fmt.Sprintf(`a unix socket path of at most %d bytes, "off" for none, or empty for the default`, maxSocketPath),
		"the master's control socket, for mcpgateway status, reload, scale and stop", nil},
	"ConfigFile": {"a gunicorn.conf.go file path", "configuration file to read", nil},
	"EnvFile":    {"a .env file path", ".env file to read", nil},
	"LogLevel": {`"debug", "info", "warning" (or "warn"), "error" or "critical"`,
		"log level", oneOf("debug", "info", "warning", "error", "critical")},
	"LogFormat": {`"auto", "json" or "console"`, "log line format; auto: console on a terminal, JSON otherwise",
		oneOf(LogFormatAuto, LogFormatJSON, LogFormatConsole)},
	"DisableAccessLog": {boolSyntax, "turn the access log off", nil},
	"AccessLogFile":    {`a file path, "-" for stdout, or empty for none`, "access log destination", nil},
	"ErrorLogFile":     {`a file path, or "-" for stderr`, "error log destination", nil},
	"SSL":              {boolSyntax, "serve HTTPS with CertFile and KeyFile", nil},
	"CertFile":         {"a file path (required when SSL is on)", "TLS certificate (PEM)", nil},
	"KeyFile":          {"a file path (required when SSL is on)", "TLS private key (PEM)", nil},
	"KeyFilePassword":  {"any text", "passphrase of an encrypted KeyFile", nil},

	// Gateway.
	"AuthRequired": {boolSyntax, "require a Bearer JWT", nil},
	"JWTSecretKey": {"at least 32 random bytes, not a known default, unless every Bind is loopback (empty: a random key is generated)",
		"HMAC key of the JWTs (make one: mcpgateway secret)", nil},
	"JWTAlgorithm": {`"HS256", "HS384", "HS512" (JWT_SECRET_KEY), "RS256", "RS384", "RS512", "ES256", "ES384" or "ES512" (JWT_PUBLIC_KEY_PATH)`,
		"JWT signing algorithm", oneOf(jwtkey.Algorithms...)},
	"JWTLeeway": {"a duration from 0 to 5m: " + durSyntax, "clock skew allowed on a token's exp, nbf and iat",
		func(v reflect.Value) bool { d := time.Duration(v.Int()); return d >= 0 && d <= MaxJWTLeeway }},
	"JWTSecretKeyPrevious": {"empty, or a key as JWT_SECRET_KEY accepts (the one being replaced)",
		"the previous HMAC key: tokens and MCP session ids signed with it still verify until it is removed; nothing is signed with it", nil},
	"JWTPublicKeyPath": {"a PEM file: an RSA public key of 2048 bits or more for RS*, an ECDSA P-256/P-384/P-521 public key for ES256/ES384/ES512 (PUBLIC KEY, RSA PUBLIC KEY or CERTIFICATE)",
		"public key that verifies tokens when JWTAlgorithm is RS* or ES* (read by the master at start and on HUP)", nil},
	"JWTPublicKeyPathPrevious": {"empty, or a PEM public key file as JWTPublicKeyPath accepts",
		"the previous public key: tokens it verifies are accepted until it is removed (RS*, ES*)", nil},
	"JWTPrivateKeyPath": {"empty, or an unencrypted PEM private key file (PRIVATE KEY, RSA PRIVATE KEY, EC PRIVATE KEY) matching JWTPublicKeyPath",
		"private key `mcpgateway token` signs with when JWTAlgorithm is RS* or ES* (the server itself never signs)", nil},
	"JWTPublicKeyPEM": {"nothing of its own: it is read from JWTPublicKeyPath and JWTPublicKeyPathPrevious",
		"the PEM public keys the master hands the workers (derived)", nil},
	"JWTAudience":            {"any text", "required aud claim", nil},
	"JWTIssuer":              {"any text", "required iss claim", nil},
	"RequireTokenExpiration": {boolSyntax, "refuse JWTs without exp", nil},
	"RequireJTI":             {boolSyntax, "refuse JWTs without jti", nil},
	"RequireUserInDB":        {boolSyntax, "JWT subject must be a known active user", nil},
	"PlatformAdminEmail":     {"an e-mail address (contains @)", "bootstrap admin user", func(v reflect.Value) bool { return strings.Contains(v.String(), "@") }},
	"DatabaseURL": {"sqlite:///path, postgresql://..., postgres://... or postgresql+driver://...",
		"database", func(v reflect.Value) bool { return validDatabaseURL(v.String()) }},
	"DBPoolSize":    {"a whole number of 1 or more", "database connections kept per worker", intIn(1, maxInt)},
	"DBMaxOverflow": {"a whole number of 0 or more", "extra connections allowed above DBPoolSize", intIn(0, maxInt)},
	"DBPoolTimeout": {"a duration above 0: " + durSyntax, "wait for a free connection", durAbove(0)},
	"DBPoolRecycle": {"a duration above 0: " + durSyntax, "close connections older than this", durAbove(0)},
	"DBConnectTimeout": {"a duration above 0: " + durSyntax,
		"the longest a request waits to reach the database (connect, free connection, lookup) before a 503", durAbove(0)},
	"CacheType": {`"database", "memory", "redis" or "none"`,
		"cache backend", oneOf("database", "memory", "redis", "none")},
	"CachePrefix": {"any text", "key prefix in shared caches", nil},
	"CacheTTL":    {"a duration above 0: " + durSyntax, "cache entry lifetime", durAbove(0)},
	"CacheStaleIfError": {"a duration of 0 or more (0 = off): " + durSyntax,
		"while the database is unreachable, serve cached users and tools this long past their expiry", durAbove(-1)},
	"RedisURL": {"redis://... or rediss://...", "Redis server",
		func(v reflect.Value) bool { return hasScheme(v.String(), "redis", "rediss") }},
	"RedisMaxConnections":       {"a whole number of 1 or more", "Redis pool size per worker", intIn(1, maxInt)},
	"RedisSocketTimeout":        {"a duration above 0: " + durSyntax, "Redis command timeout", durAbove(0)},
	"RedisSocketConnectTimeout": {"a duration above 0: " + durSyntax, "Redis connect timeout", durAbove(0)},
	"RedisHealthCheckInterval":  {"a duration above 0: " + durSyntax, "Redis connection health check period", durAbove(0)},
	"MaxRequestBodySize":        {"a whole number of bytes, 1 or more", "largest request body accepted", intIn(1, maxInt)},
	"MaxBatchSize":              {"a whole number of 1 or more", "largest JSON-RPC batch accepted", intIn(1, maxInt)},
	"AllowedOrigins": {`origins as browsers send them (https://app.example.com, http://localhost:3000), comma-separated, or "*" for any; empty: same-origin only`,
		"browser origins allowed on /rpc and /mcp besides the server's own (others get 403)", nil},
	"CORSEnabled": {boolSyntax, "answer CORS preflights and add Access-Control-Allow-Origin for AllowedOrigins", nil},
	"UserRateLimit": {"a whole number of calls per minute from 0 (off) to 1000000",
		"tool calls per minute per user (token bucket shared by the instance's workers); 0: off", intIn(0, MaxRateLimit)},
	"ToolRateLimit": {"a whole number of calls per minute from 0 (off) to 1000000",
		"calls per minute per tool, all users together (token bucket shared by the instance's workers); 0: off", intIn(0, MaxRateLimit)},
	"RateLimitBurst": {"a whole number of calls from 0 (the limit itself) to 1000000",
		"calls a user or tool may make at once before UserRateLimit and ToolRateLimit pace them", intIn(0, MaxRateLimit)},
	"AuthEncryptionSecret": {"any text; empty: upstream credentials cannot be stored",
		"the secret that seals the credentials of upstream MCP servers in the database", nil},
	"GatewayToolNameSeparator": {`one of "-", "--", "_", "."`, "separator of an upstream tool's name under the gateway: <gateway><separator><tool>",
		func(v reflect.Value) bool {
			switch v.String() {
			case "-", "--", "_", ".":
				return true
			}
			return false
		}},
	"FederationTimeout": {"a duration above 0: " + durSyntax, "longest call to an upstream MCP server", durAbove(0)},
	"GatewaysFile": {`empty, or the path of a JSON file {"gateways":[{"name","url","transport","auth_type","auth_token","auth_header_key","auth_header_value","enabled"}]}`,
		"upstream MCP servers registered at start (docs/federation.md)", nil},
	"GatewaysJSON": {"nothing of its own: it is read from GatewaysFile",
		"the upstreams of GatewaysFile, as the master read and checked them", nil},
	"HealthCheckInterval": {"a duration of 0 (never) or more: " + durSyntax,
		"how often one worker of each instance lists the tools of every upstream again and stores what changed", durAbove(-1)},
}

// MaxRateLimit bounds UserRateLimit, ToolRateLimit and RateLimitBurst.
const MaxRateLimit = 1_000_000

const maxInt = int(^uint(0) >> 1)

func intIn(lo, hi int) func(reflect.Value) bool {
	return func(v reflect.Value) bool { n := int(v.Int()); return n >= lo && n <= hi }
}

// durAbove(-1) means "0 or more", durAbove(0) "more than 0".
func durAbove(min time.Duration) func(reflect.Value) bool {
	return func(v reflect.Value) bool { return time.Duration(v.Int()) > min }
}

// durZeroOrIn accepts 0 (off) or a duration from lo to hi.
func durZeroOrIn(lo, hi time.Duration) func(reflect.Value) bool {
	return func(v reflect.Value) bool {
		d := time.Duration(v.Int())
		return d == 0 || (d >= lo && d <= hi)
	}
}

func oneOf(values ...string) func(reflect.Value) bool {
	return func(v reflect.Value) bool {
		for _, s := range values {
			if v.String() == s {
				return true
			}
		}
		return false
	}
}

func hasScheme(raw string, schemes ...string) bool {
	scheme, _, ok := strings.Cut(raw, "://")
	if !ok {
		return false
	}
	for _, s := range schemes {
		if strings.EqualFold(scheme, s) {
			return true
		}
	}
	return false
}

// validDatabaseURL checks the scheme only: the store opens the database.
func validDatabaseURL(raw string) bool {
	scheme, rest, ok := strings.Cut(raw, "://")
	if !ok {
		return false
	}
	scheme = strings.ToLower(scheme)
	base, driver, hasDriver := strings.Cut(scheme, "+")
	switch {
	case base == "sqlite" && !hasDriver:
		return strings.HasPrefix(rest, "/") && len(rest) > 1
	case base == "postgresql" || (base == "postgres" && !hasDriver):
		return !hasDriver || driver != ""
	}
	return false
}

// normalise folds the spellings Load accepts into the one form workers see.
func normalise(s *Settings) {
	s.HTTPServer = strings.ToLower(strings.TrimSpace(s.HTTPServer))
	s.HTTP = strings.ToLower(strings.TrimSpace(s.HTTP))
	s.LogLevel = strings.ToLower(strings.TrimSpace(s.LogLevel))
	if s.LogLevel == "warn" {
		s.LogLevel = "warning"
	}
	s.LogFormat = strings.ToLower(strings.TrimSpace(s.LogFormat))
	if strings.EqualFold(strings.TrimSpace(s.ControlSocket), ControlSocketOff) {
		s.ControlSocket = ControlSocketOff
	}
	s.CacheType = strings.ToLower(strings.TrimSpace(s.CacheType))
	s.JWTAlgorithm = strings.ToUpper(strings.TrimSpace(s.JWTAlgorithm))
	s.Host = strings.TrimSuffix(strings.TrimPrefix(strings.TrimSpace(s.Host), "["), "]")
}

// checkBind validates one Bind entry.
func checkBind(addr string) bool {
	if path, ok := strings.CutPrefix(addr, "unix:"); ok {
		return path != ""
	}
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	n, err := parseInt(port)
	return err == nil && n >= 0 && n <= 65535 && !strings.ContainsAny(port, " +-")
}

// maskURL hides the password inside a URL. Text that url.Parse rejects is
// masked by hand, so a malformed URL never leaks its password into a log.
func maskURL(raw string) string {
	const mask = "xxxxx"
	if u, err := url.Parse(raw); err == nil {
		if u.User == nil {
			return raw
		}
		if _, has := u.User.Password(); !has {
			return raw
		}
		u.User = url.UserPassword(u.User.Username(), mask)
		return u.String()
	}
	scheme, rest, ok := strings.Cut(raw, "://")
	at := strings.LastIndex(rest, "@")
	if !ok || at < 0 {
		return raw
	}
	user, _, hasPass := strings.Cut(rest[:at], ":")
	if !hasPass {
		return raw
	}
	return scheme + "://" + user + ":" + mask + rest[at:]
}

// maskValue hides secrets in a value about to be shown in an error or by Print.
func maskValue(field, value string) string {
	switch field {
	case "JWTSecretKey", "JWTSecretKeyPrevious", "KeyFilePassword", "AuthEncryptionSecret":
		if value == "" {
			return ""
		}
		return "********"
	case "MetricsToken":
		if value != "" {
			return "********"
		}
	case "DatabaseURL", "RedisURL":
		return maskURL(value)
	case "JWTPublicKeyPEM":
		if value != "" {
			return fmt.Sprintf("(%d PEM key(s), %d bytes)", strings.Count(value, "-----BEGIN "), len(value))
		}
	case "GatewaysJSON": // holds credentials
		if value != "" {
			return fmt.Sprintf("(%d bytes, credentials not shown)", len(value))
		}
	}
	return value
}
