package worker

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mcpgateway/mcpgateway/supervisor/protocol"
	"github.com/valyala/fasthttp"
)

// parseHead parses a raw request as fasthttp's server does.
func parseHead(t *testing.T, raw string) *fasthttp.RequestHeader {
	t.Helper()
	var req fasthttp.Request
	if err := req.Read(bufio.NewReaderSize(strings.NewReader(raw), 1<<20)); err != nil {
		t.Fatalf("parse %.100q: %.200s", raw, err)
	}
	return &req.Header
}

// fieldsHead is a GET with n header fields of the given size each
// ("X-Nnnn: vvv", Host included as the first).
func fieldsHead(target string, n, size int) string {
	var b strings.Builder
	b.WriteString("GET " + target + " HTTP/1.1\r\nHost: x\r\n")
	for i := 1; i < n; i++ {
		name := fmt.Sprintf("X-%04d", i)
		b.WriteString(name + ": " + strings.Repeat("v", max(size-len(name)-2, 0)) + "\r\n")
	}
	b.WriteString("\r\n")
	return b.String()
}

func TestCheckHead(t *testing.T) {
	const line, fields, size = 64, 5, 100
	target := func(n int) string { return "/" + strings.Repeat("a", n-1) } // a target of n bytes
	// The request line is "GET " + target + " HTTP/1.1": 13 bytes more.
	cases := []struct {
		name, raw string
		status    int
	}{
		{"line at the limit", fieldsHead(target(line-13), 1, 0), 0},
		{"line past the limit", fieldsHead(target(line-12), 1, 0), 414},
		{"query counts", fieldsHead("/x?"+strings.Repeat("q", line), 1, 0), 414},
		{"fields at the limit", fieldsHead("/", fields, 10), 0},
		{"fields past the limit", fieldsHead("/", fields+1, 10), 431},
		{"many small fields", fieldsHead("/", 60, 5), 431},
		{"field at the limit", fieldsHead("/", 2, size), 0},
		{"field past the limit", fieldsHead("/", 2, size+1), 431},
		{"duplicates count", "GET / HTTP/1.1\r\nHost: x\r\nCookie: a=1\r\nCookie: b=2\r\nCookie: c=3\r\nCookie: d=4\r\nCookie: e=5\r\n\r\n", 431},
		{"a folded field is one field", "GET / HTTP/1.1\r\nHost: x\r\nX-A: 1\r\n 2\r\n 3\r\n 4\r\n 5\r\n\r\n", 0},
		{"a folded field's size is all its lines", "GET / HTTP/1.1\r\nHost: x\r\nX-A: " + strings.Repeat("1", 60) + "\r\n " + strings.Repeat("2", 60) + "\r\n\r\n", 431},
	}
	for _, c := range cases {
		v, over := checkHead(parseHead(t, c.raw), line, fields, size)
		if got := map[bool]int{true: v.status}[over]; got != c.status {
			t.Errorf("%s: status %d (%+v), want %d", c.name, got, v, c.status)
		}
	}
	// 0 turns a limit off.
	if v, over := checkHead(parseHead(t, fieldsHead(target(5000), 200, 3000)), 0, 0, 0); over {
		t.Errorf("no limits, yet %+v", v)
	}
	// Parsed fields (HTTP/2: no raw block) are checked too.
	var h fasthttp.RequestHeader
	h.SetMethod("GET")
	h.SetRequestURI("/")
	h.SetProtocol("HTTP/2.0")
	for i := range fields + 1 {
		h.Add(fmt.Sprintf("X-%d", i), "v")
	}
	if v, over := checkHead(&h, line, fields, size); !over || v.status != 431 || v.limit != "limit_request_fields" {
		t.Errorf("parsed header with %d fields: %+v %v", fields+1, v, over)
	}
}

// rawExchange writes raw on a new connection and reads one response; open
// says whether the server kept the connection open after it.
func rawExchange(t *testing.T, addr, raw string) (resp *http.Response, body string, open bool) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c, raw); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	resp, body = readResponse(t, br)
	c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	_, err = br.ReadByte()
	var ne net.Error
	open = errors.As(err, &ne) && ne.Timeout()
	return resp, body, open
}

// A worker answers a head past a limit with 414 or 431, a JSON body that
// names the limit, and closes the connection; the application never sees
// it; /health is held to the limits too; within them all is as before.
func TestRequestLimitsAnswered(t *testing.T) {
	seen := make(chan string, 16)
	opts := protocol.WorkerOptions{LimitRequestLine: 64, LimitRequestFields: 5, LimitRequestFieldSize: 100, MaxHeaderSize: 4096}
	_, addr := startTestWorker(t, opts, func(ctx *fasthttp.RequestCtx) {
		seen <- string(ctx.Path())
		ctx.SetBodyString("ok")
	})
	long := "/" + strings.Repeat("a", 60)
	cases := []struct {
		name, raw, limit string
		status           int
	}{
		{"within", fieldsHead("/rpc", 5, 100), "", 200},
		{"request line", fieldsHead(long, 1, 0), "limit_request_line", 414},
		{"request line of /health", fieldsHead("/health?"+strings.Repeat("x", 60), 1, 0), "limit_request_line", 414},
		{"fields", fieldsHead("/rpc", 6, 10), "limit_request_fields", 431},
		{"field size", fieldsHead("/rpc", 2, 101), "limit_request_field_size", 431},
		{"chunked and Content-Length", "POST /rpc HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\ncontent-LENGTH: 5\r\n\r\n2\r\nok\r\n0\r\n\r\n", "Transfer-Encoding and Content-Length", 400},
		{"chunked alone", "POST /rpc HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n", "", 200},
	}
	for _, c := range cases {
		resp, body, open := rawExchange(t, addr, c.raw)
		if resp.StatusCode != c.status {
			t.Errorf("%s: %d %s, want %d", c.name, resp.StatusCode, body, c.status)
			continue
		}
		if c.status == 200 {
			if !open || body != "ok" {
				t.Errorf("%s: body %q, connection open %v", c.name, body, open)
			}
			continue
		}
		var detail struct {
			Detail string
			Status int
		}
		if err := json.Unmarshal([]byte(body), &detail); err != nil || detail.Status != c.status ||
			!strings.Contains(detail.Detail, c.limit) || resp.Header.Get("Content-Type") != "application/json" {
			t.Errorf("%s: body %q (%v), Content-Type %q", c.name, body, err, resp.Header.Get("Content-Type"))
		}
		if !resp.Close || open {
			t.Errorf("%s: Connection: close %v, connection still open %v", c.name, resp.Close, open)
		}
	}
	if n := len(seen); n != 2 {
		t.Errorf("the application saw %d requests, want 2 (the ones within the limits)", n)
	}
	// The head buffer stays the hard cap: fasthttp answers 431 past it.
	if resp, body, _ := rawExchange(t, addr, fieldsHead("/rpc", 2, 5000)); resp.StatusCode != 431 {
		t.Errorf("head past MaxHeaderSize: %d %s", resp.StatusCode, body)
	}
}

// Over HTTP/2 the limits hold the same way (the parsed-fields path).
func TestRequestLimitsH2C(t *testing.T) {
	_, addr := startTestWorker(t, protocol.WorkerOptions{HTTP: "2", LimitRequestLine: 64, LimitRequestFields: 10, LimitRequestFieldSize: 100}, echo)
	c := h2cClient(t)
	if resp, body := do(t, c, "GET", "http://"+addr+"/"+strings.Repeat("a", 80), ""); resp.StatusCode != 414 || !strings.Contains(body, "limit_request_line") {
		t.Errorf("long target over h2c: %d %s", resp.StatusCode, body)
	}
	req, _ := http.NewRequest("GET", "http://"+addr+"/x", nil)
	req.Header.Set("X-Big", strings.Repeat("b", 200))
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 431 || !strings.Contains(string(b), "limit_request_field_size") {
		t.Errorf("large field over h2c: %d %s", resp.StatusCode, b)
	}
	if resp, _ := do(t, c, "POST", "http://"+addr+"/x", "{}"); resp.StatusCode != 201 {
		t.Errorf("within limits over h2c: %d", resp.StatusCode)
	}
}

// scrape asks for /metrics with extra headers on a fresh connection.
func scrape(t *testing.T, c *http.Client, url string, headers ...string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest("GET", url, nil)
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// /metrics on the main port: local clients by default (not when a proxy
// forwards), the token when one is set, anyone with MetricsPublic.
func TestMetricsAccess(t *testing.T) {
	const token = "scrape-0123456789abcdef"
	c := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 5 * time.Second}
	ok := func(code int, body string) bool { return code == 200 && strings.Contains(body, "mcpgateway_workers ") }

	_, addr := startTestWorker(t, protocol.WorkerOptions{}, echo)
	url := "http://" + addr + "/metrics"
	if code, body := scrape(t, c, url); !ok(code, body) {
		t.Errorf("default, loopback: %d %.80s", code, body)
	}
	for _, h := range []string{"X-Forwarded-For", "Forwarded", "X-Real-IP"} {
		if code, body := scrape(t, c, url, h, "203.0.113.9"); code != 403 || !strings.Contains(body, "HEALTH_BIND") {
			t.Errorf("default, loopback with %s: %d %s", h, code, body)
		}
	}
	if code, _ := scrape(t, c, "http://"+addr+"/health", "X-Forwarded-For", "203.0.113.9"); code != 200 {
		t.Errorf("/health is for anyone: %d", code)
	}

	_, addr = startTestWorker(t, protocol.WorkerOptions{MetricsToken: token}, echo)
	url = "http://" + addr + "/metrics"
	for _, auth := range []string{"", "Bearer wrong-0123456789abcdef", "Basic " + token, "Bearer " + token + "x"} {
		req, _ := http.NewRequest("GET", url, nil)
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 401 || !strings.HasPrefix(resp.Header.Get("WWW-Authenticate"), "Bearer") {
			t.Errorf("token set, Authorization %q: %d %v", auth, resp.StatusCode, resp.Header)
		}
	}
	for _, auth := range []string{"Bearer " + token, "bearer " + token} {
		if code, body := scrape(t, c, url, "Authorization", auth, "X-Forwarded-For", "203.0.113.9"); !ok(code, body) {
			t.Errorf("token set, Authorization %q: %d %.80s", auth, code, body)
		}
	}

	_, addr = startTestWorker(t, protocol.WorkerOptions{MetricsPublic: true}, echo)
	if code, body := scrape(t, c, "http://"+addr+"/metrics", "X-Forwarded-For", "203.0.113.9"); !ok(code, body) {
		t.Errorf("public, forwarded: %d %.80s", code, body)
	}

	// A unix socket peer is local.
	sock := filepath.Join(t.TempDir(), "w.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	startTestWorkerOn(t, protocol.WorkerOptions{}, echo, ln)
	uc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true,
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", sock)
		}}}
	if code, body := scrape(t, uc, "http://x/metrics"); !ok(code, body) {
		t.Errorf("default, unix socket: %d %.80s", code, body)
	}

	for addr, want := range map[net.Addr]bool{
		&net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)}: true, &net.TCPAddr{IP: net.IPv4(127, 1, 2, 3)}: true,
		&net.TCPAddr{IP: net.IPv6loopback}: true, &net.TCPAddr{IP: net.IPv4(192, 0, 2, 2)}: false,
		&net.TCPAddr{IP: net.ParseIP("::ffff:10.0.0.1")}: false, &net.TCPAddr{IP: net.IPv4zero}: false,
		&net.UnixAddr{Net: "unix"}: true,
	} {
		if localPeer(addr) != want {
			t.Errorf("localPeer(%v) = %v", addr, !want)
		}
	}
}

func TestMetricsTokenOK(t *testing.T) {
	const token = "scrape-0123456789abcdef"
	for auth, want := range map[string]bool{
		"Bearer " + token: true, "BEARER " + token: true, "Bearer  " + token + " ": true,
		"": false, "Bearer": false, "Bearer ": false, token: false, "Bearer " + token[:10]: false,
		"Basic " + token: false, "Bearer " + token + token: false,
	} {
		if MetricsTokenOK([]byte(auth), token) != want {
			t.Errorf("MetricsTokenOK(%q) = %v", auth, !want)
		}
	}
}

func BenchmarkCheckHead(b *testing.B) {
	raw := "POST /rpc HTTP/1.1\r\nHost: localhost:4444\r\nUser-Agent: hey/0.0.1\r\nContent-Type: application/json\r\n" +
		"Authorization: Bearer " + strings.Repeat("t", 300) + "\r\nContent-Length: 90\r\nAccept-Encoding: gzip\r\n\r\n"
	var req fasthttp.Request
	if err := req.Header.Read(bufio.NewReader(strings.NewReader(raw))); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, over := checkHead(&req.Header, 4094, 100, 8190); over {
			b.Fatal("over")
		}
	}
}

// What fasthttp cannot read as a request gets a JSON answer with the right
// status, and the connection closed: 400 for junk, 413 for a body past
// MaxRequestBodySize (fasthttp's own handler says 400), 431 for a head past
// the buffer. The parser's text, which quotes the request, is not echoed.
func TestParseErrorsAnswerJSON(t *testing.T) {
	_, addr := startTestWorker(t, protocol.WorkerOptions{MaxRequestBodySize: 1000, MaxHeaderSize: 2048}, echo)
	for _, c := range []struct {
		name, raw string
		status    int
	}{
		{"junk", "GET / HTTP/1.1 secret-junk\r\nHost: x\r\n\r\n", 400},
		{"duplicate Content-Length", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx", 400},
		{"body past the limit", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1001\r\n\r\n", 413},
		{"chunked body past the limit", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3e9\r\n" + strings.Repeat("b", 1001) + "\r\n0\r\n\r\n", 413},
		{"head past the buffer", fieldsHead("/", 5, 1000), 431},
	} {
		resp, body, open := rawExchange(t, addr, c.raw)
		if resp.StatusCode != c.status || !json.Valid([]byte(body)) || resp.Header.Get("Content-Type") != "application/json" ||
			strings.Contains(body, "secret-junk") || open {
			t.Errorf("%s: %d %q %s, connection open %v", c.name, resp.StatusCode, resp.Header.Get("Content-Type"), body, open)
		}
	}
}
