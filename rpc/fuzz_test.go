package rpc

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/valyala/fasthttp"
)

// FuzzDecodeRequest feeds arbitrary bodies to the JSON-RPC decoder and
// dispatcher (through Handler, so with every route's checks) and requires an
// answer that is valid JSON, or no body at all for notifications.
//
//	go test -run '^$' -fuzz FuzzDecodeRequest -fuzztime 5s ./rpc/
func FuzzDecodeRequest(f *testing.F) {
	for _, seed := range []string{
		seedPayload,
		`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"convert_time","arguments":{"source_timezone":"Asia/Kolkata","target_timezone":"Pacific/Kiritimati","time":"2025-10-26T02:30:00+02:00"}}}`,
		`{"jsonrpc":"2.0","id":"x","method":"get_system_time","params":{"timezone":"America/New_York"}}`,
		`{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18"}}`,
		`{"jsonrpc":"2.0","id":null,"method":"tools/list"}`,
		`{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{"cursor":"Y29udmVydF90aW1l"}}`,
		`[{"jsonrpc":"2.0","id":1,"method":"ping"},{"jsonrpc":"2.0","method":"notifications/initialized"},1,[]]`,
		`[]`, `{}`, `[1,2,3]`, `"x"`, `null`, `-0.0e+1`, ``, ` `, `{"a":`, `[[[[[[]]]]]]`,
		`{"jsonrpc":"2.0","id":{"a":1},"method":"ping"}`,
		`{"\u006dethod":"\ud83d\ude00\ud800","jsonrpc":"2.0","id":1}`,
		"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"\xff\"}",
		`{"jsonrpc":"2.0","id":1,"method":"convert_time","params":{"source_timezone":"Europe/Berlin","target_timezone":"Europe/Dublin","time":"24:00"}}`,
		`{"jsonrpc":"2.0","id":1,"result":{}}`,
		`{"jsonrpc":"2.0","id":1,"method":"server/discover","params":{"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{}}}}`,
		`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"get_system_time","arguments":{},"_meta":{"io.modelcontextprotocol/protocolVersion":"x","io.modelcontextprotocol/clientCapabilities":{}}}}`,
	} {
		f.Add([]byte(seed))
	}
	s, _ := newTestServer(f, func(o *Options) { o.AuthRequired = false; o.MaxBatchSize = 10 })
	f.Fuzz(func(t *testing.T, body []byte) {
		// /mcp a second time as 2026-07-28, with the headers of a tool call.
		for i, path := range []string{"/rpc", "/mcp", "/mcp"} {
			var req fasthttp.Request
			req.Header.SetMethod("POST")
			req.SetRequestURI(path)
			req.SetBody(body)
			if i == 2 {
				req.Header.Set("MCP-Protocol-Version", "2026-07-28")
				req.Header.Set("Mcp-Method", "tools/call")
				req.Header.Set("Mcp-Name", "get_system_time")
			}
			var ctx fasthttp.RequestCtx
			ctx.Init(&req, nil, nil)
			s.Handler(&ctx)
			status, out := ctx.Response.StatusCode(), ctx.Response.Body()
			if status == 202 || status == 204 {
				if len(out) != 0 {
					t.Fatalf("%s: %d with a body: %q", path, status, out)
				}
				continue
			}
			if !json.Valid(out) || !utf8.Valid(out) {
				t.Fatalf("%s: invalid JSON answer (%d) to %q: %q", path, status, body, out)
			}
			if status == 500 {
				t.Fatalf("%s: 500 for %q: %s", path, body, out)
			}
		}
		if s.Panics() != 0 {
			t.Fatalf("a handler panicked on %q", body)
		}

		// Differential check of the validator against encoding/json: it may
		// only be stricter, and only in the ways it means to be (nesting,
		// UTF-8).
		err := validate(body)
		std := json.Valid(body)
		if err == nil && !std {
			t.Fatalf("validate accepts what encoding/json refuses: %q", body)
		}
		nesting := bytes.Count(body, []byte("[")) + bytes.Count(body, []byte("{"))
		if err != nil && std && utf8.Valid(body) && nesting <= maxDepth {
			t.Fatalf("validate refuses valid JSON %q: %v", body, err)
		}
		if err == nil {
			// unquote must give valid UTF-8 for every string: walk top-level members.
			v := trimValue(body)
			if v[0] == '{' {
				for it := objectMembers(v); ; {
					k, val, ok := it.next()
					if !ok {
						break
					}
					if !utf8.Valid(unquote(k)) || (val[0] == '"' && !utf8.Valid(unquote(val))) {
						t.Fatalf("unquote gave invalid UTF-8 for %q", body)
					}
				}
			}
		}
	})
}

// FuzzParseTime checks the time parser on arbitrary text and zones: no
// panics, and every time it accepts reads back as what was asked for.
//
//	go test -run '^$' -fuzz FuzzParseTime -fuzztime 5s ./rpc/
func FuzzParseTime(f *testing.F) {
	zones := []string{"UTC", "Europe/Berlin", "America/New_York", "Asia/Kolkata", "Australia/Lord_Howe",
		"Pacific/Apia", "Pacific/Kiritimati", "Europe/Dublin", "America/Sao_Paulo", "Asia/Kathmandu"}
	for i, seed := range []string{
		"09:00", "23:59:59", "00:00", "24:00", "9:00", "2025-03-30 02:30:00", "2025-10-26 02:30:00",
		"2025-02-29 12:00:00", "2024-02-29T12:00:00", "2025-06-01T12:00:00Z", "2025-06-01T12:00:00.5-03:30",
		"2011-12-30 12:00:00", "0000-01-01 00:00:00", "9999-12-31 23:59:59", "", "x", "1e10",
	} {
		f.Add(seed, uint8(i))
	}
	var zc zoneCache
	now := time.Date(2025, 3, 30, 0, 30, 0, 0, time.UTC)
	f.Fuzz(func(t *testing.T, s string, zone uint8) {
		loc, err := zc.load([]byte(zones[int(zone)%len(zones)]))
		if err != nil {
			t.Fatal(err)
		}
		got, err := parseTime([]byte(s), loc, now)
		if err != nil {
			if got != (time.Time{}) {
				t.Fatalf("error with a time: %v", got)
			}
			return
		}
		wall := got.In(loc)
		switch {
		case len(s) == 5:
			if wall.Format("15:04") != s {
				t.Fatalf("%q in %s read back as %v", s, loc, wall)
			}
		case len(s) == 8:
			if wall.Format("15:04:05") != s {
				t.Fatalf("%q in %s read back as %v", s, loc, wall)
			}
		case len(s) == 19:
			if wall.Format("2006-01-02 15:04:05") != strings.Replace(s, "T", " ", 1) {
				t.Fatalf("%q in %s read back as %v", s, loc, wall)
			}
			// The first occurrence: an hour earlier must not read the same.
			for _, back := range []time.Duration{30 * time.Minute, time.Hour, 2 * time.Hour} {
				if got.Add(-back).In(loc).Format("2006-01-02 15:04:05") == wall.Format("2006-01-02 15:04:05") {
					t.Fatalf("%q in %s: not the first occurrence", s, loc)
				}
			}
		default:
			want, err := time.Parse(time.RFC3339, s)
			if err != nil || !want.Equal(got) {
				t.Fatalf("%q: got %v, time.Parse says %v (%v)", s, got, want, err)
			}
		}
		// The tool's formatting of it never fails.
		out := appendTimeInfo(nil, []byte("Z"), wall)
		if !json.Valid(out) {
			t.Fatalf("invalid JSON %s", out)
		}
	})
}
