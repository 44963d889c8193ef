package rpc

import (
	"context"
	"strings"
	"time"

	"github.com/valyala/fasthttp"
	"go.uber.org/zap"
)

// logging/setLevel for legacy sessions (2025-03-26 to 2025-11-25; G12 in
// docs/mcp.md). The level is session-wide: set by one request, it applies
// to the upstream log notifications streamed to the session's later tool
// calls (mcp_stream.go), on whichever worker or instance serves them. The
// session id is immutable, so the level is a record in the store keyed by
// it (store/loglevel.go), with the session tombstones' coherence; the
// 2026-07-28 revision has no sessions and sends its level with each request.

// sessionLevelBackend is a Backend that keeps session log levels
// (*store.Store). Without it, logging/setLevel is not offered and legacy
// sessions get no log messages.
type sessionLevelBackend interface {
	SetSessionLogLevel(ctx context.Context, sid, level string, until time.Time) error
	SessionLogLevel(ctx context.Context, sid string) (string, error)
}

// setLevel answers logging/setLevel in a legacy session: an empty result
// once the level is recorded for the session, -32602 for a level that is
// not one of logLevels.
func (s *Server) setLevel(ctx *fasthttp.RequestCtx, params []byte, buf *buffers, out []byte) ([]byte, *rpcError) {
	level := member(params, "level")
	if logLevel(level) < 0 {
		return out, &rpcError{code: codeInvalidParams, msg: "Invalid params: level must be one of " + strings.Join(logLevels[:], ", ")}
	}
	// The record outlives any session it can belong to (sessionLifetime).
	until := time.Now().Add(sessionLifetime + sessionClockSkew + time.Minute)
	if err := s.levels.SetSessionLogLevel(ctx, string(buf.sid), string(unquote(level)), until); err != nil {
		return out, s.storeError(ctx, "setting the MCP session log level", err)
	}
	return append(out, "{}"...), nil
}

// sessionLevel returns the index in logLevels of the level set for the
// session of buf, or -1: none set, or the store could not say (the call
// then runs without log messages rather than fail).
func (s *Server) sessionLevel(ctx context.Context, buf *buffers) int {
	if s.levels == nil || buf.sid == nil {
		return -1
	}
	level, err := s.levels.SessionLogLevel(ctx, string(buf.sid))
	if err != nil {
		s.log.Warn("reading the MCP session log level; no log messages for this call", zap.Error(err))
		return -1
	}
	return levelIndex(level)
}
