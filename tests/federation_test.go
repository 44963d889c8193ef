package tests

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/mcpgateway/mcpgateway/internal/mcptest"
	"github.com/mcpgateway/mcpgateway/internal/proctest"
)

// A real upstream MCP server (the reference "everything" server, from npm)
// registered through the admin API: its tools are listed and called through
// the gateway under namespaced names, on every worker, with the credential
// stored sealed and never shown; when the upstream dies, calls fail fast as
// tool errors; when it is deleted, its tools are gone.
func TestFederatedUpstream(t *testing.T) {
	upURL, up := proctest.MustStartEverything(t)
	g := serve(t, []string{"AUTH_ENCRYPTION_SECRET=federation-test-secret", "FEDERATION_TIMEOUT=10s"}, "--workers", "2")
	token := g.token()
	rpc := func(body string) (int, string) { return httpDo(freshClient, "POST", g.url("/rpc"), token, body) }

	// Refusals first: a bad URL, an upstream that does not answer.
	if code, body := httpDo(freshClient, "PUT", g.url("/admin/gateways/everything"), token, `{"url":"ftp://x"}`); code != 400 {
		t.Errorf("bad url: %d %s", code, body)
	}
	dead := fmt.Sprintf("http://127.0.0.1:%d/mcp", proctest.MustFreePort(t))
	if code, body := httpDo(freshClient, "PUT", g.url("/admin/gateways/everything"), token, `{"url":"`+dead+`"}`); code != 502 {
		t.Errorf("an upstream that does not answer: %d %s", code, body)
	}

	code, body := httpDo(freshClient, "PUT", g.url("/admin/gateways/everything"), token,
		`{"url":"`+upURL+`","auth_type":"bearer","auth_token":"upstream-s3cret"}`)
	if code != 200 || !strings.Contains(body, `"everything-get-sum"`) || strings.Contains(body, "s3cret") {
		t.Fatalf("register: %d %s", code, body)
	}
	if code, body := httpDo(freshClient, "GET", g.url("/admin/gateways"), token, ""); code != 200 || !strings.Contains(body, upURL) || strings.Contains(body, "s3cret") {
		t.Errorf("list: %d %s", code, body)
	}
	if g.Log.Contains("s3cret") {
		t.Error("the upstream's credential was logged")
	}

	// Listed with the upstream's schema, on whichever worker answers.
	deadline := time.Now().Add(5 * time.Second)
	for {
		_, list := rpc(`{"jsonrpc":"2.0","id":1,"method":"tools/list"}`)
		if strings.Contains(toolSchemas(list)["everything-get-sum"], `"a"`) { // rest_tools_test.go
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("tools/list lacks everything-get-sum with its schema: %s", list)
		}
		time.Sleep(100 * time.Millisecond)
	}

	// Called both ways, over fresh connections spread on both workers.
	before := workerRequests(t, g)
	for i := range 20 {
		code, body := rpc(fmt.Sprintf(`{"jsonrpc":"2.0","id":%d,"method":"tools/call","params":{"name":"everything-get-sum","arguments":{"a":%d,"b":40}}}`, i, i))
		if code != 200 || !strings.Contains(body, fmt.Sprint(i+40)) || strings.Contains(body, `"isError":true`) {
			t.Fatalf("tools/call %d: %d %s", i, code, body)
		}
	}
	if code, body := rpc(`{"jsonrpc":"2.0","id":"e","method":"everything-echo","params":{"message":"through the gateway"}}`); code != 200 || !strings.Contains(body, "Echo: through the gateway") {
		t.Fatalf("the tool named as the method: %d %s", code, body)
	}
	if after := workerRequests(t, g); !eachWorkerServed(before, after, 1) {
		t.Errorf("the calls did not reach both workers: %v -> %v", before, after)
	}
	// The upstream's own errors come back as they are.
	if _, body := rpc(`{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"everything-get-sum","arguments":{"a":"x"}}}`); !strings.Contains(body, `"error"`) && !strings.Contains(body, `"isError":true`) {
		t.Errorf("bad arguments: %s", body)
	}

	// The upstream dies: calls fail as tool errors, and soon at once (the breaker).
	up.Stop(syscall.SIGKILL, 5*time.Second)
	var last time.Duration
	for i := range 12 {
		start := time.Now()
		code, body := rpc(fmt.Sprintf(`{"jsonrpc":"2.0","id":%d,"method":"tools/call","params":{"name":"everything-echo","arguments":{"message":"x"}}}`, i))
		last = time.Since(start)
		if code != 200 || !strings.Contains(body, `"isError":true`) || !strings.Contains(body, "upstream everything unavailable") {
			t.Fatalf("with the upstream gone: %d %s", code, body)
		}
	}
	if last > time.Second {
		t.Errorf("the last call with the upstream gone took %v", last)
	}
	// /metrics: calls by outcome, and the open circuit (the gauge is
	// sampled every second); /ready shows it and stays ready.
	deadline = time.Now().Add(5 * time.Second)
	for {
		_, m := get(t, g.url("/metrics"))
		answered := metricValue(t, m, `mcpgateway_upstream_calls_total{outcome="answered"}`)
		failed := metricValue(t, m, `mcpgateway_upstream_calls_total{outcome="failed"}`)
		open := metricValue(t, m, `mcpgateway_upstream_calls_total{outcome="circuit_open"}`)
		_, ready := get(t, g.url("/ready"))
		if answered >= 21 && failed >= 5 && open >= 1 && failed+open == 12 && metricValue(t, m, "mcpgateway_upstream_circuits_open") == 1 &&
			strings.Contains(ready, `"upstream_circuits_open":1`) && strings.Contains(ready, `"status":"ready"`) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("/metrics: upstream calls answered %v, failed %v, circuit open %v; circuits open %v",
				answered, failed, open, metricValue(t, m, "mcpgateway_upstream_circuits_open"))
		}
		time.Sleep(200 * time.Millisecond)
	}

	// Deleted: its tools are gone from every worker.
	if code, body := httpDo(freshClient, "DELETE", g.url("/admin/gateways/everything"), token, ""); code != 204 {
		t.Fatalf("delete: %d %s", code, body)
	}
	deadline = time.Now().Add(5 * time.Second)
	for {
		_, b1 := rpc(`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"everything-echo","arguments":{"message":"x"}}}`)
		_, b2 := rpc(`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"everything-echo","arguments":{"message":"x"}}}`)
		if strings.Contains(b1, "Unknown tool") && strings.Contains(b2, "Unknown tool") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after delete: %s / %s", b1, b2)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// fakeUpstream is a minimal MCP server (JSON answers, one session) whose
// tool list the test changes: what the reference server cannot do.
func fakeUpstream(t *testing.T) (url string, setTools func(names ...string), setDown func(bool)) {
	var mu sync.Mutex
	tools := []string{"a"}
	var down atomic.Bool
	fake := &mcptest.Server{Session: "fake-session", Handle: func(_ *http.Request, method string, _ json.RawMessage) string {
		if method != "tools/list" {
			return ""
		}
		mu.Lock()
		defer mu.Unlock()
		var list []string
		for _, n := range tools {
			list = append(list, fmt.Sprintf(`{"name":%q,"inputSchema":{"type":"object"}}`, n))
		}
		return `{"tools":[` + strings.Join(list, ",") + `]}`
	}}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if down.Load() {
			http.Error(w, "down", http.StatusServiceUnavailable)
			return
		}
		fake.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	return srv.URL + "/mcp", func(names ...string) {
		mu.Lock()
		tools = names
		mu.Unlock()
	}, down.Store
}

// HEALTH_CHECK_INTERVAL: the upstream's tool list is read again, and what
// changed reaches every worker's tools/list.
func TestFederatedToolListRefresh(t *testing.T) {
	url, setTools, _ := fakeUpstream(t)
	g := serve(t, []string{"HEALTH_CHECK_INTERVAL=500ms"}, "--workers", "2")
	token := g.token()
	if code, body := httpDo(freshClient, "PUT", g.url("/admin/gateways/fake"), token, `{"url":"`+url+`"}`); code != 200 || !strings.Contains(body, `"fake-a"`) {
		t.Fatalf("register: %d %s", code, body)
	}
	waitList := func(want, gone string) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for seen := 0; seen < 4; {
			_, list := httpDo(freshClient, "POST", g.url("/rpc"), token, `{"jsonrpc":"2.0","id":1,"method":"tools/list"}`)
			if strings.Contains(list, `"`+want+`"`) && !strings.Contains(list, `"`+gone+`"`) {
				seen++ // on fresh connections: both workers, most likely
			} else {
				seen = 0
			}
			if time.Now().After(deadline) {
				t.Fatalf("tools/list never had %s without %s: %s", want, gone, list)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	setTools("a", "b")
	waitList("fake-b", "fake-none")
	setTools("b")
	waitList("fake-b", "fake-a")
}

// GATEWAYS_FILE: upstreams registered at start without the admin API; one
// that is down at start is registered once it answers (the refresh).
func TestGatewaysFile(t *testing.T) {
	upURL, _ := proctest.MustStartEverything(t)
	late, setLate, setDown := fakeUpstream(t)
	setLate("x")
	setDown(true) // down when the gateway starts
	dir := t.TempDir()
	file := `{"gateways":[{"name":"everything","url":"` + upURL + `"},{"name":"fake","url":"` + late + `"}]}`
	if err := os.WriteFile(filepath.Join(dir, "gateways.json"), []byte(file), 0o600); err != nil {
		t.Fatal(err)
	}
	g := serve(t, []string{"GATEWAYS_FILE=" + filepath.Join(dir, "gateways.json"), "HEALTH_CHECK_INTERVAL=500ms"}, "--workers", "2")
	token := g.token()
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, list := httpDo(freshClient, "POST", g.url("/rpc"), token, `{"jsonrpc":"2.0","id":1,"method":"tools/list"}`)
		if strings.Contains(list, `"fake-x"`) {
			t.Fatalf("an upstream that is down was registered: %s", list)
		}
		if strings.Contains(list, `"everything-echo"`) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the file's upstream was not registered: %s", list)
		}
		time.Sleep(100 * time.Millisecond)
	}
	setDown(false) // back: the next refresh registers it
	for {
		_, list := httpDo(freshClient, "POST", g.url("/rpc"), token, `{"jsonrpc":"2.0","id":1,"method":"tools/list"}`)
		if strings.Contains(list, `"everything-echo"`) && strings.Contains(list, `"fake-x"`) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the file's upstreams were not registered: %s", list)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if code, body := httpDo(freshClient, "POST", g.url("/rpc"), token, `{"jsonrpc":"2.0","id":2,"method":"everything-echo","params":{"message":"from the file"}}`); code != 200 || !strings.Contains(body, "Echo: from the file") {
		t.Fatalf("call: %d %s", code, body)
	}
}

// An upstream call answered in JSON ends inside the request's own timeout:
// the client gets the upstream's failure as a tool error, not the
// watchdog's 504, and the upstream call does not outlive its request.
func TestFederatedCallWithinRequestTimeout(t *testing.T) {
	upURL, _ := proctest.MustStartEverything(t)
	g := serve(t, nil, "--workers", "1", "--timeout", "2")
	token := g.token()
	if code, body := httpDo(freshClient, "PUT", g.url("/admin/gateways/everything"), token, `{"url":"`+upURL+`"}`); code != 200 {
		t.Fatalf("register: %d %s", code, body)
	}
	start := time.Now()
	code, body := httpDo(freshClient, "POST", g.url("/rpc"), token,
		`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"everything-trigger-long-running-operation","arguments":{"duration":10,"steps":2}}}`)
	took := time.Since(start)
	if code != 200 || !strings.Contains(body, "did not answer in time") || !strings.Contains(body, `"isError":true`) || took > 2*time.Second {
		t.Fatalf("a 10 s upstream call under a 2 s timeout: %d %s after %v", code, body, took)
	}
	// The worker was not replaced by its watchdog.
	if g.Log.Contains("worker timeout") {
		t.Error("the watchdog acted on the call")
	}
}
