package upstream

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mcpgateway/mcpgateway/internal/proctest"
)

// fakeSSE is a small MCP server over the HTTP+SSE transport of 2024-11-05:
// GET /sse is a session's stream (its endpoint event first), POST
// /message?sessionId= takes the client's messages, answered on the stream.
// Its tools: echo; progress (3 progress notifications with the call's
// token, and a log message, then the result); break (ends the session's
// stream without an answer); hang (never answers).
type fakeSSE struct {
	srv      *httptest.Server
	endpoint func(sid string) string // the endpoint event's data; nil: /message?sessionId=<sid>
	noEvent  bool                    // send no endpoint event (comments only)

	gets     atomic.Int32
	mu       sync.Mutex
	sessions map[string]*fakeSession
	headers  []string // "<method> auth=... session=... version=" of every request
	replies  []string // the client's responses to the server's requests
	quit     chan struct{}
}

type fakeSession struct {
	out  chan string   // messages for the stream
	kill chan struct{} // closed: the stream ends
	once sync.Once
}

func newFakeSSE(t *testing.T) *fakeSSE {
	f := &fakeSSE{sessions: map[string]*fakeSession{}, quit: make(chan struct{})}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /sse", f.stream)
	mux.HandleFunc("POST /message", f.message)
	f.srv = httptest.NewServer(mux)
	t.Cleanup(func() { // before Close: the streams' handlers must return
		close(f.quit)
		f.srv.CloseClientConnections()
		f.srv.Close()
	})
	return f
}

func (f *fakeSSE) url() string { return f.srv.URL + "/sse" }

func (f *fakeSSE) seen(r *http.Request, what string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.headers = append(f.headers, fmt.Sprintf("%s auth=%s session=%s version=%s", what,
		r.Header.Get("Authorization"), r.Header.Get("Mcp-Session-Id"), r.Header.Get("MCP-Protocol-Version")))
}

func (f *fakeSSE) stream(w http.ResponseWriter, r *http.Request) {
	n := f.gets.Add(1)
	f.seen(r, "GET accept="+r.Header.Get("Accept"))
	sid := fmt.Sprintf("s%d", n)
	s := &fakeSession{out: make(chan string, 64), kill: make(chan struct{})}
	f.mu.Lock()
	f.sessions[sid] = s
	f.mu.Unlock()
	defer func() {
		f.mu.Lock()
		delete(f.sessions, sid)
		f.mu.Unlock()
	}()
	w.Header().Set("Content-Type", "text/event-stream")
	w.WriteHeader(200)
	fl := w.(http.Flusher)
	switch {
	case f.noEvent:
		fmt.Fprint(w, ": no endpoint here\n\n")
	case f.endpoint != nil:
		fmt.Fprintf(w, "event: endpoint\ndata: %s\n\n", f.endpoint(sid))
	default:
		fmt.Fprintf(w, ": a comment first\n\nevent: endpoint\ndata: /message?sessionId=%s\n\n", sid)
	}
	fl.Flush()
	for {
		select {
		case msg := <-s.out:
			// Split over two data lines now and then, as a server may.
			if i := strings.Index(msg, `,"result"`); i > 0 && len(msg)%2 == 0 {
				msg = msg[:i+1] + "\ndata: " + msg[i+1:]
			}
			fmt.Fprintf(w, "event: message\ndata: %s\n\n", msg)
			fl.Flush()
		case <-s.kill:
			return
		case <-r.Context().Done():
			return
		case <-f.quit:
			return
		}
	}
}

func (f *fakeSSE) message(w http.ResponseWriter, r *http.Request) {
	var m struct {
		ID     json.RawMessage `json:"id"`
		Method string          `json:"method"`
		Result json.RawMessage `json:"result"`
		Error  json.RawMessage `json:"error"`
		Params struct {
			Name      string          `json:"name"`
			Arguments json.RawMessage `json:"arguments"`
			Meta      struct {
				Token json.RawMessage `json:"progressToken"`
			} `json:"_meta"`
		} `json:"params"`
	}
	if err := json.NewDecoder(r.Body).Decode(&m); err != nil || r.Header.Get("Content-Type") != "application/json" {
		http.Error(w, "not JSON", 400)
		return
	}
	f.seen(r, "POST "+m.Method)
	f.mu.Lock()
	s := f.sessions[r.URL.Query().Get("sessionId")]
	f.mu.Unlock()
	if s == nil {
		http.Error(w, "no such session", 404)
		return
	}
	send := func(format string, args ...any) {
		select {
		case s.out <- fmt.Sprintf(format, args...):
		case <-s.kill:
		case <-f.quit:
		}
	}
	result := func(res string) { send(`{"jsonrpc":"2.0","id":%s,"result":%s}`, m.ID, res) }
	switch m.Method {
	case "": // a response to one of ours
		f.mu.Lock()
		f.replies = append(f.replies, fmt.Sprintf("%s result=%s error=%s", m.ID, m.Result, m.Error))
		f.mu.Unlock()
	case "initialize":
		result(`{"protocolVersion":"2024-11-05","capabilities":{"tools":{}},"serverInfo":{"name":"fake-sse","version":"0"}}`)
	case "tools/list":
		result(`{"tools":[{"name":"echo","inputSchema":{"type":"object"}},{"name":"progress"},{"name":"break"},{"name":"hang"}]}`)
	case "tools/call":
		var args struct {
			Message string `json:"message"`
		}
		json.Unmarshal(m.Params.Arguments, &args)
		switch m.Params.Name {
		case "echo":
			result(fmt.Sprintf(`{"content":[{"type":"text","text":%q}]}`, "Echo: "+args.Message))
		case "progress":
			go func() { // after the POST's answer, with pauses: as a real tool
				for i := 1; i <= 3; i++ {
					time.Sleep(10 * time.Millisecond)
					send(`{"jsonrpc":"2.0","method":"notifications/progress","params":{"progressToken":%s,"progress":%d,"total":3,"message":%q}}`,
						m.Params.Meta.Token, i, args.Message)
				}
				send(`{"jsonrpc":"2.0","method":"notifications/message","params":{"level":"info","data":"a log of %s"}}`, args.Message)
				result(fmt.Sprintf(`{"content":[{"type":"text","text":%q}]}`, "done "+args.Message))
			}()
		case "break":
			s.once.Do(func() { close(s.kill) })
		case "ask": // requests of the server to its client, then the result
			send(`{"jsonrpc":"2.0","id":"p1","method":"ping"}`)
			send(`{"jsonrpc":"2.0","id":7,"method":"sampling/createMessage","params":{"messages":[],"maxTokens":1}}`)
			result(`{"content":[]}`)
		case "hang":
		default:
			send(`{"jsonrpc":"2.0","id":%s,"error":{"code":-32602,"message":"Unknown tool"}}`, m.ID)
		}
	}
	w.WriteHeader(http.StatusAccepted)
	fmt.Fprint(w, "Accepted")
}

// breakAll ends every open stream, as an upstream restart would.
func (f *fakeSSE) breakAll() {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, s := range f.sessions {
		s.once.Do(func() { close(s.kill) })
	}
}

func sseClient(f *fakeSSE, timeout time.Duration) (*Client, *http.Transport) {
	tr := NewTransport()
	return New(Server{Name: "fake", URL: f.url(), Transport: TransportSSE, Timeout: timeout,
		Header: http.Header{"Authorization": {"Bearer t0ken"}}}, tr), tr
}

func TestSSE(t *testing.T) {
	f := newFakeSSE(t)
	c, _ := sseClient(f, 5*time.Second)
	ctx := context.Background()
	defer c.Close(ctx)

	tools, err := c.ListTools(ctx)
	if err != nil || len(tools) != 4 || tools[0].Name != "echo" {
		t.Fatalf("tools/list: %v, %v", tools, err)
	}
	if info := c.Info(); info.Protocol != "2024-11-05" || info.Name != "fake-sse" {
		t.Errorf("initialize: %+v", info)
	}

	t.Run("concurrent calls, each its own answer", func(t *testing.T) {
		var wg sync.WaitGroup
		errs := make(chan error, 32)
		for i := range 32 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				msg := fmt.Sprintf("hello %d", i)
				res, err := c.CallTool(ctx, "echo", json.RawMessage(fmt.Sprintf(`{"message":%q}`, msg)), nil, nil)
				if err == nil && !strings.Contains(string(res), `"Echo: `+msg+`"`) {
					err = fmt.Errorf("echo %q answered %s", msg, res)
				}
				errs <- err
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				t.Fatal(err)
			}
		}
	})

	t.Run("progress to its call, with the caller's token, before the result", func(t *testing.T) {
		// Two calls at once with the same token (two clients of the
		// gateway may choose the same): each gets its own progress.
		var wg sync.WaitGroup
		for _, who := range []string{"a", "b"} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				var notes []string
				res, err := c.CallTool(ctx, "progress", json.RawMessage(`{"message":"`+who+`"}`), json.RawMessage(`"same"`),
					func(n json.RawMessage) { notes = append(notes, string(n)) })
				if err != nil || !strings.Contains(string(res), "done "+who) {
					t.Errorf("%s: %s, %v", who, res, err)
					return
				}
				if len(notes) != 3 {
					t.Errorf("%s: %d notes, want 3 progress (no log message): %q", who, len(notes), notes)
					return
				}
				for i, n := range notes {
					if !strings.Contains(n, `"progressToken":"same"`) || !strings.Contains(n, fmt.Sprintf(`"progress":%d`, i+1)) ||
						!strings.Contains(n, `"message":"`+who+`"`) || !strings.Contains(n, `"method":"notifications/progress"`) {
						t.Errorf("%s: note %d: %s", who, i, n)
					}
				}
			}()
		}
		wg.Wait()
		// Without a token, no progress is asked for, and none comes.
		var notes int
		if _, err := c.CallTool(ctx, "progress", json.RawMessage(`{"message":"c"}`), nil, func(json.RawMessage) { notes++ }); err != nil || notes != 0 {
			t.Errorf("no token: %d notes, %v", notes, err)
		}
	})

	t.Run("requests of the server answered, not passed on", func(t *testing.T) {
		var notes int
		if _, err := c.CallTool(ctx, "ask", nil, "t", func(json.RawMessage) { notes++ }); err != nil || notes != 0 {
			t.Fatalf("ask: %v, %d notes", err, notes)
		}
		want := `"p1" result={} error= | 7 result= error={"code":-32601,"message":"Method not found: the gateway does not serve sampling/createMessage to upstreams"}`
		var got string
		for deadline := time.Now().Add(2 * time.Second); got != want && time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
			f.mu.Lock()
			got = strings.Join(f.replies, " | ")
			f.mu.Unlock()
		}
		if got != want {
			t.Fatalf("replies %s\nwant %s", got, want)
		}
	})

	t.Run("errors", func(t *testing.T) {
		_, err := c.CallTool(ctx, "nope", nil, nil, nil)
		var rpcErr *RPCError
		if !errors.As(err, &rpcErr) || rpcErr.Code != -32602 {
			t.Fatalf("unknown tool: %v", err)
		}
		if s := c.Breaker().State(); s != Closed {
			t.Errorf("breaker %v after an answered error", s)
		}
	})

	// One GET for all of it; the credential on the GET and every POST; no
	// Streamable HTTP headers.
	if n := f.gets.Load(); n != 1 {
		t.Errorf("%d GETs, want 1", n)
	}
	f.mu.Lock()
	headers := f.headers
	f.mu.Unlock()
	if len(headers) < 40 || headers[0] != "GET accept=text/event-stream auth=Bearer t0ken session= version=" {
		t.Fatalf("requests: %q", headers)
	}
	for _, h := range headers[1:] {
		if !strings.HasPrefix(h, "POST ") || !strings.HasSuffix(h, " auth=Bearer t0ken session= version=") {
			t.Errorf("request %q", h)
		}
	}
}

// A stream that breaks fails the calls waiting on it (a failure of the
// upstream); the next call opens a new session. Discovery is retried.
func TestSSEStreamBreaks(t *testing.T) {
	f := newFakeSSE(t)
	c, _ := sseClient(f, 5*time.Second)
	ctx := context.Background()
	defer c.Close(ctx)

	waiting := make(chan error, 1)
	go func() {
		_, err := c.CallTool(ctx, "hang", nil, nil, nil)
		waiting <- err
	}()
	time.Sleep(100 * time.Millisecond) // the hang is sent
	start := time.Now()
	_, err := c.CallTool(ctx, "break", nil, nil, nil)
	var rpcErr *RPCError
	if err == nil || errors.As(err, &rpcErr) || errors.Is(err, context.Canceled) || !strings.Contains(err.Error(), "ended the session's event stream") ||
		time.Since(start) > time.Second {
		t.Fatalf("a call whose stream broke: %v after %v", err, time.Since(start))
	}
	if err := <-waiting; err == nil || !strings.Contains(err.Error(), "event stream") {
		t.Fatalf("another call waiting on the broken stream: %v", err)
	}
	c.breaker.mu.Lock()
	failures := c.breaker.failures
	c.breaker.mu.Unlock()
	if failures != 2 {
		t.Errorf("the breaker counted %d failures, want 2", failures)
	}

	res, err := c.CallTool(ctx, "echo", json.RawMessage(`{"message":"again"}`), nil, nil)
	if err != nil || !strings.Contains(string(res), "Echo: again") || f.gets.Load() != 2 {
		t.Fatalf("after the break: %s, %v, %d GETs", res, err, f.gets.Load())
	}
	if s := c.Breaker().State(); s != Closed {
		t.Errorf("breaker %v after an answer", s)
	}

	// Broken while idle (an upstream restart): the next call opens a new
	// stream before it is sent.
	f.breakAll()
	time.Sleep(50 * time.Millisecond)
	if tools, err := c.ListTools(ctx); err != nil || len(tools) != 4 || f.gets.Load() != 3 {
		t.Fatalf("tools/list after an idle break: %v, %v, %d GETs", tools, err, f.gets.Load())
	}
	if _, err := c.CallTool(ctx, "echo", json.RawMessage(`{"message":"x"}`), nil, nil); err != nil {
		t.Fatal(err)
	}
}

// The call's deadline and its caller's cancellation end a call as they do
// over Streamable HTTP; the stream stays.
func TestSSEDeadlines(t *testing.T) {
	f := newFakeSSE(t)
	c, _ := sseClient(f, 300*time.Millisecond)
	ctx := context.Background()
	defer c.Close(ctx)
	start := time.Now()
	if _, err := c.CallTool(ctx, "hang", nil, nil, nil); !errors.Is(err, context.DeadlineExceeded) || time.Since(start) > 2*time.Second {
		t.Fatalf("a call past the timeout: %v after %v", err, time.Since(start))
	}
	cctx, cancel := context.WithCancel(ctx)
	time.AfterFunc(100*time.Millisecond, cancel)
	if _, err := c.CallTool(cctx, "hang", nil, nil, nil); !errors.Is(err, context.Canceled) {
		t.Fatalf("a call whose caller went away: %v", err)
	}
	c.breaker.mu.Lock()
	failures := c.breaker.failures
	c.breaker.mu.Unlock()
	if failures != 1 {
		t.Errorf("failures %d, want 1 (the timeout, not the cancelled call)", failures)
	}
	// Both calls given up were cancelled upstream.
	cancelled := func() int {
		f.mu.Lock()
		defer f.mu.Unlock()
		n := 0
		for _, h := range f.headers {
			if strings.HasPrefix(h, "POST notifications/cancelled") {
				n++
			}
		}
		return n
	}
	for deadline := time.Now().Add(2 * time.Second); cancelled() < 2 && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
	if n := cancelled(); n != 2 {
		t.Errorf("%d notifications/cancelled reached the upstream, want 2", n)
	}
	if _, err := c.CallTool(ctx, "echo", json.RawMessage(`{"message":"x"}`), nil, nil); err != nil || f.gets.Load() != 1 {
		t.Fatalf("after: %v, %d GETs", err, f.gets.Load())
	}
}

// An endpoint on another origin than the registered URL is refused before
// anything (the credential above all) is sent there; a stream that names no
// endpoint is given up within the bound.
func TestSSEEndpointRefused(t *testing.T) {
	var elsewhere atomic.Int32
	other := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { elsewhere.Add(1) }))
	defer other.Close()
	f := newFakeSSE(t)
	f.endpoint = func(sid string) string { return other.URL + "/message?sessionId=" + sid }
	c, _ := sseClient(f, 5*time.Second)
	defer c.Close(context.Background())
	_, err := c.ListTools(context.Background())
	if err == nil || !strings.Contains(err.Error(), "refused, it is not on the origin of "+f.srv.URL) || elsewhere.Load() != 0 {
		t.Fatalf("an endpoint on another origin: %v; %d requests reached it", err, elsewhere.Load())
	}

	f.endpoint = nil
	f.noEvent = true
	c, _ = sseClient(f, 300*time.Millisecond)
	defer c.Close(context.Background())
	start := time.Now()
	if _, err := c.CallTool(context.Background(), "echo", nil, nil, nil); err == nil || !strings.Contains(err.Error(), "no endpoint event within 300ms") ||
		time.Since(start) > 2*time.Second {
		t.Fatalf("no endpoint event: %v after %v", err, time.Since(start))
	}
}

func TestResolveEndpoint(t *testing.T) {
	base, _ := url.Parse("http://127.0.0.1:3001/sse?key=1")
	for data, want := range map[string]string{
		"/message?sessionId=a":                  "http://127.0.0.1:3001/message?sessionId=a",
		"message?sessionId=a":                   "http://127.0.0.1:3001/message?sessionId=a",
		" http://127.0.0.1:3001/m?sessionId=a ": "http://127.0.0.1:3001/m?sessionId=a",
		"HTTP://127.0.0.1:3001/m":               "http://127.0.0.1:3001/m",
		"//127.0.0.1:3001/m":                    "http://127.0.0.1:3001/m",
		"http://127.0.0.1:3002/m":               "",
		"https://127.0.0.1:3001/m":              "",
		"http://localhost:3001/m":               "",
		"//evil.example/m":                      "",
	} {
		got, err := resolveEndpoint(base, data)
		if got != want || (want == "") != (err != nil) {
			t.Errorf("%q: %q, %v; want %q", data, got, err, want)
		}
	}
	// The default port is the same origin as the port written out.
	base, _ = url.Parse("https://mcp.example.com/sse")
	if got, err := resolveEndpoint(base, "https://MCP.example.com:443/messages/?session_id=x"); err != nil || got == "" {
		t.Errorf("default port: %q, %v", got, err)
	}
}

// Close ends the stream and its reader: no goroutine is left, also after
// a stream that broke and was opened again.
func TestSSECloseLeavesNoGoroutines(t *testing.T) {
	f := newFakeSSE(t)
	settle := func(want int) int {
		n := runtime.NumGoroutine()
		for deadline := time.Now().Add(3 * time.Second); n > want && time.Now().Before(deadline); n = runtime.NumGoroutine() {
			time.Sleep(20 * time.Millisecond)
		}
		return n
	}
	before := runtime.NumGoroutine()
	c, tr := sseClient(f, 5*time.Second)
	ctx := context.Background()
	for i := range 3 {
		if _, err := c.CallTool(ctx, "progress", json.RawMessage(`{"message":"x"}`), 1, func(json.RawMessage) {}); err != nil {
			t.Fatal(err)
		}
		if i < 2 {
			c.CallTool(ctx, "break", nil, nil, nil) // the next call opens a new stream
		}
	}
	if n := f.gets.Load(); n != 3 {
		t.Fatalf("%d GETs, want 3", n)
	}
	if err := c.Close(ctx); err != nil {
		t.Fatal(err)
	}
	tr.CloseIdleConnections() // the POSTs' pool, which is the transport's
	if n := settle(before); n > before {
		buf := make([]byte, 1<<20)
		t.Fatalf("%d goroutines after Close, %d before:\n%s", n, before, buf[:runtime.Stack(buf, true)])
	}
	// Closed, it opens a new session on the next call.
	if _, err := c.CallTool(ctx, "echo", json.RawMessage(`{"message":"x"}`), nil, nil); err != nil || f.gets.Load() != 4 {
		t.Fatalf("after Close: %v, %d GETs", err, f.gets.Load())
	}
	c.Close(ctx)
	tr.CloseIdleConnections()
	if n := settle(before); n > before {
		t.Fatalf("%d goroutines after the second Close, %d before", n, before)
	}
}

// The reference server in its sse mode: listed, called, progress streamed
// back before the result, and a session opened again after Close.
func TestEverythingServerSSE(t *testing.T) {
	url, _ := proctest.MustStartEverythingSSE(t)
	c := New(Server{Name: "everything", URL: url, Transport: TransportSSE, Timeout: 10 * time.Second}, nil)
	ctx := context.Background()
	defer c.Close(ctx)
	tools, err := c.ListTools(ctx)
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{}
	for _, tl := range tools {
		names[tl.Name] = true
	}
	for _, want := range []string{"echo", "get-sum", "trigger-long-running-operation"} {
		if !names[want] {
			t.Fatalf("tools/list lacks %q: %d tools", want, len(tools))
		}
	}
	t.Logf("negotiated protocol %s", c.Info().Protocol)
	if info := c.Info(); !slices.Contains(sseVersions, info.Protocol) || info.Name == "" {
		t.Errorf("initialize: %+v", info)
	}
	if res, err := c.CallTool(ctx, "echo", json.RawMessage(`{"message":"over sse"}`), nil, nil); err != nil || !strings.Contains(string(res), "Echo: over sse") {
		t.Fatalf("echo: %s, %v", res, err)
	}
	var notes []string
	res, err := c.CallTool(ctx, "trigger-long-running-operation", json.RawMessage(`{"duration":1,"steps":4}`), "tok-1",
		func(n json.RawMessage) { notes = append(notes, string(n)) })
	if err != nil || !strings.Contains(string(res), "completed") || len(notes) != 4 {
		t.Fatalf("progress: %s, %v; notes %q", res, err, notes)
	}
	for i, n := range notes {
		if !strings.Contains(n, `"progressToken":"tok-1"`) || !strings.Contains(n, fmt.Sprintf(`"progress":%d`, i+1)) {
			t.Errorf("note %d: %s", i, n)
		}
	}
	c.Close(ctx)
	if res, err := c.CallTool(ctx, "get-sum", json.RawMessage(`{"a":2,"b":40}`), nil, nil); err != nil || !strings.Contains(string(res), "42") {
		t.Fatalf("after Close: %s, %v", res, err)
	}
}
