// Package rpc is the gateway that the worker processes serve: the HTTP routes,
// JSON-RPC 2.0, the MCP methods and transport, the built-in tools and the JWT
// authentication. It is a single fasthttp.RequestHandler (Server.Handler) and
// knows nothing of processes; the store behind it is reached through Backend.
//
// The request path is written for speed (the gateway's budget is a few
// microseconds per request): a hand-written JSON reader, responses appended
// into pooled buffers, verified tokens and time zones cached. See docs/rpc.md.
package rpc

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"
	"go.uber.org/zap"

	"github.com/mcpgateway/mcpgateway/internal/jwtkey"
	"github.com/mcpgateway/mcpgateway/internal/ratelimit"
	"github.com/mcpgateway/mcpgateway/store"
	"github.com/mcpgateway/mcpgateway/upstream"
)

// Backend is what the gateway needs from the store. *store.Store satisfies it.
type Backend interface {
	// Tools returns the enabled tools, sorted by name (tools/list pages
	// are name ranges). The slice is shared: do not mutate it.
	Tools(ctx context.Context) ([]store.Tool, error)
	// Tool returns one tool by name, or store.ErrNotFound.
	Tool(ctx context.Context, name string) (store.Tool, error)
	// User returns one user by email, or store.ErrNotFound.
	User(ctx context.Context, email string) (store.User, error)
	// Ready reports whether the database and the cache are reachable
	// (checks named "Database" and "Cache"). See Server.CheckBackend.
	Ready(ctx context.Context) []store.Check
	// Dialect names the database ("sqlite", "postgresql").
	Dialect() string
	// CacheType names the cache ("memory", "database", "redis").
	CacheType() string
	// PutUser creates or updates a user (the admin API).
	PutUser(ctx context.Context, u store.User) error
	// PutTool creates or updates a tool (the admin API).
	PutTool(ctx context.Context, t store.Tool) error
}

// Options configure a Server. The zero value of a limit selects its default.
type Options struct {
	AuthRequired bool
	JWTSecretKey string
	JWTAlgorithm string // HS256 (default), HS384, HS512, RS256/384/512 or ES256/384/512
	JWTAudience  string // checked when not empty, e.g. "mcpgateway-api"
	JWTIssuer    string // checked when not empty, e.g. "mcpgateway"
	// JWTLeeway is the clock skew allowed on exp, nbf and iat (0: none).
	JWTLeeway time.Duration
	// JWTSecretKeyPrevious, during a key rotation, still verifies HS*
	// tokens and MCP session ids; nothing is signed with it.
	JWTSecretKeyPrevious string
	// JWTPublicKeyPEM verifies RS* and ES* tokens: PEM public keys, the
	// current one first, then the previous one of a rotation.
	JWTPublicKeyPEM string

	RequireTokenExpiration bool // tokens without exp are refused
	RequireJTI             bool // tokens without jti are refused
	RequireUserInDB        bool // the token's user must exist in the Backend

	MaxRequestBodySize int // bytes; larger bodies get 413 (default 1 MiB)
	MaxBatchSize       int // JSON-RPC requests in one batch (default 100)

	// Browser origins allowed on /rpc and /mcp besides the request's own
	// Host ("*": any); other Origins get 403. Requests without Origin pass.
	// See origin.go and docs/security.md.
	AllowedOrigins []string
	// CORSEnabled answers CORS preflights of allowed origins and adds
	// Access-Control-Allow-Origin to their answers.
	CORSEnabled bool
	// LoopbackOnly says every listener is loopback: a Host that is neither
	// loopback nor the host of an allowed origin then gets 403 (DNS rebinding).
	LoopbackOnly bool

	Version string      // reported by initialize, server/discover and /version
	Logger  *zap.Logger // nil: no logging

	// CacheTTL is the freshness hint (ttlMs) of the results MCP 2026-07-28
	// lets clients cache: tools/list and server/discover. The gateway passes
	// CACHE_TTL, the lifetime of its own cached catalogue (0: 60 s).
	CacheTTL time.Duration

	// OnPanic, when set, is called for every panic the handlers recover, so
	// the embedding server can count it where it counts everything else
	// (the worker's status table, /metrics).
	OnPanic func()

	// Rate limits on tool calls, in calls per minute (0: off), and the
	// bucket size (0: the limit). RateLimits holds the buckets, shared by
	// the workers of an instance (ratelimit.OpenShared); nil: New makes a
	// table of this process. RateLease, when set, takes tokens of the
	// buckets all instances share (the store's LeaseRateTokens, under the
	// keys RateLeaseKey names), leased ahead of use. OnRateLimit, when set,
	// counts refusals, leases and the calls let through. See ratelimit.go.
	UserRateLimit  int
	ToolRateLimit  int
	RateLimitBurst int
	RateLimits     *ratelimit.Table
	RateLease      ratelimit.LeaseFunc
	RateLeaseKey   func(hash uint64) string
	OnRateLimit    func(RateLimitEvent)

	// Federation (federation.go): UpstreamKey seals upstream credentials in
	// the store (store.SecretKey of AUTH_ENCRYPTION_SECRET; nil: none can be
	// stored), ToolNameSeparator joins an upstream's name and its tools'
	// (default "-"), FederationTimeout bounds a call to an upstream
	// (default upstream.DefaultTimeout).
	UpstreamKey       []byte
	ToolNameSeparator string
	FederationTimeout time.Duration
	OnUpstream        func(UpstreamEvent) // counts forwarded calls by outcome
	RequestTimeout    time.Duration       // the worker's request timeout (0: none): a JSON-answered upstream call ends before it
	// OnStreams, when set, is told how many SSE answers are open after
	// each one opens or ends (mcp_stream.go; the worker's gauge).
	OnStreams func(open int)

	// Readiness, when set, decides GET /ready for the whole server, which
	// this package knows nothing of (worker processes, the database checks
	// they published: supervisor.ReadinessOf). It appends the members of
	// the body's JSON object, without braces, to b and says whether the
	// server is ready (200) or not (503); /ready adds the cache as
	// CheckBackend last saw it. Without it, /ready runs the Backend's checks
	// itself and only the database decides. See ready.go.
	Readiness func(b []byte) (body []byte, ready bool)
}

const (
	defaultMaxBodySize  = 1 << 20
	defaultMaxBatchSize = 100
	defaultCacheTTL     = 60 * time.Second
	serverName          = "mcpgateway"
)

// Server serves the gateway's routes. It is safe for concurrent use.
type Server struct {
	opt     Options
	backend Backend
	log     *zap.Logger

	auth     *authenticator
	origin   originPolicy
	sessions *sessions
	limits   *rateLimits // nil: no rate limits

	upstreams      upstreams   // this worker's clients of registered upstreams
	federated      federated   // the upstreams' resources and prompts (resources.go)
	servers        serverCache // virtual servers this worker serves (servers.go)
	calls          runningCalls
	relays         relays        // upstreams' requests waiting for the client's answer (mcp_relay.go)
	watching       watchers      // upstreams' standing streams, for their list changes (federation_watch.go)
	rest           restGuards    // REST endpoints' breakers and in-flight limits, by origin (rest_guard.go)
	subs           subscriptions // this worker's resource subscriptions on its upstreams (subscriptions.go)
	streams        atomic.Int64  // SSE answers being written
	upstreamErrors errorLog
	zones          zoneCache
	panics         atomic.Uint64
	checks         atomic.Pointer[[]store.Check] // the Backend's latest readiness checks (CheckBackend)
	checked        readyCache                    // when checks were made, for /ready without Options.Readiness (ready.go)

	unavailableLogged atomic.Int64 // unix ns of the latest "database unavailable" log line (storeError)

	versionBody []byte // /version never changes: encoded once

	// What MCP 2026-07-28 results carry, encoded once (mcp_modern.go):
	// the server/discover result, the _meta member with serverInfo and the
	// caching hints.
	discoverResult []byte
	resultMeta     []byte
	cacheHints     []byte

	// tombstones end MCP sessions everywhere (DELETE /mcp); nil: the
	// Backend keeps no revocations, and DELETE /mcp answers 405.
	tombstones revocationBackend
	// levels keep logging/setLevel's level per MCP session (mcp_logging.go);
	// nil: not offered.
	levels sessionLevelBackend
	// events keep resumable streams' events and cancellations for other
	// workers (mcp_resume.go); nil: streams are not resumable, GET /mcp
	// answers 405.
	events eventBackend

	running   sync.WaitGroup          // streamed calls (launch), for Close
	life      context.Context         // the parent of streamed calls: cancelled when a drain runs out (Drain)
	stopLife  context.CancelCauseFunc //
	draining  chan struct{}           // closed by Drain
	drainOnce sync.Once
}

// New checks the options and returns a Server.
func New(o Options, b Backend) (*Server, error) {
	if b == nil {
		return nil, errors.New("rpc: nil Backend")
	}
	if o.JWTAlgorithm == "" {
		o.JWTAlgorithm = "HS256"
	}
	if _, err := jwtkey.Method(o.JWTAlgorithm); err != nil {
		return nil, fmt.Errorf("rpc: %w", err)
	}
	if o.AuthRequired && o.JWTSecretKey == "" && jwtkey.IsHMAC(o.JWTAlgorithm) {
		return nil, errors.New("rpc: JWT secret key is required when authentication is required")
	}
	if o.JWTLeeway < 0 {
		return nil, errors.New("rpc: negative JWT leeway")
	}
	var keys verifier
	if o.AuthRequired {
		var err error
		tk := TokenKeys{Algorithm: o.JWTAlgorithm, Secret: o.JWTSecretKey, SecretPrevious: o.JWTSecretKeyPrevious, PublicKeyPEM: o.JWTPublicKeyPEM}
		if keys, err = tk.verifier(); err != nil {
			return nil, fmt.Errorf("rpc: JWT keys: %w", err)
		}
	}
	if o.MaxRequestBodySize <= 0 {
		o.MaxRequestBodySize = defaultMaxBodySize
	}
	if o.ToolNameSeparator == "" {
		o.ToolNameSeparator = "-"
	}
	if o.MaxBatchSize <= 0 {
		o.MaxBatchSize = defaultMaxBatchSize
	}
	if o.Version == "" {
		o.Version = "dev"
	}
	if o.CacheTTL <= 0 {
		o.CacheTTL = defaultCacheTTL
	}
	if o.Logger == nil {
		o.Logger = zap.NewNop()
	}
	s := &Server{opt: o, backend: b, log: o.Logger}
	s.auth = newAuthenticator(&s.opt, b, keys)
	s.origin = newOriginPolicy(&s.opt)
	s.limits = newRateLimits(&s.opt)
	sess, err := newSessions(o.JWTSecretKey, o.JWTSecretKeyPrevious)
	if err != nil {
		return nil, err
	}
	if o.JWTSecretKey == "" {
		s.log.Warn("no JWT secret key: MCP session ids are signed with a per-process key " +
			"and are only valid on the process that issued them")
	}
	s.sessions = sess
	s.tombstones, _ = b.(revocationBackend)
	s.levels, _ = b.(sessionLevelBackend)
	s.events, _ = b.(eventBackend)
	s.life, s.stopLife = context.WithCancelCause(context.Background())
	s.draining = make(chan struct{})
	s.versionBody = s.encodeVersion()
	s.encodeModern()
	return s, nil
}

// federationTimeout bounds a call to an upstream.
func (s *Server) federationTimeout() time.Duration {
	if s.opt.FederationTimeout > 0 {
		return s.opt.FederationTimeout
	}
	return upstream.DefaultTimeout
}

// Panics returns how many panics the handlers have recovered from.
func (s *Server) Panics() uint64 { return s.panics.Load() }

// Handler is the fasthttp.RequestHandler that the worker serves.
func (s *Server) Handler(ctx *fasthttp.RequestCtx) {
	defer s.recoverHTTP(ctx)
	switch string(ctx.Path()) {
	case "/rpc", "/rpc/":
		if !s.checkOrigin(ctx, methodsRPC) {
			return
		}
		if !ctx.IsPost() {
			methodNotAllowed(ctx, "POST")
			return
		}
		p, ok := s.authorize(ctx)
		if !ok {
			return
		}
		s.serveRPC(ctx, p)
	case "/mcp", "/mcp/":
		if !s.checkOrigin(ctx, methodsMCP) {
			return
		}
		s.serveMCP(ctx)
	case "/health":
		if !ctx.IsGet() && !ctx.IsHead() {
			methodNotAllowed(ctx, "GET, HEAD")
			return
		}
		writeJSON(ctx, fasthttp.StatusOK, healthBody)
	case "/ready":
		if !ctx.IsGet() && !ctx.IsHead() {
			methodNotAllowed(ctx, "GET, HEAD")
			return
		}
		s.serveReady(ctx)
	case "/version":
		if !ctx.IsGet() && !ctx.IsHead() {
			methodNotAllowed(ctx, "GET, HEAD")
			return
		}
		if _, ok := s.authorize(ctx); !ok {
			return
		}
		writeJSON(ctx, fasthttp.StatusOK, s.versionBody)
	default:
		if bytes.HasPrefix(ctx.Path(), []byte(adminPrefix)) {
			s.serveAdmin(ctx) // admin.go
			return
		}
		if bytes.HasPrefix(ctx.Path(), []byte(serversPrefix)) {
			s.serveServerMCP(ctx) // servers.go
			return
		}
		writeDetail(ctx, fasthttp.StatusNotFound, "Not Found")
	}
}

// recoverHTTP is the last line of defence: a panic outside a JSON-RPC method
// (those are recovered per message, see Server.invokeSafe) becomes a 500 and
// never reaches fasthttp, which would otherwise take the process down.
func (s *Server) recoverHTTP(ctx *fasthttp.RequestCtx) {
	r := recover()
	if r == nil {
		return
	}
	s.notePanic(r, ctx)
	ctx.Response.Reset()
	switch path := string(ctx.Path()); {
	case path == "/rpc", path == "/rpc/", path == "/mcp", path == "/mcp/", serverOf(ctx) != nil,
		strings.HasPrefix(path, serversPrefix) && strings.HasSuffix(strings.TrimSuffix(path, "/"), "/mcp"):
		out := appendError(nil, nil, codeInternalError, "Internal error")
		writeJSON(ctx, fasthttp.StatusInternalServerError, out)
	default:
		writeDetail(ctx, fasthttp.StatusInternalServerError, "Internal Server Error")
	}
}

// notePanic counts and logs a recovered panic with the stack that raised it
// (a deferred function runs on top of the panicking frames).
func (s *Server) notePanic(r any, ctx *fasthttp.RequestCtx) {
	s.panics.Add(1)
	if s.opt.OnPanic != nil {
		s.opt.OnPanic()
	}
	s.log.Error("recovered panic in request handler",
		zap.String("panic", fmt.Sprint(r)),
		zap.ByteString("method", ctx.Method()),
		zap.ByteString("path", ctx.Path()),
		zap.Stack("stack"))
}

// --- Plain JSON responses -----------------------------------------------------

var (
	contentTypeJSON = []byte("application/json")
	healthBody      = []byte(`{"status":"healthy"}`)
)

func writeJSON(ctx *fasthttp.RequestCtx, status int, body []byte) {
	ctx.Response.SetStatusCode(status)
	ctx.Response.Header.SetContentTypeBytes(contentTypeJSON)
	ctx.Response.SetBody(body)
}

// writeDetail answers {"detail": msg}, the error shape of the gateway's
// non-RPC routes (as in the FastAPI gateway it replaces).
func writeDetail(ctx *fasthttp.RequestCtx, status int, msg string) {
	b := make([]byte, 0, 16+len(msg))
	b = append(b, `{"detail":`...)
	b = appendString(b, msg)
	b = append(b, '}')
	writeJSON(ctx, status, b)
}

func methodNotAllowed(ctx *fasthttp.RequestCtx, allow string) {
	ctx.Response.Header.Set("Allow", allow)
	writeDetail(ctx, fasthttp.StatusMethodNotAllowed, "Method Not Allowed")
}

func (s *Server) encodeVersion() []byte {
	b := []byte(`{"name":"` + serverName + `","version":`)
	b = appendString(b, s.opt.Version)
	b = append(b, `,"go_version":`...)
	b = appendString(b, runtime.Version())
	b = append(b, `,"os":`...)
	b = appendString(b, runtime.GOOS+"/"+runtime.GOARCH)
	b = append(b, `,"database":`...)
	b = appendString(b, s.backend.Dialect())
	b = append(b, `,"cache":`...)
	b = appendString(b, s.backend.CacheType())
	b = append(b, `,"mcp_protocol_versions":`...)
	b = appendStrings(b, protocolVersions)
	return append(b, '}')
}

// appendStrings appends a JSON array of strings.
func appendStrings(b []byte, list []string) []byte {
	b = append(b, '[')
	for i, v := range list {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendString(b, v)
	}
	return append(b, ']')
}

// requestTime is the time fasthttp read when the request arrived: reusing it
// saves reading the clock again (tens of nanoseconds each). A RequestCtx
// made without a server (LazyRequestTime, tests) may have none.
func requestTime(ctx *fasthttp.RequestCtx) time.Time {
	if t := ctx.Time(); !t.IsZero() {
		return t
	}
	return time.Now()
}

func appendBool(b []byte, v bool) []byte {
	if v {
		return append(b, "true"...)
	}
	return append(b, "false"...)
}

// --- Pooled buffers -------------------------------------------------------------

// buffers are the per-request scratch space: out is the response body being
// built, text the result text of a tool before it is escaped into out; user
// is the caller (for rate limits), retryAfter the longest wait, in seconds,
// of its calls refused by a rate limit (0: none), and rev the request's MCP
// revision (revNone on /rpc).
//
// The rest serve tools/call of upstream tools on /mcp (mcp_stream.go): sse
// says the client accepts an SSE answer to this single request, id and sid
// are its id and legacy session id (nil: none), stream is a call deferred to
// an SSE answer, and callCtx, progressToken and onNote go to the upstream
// call.
type buffers struct {
	out        []byte
	text       []byte
	user       string
	retryAfter int
	rev        revision

	sse           bool
	id, sid       []byte
	stream        *streamCall
	callCtx       context.Context
	progressToken any
	onNote        func(json.RawMessage)

	vs *serverView // the virtual server whose endpoint this is (servers.go); nil: /mcp or /rpc

	// A 2026-07-28 request's params, and what of them goes on to an
	// upstream that speaks that revision, made when one is called
	// (upstreamContext, mcp_modern.go).
	params []byte
	modern *upstream.Modern

	// ask passes a request on to the session client of a streamed call
	// and returns its result (mcp_relay.go); nil when the answer is JSON.
	ask func(ctx context.Context, method, params []byte) ([]byte, *rpcError)
}

// callContext is the context an upstream call runs in: its own when it
// can be cancelled apart from the request (mcp_stream.go), else ctx.
func (b *buffers) callContext(ctx context.Context) context.Context {
	if b.callCtx != nil {
		return b.callCtx
	}
	return ctx
}

var bufferPool = sync.Pool{New: func() any {
	return &buffers{out: make([]byte, 0, 2048), text: make([]byte, 0, 512)}
}}

func getBuffers() *buffers { return bufferPool.Get().(*buffers) }

// putBuffers returns b to the pool, unless a large batch grew it: keeping
// such buffers would pin that memory in every pooled slot.
func putBuffers(b *buffers) {
	if cap(b.out) > 64<<10 || cap(b.text) > 64<<10 {
		return
	}
	b.out, b.text, b.user, b.retryAfter, b.rev = b.out[:0], b.text[:0], "", 0, revNone
	b.sse, b.id, b.sid, b.stream, b.callCtx, b.progressToken, b.onNote = false, nil, nil, nil, nil, nil, nil
	b.vs, b.params, b.modern, b.ask = nil, nil, nil, nil
	bufferPool.Put(b)
}

// --- Store errors -----------------------------------------------------------------

// A request that needs the store while the database cannot be reached
// (store.ErrUnavailable: refused, reset, not within DB_CONNECT_TIMEOUT) gets
// a generic answer: no driver text, address or credentials. A single
// JSON-RPC message answers HTTP 503 with Retry-After and this JSON-RPC
// error; in a batch only the messages that needed the store carry it.
// Other store errors stay "Internal error" (-32603).
const (
	codeUnavailable = -32000 // JSON-RPC "server error" range
	msgUnavailable  = "Service unavailable: the database cannot be reached, retry later"
	retryAfter      = "1" // seconds; lookups fail within DB_CONNECT_TIMEOUT
)

// unavailableKey marks a request one of whose messages got codeUnavailable.
type unavailableKey struct{}

// badRequestKey marks a 2026-07-28 request that an upstream refused for a
// capability its client did not declare: 400, as the upstream answered.
type badRequestKey struct{}

// storeError maps the error of a store lookup made for a JSON-RPC message,
// and logs it (an outage is logged at most once a second per worker, not
// once per request).
func (s *Server) storeError(ctx *fasthttp.RequestCtx, what string, err error) *rpcError {
	if errors.Is(err, store.ErrUnavailable) {
		ctx.SetUserValue(unavailableKey{}, true)
		if now := time.Now().UnixNano(); now-s.unavailableLogged.Load() >= int64(time.Second) {
			s.unavailableLogged.Store(now)
			s.log.Warn(what+": database unavailable", zap.Error(err))
		}
		return &rpcError{code: codeUnavailable, msg: msgUnavailable}
	}
	s.log.Error(what, zap.Error(err))
	return &rpcError{code: codeInternalError, msg: "Internal error"}
}

// unavailableStatus is the HTTP status of a single JSON-RPC message's
// answer: 503 (with Retry-After) when the store was unreachable for it.
func unavailableStatus(ctx *fasthttp.RequestCtx) int {
	if ctx.UserValue(unavailableKey{}) == nil {
		return fasthttp.StatusOK
	}
	ctx.Response.Header.Set("Retry-After", retryAfter)
	return fasthttp.StatusServiceUnavailable
}
