package rpc

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/mcpgateway/mcpgateway/store"
)

// streamUpstream is a small upstream MCP server whose tool "notes" answers
// over SSE: three progress notifications when asked (the token echoed), a
// log message at info and one at error, a change notification the gateway
// must not pass on, then the result. Its tool "hang" sends one progress
// notification and waits until its caller goes away, which it counts; "slow"
// sends five, 100 ms apart, then its result; "ask" sends its client a
// request (the method of arguments.ask) and answers with the response it
// got.
type streamUpstream struct {
	url       string
	cancelled atomic.Int32
	tokens    chan json.RawMessage // the progress token of each call ("null": none)
	replies   chan json.RawMessage // responses the gateway sent to the requests of "ask"
}

func newStreamUpstream(t *testing.T) *streamUpstream {
	u := &streamUpstream{tokens: make(chan json.RawMessage, 16), replies: make(chan json.RawMessage, 16)}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var m struct {
			ID     json.RawMessage `json:"id"`
			Method string          `json:"method"`
			Params struct {
				Name      string `json:"name"`
				Arguments struct {
					Ask string `json:"ask"`
				} `json:"arguments"`
				Meta struct {
					ProgressToken json.RawMessage `json:"progressToken"`
				} `json:"_meta"`
			} `json:"params"`
		}
		raw, _ := io.ReadAll(r.Body)
		json.Unmarshal(raw, &m)
		switch m.Method {
		case "": // a response to a request of "ask"
			u.replies <- json.RawMessage(raw)
			w.WriteHeader(http.StatusAccepted)
			return
		case "server/discover": // a 2025-11-25 server knows no such method
			w.Header().Set("Content-Type", "application/json")
			fmt.Fprintf(w, `{"jsonrpc":"2.0","id":%s,"error":{"code":-32601,"message":"Method not found"}}`, m.ID)
			return
		case "initialize":
			w.Header().Set("Content-Type", "application/json")
			w.Header().Set("Mcp-Session-Id", "up-session")
			fmt.Fprintf(w, `{"jsonrpc":"2.0","id":%s,"result":{"protocolVersion":"2025-11-25","capabilities":{"tools":{}},"serverInfo":{"name":"up","version":"0"}}}`, m.ID)
			return
		}
		if strings.HasPrefix(m.Method, "notifications/") { // initialized, and cancelled of a call given up
			w.WriteHeader(http.StatusAccepted)
			return
		}
		token := m.Params.Meta.ProgressToken
		if token == nil {
			token = json.RawMessage("null")
		}
		u.tokens <- token
		w.Header().Set("Content-Type", "text/event-stream")
		event := func(msg string) {
			fmt.Fprintf(w, "event: message\ndata: %s\n\n", msg)
			w.(http.Flusher).Flush()
		}
		progress := func(i int) {
			event(fmt.Sprintf(`{"jsonrpc":"2.0","method":"notifications/progress","params":{"progressToken":%s,"progress":%d,"total":3}}`, token, i))
		}
		if m.Params.Name == "ask" { // asks its client (method: arguments.ask), answers with the reply
			event(`{"jsonrpc":"2.0","id":99,"method":"` + m.Params.Arguments.Ask + `","params":{"maxTokens":5,"messages":[]}}`)
			select {
			case reply := <-u.replies:
				b, _ := json.Marshal(string(reply))
				event(fmt.Sprintf(`{"jsonrpc":"2.0","id":%s,"result":{"content":[{"type":"text","text":%s}]}}`, m.ID, b))
			case <-r.Context().Done():
				u.cancelled.Add(1)
			}
			return
		}
		if m.Params.Name == "slow" { // five progress notifications 100 ms apart, then the result
			for i := 1; i <= 5; i++ {
				select {
				case <-r.Context().Done():
					u.cancelled.Add(1)
					return
				case <-time.After(100 * time.Millisecond):
				}
				progress(i)
			}
			event(fmt.Sprintf(`{"jsonrpc":"2.0","id":%s,"result":{"content":[{"type":"text","text":"slow done"}]}}`, m.ID))
			return
		}
		if m.Params.Name == "hang" {
			progress(1)
			<-r.Context().Done()
			u.cancelled.Add(1)
			return
		}
		for i := 1; i <= 3; i++ {
			progress(i)
		}
		event(`{"jsonrpc":"2.0","method":"notifications/message","params":{"level":"info","data":"quiet"}}`)
		event(`{"jsonrpc":"2.0","method":"notifications/message","params":{"level":"error","data":"loud"}}`)
		event(`{"jsonrpc":"2.0","method":"notifications/resources/updated","params":{"uri":"x"}}`)
		event(fmt.Sprintf(`{"jsonrpc":"2.0","id":%s,"result":{"content":[{"type":"text","text":"done"}]}}`, m.ID))
	}))
	t.Cleanup(srv.Close)
	u.url = srv.URL + "/mcp"
	return u
}

// newStreamGateway serves a gateway whose tools up-notes and up-hang are
// the upstream's, on a real listener (a stream needs a real connection).
func newStreamGateway(t *testing.T, up *streamUpstream, mod func(o *Options)) (*Server, string) {
	t.Helper()
	o := testOptions()
	o.FederationTimeout = 10 * time.Second
	if mod != nil {
		mod(&o)
	}
	return serveGateway(t, o, streamBackend(up))
}

// streamBackend is a Backend whose tools up-notes and up-hang are up's.
func streamBackend(up *streamUpstream) gatewaysFake {
	b := newFakeBackend()
	tools := append([]store.Tool(nil), b.tools...)
	for _, name := range []string{"notes", "hang", "slow", "ask"} {
		tools = append(tools, store.Tool{Name: "up-" + name, UpstreamName: name, Gateway: "up",
			InputSchema: json.RawMessage(`{"type":"object"}`), Enabled: true})
	}
	b.setTools(tools)
	return gatewaysFake{b, []store.Gateway{{Name: "up", URL: up.url, Enabled: true}}}
}

// serveGateway serves a gateway over backend on a real listener.
func serveGateway(t *testing.T, o Options, backend Backend) (*Server, string) {
	t.Helper()
	s, err := New(o, backend)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &fasthttp.Server{Handler: s.Handler}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Shutdown() })
	return s, "http://" + ln.Addr().String() + "/mcp"
}

// sseEvent is one event of a stream: its id and data.
type sseEvent struct{ id, data string }

// postMCP posts body to /mcp and returns the response; headers are pairs.
func postMCP(t *testing.T, url, body string, headers ...string) *http.Response {
	t.Helper()
	req, _ := http.NewRequest("POST", url, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+mint(t, nil))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

// readEvents reads a stream to its end; comments are skipped.
func readEvents(t *testing.T, r io.Reader) []sseEvent {
	t.Helper()
	var events []sseEvent
	var ev sseEvent
	seen := false
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case line == "":
			if seen {
				events = append(events, ev)
			}
			ev, seen = sseEvent{}, false
		case strings.HasPrefix(line, "id: "):
			ev.id, seen = strings.TrimPrefix(line, "id: "), true
		case strings.HasPrefix(line, "data: "):
			ev.data, seen = strings.TrimPrefix(line, "data: "), true
		case strings.HasPrefix(line, "data:"):
			seen = true
		}
	}
	return events
}

const streamCallBody = `{"jsonrpc":"2.0","id":%s,"method":"tools/call","params":{"name":"%s","arguments":{},"_meta":{%s}}}`

// modernStreamBody is a 2026-07-28 tools/call of tool with extra _meta members.
func modernStreamBody(tool, meta string) string {
	return `{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"` + tool + `","arguments":{},"_meta":{` + meta +
		`"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{}}}}`
}

func modernHeadersFor(tool string) []string {
	return []string{"MCP-Protocol-Version", "2026-07-28", "Mcp-Method", "tools/call", "Mcp-Name", tool}
}

// A tools/call of an upstream tool that asks for progress, from a client
// that accepts SSE, is answered with an event stream: the progress
// notifications in order (and, in 2026-07-28, the log messages at or above
// its level), the response last; 2025-11-25 adds a priming event and ids.
func TestMCPStreamedCall(t *testing.T) {
	up := newStreamUpstream(t)
	var gauge atomic.Int64
	s, url := newStreamGateway(t, up, func(o *Options) { o.OnStreams = func(n int) { gauge.Store(int64(n)) } })
	tok := mint(t, nil)
	for _, rev := range []string{"2025-06-18", "2025-11-25", "2026-07-28"} {
		t.Run(rev, func(t *testing.T) {
			var resp *http.Response
			if rev == "2026-07-28" {
				resp = postMCP(t, url, modernStreamBody("up-notes", `"progressToken":"p1","io.modelcontextprotocol/logLevel":"warning",`),
					modernHeadersFor("up-notes")...)
			} else {
				init := strings.Replace(mcpInit, "2025-06-18", rev, 1)
				sid := mcpCall(t, s, tok, "", init).header("Mcp-Session-Id")
				resp = postMCP(t, url, fmt.Sprintf(streamCallBody, "7", "up-notes", `"progressToken":"p1"`), "Mcp-Session-Id", sid)
			}
			defer resp.Body.Close()
			if ct := resp.Header.Get("Content-Type"); resp.StatusCode != 200 || ct != "text/event-stream" || resp.Header.Get("X-Accel-Buffering") != "no" {
				t.Fatalf("status %d, Content-Type %q, X-Accel-Buffering %q", resp.StatusCode, ct, resp.Header.Get("X-Accel-Buffering"))
			}
			if tok := <-up.tokens; string(tok) != `"p1"` {
				t.Errorf("the upstream got progress token %s", tok)
			}
			events := readEvents(t, resp.Body)
			if rev == "2025-11-25" {
				if len(events) == 0 || events[0].id == "" || events[0].data != "" {
					t.Fatalf("no priming event first: %+v", events)
				}
				stream := strings.TrimSuffix(events[0].id, "-0")
				for i, ev := range events {
					if ev.id != fmt.Sprintf("%s-%d", stream, i) {
						t.Errorf("event %d has id %q", i, ev.id)
					}
				}
				events = events[1:]
			} else {
				for _, ev := range events {
					if ev.id != "" {
						t.Errorf("%s: an event id: %+v", rev, ev)
					}
				}
			}
			want := []string{`"progress":1`, `"progress":2`, `"progress":3`}
			if rev == "2026-07-28" {
				want = append(want, `"level":"error"`) // info is below its level
			}
			want = append(want, `"id":7,"result":{"content"`)
			if len(events) != len(want) {
				t.Fatalf("%d events, want %d: %+v", len(events), len(want), events)
			}
			for i, w := range want {
				if !strings.Contains(events[i].data, w) {
					t.Errorf("event %d: %s, want %s", i, events[i].data, w)
				}
			}
			if rev == "2026-07-28" && !strings.Contains(events[len(events)-1].data, `"resultType":"complete"`) {
				t.Errorf("2026-07-28 result without resultType: %s", events[len(events)-1].data)
			}
		})
	}
	// The stream has ended: the gauge is back to 0.
	deadline := time.Now().Add(2 * time.Second)
	for gauge.Load() != 0 || s.OpenStreams() != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("open streams: %d (callback %d)", s.OpenStreams(), gauge.Load())
		}
		time.Sleep(10 * time.Millisecond)
	}

	// Without a progress token, or without SSE in Accept: JSON, and the
	// upstream is asked for no progress.
	r := modernCall(t, s, tok, "tools/call", "up-notes", modernStreamBody("up-notes", ""))
	if ct := r.header("Content-Type"); r.status != 200 || ct != "application/json" || !strings.Contains(string(r.body), `"done"`) {
		t.Errorf("no token: %d %s %s", r.status, ct, r.body)
	}
	if tok := <-up.tokens; string(tok) != "null" {
		t.Errorf("no token: the upstream got %s", tok)
	}
	r = call(s, "POST", "/mcp", modernStreamBody("up-notes", `"progressToken":5,`), append([]string{"Authorization", "Bearer " + tok,
		"Accept", "application/json"}, modernHeadersFor("up-notes")...)...)
	if ct := r.header("Content-Type"); r.status != 200 || ct != "application/json" {
		t.Errorf("JSON only: %d %s %s", r.status, ct, r.body)
	}
	if tok := <-up.tokens; string(tok) != "null" {
		t.Errorf("JSON only: the upstream got %s", tok)
	}
	// A built-in tool never streams.
	r = modernCall(t, s, tok, "tools/call", "get_system_time", modernStreamBody("get_system_time", `"progressToken":5,`))
	if ct := r.header("Content-Type"); r.status != 200 || ct != "application/json" {
		t.Errorf("built-in: %d %s %s", r.status, ct, r.body)
	}
	// 2026-07-28: a log level that is none gets -32602.
	r = modernCall(t, s, tok, "tools/call", "up-notes", modernStreamBody("up-notes", `"io.modelcontextprotocol/logLevel":"loud",`))
	modernErr(t, "bad logLevel", r, 400, codeInvalidParams, false)
}

// A client that closes its stream (2026-07-28: the cancellation), or sends
// notifications/cancelled in its session, cancels the upstream call.
func TestMCPStreamCancel(t *testing.T) {
	keep := keepAliveEvery
	keepAliveEvery = 50 * time.Millisecond
	t.Cleanup(func() { keepAliveEvery = keep })
	up := newStreamUpstream(t)
	s, url := newStreamGateway(t, up, nil)
	tok := mint(t, nil)
	waitCancelled := func(what string, n int32) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for up.cancelled.Load() < n {
			if time.Now().After(deadline) {
				t.Fatalf("%s: the upstream call was not cancelled", what)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}

	// Closed after the first event.
	resp := postMCP(t, url, modernStreamBody("up-hang", `"progressToken":1,`), modernHeadersFor("up-hang")...)
	<-up.tokens
	br := bufio.NewReader(resp.Body)
	if line, err := br.ReadString('\n'); err != nil || !strings.HasPrefix(line, ":") {
		t.Fatalf("first line %q, %v", line, err)
	}
	resp.Body.Close()
	waitCancelled("stream closed", 1)

	// notifications/cancelled, on an SSE answer and on a JSON one.
	sid := mcpInitialize(t, s, tok)
	resp = postMCP(t, url, fmt.Sprintf(streamCallBody, `"a"`, "up-hang", `"progressToken":1`), "Mcp-Session-Id", sid)
	defer resp.Body.Close()
	<-up.tokens
	cancel := `{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":"a","reason":"user"}}`
	if r := mcpCall(t, s, tok, sid, cancel); r.status != 202 {
		t.Fatalf("notifications/cancelled: %d %s", r.status, r.body)
	}
	waitCancelled("notifications/cancelled, SSE", 2)
	events := readEvents(t, resp.Body)
	for _, ev := range events {
		if strings.Contains(ev.data, `"id":"a"`) {
			t.Errorf("a cancelled request was answered: %+v", events)
		}
	}

	done := make(chan result)
	go func() {
		done <- call(s, "POST", "/mcp", fmt.Sprintf(streamCallBody, "9", "up-hang", ""), "Authorization", "Bearer "+tok,
			"Accept", "application/json", "Mcp-Session-Id", sid)
	}()
	<-up.tokens
	cancel = `{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":9}}`
	if r := mcpCall(t, s, tok, sid, cancel); r.status != 202 {
		t.Fatalf("notifications/cancelled: %d %s", r.status, r.body)
	}
	waitCancelled("notifications/cancelled, JSON", 3)
	select {
	case r := <-done:
		if r.status != 200 {
			t.Errorf("the cancelled JSON call: %d %s", r.status, r.body)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the cancelled JSON call did not return")
	}
	// Another session's cancellation names nothing of this one.
	if s.calls.cancel(callKey([]byte("other"), []byte("9"))) {
		t.Error("a cancellation crossed sessions")
	}
}
