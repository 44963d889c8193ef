package tests

// Hostile input against the real binary (issue 12's acceptance): a few
// thousand generated requests (bodies, JSON-RPC, headers, tokens, methods
// and paths, raw junk) and the request limits and /metrics exposure of
// items 8 and 9, process-level.

import (
	"bufio"
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/mcpgateway/mcpgateway/internal/proctest"
)

// --- What the server says about itself -------------------------------------

// serverState is what /metrics says about the processes: live worker pids,
// worker exits and panics counted since the master started.
type serverState struct {
	pids   []string
	exits  float64
	panics float64
}

var (
	workerInfoRe = regexp.MustCompile(`(?m)^mcpgateway_worker_info\{[^}]*pid="(\d+)"[^}]*\} 1$`)
	exitsRe      = regexp.MustCompile(`(?m)^mcpgateway_worker_exits_total\{[^}]*\} (\S+)$`)
	panicsRe     = regexp.MustCompile(`(?m)^mcpgateway_handler_panics_total (\S+)$`)
)

func readServerState(t *testing.T, metricsURL string) serverState {
	t.Helper()
	code, body := httpDo(freshClient, "GET", metricsURL, "", "")
	if code != 200 {
		t.Fatalf("GET %s: %d %.200s", metricsURL, code, body)
	}
	var s serverState
	for _, m := range workerInfoRe.FindAllStringSubmatch(body, -1) {
		s.pids = append(s.pids, m[1])
	}
	slices.Sort(s.pids)
	for _, m := range exitsRe.FindAllStringSubmatch(body, -1) {
		v, _ := strconv.ParseFloat(m[1], 64)
		s.exits += v
	}
	if m := panicsRe.FindStringSubmatch(body); m != nil {
		s.panics, _ = strconv.ParseFloat(m[1], 64)
	}
	return s
}

// --- Tokens --------------------------------------------------------------------

func b64(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

// jwtWith signs header.payload with HS256 under key (the signature part is
// left empty when key is "").
func jwtWith(header, payload, key string) string {
	in := b64([]byte(header)) + "." + b64([]byte(payload))
	if key == "" {
		return in + "."
	}
	m := hmac.New(sha256.New, []byte(key))
	m.Write([]byte(in))
	return in + "." + b64(m.Sum(nil))
}

func claims(sub string, exp int64, extra string) string {
	now := time.Now().Unix()
	return fmt.Sprintf(`{"sub":%q,"aud":"mcpgateway-api","iss":"mcpgateway","iat":%d,"exp":%d,"jti":"hostile-%d"%s}`,
		sub, now, exp, now, extra)
}

// hostileTokens are Authorization values, from the good one to the absurd.
func hostileTokens(good string) []string {
	now := time.Now().Unix()
	hs := `{"alg":"HS256","typ":"JWT"}`
	parts := strings.Split(good, ".")
	return []string{
		"Bearer " + good,
		"Bearer " + good,
		"bearer " + good,
		"Bearer  " + good,
		"Bearer " + good + "x",
		"Bearer " + parts[0] + "." + parts[1] + ".",
		"Bearer " + parts[0] + "." + parts[1],
		"Bearer " + good + "." + parts[2],
		"Bearer " + strings.ToUpper(good),
		"Bearer ",
		"Bearer",
		"Basic YWRtaW46YWRtaW4=",
		"Token " + good,
		good,
		"Bearer garbage",
		"Bearer ...",
		"Bearer a.b.c",
		"Bearer %%%.$$$.***",
		"Bearer " + strings.Repeat("A", 7000),
		"Bearer " + strings.Repeat("eyJ", 1000) + "." + strings.Repeat("x", 3000) + ".sig",
		"Bearer " + jwtWith(`{"alg":"none","typ":"JWT"}`, claims("admin@example.com", now+600, ""), ""),
		"Bearer " + jwtWith(`{"alg":"None"}`, claims("admin@example.com", now+600, ""), ""),
		"Bearer " + jwtWith(`{"alg":"NONE"}`, claims("admin@example.com", now+600, ""), "") + "AAAA",
		"Bearer " + jwtWith(hs, claims("admin@example.com", now+600, ""), "the-wrong-key-0123456789abcdef0123"),
		"Bearer " + jwtWith(hs, claims("admin@example.com", now+600, ""), testSecret[:len(testSecret)-1]),
		"Bearer " + jwtWith(`{"alg":"RS256","typ":"JWT"}`, claims("admin@example.com", now+600, ""), testSecret),
		"Bearer " + jwtWith(`{"alg":"ES256"}`, claims("admin@example.com", now+600, ""), testSecret),
		"Bearer " + jwtWith(`{"alg":"HS512"}`, claims("admin@example.com", now+600, ""), testSecret),
		"Bearer " + jwtWith(`{"alg":"HS256","kid":"../../../../etc/passwd"}`, claims("admin@example.com", now+600, ""), testSecret),
		"Bearer " + jwtWith(`{"alg":"HS256","jku":"http://169.254.169.254/"}`, claims("admin@example.com", now+600, ""), testSecret),
		"Bearer " + jwtWith(`{"alg":["HS256"]}`, claims("admin@example.com", now+600, ""), testSecret),
		"Bearer " + jwtWith(`not json`, claims("admin@example.com", now+600, ""), testSecret),
		"Bearer " + jwtWith(hs, `not json`, testSecret),
		"Bearer " + jwtWith(hs, `[]`, testSecret),
		"Bearer " + jwtWith(hs, `null`, testSecret),
		"Bearer " + jwtWith(hs, `{}`, testSecret),
		"Bearer " + jwtWith(hs, claims("admin@example.com", now-3600, ""), testSecret),
		"Bearer " + jwtWith(hs, claims("admin@example.com", now+600, `,"nbf":`+strconv.FormatInt(now+3600, 10)), testSecret),
		"Bearer " + jwtWith(hs, claims("nobody@example.com", now+600, ""), testSecret),
		"Bearer " + jwtWith(hs, claims("", now+600, ""), testSecret),
		"Bearer " + jwtWith(hs, claims(strings.Repeat("x", 3000)+"@example.com", now+600, ""), testSecret),
		"Bearer " + jwtWith(hs, claims("admin@example.com\x00evil", now+600, ""), testSecret),
		"Bearer " + jwtWith(hs, `{"sub":12,"aud":"mcpgateway-api","iss":"mcpgateway","exp":1e400,"jti":"x"}`, testSecret),
		"Bearer " + jwtWith(hs, `{"sub":"admin@example.com","aud":["x",{"y":1}],"iss":"mcpgateway","exp":99999999999999999999,"jti":[]}`, testSecret),
		"Bearer " + jwtWith(hs, `{"sub":"admin@example.com","aud":"mcpgateway-api","iss":"mcpgateway","exp":"tomorrow","iat":-1,"jti":null}`, testSecret),
		"Bearer " + jwtWith(hs, claims("admin@example.com", now+600, `,"is_admin":true,"teams":[`+strings.Repeat(`[`, 500)+strings.Repeat(`]`, 500)+`]`), testSecret),
		"Bearer " + jwtWith(hs, claims("admin@example.com", now+600, ""), testSecret) + "\xff",
		"Bearer \xff\xfe\xfd",
	}
}

// --- Generated cases ----------------------------------------------------------

// hostileCase is one connection's worth of bytes.
type hostileCase struct {
	kind string // what it tries, for the report
	raw  []byte
	// unparsable: the bytes are not an HTTP/1.1 request a server must
	// answer (bad framing, junk, an oversized head or body); then a 4xx
	// and a close, or a close, is fine. Any other case must get an answer.
	unparsable bool
	halfClose  bool // shut the write side after sending (framing that never ends)
	head       bool // a HEAD request: no body in the answer
}

// hostileGen makes the cases from a seeded generator: the same seed, the
// same cases.
type hostileGen struct {
	r      *rand.Rand
	host   string
	tokens []string
}

func (g *hostileGen) pick(s []string) string { return s[g.r.IntN(len(s))] }

// request assembles an HTTP/1.1 request with a correct Content-Length.
func (g *hostileGen) request(method, target string, headers []string, body []byte) []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "%s %s HTTP/1.1\r\nHost: %s\r\n", method, target, g.host)
	for _, h := range headers {
		b.WriteString(h + "\r\n")
	}
	if body != nil || method == "POST" {
		fmt.Fprintf(&b, "Content-Length: %d\r\n", len(body))
	}
	b.WriteString("\r\n")
	b.Write(body)
	return b.Bytes()
}

var (
	hostileTimes = []string{"09:00", "23:59", "00:00", "25:61", "", "9", "noon", "2026-01-01T00:00:00Z", "99999999999999999999",
		"-1", "09:00:00.000000001", "\u0000", "\xff", strings.Repeat("1", 5000), "１２:００", "09:00\n", "24:00"}
	hostileZones = []string{"Europe/Berlin", "Europe/Dublin", "UTC", "America/New_York", "Asia/Kolkata", "localtime", "posixrules",
		"Local", "", " ", "/etc/localtime", "../../../etc/passwd", "Europe/../../etc/passwd", "Etc/GMT+99", "Etc/GMT-14",
		"GMT0", "EST5EDT", "europe/berlin", "Europe/Berlin\x00", "\xff\xfe", "\u202eEurope/Berlin", strings.Repeat("A/", 3000),
		"Factory", "right/UTC", "posix/Europe/Berlin", "zone.tab", "tzdata.zi", "leapseconds", "+00:00", "Z"}
	hostileMethods = []string{"convert_time", "get_system_time", "tools/call", "tools/list", "initialize", "ping",
		"notifications/initialized", "notifications/cancelled", "resources/list", "prompts/list", "rpc.discover", "",
		"\u0000", "tools/call\u0000", "CONVERT_TIME", "../convert_time", "system.exit", strings.Repeat("m", 5000), "\xff", "日本"}
	hostileIDs = []string{"1", `"x"`, "null", "1.5", "-1", "0", "1e400", "-1e400", strings.Repeat("9", 2000), `""`,
		`"` + strings.Repeat("i", 10000) + `"`, "true", "[]", "{}", `{"a":1}`, "[1,2]", "9007199254740993", "-0", `"\u0000"`, `"\ud800"`}
)

// jsonString quotes s as JSON would, but keeps invalid UTF-8 bytes raw
// (json.Marshal would replace them).
func jsonString(s string) string {
	if !utf8.ValidString(s) {
		return `"` + s + `"`
	}
	b, _ := json.Marshal(s)
	return string(b)
}

func (g *hostileGen) params() string {
	tz := func() string { return jsonString(g.pick(hostileZones)) }
	switch g.r.IntN(12) {
	case 0:
		return "{}"
	case 1:
		return g.pick([]string{"[]", "null", `"x"`, "1", "true", `[{"time":"09:00"}]`})
	case 2:
		return fmt.Sprintf(`{"name":"convert_time","arguments":{"time":%s,"source_timezone":%s,"target_timezone":%s}}`,
			jsonString(g.pick(hostileTimes)), tz(), tz())
	case 3:
		return fmt.Sprintf(`{"name":%s,"arguments":%s}`, jsonString(g.pick(hostileMethods)), g.pick([]string{"{}", "null", "[]", `"x"`, "1"}))
	case 4:
		return fmt.Sprintf(`{"timezone":%s}`, tz())
	case 5:
		return fmt.Sprintf(`{"protocolVersion":%s,"capabilities":%s,"clientInfo":{"name":%s,"version":1}}`,
			g.pick([]string{`"2025-06-18"`, `"2025-11-25"`, `"2026-07-28"`, `"1999-01-01"`, "null", "1", `""`}),
			g.pick([]string{"{}", "null", "[]", `{"x":` + strings.Repeat("[", 200) + strings.Repeat("]", 200) + "}"}),
			jsonString(g.pick(hostileMethods)))
	case 6: // deep nesting
		d := g.pick([]string{"10", "100", "1000", "10000", "100000"})
		n, _ := strconv.Atoi(d)
		open, closeB := "[", "]"
		if g.r.IntN(2) == 0 {
			open, closeB = `{"a":`, "}"
		}
		return `{"time":` + strings.Repeat(open, n) + "1" + strings.Repeat(closeB, n) + "}"
	case 7:
		return fmt.Sprintf(`{"time":%s,"time":%s,"source_timezone":%s,"target_timezone":%s,"extra":%s}`,
			jsonString(g.pick(hostileTimes)), jsonString(g.pick(hostileTimes)), tz(), tz(), g.pick(hostileIDs))
	case 8:
		return fmt.Sprintf(`{"_meta":{"progressToken":%s,"mcp":%s},"time":"09:00","source_timezone":"UTC","target_timezone":"UTC"}`,
			g.pick(hostileIDs), g.pick([]string{"{}", "null", `{"protocolVersion":"2026-07-28"}`, `{"protocolVersion":1}`}))
	}
	return fmt.Sprintf(`{"time":%s,"source_timezone":%s,"target_timezone":%s}`, jsonString(g.pick(hostileTimes)), tz(), tz())
}

func (g *hostileGen) message() string {
	parts := []string{}
	if g.r.IntN(8) != 0 {
		parts = append(parts, `"jsonrpc":`+g.pick([]string{`"2.0"`, `"2.0"`, `"2.0"`, `"1.0"`, "2", "null", `"2.0 "`}))
	}
	if g.r.IntN(6) != 0 {
		parts = append(parts, `"id":`+g.pick(hostileIDs))
	}
	if g.r.IntN(10) != 0 {
		m := jsonString(g.pick(hostileMethods))
		if g.r.IntN(10) == 0 {
			m = g.pick([]string{"1", "null", "[]", "{}"})
		}
		parts = append(parts, `"method":`+m)
	}
	if g.r.IntN(5) != 0 {
		parts = append(parts, `"params":`+g.params())
	}
	if g.r.IntN(15) == 0 {
		parts = append(parts, `"result":1`, `"error":{"code":"x"}`)
	}
	g.r.Shuffle(len(parts), func(i, j int) { parts[i], parts[j] = parts[j], parts[i] })
	return "{" + strings.Join(parts, ",") + "}"
}

// mutate breaks a JSON text the ways clients and attackers do.
func (g *hostileGen) mutate(s string) string {
	if len(s) == 0 {
		return s
	}
	switch g.r.IntN(10) {
	case 0:
		return s[:g.r.IntN(len(s))] // truncated
	case 1:
		i := g.r.IntN(len(s))
		return s[:i] + string(rune(g.r.IntN(256))) + s[i:]
	case 2:
		i := g.r.IntN(len(s))
		return s[:i] + string([]byte{byte(g.r.IntN(256))}) + s[i:] // a raw byte, maybe invalid UTF-8
	case 3:
		return "\xef\xbb\xbf" + s // BOM
	case 4:
		return s + g.pick([]string{"}", "]", ",", " garbage", "\x00", s})
	case 5:
		return strings.ReplaceAll(s, `"`, `'`)
	case 6:
		return strings.Repeat(" \t\r\n", g.r.IntN(1000)) + s
	}
	return s
}

func (g *hostileGen) body() []byte {
	switch g.r.IntN(14) {
	case 0:
		return []byte{}
	case 1:
		b := make([]byte, g.r.IntN(4096))
		for i := range b {
			b[i] = byte(g.r.IntN(256))
		}
		return b
	case 2: // a batch
		n := g.pick([]string{"0", "1", "2", "10", "100", "101", "1000"})
		k, _ := strconv.Atoi(n)
		items := make([]string, k)
		for i := range items {
			switch g.r.IntN(4) {
			case 0:
				items[i] = g.pick([]string{"1", "null", `"x"`, "[]", "{}", "[[]]", seedPayload})
			default:
				items[i] = g.message()
			}
		}
		return []byte("[" + strings.Join(items, ",") + "]")
	case 3:
		return []byte(g.pick([]string{"null", "1", `"x"`, "[]", "{}", "[[]]", "true", "{", "[", `{"jsonrpc":"2.0"`, "\x00", "\"\\ud800\"",
			strings.Repeat("[", 100000), strings.Repeat(`{"a":`, 50000), `{"a":1e999999}`, "-", "01", "NaN", "Infinity"}))
	case 4:
		return []byte(g.mutate(seedPayload))
	case 5, 6:
		return []byte(g.mutate(g.message()))
	}
	return []byte(g.message())
}

// rpcHeaders are a JSON-RPC request's headers, sometimes odd.
func (g *hostileGen) rpcHeaders() []string {
	h := []string{}
	if g.r.IntN(12) != 0 {
		h = append(h, "Authorization: "+g.tokens[g.r.IntN(min(len(g.tokens), 4+g.r.IntN(len(g.tokens))))])
	}
	if g.r.IntN(4) != 0 {
		h = append(h, "Content-Type: "+g.pick([]string{"application/json", "application/json", "text/plain", "application/json; charset=latin1",
			"multipart/form-data; boundary=x", "application/x-www-form-urlencoded", "", "\xff"}))
	}
	if g.r.IntN(6) == 0 {
		h = append(h, "Accept: "+g.pick([]string{"application/json, text/event-stream", "text/event-stream", "text/html", "*/*", ""}))
	}
	if g.r.IntN(8) == 0 {
		h = append(h, "Origin: "+g.pick([]string{"http://evil.example", "null", "http://" + g.host, "file://", "\xff"}))
	}
	if g.r.IntN(8) == 0 {
		h = append(h, "Mcp-Session-Id: "+g.pick([]string{"x", "", strings.Repeat("s", 500), "a.b.c", "\x01"}))
	}
	if g.r.IntN(8) == 0 {
		h = append(h, "Mcp-Protocol-Version: "+g.pick([]string{"2025-06-18", "2025-11-25", "2026-07-28", "1", "", "\xff"}))
	}
	if g.r.IntN(8) == 0 {
		h = append(h, "Mcp-Method: "+g.pick(hostileMethods[:12]), "Mcp-Name: "+g.pick([]string{"convert_time", "", "x"}))
	}
	if g.r.IntN(10) == 0 {
		h = append(h, "Accept-Encoding: "+g.pick([]string{"gzip", "br", "deflate, gzip;q=1.0", "zstd", "x"}))
	}
	if g.r.IntN(10) == 0 {
		h = append(h, "Content-Encoding: "+g.pick([]string{"gzip", "br", "identity", "x"}))
	}
	return h
}

// next makes one case.
func (g *hostileGen) next() hostileCase {
	switch n := g.r.IntN(100); {
	case n < 45: // JSON-RPC bodies on /rpc and /mcp
		path := g.pick([]string{"/rpc", "/rpc", "/rpc/", "/mcp", "/mcp/"})
		return hostileCase{kind: "jsonrpc " + path, raw: g.request("POST", path, g.rpcHeaders(), g.body())}
	case n < 55: // tokens
		h := []string{"Authorization: " + g.pick(g.tokens)}
		if g.r.IntN(5) == 0 {
			h = append(h, "Authorization: "+g.pick(g.tokens))
		}
		path := g.pick([]string{"/rpc", "/mcp", "/version", "/admin/tools", "/admin/users", "/admin/gateways"})
		method, body := "POST", []byte(seedPayload)
		if path == "/version" || strings.HasPrefix(path, "/admin") {
			method, body = "GET", nil
		}
		return hostileCase{kind: "token " + path, raw: g.request(method, path, append(h, "Content-Type: application/json"), body)}
	case n < 70:
		return g.headerCase()
	case n < 85:
		return g.methodPathCase()
	case n < 93:
		return g.framingCase()
	}
	return g.junkCase()
}

// headerCase: odd, many, huge or duplicated headers on a good request.
func (g *hostileGen) headerCase() hostileCase {
	auth := "Authorization: " + g.tokens[0]
	body := []byte(seedPayload)
	switch g.r.IntN(14) {
	case 0: // many fields, past limit_request_fields sometimes
		n := g.pick([]string{"50", "99", "100", "101", "150", "300"})
		k, _ := strconv.Atoi(n)
		h := []string{auth}
		for i := range k {
			h = append(h, fmt.Sprintf("X-H%d: v", i))
		}
		return hostileCase{kind: "headers: " + n + " more fields", raw: g.request("POST", "/rpc", h, body)}
	case 1: // one big field: past limit_request_field_size, or past the head buffer
		size := g.pick([]string{"1000", "4000", "7000", "8100", "9000", "20000"})
		k, _ := strconv.Atoi(size)
		return hostileCase{kind: "headers: a field of " + size, raw: g.request("POST", "/rpc", []string{auth, "X-Big: " + strings.Repeat("b", k)}, body),
			unparsable: k >= 8000} // past the 8 KiB head: 431 from fasthttp, whose unread rest may reset the connection
	case 2:
		return hostileCase{kind: "headers: invalid UTF-8 and controls", raw: g.request("POST", "/rpc",
			[]string{auth, "X-Odd: " + g.pick([]string{"\xff\xfe\xfd", "\u202e\u0000", "caf\xe9", "\x7f", "a\tb", "\x1b[31m"})}, body)}
	case 3:
		return hostileCase{kind: "headers: NUL in a value", raw: g.request("POST", "/rpc", []string{auth, "X-Nul: a\x00b"}, body), unparsable: true}
	case 4:
		return hostileCase{kind: "headers: bad name", raw: g.request("POST", "/rpc", []string{auth,
			g.pick([]string{"X Bad: 1", "X-Bad : 1", ": empty", "X\x00: 1", "X-Bad\xff: 1", "(x): 1", "X-Bad"})}, body), unparsable: true}
	case 5:
		return hostileCase{kind: "headers: obs-fold", raw: g.request("POST", "/rpc", []string{auth, "X-Fold: a", " b", "\tc"}, body), unparsable: true}
	case 6:
		return hostileCase{kind: "headers: two Hosts", raw: g.request("POST", "/rpc", []string{auth, "Host: evil.example"}, body), unparsable: true}
	case 7:
		return hostileCase{kind: "headers: Host", raw: bytes.Replace(g.request("POST", "/rpc", []string{auth}, body),
			[]byte("Host: "+g.host), []byte("Host: "+g.pick([]string{"", "evil.example", "127.0.0.1:1", "[::1]", "a b", strings.Repeat("h", 3000), "\xff"})), 1),
			unparsable: true}
	case 8:
		return hostileCase{kind: "headers: Expect", raw: g.request("POST", "/rpc", []string{auth, "Expect: " + g.pick([]string{"100-continue", "200-ok", ""})}, body)}
	case 9:
		return hostileCase{kind: "headers: Upgrade", raw: g.request("GET", g.pick([]string{"/rpc", "/mcp", "/health"}),
			[]string{"Connection: Upgrade, HTTP2-Settings", "Upgrade: " + g.pick([]string{"h2c", "websocket", "HTTP/2.0"}), "HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA",
				"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==", "Sec-WebSocket-Version: 13"}, nil)}
	case 10:
		return hostileCase{kind: "headers: Connection", raw: g.request("POST", "/rpc", []string{auth, "Connection: " + g.pick([]string{"close", "keep-alive", "Authorization", "x, y, z", "\xff"})}, body)}
	case 11:
		return hostileCase{kind: "headers: Forwarded", raw: g.request("GET", g.pick([]string{"/metrics", "/rpc", "/health"}),
			[]string{"X-Forwarded-For: " + g.pick([]string{"127.0.0.1", "1.2.3.4, 127.0.0.1", "\xff", strings.Repeat("1.", 1000)}),
				"Forwarded: for=127.0.0.1;proto=https", "X-Real-IP: ::1"}, nil)}
	case 12:
		return hostileCase{kind: "headers: duplicate Content-Type and cookies", raw: g.request("POST", "/rpc",
			[]string{auth, "Content-Type: application/json", "Content-Type: text/plain", "Cookie: a=1", "Cookie: " + strings.Repeat("c=1; ", 200)}, body)}
	}
	return hostileCase{kind: "headers: ranges and conditionals", raw: g.request("GET", "/health", []string{"Range: bytes=0-1,5-", "If-None-Match: *", "If-Modified-Since: never"}, nil)}
}

// methodPathCase: odd methods and targets.
func (g *hostileGen) methodPathCase() hostileCase {
	method := g.pick([]string{"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "PROPFIND", "BREW", "get", "Post",
		"M-SEARCH", strings.Repeat("X", 100)})
	target := g.pick([]string{"/", "/rpc", "/rpc/", "//rpc", "/rpc?x=1", "/RPC", "/mcp", "/mcp/", "/health", "/health/", "/ready", "/metrics",
		"/version", "/admin", "/admin/", "/admin/tools", "/admin/tools/convert_time", "/admin/users/admin@example.com", "/admin/../rpc",
		"/admin/gateways", "/admin/gateways/up", "/admin/gateways/a-b", "/admin/gateways/" + strings.Repeat("g", 200),
		"/../../etc/passwd", "/%2e%2e/%2e%2e/etc/passwd", "/%00", "/%ZZ", "/a%2Fb", "/rpc%00", "/rpc;x", "/rpc#frag", "*",
		"http://evil.example/rpc", "https://" + g.host + "/health", "/?" + strings.Repeat("q=1&", 500), "/" + strings.Repeat("p/", 1000),
		"/" + strings.Repeat("a", 4200), "/\xff", "/日本", "/rpc?\x7f"})
	var body []byte
	var headers []string
	if method == "POST" || method == "PUT" || method == "PATCH" {
		body = []byte(g.pick([]string{seedPayload, `{"name":"hostile-tool","url":"http://127.0.0.1:1/"}`, `{}`, `[]`, "x",
			`{"url":"http://127.0.0.1:1/mcp","auth_type":"bearer","auth_token":"t"}`, `{"url":"ftp://x","transport":"sse"}`}))
		headers = append(headers, "Content-Type: application/json")
	}
	if g.r.IntN(2) == 0 {
		headers = append(headers, "Authorization: "+g.tokens[g.r.IntN(4)])
	}
	if strings.HasPrefix(target, "/admin/users") && method != "GET" && method != "HEAD" {
		method = "GET" // the admin's own record stays as it is: later cases need the admin
	}
	if strings.HasPrefix(target, "/admin/tools/") && method == "DELETE" {
		target = "/admin/tools/hostile-tool" // an admin may delete a tool: not the one the payload calls
	}
	c := hostileCase{kind: "method/path " + method, raw: g.request(method, target, headers, body), head: method == "HEAD"}
	// Targets fasthttp refuses to parse, methods outside the token grammar.
	if strings.ContainsAny(target, "\x00\x7f\xff#") || strings.HasPrefix(target, "/日") || target == "*" || strings.HasPrefix(target, "/%00") {
		c.unparsable = true
	}
	return c
}

// framingCase: the body's framing is wrong or ambiguous.
func (g *hostileGen) framingCase() hostileCase {
	auth := "Authorization: " + g.tokens[0]
	head := "POST /rpc HTTP/1.1\r\nHost: " + g.host + "\r\n" + auth + "\r\nContent-Type: application/json\r\n"
	body := seedPayload
	var raw string
	n := g.r.IntN(12)
	switch n {
	case 0:
		raw = head + "Content-Length: 3\r\nContent-Length: 3\r\n\r\nabc"
	case 1:
		raw = head + fmt.Sprintf("Content-Length: %d\r\nContent-Length: 5\r\n\r\n%s", len(body), body)
	case 2:
		raw = head + fmt.Sprintf("Content-Length: %d\r\nTransfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n0\r\n\r\n", len(body), len(body), body)
	case 3:
		raw = head + "Transfer-Encoding: " + g.pick([]string{"gzip", "chunked, gzip", "gzip, chunked", "identity", "chunked, chunked", "xchunked", "\xff"}) + "\r\n\r\n" + body
	case 4:
		raw = head + "Transfer-Encoding: chunked\r\n\r\n" + g.pick([]string{"zz\r\nab\r\n0\r\n\r\n", "ffffffffffffffffffff\r\n", "-1\r\n",
			"3\r\nabcdef\r\n0\r\n\r\n", "1;ext=\xff\r\na\r\n0\r\n\r\n", "0\r\nX-Trailer: \x00\r\n\r\n", "3\r\nabc"})
	case 5:
		raw = head + "Content-Length: " + g.pick([]string{"-1", "+5", " 5", "5 ", "0x10", "1e3", "99999999999999999999999", "5,5", "", "abc"}) + "\r\n\r\n" + body[:5]
	case 6: // a body longer than announced: the rest is a second, garbled request
		raw = head + "Content-Length: 10\r\n\r\n" + body
	case 7: // announced body never sent: the client gives up
		raw = head + fmt.Sprintf("Content-Length: %d\r\n\r\n", len(body)+100) + body
	case 8: // past MaxRequestBodySize (4 MiB), head only
		raw = head + "Content-Length: 4194305\r\n\r\n"
	case 9:
		raw = head + "Transfer-Encoding: chunked\r\n\r\n" + strings.Repeat("1\r\na\r\n", 2000) + "0\r\n\r\n"
	case 10: // HTTP/1.0 and keep-alive quirks
		raw = strings.Replace(head, "HTTP/1.1", g.pick([]string{"HTTP/1.0", "HTTP/0.9", "HTTP/2.0", "HTTP/1.2", "HTTP/1", "http/1.1"}), 1) +
			fmt.Sprintf("Content-Length: %d\r\n\r\n%s", len(body), body)
	default: // two requests pipelined, the second broken
		raw = head + fmt.Sprintf("Content-Length: %d\r\n\r\n%s", len(body), body) + "GARBAGE\r\n\r\n"
	}
	return hostileCase{kind: "framing: " + framingKinds[n], raw: []byte(raw), unparsable: true, halfClose: true}
}

var framingKinds = []string{"duplicate Content-Length", "two different Content-Lengths", "Content-Length and chunked", "odd Transfer-Encoding", "bad chunks", "odd Content-Length", "body longer than announced", "body shorter than announced", "body past the limit", "2000 chunks", "odd protocol version", "pipelined garbage"}

// junkCase: bytes that are not HTTP at all, or barely.
func (g *hostileGen) junkCase() hostileCase {
	var raw []byte
	n := g.r.IntN(8)
	switch n {
	case 0:
		raw = make([]byte, 1+g.r.IntN(2000))
		for i := range raw {
			raw[i] = byte(g.r.IntN(256))
		}
	case 1:
		raw = []byte("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
	case 2:
		raw = []byte("\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03" + strings.Repeat("\x00", 64)) // a TLS ClientHello's start
	case 3:
		raw = []byte(g.pick([]string{"\r\n\r\n", "\n\n", "GET\r\n\r\n", "GET /\r\n\r\n", "GET / HTTP/1.1\n\n", " GET / HTTP/1.1\r\nHost: x\r\n\r\n",
			"GET  /  HTTP/1.1\r\nHost: x\r\n\r\n", "GET / HTTP/1.1 extra\r\nHost: x\r\n\r\n", "\x00GET / HTTP/1.1\r\n\r\n"}))
	case 4:
		raw = []byte("GET /health HTTP/1.1\r\nHost: x\r\n" + strings.Repeat("X: y\r\n", 10000)) // never ends, past the head buffer
	case 5:
		raw = []byte(strings.Repeat("GET /health HTTP/1.1\r\nHost: x\r\n\r\n", 1+g.r.IntN(50))) // pipelined probes
	case 6:
		raw = []byte("CONNECT " + g.host + ":443 HTTP/1.1\r\nHost: " + g.host + "\r\n\r\n")
	default:
		raw = []byte("POST /rpc HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\n\x00\x00\x00\x00\x00" + "\x00junk")
	}
	return hostileCase{kind: "junk: " + junkKinds[n], raw: raw, unparsable: true, halfClose: true}
}

var junkKinds = []string{"random bytes", "HTTP/2 preface", "TLS ClientHello", "broken request lines", "a head that never ends", "pipelined probes", "CONNECT", "NUL body and trailing junk"}

// --- Sending a case and judging the answer -----------------------------------

// outcome is what one case got.
type outcome struct {
	status int    // 0: no answer
	noAns  string // why there was no answer
	bad    string // what was wrong with the answer
}

var statusLineRe = regexp.MustCompile(`^HTTP/1\.[01] \d{3} `)

// send runs one case on a new connection and reads the first answer.
func (c hostileCase) send(addr string) outcome {
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return outcome{noAns: "dial: " + err.Error()}
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	_, werr := conn.Write(c.raw)
	if c.halfClose {
		conn.(*net.TCPConn).CloseWrite()
	}
	br := bufio.NewReader(conn)
	if peek, err := br.Peek(13); err != nil {
		why := "no answer: " + err.Error()
		if werr != nil {
			why += " (write: " + werr.Error() + ")"
		}
		return outcome{noAns: why}
	} else if !statusLineRe.Match(peek) {
		return outcome{bad: fmt.Sprintf("not a status line: %q", peek)}
	}
	method := "GET"
	if c.head {
		method = "HEAD"
	}
	for {
		resp, err := http.ReadResponse(br, &http.Request{Method: method})
		if err != nil {
			return outcome{bad: "malformed answer: " + err.Error()}
		}
		if resp.StatusCode == 100 { // Expect: 100-continue; the real answer follows
			resp.Body.Close()
			continue
		}
		_, err = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		o := outcome{status: resp.StatusCode}
		switch {
		case err != nil:
			o.bad = "answer's body: " + err.Error()
		case resp.StatusCode == 503 && resp.Header.Get("Retry-After") == "":
			o.bad = "503 without Retry-After"
		case resp.StatusCode >= 500 && resp.StatusCode != 503:
			o.bad = "server error"
		}
		return o
	}
}

// A few thousand hostile requests against a running server: every answer
// is well-formed HTTP with a status below 500 or a 503 of overload (with
// Retry-After); every request a server must answer is answered; no worker
// exits or restarts and no panic is counted.
func TestHostileInput(t *testing.T) {
	const cases, conns = 4000, 8
	g := serve(t, nil, "--workers", "2")
	good := g.token()
	before := readServerState(t, g.url("/metrics"))
	if len(before.pids) != 2 || before.panics != 0 {
		t.Fatalf("before: %+v", before)
	}

	gen := &hostileGen{r: rand.New(rand.NewPCG(12, 2026)), host: fmt.Sprintf("127.0.0.1:%d", g.port), tokens: hostileTokens(good)}
	all := make([]hostileCase, cases)
	for i := range all {
		all[i] = gen.next()
	}
	addr := fmt.Sprintf("127.0.0.1:%d", g.port)
	outcomes := make([]outcome, cases)
	var wg sync.WaitGroup
	next := make(chan int)
	begin := time.Now()
	for range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				outcomes[i] = all[i].send(addr)
			}
		}()
	}
	for i := range all {
		next <- i
	}
	close(next)
	wg.Wait()
	elapsed := time.Since(begin)

	byStatus := map[int]int{}
	byKind := map[string]map[int]int{}
	var failures []string
	closedUnparsable := 0
	for i, o := range outcomes {
		c := all[i]
		byStatus[o.status]++
		if byKind[c.kind] == nil {
			byKind[c.kind] = map[int]int{}
		}
		byKind[c.kind][o.status]++
		switch {
		case o.bad != "":
			failures = append(failures, fmt.Sprintf("case %d (%s): %s; sent %.200q", i, c.kind, o.bad, c.raw))
		case o.status == 0 && !c.unparsable:
			failures = append(failures, fmt.Sprintf("case %d (%s): %s; sent %.200q", i, c.kind, o.noAns, c.raw))
		case o.status == 0:
			closedUnparsable++
		}
	}
	kinds := make([]string, 0, len(byKind))
	for k := range byKind {
		kinds = append(kinds, k)
	}
	slices.Sort(kinds)
	for _, k := range kinds {
		t.Logf("%-45s %v", k, byKind[k])
	}
	t.Logf("%d cases in %s over %d connections at a time: statuses %v (0: closed without an answer, %d of them unparsable input)",
		cases, elapsed.Round(time.Millisecond), conns, byStatus, closedUnparsable)
	for i, f := range failures {
		if i == 20 {
			t.Errorf("... and %d more", len(failures)-20)
			break
		}
		t.Error(f)
	}

	// The server is the same server: same workers, no exit, no panic, and
	// it still answers the guide's payload.
	after := readServerState(t, g.url("/metrics"))
	if !slices.Equal(before.pids, after.pids) || after.exits != before.exits {
		t.Errorf("workers changed: before %+v, after %+v", before, after)
	}
	if after.panics != 0 {
		t.Errorf("%v panics counted", after.panics)
	}
	if code, body := httpDo(freshClient, "POST", g.url("/rpc"), good, seedPayload); checkSeed(code, body) != nil {
		t.Errorf("after the hostile input, the guide's payload: %v", checkSeed(code, body))
	}
	for _, p := range []string{"handler panic", "recovered panic", "goroutine "} {
		if strings.Contains(g.Log.String(), p) {
			t.Errorf("the log mentions %q:\n%s", p, lastLines(g.Log.String(), p, 5))
		}
	}
}

// lastLines returns up to n lines of text that contain what.
func lastLines(text, what string, n int) string {
	var out []string
	for _, l := range strings.Split(text, "\n") {
		if strings.Contains(l, what) {
			out = append(out, l)
		}
	}
	return strings.Join(out[max(0, len(out)-n):], "\n")
}

// --- Request limits, process-level -------------------------------------------

// rawRequest sends raw on a new connection; it returns the status, the
// body, and whether the server closed the connection after the answer.
func rawRequest(t *testing.T, addr, raw string) (int, string, bool) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, raw); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("answer to %.80q: %v", raw, err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	_, err = br.ReadByte()
	var ne net.Error
	closed := !(errors.As(err, &ne) && ne.Timeout())
	return resp.StatusCode, string(b), closed
}

// headWith is a GET of target with n extra fields of size bytes each.
func headWith(target string, n, size int) string {
	var b strings.Builder
	b.WriteString("GET " + target + " HTTP/1.1\r\nHost: 127.0.0.1\r\n")
	for i := range n {
		name := fmt.Sprintf("X-F%04d", i)
		b.WriteString(name + ": " + strings.Repeat("v", max(size-len(name)-2, 1)) + "\r\n")
	}
	return b.String() + "\r\n"
}

// Gunicorn's limits with its defaults (request line 4094 → 414), and as set
// by environment (GUNICORN_LIMIT_REQUEST_FIELDS) and flag
// (--limit-request-field-size): 431 past them, a JSON body naming the
// limit, the connection closed; /health is held to them too.
func TestHostileRequestLimits(t *testing.T) {
	g := serve(t, []string{"GUNICORN_LIMIT_REQUEST_FIELDS=20"}, "--workers", "1", "--limit-request-field-size", "1000")
	addr := fmt.Sprintf("127.0.0.1:%d", g.port)
	// "GET " + target + " HTTP/1.1" is 13 bytes more than the target.
	target := func(n int) string { return "/health?" + strings.Repeat("q", n-8) }
	cases := []struct {
		name, raw string
		status    int
		limit     string
	}{
		{"request line of 4094", headWith(target(4094-13), 0, 0), 200, ""},
		{"request line of 4095", headWith(target(4095-13), 0, 0), 414, "limit_request_line"},
		{"20 fields", headWith("/health", 19, 20), 200, ""}, // Host is one
		{"21 fields", headWith("/health", 20, 20), 431, "limit_request_fields"},
		{"a field of 1000", headWith("/health", 1, 1000), 200, ""},
		{"a field of 1001", headWith("/health", 1, 1001), 431, "limit_request_field_size"},
	}
	for _, c := range cases {
		code, body, closed := rawRequest(t, addr, c.raw)
		if code != c.status {
			t.Errorf("%s: %d %s, want %d", c.name, code, body, c.status)
			continue
		}
		if c.limit != "" && (!strings.Contains(body, c.limit) || !json.Valid([]byte(body)) || !closed) {
			t.Errorf("%s: body %s, connection closed %v", c.name, body, closed)
		}
		if c.limit == "" && closed {
			t.Errorf("%s: connection closed after a good request", c.name)
		}
	}
	// Past the head buffer (HTTP1BufferSize, 8192), and past
	// MaxRequestBodySize (4 MiB), the parser's refusals: JSON too.
	if code, body, _ := rawRequest(t, addr, headWith("/health", 10, 900)); code != 431 || !json.Valid([]byte(body)) {
		t.Errorf("head past the buffer: %d %s", code, body)
	}
	if code, body, closed := rawRequest(t, addr, "POST /rpc HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 4194305\r\n\r\n"); code != 413 || !json.Valid([]byte(body)) || !closed {
		t.Errorf("body past MaxRequestBodySize: %d %s, connection closed %v", code, body, closed)
	}
	if s := readServerState(t, g.url("/metrics")); s.exits != 0 || s.panics != 0 {
		t.Errorf("after the limits: %+v", s)
	}
}

// --- /metrics exposure, process-level ----------------------------------------

// outsideAddr is an address of this host that is not loopback, or "".
func outsideAddr() string {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return ""
	}
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && !n.IP.IsLoopback() && n.IP.To4() != nil && !n.IP.IsLinkLocalUnicast() {
			return n.IP.String()
		}
	}
	return ""
}

func scrapeStatus(t *testing.T, url string, headers ...string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest("GET", url, nil)
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	resp, err := freshClient.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// serveOpen starts a gateway bound to 0.0.0.0 (reachable from other hosts)
// with a health port, also on 0.0.0.0.
func serveOpen(t *testing.T, env []string, args ...string) (g *gateway, health int) {
	t.Helper()
	dir := t.TempDir()
	port, health := proctest.MustFreePort(t), proctest.MustFreePort(t)
	args = append([]string{"serve", "--workers", "1", "--bind", fmt.Sprintf("0.0.0.0:%d", port),
		"--health-bind", fmt.Sprintf("0.0.0.0:%d", health)}, args...)
	g = run(t, dir, baseEnv(dir, env...), args...)
	g.port = port
	g.waitReady()
	return g, health
}

// An open main port does not publish /metrics: by default only local
// clients get it there (a proxy's forwarded request is not local), and the
// health port serves it to anyone; with METRICS_TOKEN every /metrics
// needs the token, on both ports; METRICS_PUBLIC=true publishes it.
func TestHostileMetricsExposure(t *testing.T) {
	outside := outsideAddr()
	isMetrics := func(code int, body string) bool { return code == 200 && strings.Contains(body, "mcpgateway_workers ") }

	g, health := serveOpen(t, nil)
	if code, body := scrapeStatus(t, g.url("/metrics")); !isMetrics(code, body) {
		t.Errorf("default, loopback: %d %.100s", code, body)
	}
	if code, body := scrapeStatus(t, g.url("/metrics"), "X-Forwarded-For", "198.51.100.7"); code != 403 || !json.Valid([]byte(body)) {
		t.Errorf("default, forwarded by a local proxy: %d %s", code, body)
	}
	if code, body := scrapeStatus(t, fmt.Sprintf("http://127.0.0.1:%d/metrics", health), "X-Forwarded-For", "198.51.100.7"); !isMetrics(code, body) {
		t.Errorf("default, health port: %d %.100s", code, body)
	}
	if outside == "" {
		t.Log("no address other than loopback on this host: the remote-client checks are skipped")
	} else {
		if code, body := scrapeStatus(t, fmt.Sprintf("http://%s:%d/metrics", outside, g.port)); code != 403 || !strings.Contains(body, "HEALTH_BIND") {
			t.Errorf("default, from %s: %d %s", outside, code, body)
		}
		if code, body := scrapeStatus(t, fmt.Sprintf("http://%s:%d/metrics", outside, health)); !isMetrics(code, body) {
			t.Errorf("default, health port from %s: %d %.100s", outside, code, body)
		}
		for _, probe := range []string{"/health", "/ready"} {
			if code, body := scrapeStatus(t, fmt.Sprintf("http://%s:%d%s", outside, g.port, probe)); code != 200 {
				t.Errorf("%s from %s: %d %s", probe, outside, code, body)
			}
		}
	}

	const token = "scrape-token-0123456789abcdef"
	g, health = serveOpen(t, []string{"METRICS_TOKEN=" + token})
	for _, url := range []string{g.url("/metrics"), fmt.Sprintf("http://127.0.0.1:%d/metrics", health)} {
		if code, body := scrapeStatus(t, url); code != 401 || !json.Valid([]byte(body)) {
			t.Errorf("token set, none sent, %s: %d %s", url, code, body)
		}
		if code, _ := scrapeStatus(t, url, "Authorization", "Bearer wrong-token-0123456789abcdef"); code != 401 {
			t.Errorf("token set, a wrong one sent, %s: %d", url, code)
		}
		if code, body := scrapeStatus(t, url, "Authorization", "Bearer "+token); !isMetrics(code, body) {
			t.Errorf("token set and sent, %s: %d %.100s", url, code, body)
		}
	}
	if outside != "" {
		if code, body := scrapeStatus(t, fmt.Sprintf("http://%s:%d/metrics", outside, g.port), "Authorization", "Bearer "+token); !isMetrics(code, body) {
			t.Errorf("token sent from %s: %d %.100s", outside, code, body)
		}
	}
	if lines := configLines(t, baseEnv(g.dir, "METRICS_TOKEN="+token)); !strings.HasPrefix(lines["MetricsToken"], "********") {
		t.Errorf("mcpgateway config shows MetricsToken as %q", lines["MetricsToken"])
	}

	if outside != "" {
		g, _ = serveOpen(t, []string{"METRICS_PUBLIC=true"})
		if code, body := scrapeStatus(t, fmt.Sprintf("http://%s:%d/metrics", outside, g.port)); !isMetrics(code, body) {
			t.Errorf("METRICS_PUBLIC=true, from %s: %d %.100s", outside, code, body)
		}
	}
}
