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
	leases     *ratelimit.Leases // nil: the limits are this instance's alone
	user, tool ratelimit.Limit
	userPerMin int // 0: off
	toolPerMin int // 0: off
	onEvent    func(RateLimitEvent)
}

// RateLimitEvent is what Options.OnRateLimit counts.
type RateLimitEvent int

const (
	RateLimitedUser      RateLimitEvent = iota // a call refused by the user's limit
	RateLimitedTool                            // a call refused by the tool's limit
	RateLimitFull                              // a call let through: no slot for its bucket in the table
	RateLimitLeased                            // a lease of tokens from Redis (CACHE_TYPE=redis)
	RateLimitLeaseFailed                       // a lease that failed: a batch let through on the instance's limit alone
)

func (rl *rateLimits) note(e RateLimitEvent) {
	if rl.onEvent != nil {
		rl.onEvent(e)
	}
}

func newRateLimits(o *Options) *rateLimits {
	if o.UserRateLimit <= 0 && o.ToolRateLimit <= 0 {
		return nil
	}
	r := &rateLimits{table: o.RateLimits, userPerMin: max(o.UserRateLimit, 0), toolPerMin: max(o.ToolRateLimit, 0), onEvent: o.OnRateLimit}
	if r.table == nil {
		r.table = ratelimit.New(ratelimit.DefaultSlots)
	}
	if o.RateLease != nil && o.RateLeaseKey != nil {
		r.leases = ratelimit.NewLeases(o.RateLease, o.RateLeaseKey, r.table.Now)
		r.leases.OnLease = func(failed bool) {
			if failed {
				r.note(RateLimitLeaseFailed)
			} else {
				r.note(RateLimitLeased)
			}
		}
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
// returns the error of the call and notes its wait in buf. Each bucket is
// taken in the instance's table first, then, with CACHE_TYPE=redis, from
// the tokens leased from the bucket all instances share.
func (s *Server) rateLimit(tool string, buf *buffers) *rpcError {
	rl := s.limits
	if rl == nil {
		return nil
	}
	now := rl.table.Now()
	var userKey uint64
	var user ratelimit.Result
	if rl.userPerMin > 0 {
		userKey = ratelimit.Key(keyUser, buf.user)
		if user = rl.take(userKey, rl.user, now); !user.OK {
			rl.note(RateLimitedUser)
			return buf.limited(user.Wait, "Rate limit exceeded: more than "+strconv.Itoa(rl.userPerMin)+" tool calls per minute for this user")
		}
	}
	if rl.toolPerMin > 0 {
		if r := rl.take(ratelimit.Key(keyTool, tool), rl.tool, now); !r.OK {
			// The call does not run: the user keeps the token.
			if user.OK {
				rl.table.Refund(user, rl.user)
				if rl.leases != nil {
					rl.leases.Refund(userKey)
				}
			}
			rl.note(RateLimitedTool)
			return buf.limited(r.Wait, "Rate limit exceeded: more than "+strconv.Itoa(rl.toolPerMin)+" calls per minute of tool "+tool)
		}
	}
	return nil
}

// take takes a token of one bucket: the instance's, then the shared one.
func (rl *rateLimits) take(key uint64, l ratelimit.Limit, now int64) ratelimit.Result {
	r := rl.table.Take(key, l, now)
	if r.Full {
		rl.note(RateLimitFull)
	}
	if !r.OK || rl.leases == nil {
		return r
	}
	if shared := rl.leases.Take(key, l, now); !shared.OK {
		rl.table.Refund(r, l)
		return shared
	}
	return r
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
	return &rpcError{code: codeRateLimited, msg: msg + "; retry after " + strconv.Itoa(secs) + " s"}
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
