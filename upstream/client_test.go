package upstream

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/mcpgateway/mcpgateway/internal/mcptest"
	"github.com/mcpgateway/mcpgateway/internal/proctest"
)

// everything starts the reference MCP server "everything" for the test.
func everything(t *testing.T) (string, *proctest.Proc) { return proctest.MustStartEverything(t) }

func TestEverythingServer(t *testing.T) {
	url, p := everything(t)
	c := New(Server{Name: "everything", URL: url, Timeout: 10 * time.Second}, nil)
	ctx := context.Background()
	defer c.Close(ctx)

	tools, err := c.ListTools(ctx)
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]Tool{}
	for _, tl := range tools {
		names[tl.Name] = tl
	}
	for _, want := range []string{"echo", "get-sum", "trigger-long-running-operation"} {
		if _, ok := names[want]; !ok {
			t.Fatalf("tools/list lacks %q: %d tools", want, len(tools))
		}
	}
	if !strings.Contains(string(names["get-sum"].InputSchema), `"a"`) {
		t.Errorf("get-sum's input schema was not passed on: %s", names["get-sum"].InputSchema)
	}
	if info := c.Info(); info.Protocol == "" || info.Name == "" {
		t.Errorf("initialize told nothing: %+v", info)
	}

	t.Run("call", func(t *testing.T) {
		res, err := c.CallTool(ctx, "get-sum", json.RawMessage(`{"a":2,"b":40}`), nil, nil)
		if err != nil || !strings.Contains(string(res), "42") {
			t.Fatalf("get-sum: %s, %v", res, err)
		}
	})

	t.Run("concurrent calls share the session", func(t *testing.T) {
		var wg sync.WaitGroup
		errs := make(chan error, 32)
		for i := range 32 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				msg := fmt.Sprintf("hello %d", i)
				res, err := c.CallTool(ctx, "echo", json.RawMessage(fmt.Sprintf(`{"message":%q}`, msg)), nil, nil)
				if err == nil && !strings.Contains(string(res), msg) {
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

	t.Run("progress streamed before the result", func(t *testing.T) {
		var notes []string
		res, err := c.CallTool(ctx, "trigger-long-running-operation", json.RawMessage(`{"duration":1,"steps":4}`), "tok-1",
			func(n json.RawMessage) { notes = append(notes, string(n)) })
		if err != nil {
			t.Fatal(err)
		}
		progress := 0
		for _, n := range notes {
			if strings.Contains(n, `"notifications/progress"`) && strings.Contains(n, `"tok-1"`) {
				progress++
			}
		}
		if progress != 4 || !strings.Contains(string(res), "completed") {
			t.Fatalf("%d progress notifications (want 4), result %s; notes %v", progress, res, notes)
		}
	})

	t.Run("tool errors are results, protocol errors are RPCErrors", func(t *testing.T) {
		res, err := c.CallTool(ctx, "get-sum", json.RawMessage(`{"a":"x"}`), nil, nil)
		var rpcErr *RPCError
		if err == nil && !strings.Contains(string(res), `"isError":true`) || err != nil && !errors.As(err, &rpcErr) {
			t.Fatalf("bad arguments: %s, %v", res, err)
		}
		// An unknown tool: an error result or a JSON-RPC error, both
		// answers, and the breaker stays closed.
		c.CallTool(ctx, "no-such-tool", nil, nil, nil)
		if s := c.Breaker().State(); s != Closed {
			t.Errorf("breaker %v after answered errors", s)
		}
	})

	t.Run("a lost session is opened again", func(t *testing.T) {
		c.mu.Lock()
		c.session = "00000000-0000-0000-0000-000000000000" // as after an upstream restart
		c.mu.Unlock()
		res, err := c.CallTool(ctx, "echo", json.RawMessage(`{"message":"again"}`), nil, nil)
		if err != nil || !strings.Contains(string(res), "again") {
			t.Fatalf("after the session was lost: %s, %v", res, err)
		}
	})

	t.Run("the breaker opens when the upstream is gone", func(t *testing.T) {
		p.Stop(syscall.SIGKILL, 5*time.Second)
		for i := range DefaultBreaker.Failures {
			if _, err := c.CallTool(ctx, "echo", json.RawMessage(`{"message":"x"}`), nil, nil); err == nil || errors.Is(err, ErrOpen) {
				t.Fatalf("call %d with the upstream gone: %v", i, err)
			}
		}
		start := time.Now()
		_, err := c.CallTool(ctx, "echo", json.RawMessage(`{"message":"x"}`), nil, nil)
		if !errors.Is(err, ErrOpen) || time.Since(start) > time.Second {
			t.Fatalf("after %d failures: %v in %v, want ErrOpen at once", DefaultBreaker.Failures, err, time.Since(start))
		}
		if c.Breaker().State() != Open {
			t.Errorf("state %v", c.Breaker().State())
		}
	})
}

// The call's deadline ends a slow upstream call, and a caller that goes
// away does not count against the upstream.
func TestCallDeadlines(t *testing.T) {
	url, _ := everything(t)
	c := New(Server{Name: "everything", URL: url, Timeout: 500 * time.Millisecond}, nil)
	ctx := context.Background()
	start := time.Now()
	_, err := c.CallTool(ctx, "trigger-long-running-operation", json.RawMessage(`{"duration":5,"steps":5}`), nil, nil)
	if err == nil || time.Since(start) > 3*time.Second {
		t.Fatalf("a 5 s call with a 500 ms timeout: %v after %v", err, time.Since(start))
	}
	cctx, cancel := context.WithCancel(ctx)
	time.AfterFunc(200*time.Millisecond, cancel)
	if _, err := c.CallTool(cctx, "trigger-long-running-operation", json.RawMessage(`{"duration":5,"steps":5}`), nil, nil); !errors.Is(err, context.Canceled) {
		t.Fatalf("a call whose caller went away: %v", err)
	}
	c.breaker.mu.Lock()
	failures := c.breaker.failures
	c.breaker.mu.Unlock()
	if failures != 1 {
		t.Errorf("failures counted %d, want 1 (the timeout, not the cancelled call)", failures)
	}
}

func TestBreakerHalfOpen(t *testing.T) {
	now := time.Unix(0, 0)
	b := NewBreaker(BreakerSettings{Failures: 2, Cooldown: time.Second})
	b.now = func() time.Time { return now }
	b.Failure()
	if !b.Allow() {
		t.Fatal("open after one failure of two")
	}
	b.Failure()
	if b.Allow() || b.State() != Open {
		t.Fatal("not open after two failures")
	}
	now = now.Add(time.Second)
	if !b.Allow() || b.Allow() {
		t.Fatal("half-open must let exactly one probe through")
	}
	b.Release() // the probe's caller went away
	if !b.Allow() {
		t.Fatal("a released probe must let the next call probe")
	}
	b.Failure()
	if b.State() != Open || b.Allow() {
		t.Fatal("a failed probe must reopen")
	}
	now = now.Add(time.Second)
	b.Allow()
	b.Success()
	if b.State() != Closed || !b.Allow() {
		t.Fatal("a good probe must close")
	}
}

// The upstream's credential goes with every request, the session id and
// the negotiated revision with every request after initialize, and a JSON
// (not SSE) answer is read as well.
func TestHeadersAndJSONAnswers(t *testing.T) {
	var mu sync.Mutex
	var seen []string
	srv := httptest.NewServer(&mcptest.Server{Session: "s-1", Revision: "2025-06-18",
		Handle: func(r *http.Request, method string, _ json.RawMessage) string {
			mu.Lock()
			seen = append(seen, method+" auth="+r.Header.Get("Authorization")+" session="+r.Header.Get("Mcp-Session-Id")+" version="+r.Header.Get("MCP-Protocol-Version"))
			mu.Unlock()
			return `{"content":[{"type":"text","text":"ok"}],"isError":false}`
		}})
	defer srv.Close()
	c := New(Server{Name: "fake", URL: srv.URL, Header: http.Header{"Authorization": {"Bearer t0ken"}}}, nil)
	res, err := c.CallTool(context.Background(), "x", nil, nil, nil)
	if err != nil || !strings.Contains(string(res), `"ok"`) {
		t.Fatalf("call: %s, %v", res, err)
	}
	want := []string{
		"initialize auth=Bearer t0ken session= version=",
		"notifications/initialized auth=Bearer t0ken session=s-1 version=2025-06-18",
		"tools/call auth=Bearer t0ken session=s-1 version=2025-06-18",
	}
	if strings.Join(seen, "\n") != strings.Join(want, "\n") {
		t.Fatalf("requests:\n%s\nwant:\n%s", strings.Join(seen, "\n"), strings.Join(want, "\n"))
	}
}

// jsonUpstream is a minimal MCP server answering JSON, whose tools/call
// runs handle first.
func jsonUpstream(t *testing.T, handle func()) *httptest.Server {
	srv := httptest.NewServer(&mcptest.Server{Handle: func(_ *http.Request, method string, _ json.RawMessage) string {
		if method == "tools/call" {
			handle()
		}
		return `{"content":[],"isError":false}`
	}})
	t.Cleanup(srv.Close)
	return srv
}

// Past the in-flight limit a call is refused at once with ErrBusy, and the
// limit adapts: it falls while the upstream slows with concurrency.
func TestInFlightLimit(t *testing.T) {
	release := make(chan struct{})
	var started sync.WaitGroup
	started.Add(2)
	blocked := jsonUpstream(t, func() { started.Done(); <-release })
	c := New(Server{Name: "blocked", URL: blocked.URL, MaxInFlight: 2}, nil)
	done := make(chan error, 2)
	for range 2 {
		go func() {
			_, err := c.CallTool(context.Background(), "x", nil, nil, nil)
			done <- err
		}()
	}
	started.Wait()
	start := time.Now()
	if _, err := c.CallTool(context.Background(), "x", nil, nil, nil); !errors.Is(err, ErrBusy) || time.Since(start) > time.Second {
		t.Fatalf("a third call with 2 in flight and a limit of 2: %v after %v, want ErrBusy at once", err, time.Since(start))
	}
	close(release)
	for range 2 {
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}

	// An upstream whose latency grows with the calls in flight (a queue).
	var inFlight atomic.Int64
	slow := jsonUpstream(t, func() {
		n := inFlight.Add(1)
		defer inFlight.Add(-1)
		time.Sleep(time.Duration(n) * 2 * time.Millisecond)
	})
	c = New(Server{Name: "slow", URL: slow.URL, MaxInFlight: 64}, nil)
	for range 20 { // the latency without a queue
		c.CallTool(context.Background(), "x", nil, nil, nil)
	}
	stop := time.Now().Add(3 * time.Second)
	var wg sync.WaitGroup
	var busy atomic.Int64
	for range 48 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(stop) {
				if _, err := c.CallTool(context.Background(), "x", nil, nil, nil); errors.Is(err, ErrBusy) {
					busy.Add(1)
					time.Sleep(5 * time.Millisecond)
				}
			}
		}()
	}
	wg.Wait()
	if l := c.InFlightLimit(); l >= 48 || busy.Load() == 0 {
		t.Fatalf("limit %d and %d calls refused after 3 s of 48 callers on an upstream that slows with load; want the limit below 48", l, busy.Load())
	}
	t.Logf("limit %d, %d calls refused", c.InFlightLimit(), busy.Load())
}
