// Package gateway builds what a worker serves from the resolved settings:
// the store, and the rpc server over it. The workers of cmd/mcpgateway and
// the benchmark's plain one-process server build it here, so they serve the
// very same thing.
package gateway

import (
	"context"
	"sync/atomic"

	"github.com/mcpgateway/mcpgateway/config"
	"github.com/mcpgateway/mcpgateway/rpc"
	"github.com/mcpgateway/mcpgateway/store"
	"go.uber.org/zap"
)

// Open opens the store and builds the rpc server over it; onPanic (may be
// nil) counts the panics it recovers. The caller closes the store after the
// last request.
func Open(ctx context.Context, s config.Settings, version string, log *zap.Logger, onPanic func()) (*rpc.Server, *store.Store, error) {
	return open(ctx, s, version, log, nil, func(o *rpc.Options) { o.OnPanic = onPanic })
}

// open opens the store, with the instance's shared count of writes
// (store.Options.LocalWrites; nil: none), and the rpc server over it, with
// set's options.
func open(ctx context.Context, s config.Settings, version string, log *zap.Logger, localWrites *atomic.Uint64, set func(*rpc.Options)) (*rpc.Server, *store.Store, error) {
	so := StoreOptions(s, log)
	so.LocalWrites = localWrites
	st, err := store.Open(ctx, so)
	if err != nil {
		return nil, nil, err
	}
	o := RPCOptions(s, version, log)
	if st.SharesRateLimits() {
		o.RateLease, o.RateLeaseKey = st.LeaseRateTokens, st.RateLimitKey
	}
	set(&o)
	srv, err := rpc.New(o, st)
	if err != nil {
		st.Close()
		return nil, nil, err
	}
	return srv, st, nil
}

// StoreOptions maps the settings onto the store.
func StoreOptions(s config.Settings, log *zap.Logger) store.Options {
	return store.Options{
		DatabaseURL: s.DatabaseURL, PoolSize: s.DBPoolSize, MaxOverflow: s.DBMaxOverflow,
		PoolTimeout: s.DBPoolTimeout, PoolRecycle: s.DBPoolRecycle, ConnectTimeout: s.DBConnectTimeout,
		CacheType: s.CacheType, CachePrefix: s.CachePrefix, CacheTTL: s.CacheTTL, StaleIfError: s.CacheStaleIfError,
		RedisURL: s.RedisURL, RedisMaxConnections: s.RedisMaxConnections,
		RedisSocketTimeout: s.RedisSocketTimeout, RedisSocketConnectTimeout: s.RedisSocketConnectTimeout,
		RedisHealthCheckInterval: s.RedisHealthCheckInterval,
		PlatformAdminEmail:       s.PlatformAdminEmail, Logger: log,
	}
}

// RPCOptions maps the settings onto the rpc server.
func RPCOptions(s config.Settings, version string, log *zap.Logger) rpc.Options {
	return rpc.Options{
		AuthRequired: s.AuthRequired, JWTSecretKey: s.JWTSecretKey, JWTAlgorithm: s.JWTAlgorithm,
		JWTAudience: s.JWTAudience, JWTIssuer: s.JWTIssuer, JWTLeeway: s.JWTLeeway,
		JWTSecretKeyPrevious: s.JWTSecretKeyPrevious, JWTPublicKeyPEM: s.JWTPublicKeyPEM,
		RequireTokenExpiration: s.RequireTokenExpiration, RequireJTI: s.RequireJTI,
		RequireUserInDB: s.RequireUserInDB, MaxRequestBodySize: s.MaxRequestBodySize,
		MaxBatchSize: s.MaxBatchSize, Version: version, Logger: log, CacheTTL: s.CacheTTL,
		AllowedOrigins: s.AllowedOrigins, CORSEnabled: s.CORSEnabled,
		LoopbackOnly:  config.LoopbackOnly(s.Bind),
		UserRateLimit: s.UserRateLimit, ToolRateLimit: s.ToolRateLimit, RateLimitBurst: s.RateLimitBurst,
		UpstreamKey: store.SecretKey(s.AuthEncryptionSecret), ToolNameSeparator: s.GatewayToolNameSeparator,
		FederationTimeout: s.FederationTimeout, RequestTimeout: s.Timeout,
	}
}
