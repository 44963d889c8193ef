package rpc

import (
	"strconv"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/mcpgateway/mcpgateway/internal/ratelimit"
)

// Rate limits on tool calls (the MCP tools specification: servers MUST rate
// limit tool invocations): a token bucket per user and one per tool, checked
// for every tools/call and every tool called by name, once the tool is known
// (unknown tools and other methods are not counted). Each call of a batch
// counts. A call over a limit gets codeRateLimited; a single message is
// answered HTTP 429 with Retry-After, a batch 200 (its other calls ran) with
// Retry-After set. The buckets live in a ratelimit.Table, shared by the
// workers of an instance (Options.RateLimits). See docs/security.md.

// codeRateLimited is the JSON-RPC error of a call over a rate limit: -32000,
// the first of the implementation-defined server errors (MCP defines no code
// for it).
const codeRateLimited = -32000

// Key kinds, so that a user and a tool of the same name never share a bucket.
const (
	keyUser = 'u'
	keyTool = 't'
)

type rateLimits struct {
	table      *ratelimit.Table
	user, tool ratelimit.Limit
	userPerMin int // 0: off
	toolPerMin int // 0: off
	onFull     func()
}

func newRateLimits(o *Options) *rateLimits {
	if o.UserRateLimit <= 0 && o.ToolRateLimit <= 0 {
		return nil
	}
	r := &rateLimits{table: o.RateLimits, userPerMin: max(o.UserRateLimit, 0), toolPerMin: max(o.ToolRateLimit, 0), onFull: o.OnRateLimitFull}
	if r.table == nil {
		r.table = ratelimit.New(ratelimit.DefaultSlots)
	}
	burst := func(limit int) int {
		if o.RateLimitBurst > 0 {
			return o.RateLimitBurst
		}
		return limit
	}
	if r.userPerMin > 0 {
		r.user = ratelimit.PerMinute(r.userPerMin, burst(r.userPerMin))
	}
	if r.toolPerMin > 0 {
		r.tool = ratelimit.PerMinute(r.toolPerMin, burst(r.toolPerMin))
	}
	return r
}

// rateLimit takes a token of the caller's and of the tool's bucket, or
// returns the error of the call and notes its wait in buf.
func (s *Server) rateLimit(tool string, buf *buffers) *rpcError {
	rl := s.limits
	if rl == nil {
		return nil
	}
	now := rl.table.Now()
	var user ratelimit.Result
	if rl.userPerMin > 0 {
		user = rl.table.Take(ratelimit.Key(keyUser, buf.user), rl.user, now)
		if user.Full && rl.onFull != nil {
			rl.onFull()
		}
		if !user.OK {
			return buf.limited(user.Wait, "Rate limit exceeded: more than "+strconv.Itoa(rl.userPerMin)+" tool calls per minute for this user")
		}
	}
	if rl.toolPerMin > 0 {
		r := rl.table.Take(ratelimit.Key(keyTool, tool), rl.tool, now)
		if r.Full && rl.onFull != nil {
			rl.onFull()
		}
		if !r.OK {
			rl.table.Refund(user, rl.user) // the call does not run: the user keeps the token
			return buf.limited(r.Wait, "Rate limit exceeded: more than "+strconv.Itoa(rl.toolPerMin)+" calls per minute of tool "+tool)
		}
	}
	return nil
}

// limited notes a refused call's wait (the longest of the request's) and
// makes its error.
func (b *buffers) limited(wait time.Duration, msg string) *rpcError {
	secs := int((wait + time.Second - 1) / time.Second)
	if secs < 1 {
		secs = 1
	}
	if secs > b.retryAfter {
		b.retryAfter = secs
	}
	return &rpcError{codeRateLimited, msg + "; retry after " + strconv.Itoa(secs) + " s"}
}

// limitedStatus sets Retry-After when a call of the request was over a rate
// limit, and returns 429 for a single message, status otherwise.
func limitedStatus(ctx *fasthttp.RequestCtx, buf *buffers, status int, batch bool) int {
	if buf.retryAfter == 0 {
		return status
	}
	ctx.Response.Header.Set("Retry-After", strconv.Itoa(buf.retryAfter))
	if batch {
		return status
	}
	return fasthttp.StatusTooManyRequests
}
