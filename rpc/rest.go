package rpc

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/valyala/fasthttp"
	"go.uber.org/zap"

	"github.com/mcpgateway/mcpgateway/internal/gatewayspec"
	"github.com/mcpgateway/mcpgateway/store"
	"github.com/mcpgateway/mcpgateway/upstream"
)

// REST tools (docs/federation.md, "REST tools"): an HTTP endpoint served
// as a tool, as the Python gateway's integration_type "REST" does. It is
// registered with PUT /admin/tools/{name} and an "integration" object; the
// endpoint is stored with the tool (store.RESTEndpoint, its credential
// sealed), so every worker has it with the catalogue. A call turns the
// arguments into the request's path, query and JSON body, runs it, and
// turns the answer into the tool's result.

// restSpec is the "integration" member of PUT /admin/tools/{name}, with the
// Python gateway's field names where it has them.
type restSpec struct {
	Type        string            `json:"type"`                   // "REST"
	RequestType string            `json:"request_type,omitempty"` // GET (default), POST, PUT, PATCH, DELETE
	URL         string            `json:"url"`                    // {name}: the argument, in the path only
	Headers     map[string]string `json:"headers,omitempty"`
	Query       []string          `json:"query,omitempty"` // arguments sent as query parameters
	Body        []string          `json:"body,omitempty"`  // arguments sent as members of the JSON body

	// Credentials, as an upstream's (gatewayspec): stored sealed.
	AuthType        string `json:"auth_type,omitempty"` // "", "bearer" or "authheaders"
	AuthToken       string `json:"auth_token,omitempty"`
	AuthHeaderKey   string `json:"auth_header_key,omitempty"`
	AuthHeaderValue string `json:"auth_header_value,omitempty"`
}

// restMethods are the methods a REST tool may use; the ones that send a
// JSON body by default (arguments named in neither query nor body).
var restMethods = map[string]bool{"GET": false, "DELETE": false, "POST": true, "PUT": true, "PATCH": true}

// restEndpoint checks the integration of a PUT /admin/tools/{name} body, or
// answers 400: nil and true when there is none.
func (s *Server) restEndpoint(ctx *fasthttp.RequestCtx, in *restSpec) (*store.RESTEndpoint, bool) {
	if in == nil {
		return nil, true
	}
	ep, err := s.checkREST(*in)
	if err != nil {
		writeDetail(ctx, fasthttp.StatusBadRequest, "Invalid integration: "+err.Error())
		return nil, false
	}
	return ep, true
}

// checkREST turns an integration into the endpoint to store, its
// credential sealed with UpstreamKey.
func (s *Server) checkREST(in restSpec) (*store.RESTEndpoint, error) {
	if !strings.EqualFold(in.Type, "REST") {
		return nil, fmt.Errorf(`integration type %q: must be "REST"`, in.Type)
	}
	ep := &store.RESTEndpoint{Method: strings.ToUpper(in.RequestType), URL: in.URL, Headers: in.Headers, Query: in.Query, Body: in.Body}
	if ep.Method == "" {
		ep.Method = "GET"
	}
	if _, ok := restMethods[ep.Method]; !ok {
		return nil, fmt.Errorf("request_type %q: must be GET, POST, PUT, PATCH or DELETE", in.RequestType)
	}
	if ep.Method == "GET" && len(in.Body) > 0 {
		return nil, errors.New("a GET request has no body: name its arguments in query")
	}
	path, err := checkTemplate(in.URL)
	if err != nil {
		return nil, err
	}
	seen := map[string]string{}
	for _, n := range path {
		seen[n] = "the URL"
	}
	for _, list := range []struct {
		where string
		names []string
	}{{"query", in.Query}, {"body", in.Body}} {
		for _, n := range list.names {
			if n == "" {
				return nil, fmt.Errorf("%s: an argument name is empty", list.where)
			}
			if prev, dup := seen[n]; dup {
				return nil, fmt.Errorf("argument %q is mapped twice: in %s and in %s", n, prev, list.where)
			}
			seen[n] = list.where
		}
	}
	for k, v := range in.Headers {
		if !isToken([]byte(k)) || strings.ContainsAny(v, "\r\n\x00") {
			return nil, fmt.Errorf("header %q: not a valid header name or value", k)
		}
	}
	// Credentials are checked and sealed as an upstream's are.
	auth, err := gatewayspec.Spec{URL: in.URL, AuthType: in.AuthType, AuthToken: in.AuthToken,
		AuthHeaderKey: in.AuthHeaderKey, AuthHeaderValue: in.AuthHeaderValue}.Check(s.opt.UpstreamKey != nil)
	if err != nil {
		return nil, err
	}
	if auth.HeaderValue != "" {
		ep.AuthHeaderName = auth.HeaderName
		if ep.SealedAuth, err = store.SealSecret(s.opt.UpstreamKey, auth.HeaderValue); err != nil {
			return nil, fmt.Errorf("sealing the credential: %w", err)
		}
	}
	return ep, nil
}

// checkTemplate checks a URL template and returns the names of its
// placeholders. They may stand in the path only: an argument must never
// choose the host a request (and its credential) goes to.
func checkTemplate(tmpl string) ([]string, error) {
	rest, ok := strings.CutPrefix(tmpl, "http://")
	if !ok {
		rest, ok = strings.CutPrefix(tmpl, "https://")
	}
	if !ok {
		return nil, errors.New("url must be an http:// or https:// URL")
	}
	slash := strings.IndexByte(rest, '/')
	first := strings.IndexAny(rest, "{}")
	end := strings.IndexAny(rest, "?#")
	if first >= 0 && (slash < 0 || first < slash) || end >= 0 && strings.ContainsAny(rest[end:], "{}") {
		return nil, errors.New("url: {placeholders} may stand in the path only")
	}
	var names []string
	filled, err := expandTemplate(tmpl, func(name string) (string, error) {
		if name == "" || strings.ContainsAny(name, "{/") {
			return "", fmt.Errorf("url: placeholder {%s} is not a name", name)
		}
		if slices.Contains(names, name) {
			return "", fmt.Errorf("url: placeholder {%s} appears twice", name)
		}
		names = append(names, name)
		return "x", nil
	})
	if err != nil {
		return nil, err
	}
	if u, err := url.Parse(filled); err != nil || u.Host == "" {
		return nil, fmt.Errorf("url %q is not a valid URL", tmpl)
	}
	return names, nil
}

// expandTemplate replaces each {name} of tmpl with what fill returns.
func expandTemplate(tmpl string, fill func(name string) (string, error)) (string, error) {
	var b strings.Builder
	for {
		open := strings.IndexByte(tmpl, '{')
		if open < 0 {
			if strings.IndexByte(tmpl, '}') >= 0 {
				return "", errors.New("url: a } without its {")
			}
			b.WriteString(tmpl)
			return b.String(), nil
		}
		end := strings.IndexByte(tmpl[open:], '}')
		if end < 0 || strings.IndexByte(tmpl[:open], '}') >= 0 {
			return "", errors.New("url: a { without its } or a } without its {")
		}
		v, err := fill(tmpl[open+1 : open+end])
		if err != nil {
			return "", err
		}
		b.WriteString(tmpl[:open])
		b.WriteString(v)
		tmpl = tmpl[open+end+1:]
	}
}

// publicTool is a tool as the admin API shows it: a REST tool's sealed
// credential left out (its header name stays, to say there is one).
func publicTool(t store.Tool) store.Tool {
	if t.REST != nil && t.REST.SealedAuth != "" {
		ep := *t.REST
		ep.SealedAuth = ""
		t.REST = &ep
	}
	return t
}

// --- Calls ------------------------------------------------------------------

// restClient runs the REST tools' requests of this worker: pooled
// keep-alive connections, as an upstream's. Redirects are not followed: one
// to another host would carry the credential there; a 3xx is the answer.
var restClient = &http.Client{
	Transport:     upstream.NewTransport(),
	CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
}

// maxRESTAnswer bounds the body of an answer read into a tool result.
const maxRESTAnswer = 4 << 20

// callREST runs a call of a REST tool and appends its result. An endpoint
// that answers gives a result (an error status an isError one); one that
// does not, or bad arguments, give an isError result too, so that the
// model sees it.
func (s *Server) callREST(ctx *fasthttp.RequestCtx, t store.Tool, args []byte, buf *buffers, out []byte) ([]byte, *rpcError) {
	callCtx, cancel := s.withinRequest(ctx, buf.callContext(ctx)) // resources.go
	defer cancel()
	if s.opt.FederationTimeout > 0 {
		var cancelT context.CancelFunc
		callCtx, cancelT = context.WithTimeout(callCtx, s.opt.FederationTimeout)
		defer cancelT()
	}
	req, err := s.restRequest(callCtx, t, args)
	if err != nil {
		return appendToolError(out, buf, "REST tool "+t.Name+": "+err.Error()), nil
	}
	g := s.restGuard(t) // rest_guard.go
	if !g.breaker.Allow() {
		s.noteUpstream(UpstreamCircuitOpen)
		return appendToolError(out, buf, "REST tool "+t.Name+": its endpoint failed repeatedly; retry later"), nil
	}
	if n := g.inFlight.Add(1); n > g.limit.Current() {
		g.inFlight.Add(-1)
		g.breaker.Release()
		s.noteUpstream(UpstreamBusy) // backpressure: a 503 for a single message, as an upstream's
		ctx.SetUserValue(unavailableKey{}, true)
		return out, &rpcError{code: codeUnavailable, msg: "REST tool " + t.Name + " busy: too many calls in flight to its endpoint; retry shortly"}
	}
	start := time.Now()
	resp, err := restClient.Do(req)
	var body []byte
	if err == nil {
		body, err = io.ReadAll(io.LimitReader(resp.Body, maxRESTAnswer+1))
		resp.Body.Close()
	}
	g.limit.Sample(int64(time.Since(s.rest.base)), int64(time.Since(start)), g.inFlight.Load())
	g.inFlight.Add(-1)
	var uerr *url.Error
	if errors.As(err, &uerr) {
		err = uerr.Err // without the URL: it holds the caller's arguments
	}
	switch {
	case errors.Is(err, context.Canceled):
		g.breaker.Release() // says nothing of the endpoint
	case err != nil || resp.StatusCode >= 500:
		g.breaker.Failure()
	default:
		g.breaker.Success()
	}
	switch {
	case errors.Is(err, context.Canceled):
		return out, &rpcError{code: codeInternalError, msg: "Request cancelled"} // nobody reads the answer
	case err != nil:
		s.noteUpstream(UpstreamFailed)
		s.upstreamErrors.log(s.log, "REST tool call failed", zap.String("tool", t.Name), zap.String("method", t.REST.Method), zap.Error(err))
		text := "REST tool " + t.Name + ": the endpoint did not answer: " + err.Error()
		if errors.Is(err, context.DeadlineExceeded) {
			text = "REST tool " + t.Name + ": the endpoint did not answer in time"
		}
		return appendToolError(out, buf, text), nil
	case len(body) > maxRESTAnswer:
		s.noteUpstream(UpstreamAnswered)
		return appendToolError(out, buf, fmt.Sprintf("REST tool %s: the answer is larger than %d bytes", t.Name, maxRESTAnswer)), nil
	case resp.StatusCode >= 500:
		s.noteUpstream(UpstreamFailed)
		s.upstreamErrors.log(s.log, "REST tool call failed", zap.String("tool", t.Name), zap.String("method", t.REST.Method), zap.Int("status", resp.StatusCode))
	default:
		s.noteUpstream(UpstreamAnswered)
	}
	return appendRESTResult(out, buf, resp, body), nil
}

// restRequest builds a call's request: each argument goes to the URL's
// placeholder of its name, to the query or to the JSON body as the
// endpoint maps it; one it does not map goes to the body of a POST, PUT or
// PATCH and to the query of a GET or DELETE.
func (s *Server) restRequest(ctx context.Context, t store.Tool, args []byte) (*http.Request, error) {
	ep := t.REST
	var in map[string]json.RawMessage
	if len(args) > 0 {
		if err := json.Unmarshal(args, &in); err != nil {
			return nil, fmt.Errorf("arguments: %w", err)
		}
	}
	used := map[string]bool{}
	target, err := expandTemplate(ep.URL, func(name string) (string, error) {
		used[name] = true
		v, ok := scalarText(in[name])
		if !ok || v == "" || v == "." || v == ".." {
			return "", fmt.Errorf("argument %q is required, as a string or number, for the URL path", name)
		}
		return url.PathEscape(v), nil // a "/" in it stays in its segment
	})
	if err != nil {
		return nil, err
	}
	u, err := url.Parse(target)
	if err != nil {
		return nil, fmt.Errorf("url: %w", err)
	}
	query := u.Query()
	body := map[string]json.RawMessage{}
	for name, v := range in {
		switch {
		case used[name]:
		case slices.Contains(ep.Query, name):
			addQuery(query, name, v)
		case slices.Contains(ep.Body, name):
			body[name] = v
		case restMethods[ep.Method]:
			body[name] = v
		default:
			addQuery(query, name, v)
		}
	}
	u.RawQuery = query.Encode()
	var payload io.Reader
	if restMethods[ep.Method] || len(body) > 0 {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, fmt.Errorf("body: %w", err)
		}
		payload = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, ep.Method, u.String(), payload)
	if err != nil {
		return nil, fmt.Errorf("request: %w", err)
	}
	req.Header.Set("Accept", "application/json, */*;q=0.5")
	if payload != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	for k, v := range ep.Headers {
		req.Header.Set(k, v)
	}
	if ep.SealedAuth != "" {
		cred, err := store.OpenSecret(s.opt.UpstreamKey, ep.SealedAuth)
		if err != nil {
			s.upstreamErrors.log(s.log, "REST tool credential", zap.String("tool", t.Name), zap.Error(err))
			return nil, errors.New("its credential cannot be opened (AUTH_ENCRYPTION_SECRET)")
		}
		req.Header.Set(ep.AuthHeaderName, cred)
	}
	return req, nil
}

// scalarText is an argument as text: a string as it is, a number or a
// boolean as written; false for null, an array or an object.
func scalarText(v json.RawMessage) (string, bool) {
	v = bytes.TrimSpace(v)
	if len(v) == 0 {
		return "", false
	}
	switch v[0] {
	case '"':
		var s string
		return s, json.Unmarshal(v, &s) == nil
	case 'n', '[', '{':
		return "", false
	}
	return string(v), true
}

// addQuery adds an argument to a query: an array as the parameter
// repeated, an object as its JSON text, null not at all.
func addQuery(q url.Values, name string, v json.RawMessage) {
	if s, ok := scalarText(v); ok {
		q.Add(name, s)
		return
	}
	var list []json.RawMessage
	switch {
	case bytes.HasPrefix(bytes.TrimSpace(v), []byte("null")):
	case json.Unmarshal(v, &list) == nil:
		for _, e := range list {
			addQuery(q, name, e)
		}
	default:
		q.Add(name, string(compactJSON(v)))
	}
}

// appendRESTResult turns an answer into a CallToolResult. A JSON answer is
// structuredContent (an object as it is, another value as {"result": ...},
// since structuredContent is an object) and its text; an image is an image
// block; other text is text. A status other than 2xx is an isError result
// that names it, with the start of the body.
func appendRESTResult(out []byte, buf *buffers, resp *http.Response, body []byte) []byte {
	status := "HTTP " + resp.Status
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		text := status
		if snippet := textStart(body, 512); snippet != "" {
			text += ": " + snippet
		}
		return appendToolError(out, buf, text)
	}
	ct, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	trimmed := bytes.TrimSpace(body)
	switch {
	case (ct == "application/json" || strings.HasSuffix(ct, "+json")) && len(trimmed) > 0 && validate(trimmed) == nil:
		out = append(out, `{"content":[{"type":"text","text":`...)
		out = appendString(out, trimmed)
		out = append(out, `}],"structuredContent":`...)
		if trimmed[0] == '{' {
			out = append(out, trimmed...)
		} else {
			out = append(out, `{"result":`...)
			out = append(out, trimmed...)
			out = append(out, '}')
		}
		return append(out, `,"isError":false}`...)
	case strings.HasPrefix(ct, "image/") && len(body) > 0:
		out = append(out, `{"content":[{"type":"image","data":"`...)
		out = base64.StdEncoding.AppendEncode(out, body)
		out = append(out, `","mimeType":`...)
		out = appendString(out, ct)
		return append(out, `}],"isError":false}`...)
	}
	text := string(body)
	switch {
	case len(body) == 0:
		text = status
	case !utf8.Valid(body):
		text = fmt.Sprintf("%s: %d bytes of %s", status, len(body), ct)
	}
	out = append(out, `{"content":[{"type":"text","text":`...)
	out = appendString(out, text)
	return append(out, `}],"isError":false}`...)
}

// textStart is the first n bytes of b if it is text, cut on a character.
func textStart(b []byte, n int) string {
	if !utf8.Valid(b) {
		return ""
	}
	if len(b) > n {
		for n > 0 && !utf8.RuneStart(b[n]) {
			n--
		}
		return strings.TrimSpace(string(b[:n])) + "…"
	}
	return strings.TrimSpace(string(b))
}

// appendToolError appends a result with isError and text.
func appendToolError(out []byte, buf *buffers, text string) []byte {
	buf.text = append(buf.text[:0], text...)
	out = append(out, `{"content":[{"type":"text","text":`...)
	out = appendString(out, buf.text)
	return append(out, `}],"isError":true}`...)
}
