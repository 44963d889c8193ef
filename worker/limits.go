package worker

import (
	"bytes"
	"crypto/subtle"
	"errors"
	"net"
	"strconv"

	"github.com/valyala/fasthttp"
)

// Request limits, as Gunicorn names them: limit_request_line,
// limit_request_fields and limit_request_field_size
// (protocol.WorkerOptions.LimitRequest*). fasthttp has parsed the head
// into ctx.Request.Header by the time the handler runs, within
// ReadBufferSize (MaxHeaderSize: the hard cap on the whole head, 431 past
// it); the checks here look at what it parsed, before anything else runs,
// /health and /metrics included, as Gunicorn checks every request.
//
// The cost on the hot path is three length additions, and for HTTP/1.1 one
// bytes.Count over the raw header block (SIMD) when the fields limit is
// set: a line-by-line scan only runs for a head that may be past a limit.
//
// Past a limit the answer is a short JSON body and "Connection: close":
//   - request line (method, target and protocol): 414 URI Too Long. Gunicorn
//     answers 400 "Request Line is too large"; 414 is what RFC 9110 (15.5.15)
//     has for a target longer than the server will interpret, and what nginx
//     answers, and it tells a client that the request was well formed but
//     its URI (in practice always the part that grows) was too long;
//   - too many header fields, or one too large: 431 Request Header Fields
//     Too Large (RFC 6585), as Gunicorn answers (LimitRequestHeaders).

// headViolation is a limit a request head is past: the status, which
// limit, the size found and the limit.
type headViolation struct {
	status      int
	what, limit string
	got, max    int
}

// checkHead checks a parsed request head against the limits (0: none).
func checkHead(h *fasthttp.RequestHeader, line, fields, fieldSize int) (headViolation, bool) {
	if line > 0 {
		if n := len(h.Method()) + 1 + len(h.RequestURI()) + 1 + len(h.Protocol()); n > line {
			return headViolation{fasthttp.StatusRequestURITooLong, "request line too long", "limit_request_line", n, line}, true
		}
	}
	if fields <= 0 && fieldSize <= 0 {
		return headViolation{}, false
	}
	raw := h.RawHeaders() // the header block as received, up to its blank line; empty for HTTP/2
	if len(raw) == 0 {
		return checkFieldsParsed(h, fields, fieldSize)
	}
	// Fast paths: a field line is at least 3 bytes ("a:\n") and none can be
	// longer than the block, so small blocks need no scan at all.
	scan := fieldSize > 0 && len(raw) > fieldSize
	if fields > 0 && len(raw) > 3*fields && bytes.Count(raw, newline)-1 > fields {
		scan = true // lines counted: continuation lines may be among them
	}
	if !scan {
		return headViolation{}, false
	}
	count, longest := scanFields(raw)
	if fields > 0 && count > fields {
		return headViolation{fasthttp.StatusRequestHeaderFieldsTooLarge, "too many header fields", "limit_request_fields", count, fields}, true
	}
	if fieldSize > 0 && longest > fieldSize {
		return headViolation{fasthttp.StatusRequestHeaderFieldsTooLarge, "header field too large", "limit_request_field_size", longest, fieldSize}, true
	}
	return headViolation{}, false
}

var newline = []byte{'\n'}

// scanFields counts the header fields of a raw header block and measures
// the longest: its name, colon and value as sent (continuation lines of an
// obsolete folded value included), without the final line ending.
func scanFields(raw []byte) (count, longest int) {
	size := 0
	for len(raw) > 0 {
		end := bytes.IndexByte(raw, '\n')
		line := raw
		if end >= 0 {
			line, raw = raw[:end], raw[end+1:]
		} else {
			raw = nil
		}
		line = bytes.TrimSuffix(line, cr)
		if len(line) == 0 {
			break // the blank line that ends the head
		}
		if line[0] == ' ' || line[0] == '\t' { // obs-fold: the field goes on
			size += 2 + len(line)
		} else {
			count++
			size = len(line)
		}
		longest = max(longest, size)
	}
	return count, longest
}

var cr = []byte{'\r'}

// checkFieldsParsed checks fields and sizes from the parsed header, for
// requests without a raw block (HTTP/2 streams): each field counts as
// "Name: value".
func checkFieldsParsed(h *fasthttp.RequestHeader, fields, fieldSize int) (headViolation, bool) {
	count, longest := 0, 0
	for k, v := range h.All() {
		count++
		longest = max(longest, len(k)+2+len(v))
	}
	if fields > 0 && count > fields {
		return headViolation{fasthttp.StatusRequestHeaderFieldsTooLarge, "too many header fields", "limit_request_fields", count, fields}, true
	}
	if fieldSize > 0 && longest > fieldSize {
		return headViolation{fasthttp.StatusRequestHeaderFieldsTooLarge, "header field too large", "limit_request_field_size", longest, fieldSize}, true
	}
	return headViolation{}, false
}

// overLimits answers a request whose head is past a limit, and says whether
// it did. The connection is closed after the answer: what follows on it
// comes from a client that does not keep to the limits.
func (w *worker) overLimits(ctx *fasthttp.RequestCtx) bool {
	if ctx.Request.Header.ContentLength() == -1 && hasContentLength(ctx.Request.Header.RawHeaders()) {
		// Both Transfer-Encoding: chunked and Content-Length: the framing
		// a proxy in front may have read differently (request smuggling).
		// RFC 9112 (6.1) lets a server refuse it and has it close the
		// connection; nginx answers 400, and so does this.
		ctx.Response.Reset()
		ctx.SetStatusCode(fasthttp.StatusBadRequest)
		ctx.SetContentTypeBytes(jsonType)
		ctx.SetBody(ambiguousLengthBody)
		ctx.SetConnectionClose()
		return true
	}
	o := &w.opts
	if o.LimitRequestLine <= 0 && o.LimitRequestFields <= 0 && o.LimitRequestFieldSize <= 0 {
		return false
	}
	v, over := checkHead(&ctx.Request.Header, o.LimitRequestLine, o.LimitRequestFields, o.LimitRequestFieldSize)
	if !over {
		return false
	}
	ctx.Response.Reset()
	ctx.SetStatusCode(v.status)
	ctx.SetContentTypeBytes(jsonType)
	b := make([]byte, 0, 128)
	b = append(b, `{"detail":"`...)
	b = append(b, v.what...)
	b = append(b, ": "...)
	b = strconv.AppendInt(b, int64(v.got), 10)
	b = append(b, `, the limit is `...)
	b = strconv.AppendInt(b, int64(v.max), 10)
	b = append(b, ` (`...)
	b = append(b, v.limit...)
	b = append(b, `)","status":`...)
	b = strconv.AppendInt(b, int64(v.status), 10)
	b = append(b, '}')
	ctx.SetBody(b)
	ctx.SetConnectionClose()
	return true
}

var ambiguousLengthBody = []byte(`{"detail":"bad request: both Transfer-Encoding and Content-Length","status":400}`)

// hasContentLength says whether a raw header block (of a chunked request:
// rare, so the scan costs nothing on the hot path) has a Content-Length
// field.
func hasContentLength(raw []byte) bool {
	const name = "content-length:"
	for len(raw) > 0 {
		line := raw
		if i := bytes.IndexByte(raw, '\n'); i >= 0 {
			line, raw = raw[:i], raw[i+1:]
		} else {
			raw = nil
		}
		if len(line) >= len(name) && bytes.EqualFold(line[:len(name)], []byte(name)) {
			return true
		}
	}
	return false
}

// parseError is fasthttp's ErrorHandler: it answers what fasthttp could
// not read as a request, before any handler, and fasthttp closes the
// connection after it. fasthttp's own handler answers a body past
// MaxRequestBodySize with 400 and text; this one says 413, and answers in
// JSON like every other refusal. The parser's error text, which quotes the
// request, is never sent back.
func parseError(ctx *fasthttp.RequestCtx, err error) {
	var small *fasthttp.ErrSmallBuffer
	var op *net.OpError
	body := parseErrorBody
	switch {
	case errors.As(err, &small):
		body = headTooLargeBody
	case errors.Is(err, fasthttp.ErrBodyTooLarge):
		body = bodyTooLargeBody
	case errors.As(err, &op) && op.Timeout():
		body = readTimeoutBody
	}
	ctx.Response.Reset()
	ctx.SetStatusCode(body.status)
	ctx.SetContentTypeBytes(jsonType)
	ctx.SetBody(body.text)
}

type errorBody struct {
	status int
	text   []byte
}

var (
	parseErrorBody   = errorBody{fasthttp.StatusBadRequest, []byte(`{"detail":"bad request: not a valid HTTP/1.1 request","status":400}`)}
	headTooLargeBody = errorBody{fasthttp.StatusRequestHeaderFieldsTooLarge, []byte(`{"detail":"request head too large (HTTP1BufferSize)","status":431}`)}
	bodyTooLargeBody = errorBody{fasthttp.StatusRequestEntityTooLarge, []byte(`{"detail":"request body too large (MaxRequestBodySize)","status":413}`)}
	readTimeoutBody  = errorBody{fasthttp.StatusRequestTimeout, []byte(`{"detail":"request timeout: the request was not received in time","status":408}`)}
)

// /metrics on the main port. The master's health port (supervisor) serves
// it too, to anyone, with the token when there is one; on the main port
// it is served
//   - with MetricsToken set: to requests with "Authorization: Bearer
//     <token>" only (compared in constant time), else 401;
//   - else with MetricsPublic: to anyone;
//   - else (the default): to local clients only, else 403. Local is a peer
//     on loopback (127.0.0.0/8, ::1) or on a unix socket, whose request
//     carries none of Forwarded, X-Forwarded-For, X-Real-IP: a reverse
//     proxy on the same host connects from loopback too, and those headers
//     are how it says that it speaks for someone else.

var (
	metricsNeedTokenBody = []byte(`{"detail":"/metrics needs Authorization: Bearer <METRICS_TOKEN>","status":401}`)
	metricsLocalOnlyBody = []byte(`{"detail":"/metrics is served to local clients only on this port: scrape the health port (HEALTH_BIND), or set METRICS_TOKEN or METRICS_PUBLIC","status":403}`)
	bearerPrefix         = []byte("Bearer ")
)

// metricsAllowed says whether this request may read /metrics, and answers
// it (401 or 403) when not.
func (w *worker) metricsAllowed(ctx *fasthttp.RequestCtx) bool {
	switch {
	case w.opts.MetricsToken != "":
		if MetricsTokenOK(ctx.Request.Header.Peek(fasthttp.HeaderAuthorization), w.opts.MetricsToken) {
			return true
		}
		ctx.SetStatusCode(fasthttp.StatusUnauthorized)
		ctx.Response.Header.Set(fasthttp.HeaderWWWAuthenticate, `Bearer realm="metrics"`)
		ctx.SetContentTypeBytes(jsonType)
		ctx.SetBody(metricsNeedTokenBody)
		return false
	case w.opts.MetricsPublic:
		return true
	case localPeer(ctx.RemoteAddr()) && !forwarded(&ctx.Request.Header):
		return true
	}
	ctx.SetStatusCode(fasthttp.StatusForbidden)
	ctx.SetContentTypeBytes(jsonType)
	ctx.SetBody(metricsLocalOnlyBody)
	return false
}

// MetricsTokenOK says whether an Authorization header value carries the
// bearer token (scheme case-insensitive, as RFC 9110 has it), comparing in
// constant time. The health port uses it too.
func MetricsTokenOK(authorization []byte, token string) bool {
	if len(authorization) < len(bearerPrefix) || !bytes.EqualFold(authorization[:len(bearerPrefix)], bearerPrefix) {
		return false
	}
	got := bytes.TrimSpace(authorization[len(bearerPrefix):])
	return subtle.ConstantTimeCompare(got, []byte(token)) == 1
}

// localPeer is true for a loopback TCP peer and for a unix socket peer.
func localPeer(a net.Addr) bool {
	switch a := a.(type) {
	case *net.TCPAddr:
		return a.IP.IsLoopback()
	case *net.UnixAddr:
		return true
	}
	return false
}

// forwarded is true when a proxy says it forwards this request for
// someone else.
func forwarded(h *fasthttp.RequestHeader) bool {
	return len(h.Peek("Forwarded")) > 0 || len(h.Peek(fasthttp.HeaderXForwardedFor)) > 0 || len(h.Peek("X-Real-Ip")) > 0
}
