package tests

// The gateway's acceptance tests through the real binary: the tuning guide's
// hey command, a compact MCP suite over every database and cache type, and
// coherence (a change made through one worker or one instance, with the admin
// API, is seen by every other worker and instance within one second).
//
// PostgreSQL (postgresql://postgres@127.0.0.1:5432/postgres) and Redis
// (127.0.0.1:6379) must be up: these tests fail, never skip, without them.

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/mcpgateway/mcpgateway/internal/proctest"
	"github.com/redis/rueidis"
)

const (
	pgAdminURL = "postgresql://postgres@127.0.0.1:5432/postgres"
	redisAddr  = "127.0.0.1:6379"
)

// --- Clients ------------------------------------------------------------------

// freshClient opens a new connection for every request, so that successive
// requests land on any worker the kernel picks.
var freshClient = &http.Client{
	Transport: &http.Transport{DisableKeepAlives: true},
	Timeout:   10 * time.Second,
}

// httpDo sends one request and returns the status and body; a transport error is
// status 0 with the error as the body.
func httpDo(c *http.Client, method, url, token, body string) (int, string) {
	var r io.Reader
	if body != "" {
		r = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, url, r)
	if err != nil {
		return 0, err.Error()
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := c.Do(req)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, err.Error()
	}
	return resp.StatusCode, string(b)
}

// tokenFor mints a token for email with the binary, as an operator would.
func tokenFor(t *testing.T, g *gateway, email string) string {
	t.Helper()
	cmd := exec.Command(binary, "token", "-u", email, "-e", "60")
	cmd.Dir = g.dir
	cmd.Env = baseEnv(g.dir)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("mcpgateway token -u %s: %v\n%s", email, err, out)
	}
	return strings.TrimSpace(string(out))
}

// adminPut calls the admin API and fails unless it answers 200 or 201.
func adminPut(t *testing.T, g *gateway, token, path, body string) {
	t.Helper()
	code, resp := httpDo(freshClient, "PUT", g.url(path), token, body)
	if code != 200 && code != 201 {
		t.Fatalf("PUT %s %s: %d %s", path, body, code, resp)
	}
}

// --- Checking answers ---------------------------------------------------------

type rpcResponse struct {
	JSONRPC string          `json:"jsonrpc"`
	ID      json.RawMessage `json:"id"`
	Result  *struct {
		Content []struct {
			Type string `json:"type"`
			Text string `json:"text"`
		} `json:"content"`
		IsError *bool `json:"isError"`
	} `json:"result"`
	Error *struct {
		Code    int    `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
}

// toolResultText returns the text of a successful tool result, or why it is not one.
func toolResultText(status int, body string) (string, error) {
	if status != 200 {
		return "", fmt.Errorf("status %d: %.200s", status, body)
	}
	var r rpcResponse
	if err := json.Unmarshal([]byte(body), &r); err != nil {
		return "", fmt.Errorf("not JSON (%v): %.200s", err, body)
	}
	switch {
	case r.JSONRPC != "2.0" || string(r.ID) != "1":
		return "", fmt.Errorf("jsonrpc %q id %s: %.200s", r.JSONRPC, r.ID, body)
	case r.Error != nil:
		return "", fmt.Errorf("JSON-RPC error %d %s", r.Error.Code, r.Error.Message)
	case r.Result == nil || r.Result.IsError == nil || *r.Result.IsError:
		return "", fmt.Errorf("not a successful tool result: %.200s", body)
	case len(r.Result.Content) != 1 || r.Result.Content[0].Type != "text":
		return "", fmt.Errorf("content is not one text item: %.200s", body)
	}
	return r.Result.Content[0].Text, nil
}

type zoneTime struct {
	Timezone  string `json:"timezone"`
	Datetime  string `json:"datetime"`
	DayOfWeek string `json:"day_of_week"`
	IsDST     *bool  `json:"is_dst"`
}

// checkSeed checks an answer to the guide's payload: a successful
// convert_time, Berlin 09:00 today to Dublin, one hour behind.
func checkSeed(status int, body string) error {
	text, err := toolResultText(status, body)
	if err != nil {
		return err
	}
	var c struct {
		Source, Target *zoneTime
		TimeDifference string `json:"time_difference"`
	}
	if err := json.Unmarshal([]byte(text), &c); err != nil {
		return fmt.Errorf("result text is not JSON (%v): %s", err, text)
	}
	switch {
	case c.Source == nil || c.Target == nil || c.TimeDifference == "":
		return fmt.Errorf("source, target or time_difference missing: %s", text)
	case c.Source.Timezone != "Europe/Berlin" || c.Target.Timezone != "Europe/Dublin" || c.TimeDifference != "-1.0h":
		return fmt.Errorf("wrong conversion: %s", text)
	case !strings.Contains(c.Source.Datetime, "T09:00:00+0") || !strings.Contains(c.Target.Datetime, "T08:00:00+0"):
		return fmt.Errorf("wrong times: %s", text)
	case c.Source.IsDST == nil || c.Target.IsDST == nil || c.Source.DayOfWeek == "":
		return fmt.Errorf("is_dst or day_of_week missing: %s", text)
	}
	return nil
}

// rpcErrorCode returns the JSON-RPC error code of an answer, or 0.
func rpcErrorCode(body string) int {
	var r rpcResponse
	if json.Unmarshal([]byte(body), &r) != nil || r.Error == nil {
		return 0
	}
	return r.Error.Code
}

// --- /metrics: which worker served what ---------------------------------------

var workerRequestsRE = regexp.MustCompile(`(?m)^mcpgateway_worker_requests_total\{[^}]*\bslot="(\d+)"[^}]*\} (\S+)$`)

// workerRequests returns requests served per worker slot, read from /metrics.
func workerRequests(t *testing.T, g *gateway) map[int]float64 {
	t.Helper()
	code, body := httpDo(freshClient, "GET", g.url("/metrics"), "", "")
	if code != 200 {
		t.Fatalf("/metrics: %d %s", code, body)
	}
	m := map[int]float64{}
	for _, s := range workerRequestsRE.FindAllStringSubmatch(body, -1) {
		slot, _ := strconv.Atoi(s[1])
		m[slot], _ = strconv.ParseFloat(s[2], 64)
	}
	return m
}

// eachWorkerServed reports whether every worker in after served more than
// slack requests since before (slack covers the /metrics scrapes themselves).
func eachWorkerServed(before, after map[int]float64, slack float64) bool {
	if len(after) < 2 {
		return false
	}
	for slot, n := range after {
		if n-before[slot] <= slack {
			return false
		}
	}
	return true
}

// fanOut makes n calls of fn with c goroutines, and returns the first
// failure (fn's error) and how many failed.
func fanOut(n, c int, fn func() error) (first error, failed int) {
	r := proctest.RunLoad(context.Background(), c, n, func(int) error { return fn() })
	return r.First(), r.Failed
}

// warmEveryWorker sends req over fresh connections until every worker of g
// has answered it well at least a few times, so that each has the user and
// the tools in its near cache.
func warmEveryWorker(t *testing.T, g *gateway, req func() error) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	before := workerRequests(t, g)
	for {
		if err, _ := fanOut(20, 4, req); err != nil {
			t.Fatalf("warming up: %v", err)
		}
		after := workerRequests(t, g)
		if eachWorkerServed(before, after, 3) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after 10 s of requests on fresh connections, some worker served none: %v -> %v", before, after)
		}
	}
}

// expectChangeSeen is the coherence check. change runs at t0 (through one
// worker or instance); from then on refused reports whether a request made
// through g (any of its workers, fresh connections) shows the change. Within
// 1 s every request must show it: the poll gives up at 1.5 s, and a request
// that does not show it more than 1 s after the change is a failure. Then a
// few hundred more requests, spread over every worker, must all show it. It
// returns how long after the change requests still saw the old state (0 if
// none did).
func expectChangeSeen(t *testing.T, g *gateway, what string, change func(), refused func() error) time.Duration {
	t.Helper()
	const streak = 40 // consecutive refusals (4 goroutines × fresh connections) that end the poll
	start := time.Now()
	change()
	changed := time.Now()
	var lastPass atomic.Int64 // ns after changed of the latest request that still passed
	lastPass.Store(-1)
	var run atomic.Int64
	deadline := start.Add(1500 * time.Millisecond)
	var wg sync.WaitGroup
	var firstErr atomic.Pointer[string]
	for range 4 {
		wg.Go(func() {
			for run.Load() < streak && time.Now().Before(deadline) {
				sent := time.Now()
				if err := refused(); err != nil {
					run.Store(0)
					d := int64(sent.Sub(changed))
					for {
						old := lastPass.Load()
						if d <= old || lastPass.CompareAndSwap(old, d) {
							break
						}
					}
					msg := err.Error()
					firstErr.CompareAndSwap(nil, &msg)
					continue
				}
				run.Add(1)
			}
		})
	}
	wg.Wait()
	seen := time.Duration(max(lastPass.Load(), 0))
	if run.Load() < streak {
		why := "no request was made"
		if e := firstErr.Load(); e != nil {
			why = *e
		}
		t.Fatalf("%s: requests still saw the old state 1.5 s after the change (latest pass at %v): %s", what, seen, why)
	}
	if lastPass.Load() >= 0 && seen > time.Second {
		t.Fatalf("%s: a request sent %v after the change still saw the old state", what, seen)
	}
	// The change is everywhere once the coherence bound (a second) has
	// passed: every worker refuses, on many connections. The streak above
	// may all have reached one worker (fresh connections, the kernel's
	// choice) while the other's poll was still due: under CI load, 78 of
	// these 300 then reached a worker still within its second.
	time.Sleep(time.Until(changed.Add(time.Second)))
	before := workerRequests(t, g)
	if err, n := fanOut(300, 4, refused); err != nil {
		t.Fatalf("%s: %d of 300 requests after the change saw the old state: %v", what, n, err)
	}
	after := workerRequests(t, g)
	if !eachWorkerServed(before, after, 10) {
		t.Fatalf("%s: the 300 checks did not reach every worker: %v -> %v", what, before, after)
	}
	var spread []string
	for pid, n := range after {
		spread = append(spread, fmt.Sprintf("pid %d: %.0f", pid, n-before[pid]))
	}
	t.Logf("%s: %s: old state last seen %v after the change (the PUT took %v); then 300 of 300 checks showed it (%s)",
		t.Name(), what, seen.Round(time.Microsecond), changed.Sub(start).Round(time.Microsecond), strings.Join(spread, ", "))
	return seen
}

// --- Databases and caches -----------------------------------------------------

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// pgDatabase creates a fresh PostgreSQL database for the test and drops it at
// the end (after the gateways, whose cleanups run first because they are
// registered later). It returns the database's URL.
func pgDatabase(t *testing.T) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, pgAdminURL)
	if err != nil {
		t.Fatalf("PostgreSQL at %s: %v", pgAdminURL, err)
	}
	defer conn.Close(ctx)
	name := "mcpgw_test_" + randomHex(6)
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()); err != nil {
		t.Fatalf("create database %s: %v", name, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		conn, err := pgx.Connect(ctx, pgAdminURL)
		if err != nil {
			t.Errorf("drop database %s: %v", name, err)
			return
		}
		defer conn.Close(ctx)
		if _, err := conn.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)"); err != nil {
			t.Errorf("drop database %s: %v", name, err)
		}
	})
	return "postgresql://postgres@127.0.0.1:5432/" + name
}

// redisPrefix returns a CACHE_PREFIX of the test's own, whose keys are
// deleted at the end.
func redisPrefix(t *testing.T) string {
	t.Helper()
	prefix := "mcpgwtest:" + randomHex(6) + ":"
	t.Cleanup(func() {
		c, err := rueidis.NewClient(rueidis.ClientOption{InitAddress: []string{redisAddr}, DisableCache: true, ForceSingleClient: true})
		if err != nil {
			t.Errorf("redis cleanup: %v", err)
			return
		}
		defer c.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		var cursor uint64
		for {
			e, err := c.Do(ctx, c.B().Scan().Cursor(cursor).Match(prefix+"*").Count(1000).Build()).AsScanEntry()
			if err != nil {
				t.Errorf("redis cleanup: %v", err)
				return
			}
			if len(e.Elements) > 0 {
				c.Do(ctx, c.B().Del().Key(e.Elements...).Build())
			}
			if cursor = e.Cursor; cursor == 0 {
				return
			}
		}
	})
	return prefix
}

// storeSetup is one database + cache combination, as gateway environment.
type storeSetup struct {
	name string
	env  func(t *testing.T) []string // called once per test; may create a database
}

func sqliteBackend(cache string) storeSetup {
	return storeSetup{"sqlite-" + cache, func(*testing.T) []string { return []string{"CACHE_TYPE=" + cache} }}
}

func postgresBackend(cache string) storeSetup {
	return storeSetup{"postgresql-" + cache, func(t *testing.T) []string {
		env := []string{"DATABASE_URL=" + pgDatabase(t), "CACHE_TYPE=" + cache}
		if cache == "redis" {
			env = append(env, "REDIS_URL=redis://"+redisAddr+"/0", "CACHE_PREFIX="+redisPrefix(t))
		}
		return env
	}}
}

// --- 1. The guide's hey command -----------------------------------------------

var heyStatusRE = regexp.MustCompile(`\[(\d+)\]\s+(\d+) responses`)

// runHey runs the guide's hey command against g with the given load flags
// (-n, -c, -z), from the repository's root as the guide does, and returns
// the answers by status and hey's report.
func runHey(t *testing.T, g *gateway, jwt string, load ...string) (map[int]int, string) {
	t.Helper()
	hey, err := exec.LookPath("hey")
	if err != nil {
		t.Fatal("hey is not in PATH: install hey (make tools)")
	}
	args := append(load, "-m", "POST", "-T", "application/json",
		"-H", "Authorization: Bearer "+jwt, "-D", "tests/hey/payload.json",
		fmt.Sprintf("http://localhost:%d/rpc", g.port))
	cmd := exec.Command(hey, args...)
	cmd.Dir = ".." // the guide runs it from the repository's root
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("hey: %v\n%s", err, out)
	}
	statuses := map[int]int{}
	for _, m := range heyStatusRE.FindAllStringSubmatch(string(out), -1) {
		code, _ := strconv.Atoi(m[1])
		statuses[code], _ = strconv.Atoi(m[2])
	}
	return statuses, string(out)
}

// The tuning guide's command, verbatim but for the port, against a gateway
// with the default settings: 10 000 requests, all 200. hey shows no bodies,
// so the same load is sent again with a Go client that checks every one.
func TestHeyGuideCommandAllSucceed(t *testing.T) {
	g := serve(t, nil, "--workers", "2")
	jwt := g.token()

	start := time.Now()
	statuses, out := runHey(t, g, jwt, "-n", "10000", "-c", "200")
	if len(statuses) == 2 && statuses[200]+statuses[503] == 10000 && !strings.Contains(out, "Error distribution") {
		// hey's closed loop keeps 200 requests queued at the two workers:
		// about 12 ms of waiting at this machine's 16,000 a second, a
		// quarter of the shedder's 50 ms target. A stall of the machine,
		// whose cores the other test packages share, can double that for
		// an interval, and the shedder then refuses what waited past its
		// target (seen: 60 of 10,000 in one run of the whole suite). A
		// standing regression refuses again; a stall does not.
		t.Logf("hey: %d of 10000 shed (503) on a stall; once more", statuses[503])
		start = time.Now()
		statuses, out = runHey(t, g, jwt, "-n", "10000", "-c", "200")
	}
	if len(statuses) != 1 || statuses[200] != 10000 || strings.Contains(out, "Error distribution") {
		t.Fatalf("want [200] 10000 responses and no errors:\n%s", out)
	}
	rps := regexp.MustCompile(`Requests/sec:\s+(\S+)`).FindStringSubmatch(out)
	t.Logf("hey: 10000 × [200] in %v (%v requests/s)", time.Since(start).Round(time.Millisecond), rps[1:])

	// The same load, every body checked: a 200 carrying a JSON-RPC error
	// or an isError result is a failure.
	raw, err := os.ReadFile(filepath.Join("hey", "payload.json"))
	if err != nil {
		t.Fatal(err)
	}
	payload := string(raw)
	client := proctest.KeepAliveClient(200, 20*time.Second)
	url := g.url("/rpc")
	start = time.Now()
	first, failed := fanOut(10000, 200, func() error { return checkSeed(httpDo(client, "POST", url, jwt, payload)) })
	client.CloseIdleConnections()
	if failed > 0 {
		t.Fatalf("%d of 10000 answers were not a successful convert_time; the first: %v", failed, first)
	}
	t.Logf("Go client: 10000 bodies checked, all successful convert_time results, in %v", time.Since(start).Round(time.Millisecond))
}

// --- 2. The matrix ------------------------------------------------------------

var matrixSetups = []storeSetup{
	sqliteBackend("database"), sqliteBackend("memory"), sqliteBackend("none"),
	postgresBackend("redis"), postgresBackend("database"),
}

func TestGatewayMatrix(t *testing.T) {
	for _, b := range matrixSetups {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			g := serve(t, b.env(t), "--workers", "2")
			gatewaySuite(t, g, b)
		})
	}
}

// gatewaySuite is the compact acceptance suite of one gateway.
func gatewaySuite(t *testing.T, g *gateway, b storeSetup) {
	tok := g.token()
	url := g.url("/rpc")
	call := func(body string) (int, string) { return httpDo(freshClient, "POST", url, tok, body) }

	code, body := call(`{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"tests","version":"1"}}}`)
	var init struct {
		Result struct {
			ProtocolVersion string `json:"protocolVersion"`
			ServerInfo      struct{ Name string }
		}
	}
	if code != 200 || json.Unmarshal([]byte(body), &init) != nil || init.Result.ProtocolVersion != "2025-06-18" ||
		init.Result.ServerInfo.Name != "mcpgateway" {
		t.Fatalf("initialize: %d %s", code, body)
	}

	code, body = call(`{"jsonrpc":"2.0","id":2,"method":"tools/list"}`)
	var list struct {
		Result struct {
			Tools []struct {
				Name        string
				InputSchema map[string]any `json:"inputSchema"`
			}
		}
	}
	if code != 200 || json.Unmarshal([]byte(body), &list) != nil || len(list.Result.Tools) != 2 ||
		list.Result.Tools[0].Name != "convert_time" || list.Result.Tools[1].Name != "get_system_time" ||
		list.Result.Tools[0].InputSchema["type"] != "object" {
		t.Fatalf("tools/list: %d %s", code, body)
	}

	if err := checkSeed(call(seedPayload)); err != nil {
		t.Fatalf("seed payload: %v", err)
	}

	text, err := toolResultText(call(`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"get_system_time","arguments":{"timezone":"Asia/Tokyo"}}}`))
	var now zoneTime
	if err != nil || json.Unmarshal([]byte(text), &now) != nil || now.Timezone != "Asia/Tokyo" || !strings.HasSuffix(now.Datetime, "+09:00") {
		t.Fatalf("get_system_time: %v %s", err, text)
	}
	if ts, err := time.Parse(time.RFC3339, now.Datetime); err != nil || time.Since(ts).Abs() > 5*time.Second {
		t.Fatalf("get_system_time is not now: %s (%v)", now.Datetime, err)
	}

	for _, bad := range []string{"", "not.a.jwt"} {
		code, body = httpDo(freshClient, "POST", url, bad, seedPayload)
		var d struct{ Detail string }
		if code != 401 || json.Unmarshal([]byte(body), &d) != nil || d.Detail == "" {
			t.Fatalf("token %q: want 401 with a JSON detail, got %d %s", bad, code, body)
		}
	}

	code, body = httpDo(freshClient, "GET", g.url("/ready"), "", "")
	dialect, cache, _ := strings.Cut(b.name, "-")
	if code != 200 || !strings.Contains(body, `"status":"ready"`) || !strings.Contains(body, `"detail":"`+cache) {
		t.Fatalf("/ready: %d %s", code, body)
	}
	code, body = httpDo(freshClient, "GET", g.url("/version"), tok, "")
	if code != 200 || !strings.Contains(body, `"database":"`+dialect+`"`) || !strings.Contains(body, `"cache":"`+cache+`"`) {
		t.Fatalf("/version: %d %s", code, body)
	}
}

// --- 3. Coherence -------------------------------------------------------------

const bobEmail = "bob@example.com"

// coherence makes changes through writer's admin API and checks that reader
// (the same gateway: its other worker; or another instance) sees them
// within a second on every worker.
func coherence(t *testing.T, writer, reader *gateway) {
	admin := writer.token()
	adminPut(t, writer, admin, "/admin/users/"+bobEmail, `{"active":true,"admin":false}`)
	bobTok := tokenFor(t, writer, bobEmail)
	readerURL := reader.url("/rpc")

	// Every worker of the reader has bob (and the tools) cached as valid.
	warmEveryWorker(t, reader, func() error { return checkSeed(httpDo(freshClient, "POST", readerURL, bobTok, seedPayload)) })
	expectChangeSeen(t, reader, "deactivate "+bobEmail,
		func() { adminPut(t, writer, admin, "/admin/users/"+bobEmail, `{"active":false}`) },
		func() error {
			code, body := httpDo(freshClient, "POST", readerURL, bobTok, seedPayload)
			if code != 401 || !strings.Contains(body, "User account is inactive") {
				return fmt.Errorf("bob still served: %d %.120s", code, body)
			}
			return nil
		})

	// Every worker of the reader has the tools cached with convert_time.
	warmEveryWorker(t, reader, func() error { return checkSeed(httpDo(freshClient, "POST", readerURL, admin, seedPayload)) })
	expectChangeSeen(t, reader, "disable convert_time",
		func() { adminPut(t, writer, admin, "/admin/tools/convert_time", `{"enabled":false}`) },
		func() error {
			code, body := httpDo(freshClient, "POST", readerURL, admin, seedPayload)
			if code != 200 || rpcErrorCode(body) != -32601 {
				return fmt.Errorf("convert_time still served: %d %.120s", code, body)
			}
			return nil
		})

	// And back: a user re-activated is served again everywhere.
	expectChangeSeen(t, reader, "reactivate "+bobEmail, func() {
		adminPut(t, writer, admin, "/admin/users/"+bobEmail, `{"active":true}`)
	}, func() error {
		code, body := httpDo(freshClient, "POST", readerURL, bobTok, `{"jsonrpc":"2.0","id":1,"method":"ping"}`)
		if code != 200 {
			return fmt.Errorf("bob still refused: %d %.120s", code, body)
		}
		return nil
	})
}

// (a) Two workers of one instance: the change is made through whichever
// worker takes the admin request, and both must follow.
func TestCoherenceAcrossWorkers(t *testing.T) {
	for _, b := range []storeSetup{sqliteBackend("memory"), sqliteBackend("database"), postgresBackend("redis")} {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			g := serve(t, b.env(t), "--workers", "2")
			coherence(t, g, g)
		})
	}
}

// (b) Two instances sharing a database (and Redis): a change made through
// instance A is seen by every worker of instance B.
func TestCoherenceAcrossInstances(t *testing.T) {
	t.Run("postgresql-redis", func(t *testing.T) {
		t.Parallel()
		env := postgresBackend("redis").env(t)
		a := serve(t, env, "--workers", "2")
		b := serve(t, env, "--workers", "2")
		coherence(t, a, b)
	})
	t.Run("sqlite-database-shared-file", func(t *testing.T) {
		t.Parallel()
		env := []string{"CACHE_TYPE=database", "DATABASE_URL=sqlite:///" + filepath.Join(t.TempDir(), "shared.db")}
		a := serve(t, env, "--workers", "2")
		b := serve(t, env, "--workers", "2")
		coherence(t, a, b)
	})
}
