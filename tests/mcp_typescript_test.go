package tests

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mcpgateway/mcpgateway/internal/proctest"
)

// minNode is the oldest Node the TypeScript SDKs run on: the engines of
// @modelcontextprotocol/client 2.x (>=20; @modelcontextprotocol/sdk 1.x
// asks for >=18).
const minNode = 20

// Issue 13 item 7: the official TypeScript SDK clients against the real
// gateway, which federates the reference "everything" server. For each
// revision served, tests/upstream/tsclient.mjs (@modelcontextprotocol/sdk
// 1.x for the session revisions, @modelcontextprotocol/client 2.x for
// 2026-07-28) lists the tools, calls echo and get-sum, and makes a streamed
// call with a progress callback; then makes a second streamed call during
// which the master is sent HUP (every worker is replaced, the old ones
// drain), which must end with every progress notification, once and in
// order, and its result; then, once the old workers have exited, lists and
// calls again. A 2025-11-25 stream is handed off by its draining worker and
// must be resumed by the SDK with GET and Last-Event-ID; the others are not
// resumable and finish on their draining worker.
func TestTypeScriptSDKClients(t *testing.T) {
	node := nodeForSDKs(t)
	_, file, _, _ := runtime.Caller(0)
	dir := filepath.Join(filepath.Dir(file), "upstream")
	for _, pkg := range []string{"@modelcontextprotocol/sdk", "@modelcontextprotocol/client"} {
		if _, err := os.Stat(filepath.Join(dir, "node_modules", pkg, "package.json")); err != nil {
			t.Fatalf("%s is not installed under tests/upstream (%v): run make mcp-servers", pkg, err)
		}
	}
	upURL, _ := proctest.MustStartEverything(t)
	for _, rev := range []string{"2025-03-26", "2025-06-18", "2025-11-25", "2026-07-28"} {
		t.Run(rev, func(t *testing.T) {
			tsClientRun(t, node, filepath.Join(dir, "tsclient.mjs"), upURL, "streamablehttp", rev)
		})
	}
	// The same through an upstream of the sse transport (the reference
	// server's sse mode).
	sseURL, _ := proctest.MustStartEverythingSSE(t)
	t.Run("2025-11-25 over sse", func(t *testing.T) {
		tsClientRun(t, node, filepath.Join(dir, "tsclient.mjs"), sseURL, "sse", "2025-11-25")
	})
}

// nodeForSDKs returns the node on PATH, failing t with a clear message when
// there is none or it is older than minNode.
func nodeForSDKs(t *testing.T) string {
	t.Helper()
	node, err := exec.LookPath("node")
	if err != nil {
		t.Fatalf("Node.js is missing (no node on PATH): the TypeScript SDK clients need Node %d or later (make mcp-servers installs it)", minNode)
	}
	out, err := exec.Command(node, "--version").Output()
	if err != nil {
		t.Fatalf("%s --version: %v", node, err)
	}
	v := strings.TrimSpace(string(out))
	major, err := strconv.Atoi(strings.SplitN(strings.TrimPrefix(v, "v"), ".", 2)[0])
	if err != nil || major < minNode {
		t.Fatalf("%s is Node %s: the TypeScript SDK clients need Node %d or later (engines of @modelcontextprotocol/client 2.x)", node, v, minNode)
	}
	return node
}

// tsSummary is the script's SUMMARY line.
type tsSummary struct {
	Revision               string   `json:"revision"`
	SDK                    string   `json:"sdk"`
	Node                   string   `json:"node"`
	Negotiated             string   `json:"negotiated"`
	Tools                  int      `json:"tools"`
	InitializeRequests     int      `json:"initializeRequests"`
	DiscoverRequests       int      `json:"discoverRequests"`
	SessionIDs             int      `json:"sessionIds"`
	ProtocolVersionHeaders []string `json:"protocolVersionHeaders"`
	Progress               struct {
		First, Recycled, Final []float64
	} `json:"progress"`
	RecycledEventIDs int            `json:"recycledEventIds"`
	Resumes          int            `json:"resumes"`
	ResumesOfCall    int            `json:"resumesOfCall"`
	ResumeStatuses   []int          `json:"resumeStatuses"`
	FailedRequests   []string       `json:"failedRequests"`
	TransportErrors  []string       `json:"transportErrors"`
	MS               map[string]int `json:"ms"`
}

// tsClientRun runs the script for one revision against a gateway of its
// own, and drives its handshakes: HUP on its STREAMING line, and its last
// steps only once the workers it used have all exited.
func tsClientRun(t *testing.T, node, script, upURL, transport, rev string) {
	start := time.Now()
	// A quiet keep-alive connection keeps a draining worker alive as long
	// as the keep-alive timeout (worker.quietLife); 2 s rather than 5 s
	// shortens the wait for the old workers' exit below.
	g := serve(t, []string{"FEDERATION_TIMEOUT=30s"}, "--workers", "2", "--keep-alive", "2s")
	token := g.token()
	if code, body := httpDo(freshClient, "PUT", g.url("/admin/gateways/everything"), token,
		`{"url":"`+upURL+`","transport":"`+transport+`"}`); code != 200 ||
		!strings.Contains(body, `"everything-trigger-long-running-operation"`) {
		t.Fatalf("register: %d %s", code, body)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 45*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, script, "--url", g.url("/mcp"), "--token", token, "--revision", rev, "--timeout", "40")
	cmd.Dir = filepath.Dir(script)
	cmd.Env = append(os.Environ(), "NO_COLOR=1")
	// Pipes of our own: exec's would be closed by the Wait that
	// proctest runs as soon as the process exits, maybe before its last
	// line is read.
	outR, outW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	inR, inW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	stderr := &proctest.LogBuffer{}
	cmd.Stdin, cmd.Stdout, cmd.Stderr = inR, outW, stderr
	p := proctest.MustStart(t, cmd) // its group is killed at the end, whatever happens
	outW.Close()
	inR.Close()
	t.Cleanup(func() { inW.Close(); outR.Close() })

	lines := make(chan string)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(outR)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			lines <- sc.Text()
		}
	}()
	expect := func(prefix string, timeout time.Duration) string {
		t.Helper()
		select {
		case line, ok := <-lines:
			if !ok {
				code, _ := p.Wait(5 * time.Second)
				t.Fatalf("%s: the script ended (exit %d) before %s:\n%s", rev, code, prefix, stderr)
			}
			if !strings.HasPrefix(line, prefix) {
				t.Fatalf("%s: the script printed %q, want %s:\n%s", rev, line, prefix, stderr)
			}
			return line
		case <-time.After(timeout):
			t.Fatalf("%s: no %s from the script after %s:\n%s", rev, prefix, timeout, stderr)
		}
		return ""
	}
	say := func(what string) {
		t.Helper()
		if _, err := fmt.Fprintln(inW, what); err != nil {
			t.Fatalf("%s: write to the script: %v", rev, err)
		}
	}

	expect("READY-FOR-RECYCLE", 20*time.Second)
	var old []float64 // the workers serving now: the reload replaces them all
	for _, e := range g.Log.Events("worker ready") {
		if pid, ok := e["worker_pid"].(float64); ok {
			old = append(old, pid)
		}
	}
	if len(old) != 2 {
		t.Fatalf("%s: %d workers ready before the reload, want 2", rev, len(old))
	}
	say("go")

	expect("STREAMING", 10*time.Second)
	g.Signal(syscall.SIGHUP)
	g.MustWaitOutput(t, `"msg":"reload complete"`, 10*time.Second)

	expect("STREAM-DONE", 15*time.Second)
	// The old workers drain: a stream that cannot be resumed holds its
	// worker until it ends. Once both have exited, whatever the script does
	// next is served by the new workers.
	proctest.WaitFor(t, "the old workers exited", 15*time.Second, func() bool {
		n := 0
		for _, e := range g.Log.Events("worker exited") {
			if pid, ok := e["worker_pid"].(float64); ok && slices.Contains(old, pid) {
				n++
			}
		}
		return n == len(old)
	})
	say("go")

	var s tsSummary
	line := expect("SUMMARY ", 20*time.Second)
	if err := json.Unmarshal([]byte(strings.TrimPrefix(line, "SUMMARY ")), &s); err != nil {
		t.Fatalf("%s: summary %q: %v", rev, line, err)
	}
	if code, ok := p.Wait(10 * time.Second); !ok || code != 0 {
		t.Fatalf("%s: the script exited %d (done: %v):\n%s", rev, code, ok, stderr)
	}

	// What the script checked itself (it exits 1 otherwise) is checked again
	// here, from what it saw.
	if s.Revision != rev || s.Negotiated != rev {
		t.Errorf("%s: revision %q, negotiated %q", rev, s.Revision, s.Negotiated)
	}
	if !slices.Equal(s.ProtocolVersionHeaders, []string{rev}) {
		t.Errorf("%s: MCP-Protocol-Version headers sent: %v", rev, s.ProtocolVersionHeaders)
	}
	for what, got := range map[string][]float64{"first": s.Progress.First, "recycled": s.Progress.Recycled, "final": s.Progress.Final} {
		n := map[string]int{"first": 4, "recycled": 6, "final": 2}[what]
		want := make([]float64, n)
		for i := range want {
			want[i] = float64(i + 1)
		}
		if !slices.Equal(got, want) {
			t.Errorf("%s: %s streamed call: progress %v, want %v", rev, what, got, want)
		}
	}
	if len(s.FailedRequests) > 0 {
		t.Errorf("%s: HTTP requests that failed: %v", rev, s.FailedRequests)
	}
	if rev == "2026-07-28" {
		// Stateless: server/discover, then requests with _meta; no
		// initialize, no session, nothing to resume.
		if s.InitializeRequests != 0 || s.DiscoverRequests != 1 || s.SessionIDs != 0 || s.Resumes != 0 {
			t.Errorf("%s: initialize %d, server/discover %d, session ids %d, resumes %d; want 0, 1, 0, 0",
				rev, s.InitializeRequests, s.DiscoverRequests, s.SessionIDs, s.Resumes)
		}
	} else if s.InitializeRequests != 1 || s.SessionIDs != 1 {
		// One session for the whole run: the new workers know it.
		t.Errorf("%s: initialize %d times, %d session ids; want one session across the recycling", rev, s.InitializeRequests, s.SessionIDs)
	}
	switch rev {
	case "2025-11-25":
		// The draining worker ended the call's stream with a retry hint; the
		// SDK resumed it with GET and Last-Event-ID naming one of its events.
		if s.RecycledEventIDs == 0 || s.ResumesOfCall < 1 {
			t.Errorf("%s: the streamed call across the recycling was not resumed with GET and Last-Event-ID: "+
				"%d event ids, %d resumptions of it (%d GETs with Last-Event-ID, answered %v)",
				rev, s.RecycledEventIDs, s.ResumesOfCall, s.Resumes, s.ResumeStatuses)
		}
	default:
		// Not resumable: no event ids, and the stream ends on its own worker.
		if s.RecycledEventIDs != 0 || s.Resumes != 0 {
			t.Errorf("%s: %d event ids, %d GETs with Last-Event-ID; want none", rev, s.RecycledEventIDs, s.Resumes)
		}
	}
	t.Logf("%s: %s on Node %s: %d tools; resumed %d time(s) (%d GETs with Last-Event-ID); transport errors %v; script %v ms; run %s",
		rev, s.SDK, s.Node, s.Tools, s.ResumesOfCall, s.Resumes, s.TransportErrors, s.MS, time.Since(start).Round(time.Millisecond))
}
