package tests

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mcpgateway/mcpgateway/internal/mcptest"
)

// faultyUpstream answers initialize and tools/list as an MCP server should,
// and tools/call of each tool with a fault: hang never answers, error
// answers 500, disconnect closes the connection, garbage answers 200 with a
// body that is not JSON-RPC, and ok answers.
func faultyUpstream(t *testing.T) *httptest.Server {
	fake := &mcptest.Server{Session: "f", Handle: func(_ *http.Request, method string, _ json.RawMessage) string {
		if method == "tools/list" {
			var tools []string
			for _, name := range []string{"hang", "error", "disconnect", "garbage", "ok"} {
				tools = append(tools, `{"name":"`+name+`","inputSchema":{"type":"object"}}`)
			}
			return `{"tools":[` + strings.Join(tools, ",") + `]}`
		}
		return `{"content":[{"type":"text","text":"fine"}],"isError":false}`
	}}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var m struct {
			Method string `json:"method"`
			Params struct {
				Name string `json:"name"`
			} `json:"params"`
		}
		body, _ := io.ReadAll(r.Body)
		r.Body = io.NopCloser(bytes.NewReader(body)) // for the fake, after this look
		json.Unmarshal(body, &m)
		if m.Method == "tools/call" {
			switch m.Params.Name {
			case "hang":
				<-r.Context().Done()
				return
			case "error":
				http.Error(w, "upstream exploded", http.StatusInternalServerError)
				return
			case "disconnect":
				conn, _, _ := w.(http.Hijacker).Hijack()
				conn.Close()
				return
			case "garbage":
				w.Header().Set("Content-Type", "application/json")
				fmt.Fprint(w, "<html>this is not JSON-RPC</html>")
				return
			}
		}
		fake.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	return srv
}

// Issue 14 acceptance: an upstream that hangs, errors, disconnects or sends
// garbage yields a clear answer within its timeout (a tool error naming
// the upstream, JSON-RPC as ever), opens the breaker after the threshold
// (then calls are refused at once), and never crashes or stalls a worker:
// the same workers serve the guide's payload throughout.
func TestFederatedUpstreamFaults(t *testing.T) {
	srv := faultyUpstream(t)
	g := serve(t, []string{"FEDERATION_TIMEOUT=2s"}, "--workers", "2")
	token := g.token()
	if code, body := httpDo(freshClient, "PUT", g.url("/admin/gateways/faulty"), token, `{"url":"`+srv.URL+`/mcp"}`); code != 200 {
		t.Fatalf("register: %d %s", code, body)
	}
	before := readServerState(t, g.url("/metrics"))
	call := func(tool string) (string, time.Duration) {
		start := time.Now()
		code, body := httpDo(freshClient, "POST", g.url("/rpc"), token,
			`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"faulty-`+tool+`","arguments":{}}}`)
		if code != 200 {
			t.Errorf("%s: HTTP %d %s", tool, code, body)
		}
		return body, time.Since(start)
	}
	for _, c := range []struct{ tool, want string }{
		{"hang", "upstream faulty did not answer in time"},
		{"error", "upstream faulty unavailable"},
		{"disconnect", "upstream faulty unavailable"},
		{"garbage", "upstream faulty unavailable"},
	} {
		body, took := call(c.tool)
		if !strings.Contains(body, `"isError":true`) || !strings.Contains(body, c.want) {
			t.Errorf("%s: %s, want a tool error %q", c.tool, body, c.want)
		}
		if took > 4*time.Second {
			t.Errorf("%s answered after %v, past FEDERATION_TIMEOUT (2 s)", c.tool, took)
		}
		if err := checkSeed(httpDo(freshClient, "POST", g.url("/rpc"), token, seedPayload)); err != nil {
			t.Errorf("the guide's payload after %s: %v", c.tool, err)
		}
	}
	// Each worker has its own breaker: fail until both are open, then every
	// call is refused at once.
	opened := false
	for range 20 {
		body, took := call("error")
		if strings.Contains(body, "failed repeatedly") && took < time.Second {
			if body2, _ := call("ok"); strings.Contains(body2, "failed repeatedly") {
				opened = true
				break
			}
		}
	}
	if !opened {
		t.Error("the breaker did not open after repeated failures")
	}
	after := readServerState(t, g.url("/metrics"))
	if !slices.Equal(before.pids, after.pids) || after.exits != before.exits || after.panics != 0 {
		t.Errorf("workers changed or panicked: before %+v, after %+v", before, after)
	}
	if err := checkSeed(httpDo(freshClient, "POST", g.url("/rpc"), token, seedPayload)); err != nil {
		t.Errorf("the guide's payload at the end: %v", err)
	}
}

// Issue 14 acceptance: two instances over PostgreSQL (with and without
// Redis): an upstream registered through one is callable through every
// worker of the other within a second.
func TestFederatedUpstreamAcrossInstances(t *testing.T) {
	srv := faultyUpstream(t)
	acrossInstances(t, func(t *testing.T, b storeSetup, a, other *gateway) {
		token := a.token()
		name := "up" + strings.ReplaceAll(b.name, "-", "")
		ok := func() error {
			code, body := httpDo(freshClient, "POST", other.url("/rpc"), token,
				`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"`+name+`-ok","arguments":{}}}`)
			if code != 200 || !strings.Contains(body, `"text":"fine"`) {
				return fmt.Errorf("%d %s", code, body)
			}
			return nil
		}
		if ok() == nil {
			t.Fatal("callable before it was registered")
		}
		start := time.Now()
		if code, body := httpDo(freshClient, "PUT", a.url("/admin/gateways/"+name), token, `{"url":"`+srv.URL+`/mcp"}`); code != 200 {
			t.Fatalf("register through A: %d %s", code, body)
		}
		registered := time.Since(start)
		deadline := time.Now().Add(time.Second)
		for {
			err, n := fanOut(8, 4, ok) // fresh connections: every worker of B
			if err == nil {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: %d of 8 calls through B still fail a second after the registration: %v", b.name, n, err)
			}
			time.Sleep(50 * time.Millisecond)
		}
		t.Logf("%s: registered in %v, callable through B %v later", b.name, registered, time.Since(start)-registered)
	})
}
