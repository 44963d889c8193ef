package tests

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/mcpgateway/mcpgateway/internal/proctest"
)

// The official MCP conformance suite (@modelcontextprotocol/conformance,
// installed with the Node 22 it needs by make mcp-servers) against the real
// binary, two ways.
//
// The gateway's own endpoint, /mcp: every server scenario of the revisions
// served that needs no fixture tools of the suite's own example server (the
// fixture's tools are there too, but under the gateway's prefixed names). A
// check the suite marks untestable (it looks for tools such as
// test_missing_capability) is the only failure accepted.
//
// Federated: the suite's fixture server (the Go SDK's conformance
// everything-server) behind the gateway as an upstream, exposed one-to-one
// as a virtual server, and every scenario a spec revision's requirement set
// names run through /servers/{id}/mcp: the stateful fixture for 2025-11-25,
// the stateless one for 2026-07-28, each at its revision's wire. Every check
// of a scored scenario must pass; the not-scored ones (extensions, pending)
// are run and logged only, as the suite itself reports them.
//
// The suite runs without a token, so the gateway serves with
// AUTH_REQUIRED=false; what it needs registered (the tool with x-mcp-header
// annotations that http-custom-header-server-validation looks for, the
// upstreams and the virtual servers) is registered first, through the admin
// API of a run with authentication.
func TestConformanceSuite(t *testing.T) {
	start := time.Now()
	nodeBin, suite := conformanceSuite(t)

	// The fixture builds (~45 s cold, cached after) while the first run
	// starts; no build outlives the test.
	fixture := filepath.Join(t.TempDir(), "everything-server")
	var buildErr error
	built := make(chan struct{})
	go func() {
		defer close(built)
		buildErr = proctest.GoBuild(fixture, "github.com/modelcontextprotocol/go-sdk/conformance/everything-server")
	}()
	t.Cleanup(func() { <-built })

	dir := t.TempDir()
	port := proctest.MustFreePort(t)
	// Shedding what waits past --max-queue-delay (503) is the overload
	// tests' subject: here, on a busy machine, it would only fail a
	// scenario at random.
	args := []string{"serve", "--bind", fmt.Sprintf("127.0.0.1:%d", port), "--workers", "2", "--max-queue-delay", "0"}

	first := run(t, dir, baseEnv(dir), args...)
	first.port = port
	first.waitReady()
	token := first.token()
	schema := `{"type":"object","properties":{"region":{"type":"string","x-mcp-header":"Region"},` +
		`"count":{"type":"integer","x-mcp-header":"Count"}},"required":["region"]}`
	if code, body := httpDo(freshClient, "PUT", first.url("/admin/tools/regional_lookup"), token,
		`{"description":"a tool with header annotations","inputSchema":`+schema+`,"enabled":true}`); code != 200 {
		t.Fatalf("register the annotated tool: %d %s", code, body)
	}
	if <-built; buildErr != nil {
		t.Fatalf("build the conformance fixture: %v", buildErr)
	}
	sets := []conformanceSet{
		{revision: "2025-11-25", id: "conf11", url: startFixture(t, fixture, false)},
		{revision: "2026-07-28", id: "conf07", url: startFixture(t, fixture, true)},
	}
	for _, s := range sets {
		if code, body := httpDo(freshClient, "PUT", first.url("/admin/gateways/"+s.id), token,
			`{"url":"`+s.url+`"}`); code != 200 {
			t.Fatalf("register the %s fixture: %d %s", s.revision, code, body)
		}
		if code, body := httpDo(freshClient, "PUT", first.url("/admin/servers/"+s.id), token,
			`{"name":"conformance `+s.revision+`","gateways":["`+s.id+`"]}`); code != 200 {
			t.Fatalf("the %s virtual server: %d %s", s.revision, code, body)
		}
	}
	first.Signal(syscall.SIGTERM)
	if code := first.MustWait(t, 15*time.Second); code != 0 {
		t.Fatalf("first run: exit %d", code)
	}

	g := run(t, dir, baseEnv(dir, "AUTH_REQUIRED=false"), args...)
	g.port = port
	g.waitReady()

	// The three runs are independent: they go concurrently (t.Run from
	// goroutines, so that -parallel does not serialize them).
	var wg sync.WaitGroup
	wg.Add(1 + len(sets))
	go func() {
		defer wg.Done()
		t.Run("mcp", func(t *testing.T) { conformanceGatewayScenarios(t, nodeBin, suite, g.url("/mcp")) })
	}()
	for _, s := range sets {
		go func() {
			defer wg.Done()
			t.Run(s.revision, func(t *testing.T) {
				s.run(t, nodeBin, suite, g.url("/servers/"+s.id+"/mcp"))
			})
		}()
	}
	wg.Wait()
	t.Logf("took %s", time.Since(start).Round(100*time.Millisecond))
}

// conformanceSuite is the Node binary and the suite's CLI script installed
// by make mcp-servers.
func conformanceSuite(t *testing.T) (nodeBin, suite string) {
	t.Helper()
	_, file, _, _ := runtime.Caller(0)
	bin := filepath.Join(filepath.Dir(file), "upstream", "node_modules", ".bin")
	nodeBin, suite = filepath.Join(bin, "node"), filepath.Join(bin, "conformance")
	for _, f := range []string{nodeBin, suite} {
		if _, err := os.Stat(f); err != nil {
			t.Fatalf("the conformance suite is not installed (%v): run make mcp-servers", err)
		}
	}
	return nodeBin, suite
}

// startFixture starts the fixture server on a free port, stateless or not,
// and returns its URL once it accepts connections.
func startFixture(t *testing.T, bin string, stateless bool) string {
	t.Helper()
	addr := fmt.Sprintf("127.0.0.1:%d", proctest.MustFreePort(t))
	p := proctest.MustStart(t, exec.Command(bin, "-http", addr, fmt.Sprintf("-stateless=%t", stateless)))
	// It logs its line just before it listens.
	p.MustWaitOutput(t, "listening at", 15*time.Second)
	proctest.WaitFor(t, "the fixture at "+addr, 10*time.Second, func() bool {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
	return "http://" + addr + "/mcp"
}

// conformanceGatewayScenarios runs, one by one, the scenarios the gateway's
// own endpoint can serve.
func conformanceGatewayScenarios(t *testing.T, nodeBin, suite, url string) {
	for _, scenario := range []string{
		"server-initialize", "server-session-lifecycle", "logging-set-level", "ping", "tools-list",
		"server-sse-multiple-streams", "dns-rebinding-protection", // 2025-06-18, 2025-11-25
		"server-stateless", "caching", "http-header-validation", "http-custom-header-server-validation", // 2026-07-28
	} {
		results, _, out, err := runConformance(t, nodeBin, suite, time.Minute, "--url", url, "--scenario", scenario)
		if err != nil {
			t.Errorf("%s: %v", scenario, err)
			continue
		}
		checks, ok := results[scenario]
		if !ok {
			t.Errorf("%s: no checks written:\n%s", scenario, out)
			continue
		}
		passed := 0
		for _, c := range checks {
			switch {
			case c.Status == "SUCCESS":
				passed++
			case c.Status == "FAILURE" && !c.Details.Untestable:
				t.Errorf("%s: %s failed: %s", scenario, c.ID, c.ErrorMessage)
			}
		}
		if passed == 0 {
			t.Errorf("%s: no check passed", scenario)
		}
		t.Logf("%s: %d of %d checks passed", scenario, passed, len(checks))
	}
}

type conformanceCheck struct {
	ID           string `json:"id"`
	Status       string `json:"status"`
	ErrorMessage string `json:"errorMessage"`
	Details      struct {
		Untestable bool `json:"untestable"`
	} `json:"details"`
}

// runConformance runs `conformance server args...` in its own process group
// and reads the checks of every scenario it ran, by scenario, with its exit
// code and its output. The checks are read from the files --output-dir
// writes, <dir>/server-<scenario>-<timestamp>/checks.json: the output is no
// place for them, as a run of several scenarios prints only counts and
// Node cuts what it prints to a pipe at 64 KiB when it exits.
func runConformance(t *testing.T, nodeBin, suite string, timeout time.Duration, args ...string) (
	results map[string][]conformanceCheck, code int, out string, err error) {
	dir := t.TempDir()
	cmd := exec.Command(nodeBin, append([]string{suite, "server", "--output-dir", dir}, args...)...)
	cmd.Dir = t.TempDir() // nothing else it might write lands in the tree
	p, err := proctest.Start(cmd)
	if err != nil {
		return nil, 0, "", fmt.Errorf("start the suite: %w", err)
	}
	defer p.Kill()
	code, ok := p.Wait(timeout)
	if !ok {
		return nil, 0, "", fmt.Errorf("the suite still ran after %s:\n%s", timeout, p.Log)
	}
	results, err = readConformanceResults(dir)
	return results, code, p.Log.String(), err
}

// conformanceSet is one spec revision's requirement set, run through the
// virtual server id exposing the fixture upstream at url.
type conformanceSet struct {
	revision, id, url string
}

// run runs `conformance server --requirements` against url and judges every
// scenario it ran. The scored ones are the requirement set's `server` list,
// the rule the suite's own exit code follows; everything else it runs is
// from its not_scored list.
func (s conformanceSet) run(t *testing.T, nodeBin, suite, url string) {
	req, err := readRequirements(filepath.Join(filepath.Dir(suite), "..", "@modelcontextprotocol", "conformance",
		"requirements", s.revision+".yaml"))
	if err != nil {
		t.Fatal(err)
	}
	// Through the gateway, one upstream call per request at least: a
	// generous timeout for a run of a few seconds.
	results, code, out, err := runConformance(t, nodeBin, suite, 4*time.Minute,
		"--url", url, "--requirements", s.revision)
	if err != nil {
		t.Fatal(err)
	}
	scoredFailed := false
	var missing []string
	for _, scenario := range req.scored {
		checks, ok := results[scenario]
		if !ok {
			missing = append(missing, scenario)
			continue
		}
		passed := 0
		for _, c := range checks {
			switch c.Status {
			case "SUCCESS":
				passed++
			case "FAILURE":
				t.Errorf("%s: %s failed: %s", scenario, c.ID, c.ErrorMessage)
				scoredFailed = true
			}
		}
		if passed == 0 {
			t.Errorf("%s: no check passed", scenario)
		}
	}
	if len(missing) > 0 {
		// The suite writes no checks for a scenario that throws.
		t.Errorf("no checks written for %s (not run, or crashed):\n%s",
			strings.Join(missing, ", "), conformanceSummary(out))
		scoredFailed = true
	}
	var others []string
	for scenario := range results {
		if !req.isScored(scenario) {
			others = append(others, scenario)
		}
	}
	sort.Strings(others)
	for _, scenario := range others {
		passed, failed := 0, 0
		for _, c := range results[scenario] {
			switch c.Status {
			case "SUCCESS":
				passed++
			case "FAILURE":
				failed++
			}
		}
		reason := req.notScored[scenario]
		if reason == "" {
			reason = "not in the requirement set"
		}
		t.Logf("%s (not scored, %s): %d passed, %d failed", scenario, reason, passed, failed)
	}
	// The suite's exit code says whether a scored scenario failed: a
	// disagreement means the results were not all read.
	if (code != 0) != scoredFailed {
		t.Errorf("the suite exited %d, but its written results say a scored scenario failed: %t:\n%s",
			code, scoredFailed, conformanceSummary(out))
	}
	t.Logf("%d scored scenarios, %d not scored", len(req.scored), len(others))
}

// conformanceRequirements is the server leg of a requirement set.
type conformanceRequirements struct {
	scored    []string
	notScored map[string]string // scenario: reason
}

func (r conformanceRequirements) isScored(scenario string) bool {
	for _, s := range r.scored {
		if s == scenario {
			return true
		}
	}
	return false
}

// readRequirements reads requirements/<revision>.yaml of the suite.
func readRequirements(file string) (conformanceRequirements, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return conformanceRequirements{}, fmt.Errorf("read the requirement set: %w", err)
	}
	var doc struct {
		Server    []string `json:"server"`
		NotScored []struct {
			Scenario, Leg, Reason string
		} `json:"not_scored"`
	}
	if err := yaml.Unmarshal(b, &doc); err != nil {
		return conformanceRequirements{}, fmt.Errorf("parse %s: %w", file, err)
	}
	if len(doc.Server) == 0 {
		return conformanceRequirements{}, fmt.Errorf("%s requires no server scenario", file)
	}
	r := conformanceRequirements{scored: doc.Server, notScored: map[string]string{}}
	for _, n := range doc.NotScored {
		if n.Leg == "server" {
			r.notScored[n.Scenario] = n.Reason
		}
	}
	return r, nil
}

// resultDir is the name the suite gives a server scenario's results:
// server-<scenario>-<ISO timestamp with : and . as ->.
var resultDir = regexp.MustCompile(`^server-(.+)-\d{4}-\d{2}-\d{2}T[\d-]+Z$`)

// readConformanceResults reads every scenario's checks.json under dir.
func readConformanceResults(dir string) (map[string][]conformanceCheck, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("read the results: %w", err)
	}
	results := map[string][]conformanceCheck{}
	for _, e := range entries {
		m := resultDir.FindStringSubmatch(e.Name())
		if !e.IsDir() || m == nil {
			return nil, fmt.Errorf("unexpected entry %q in the results", e.Name())
		}
		b, err := os.ReadFile(filepath.Join(dir, e.Name(), "checks.json"))
		if errors.Is(err, os.ErrNotExist) {
			continue // the scenario threw after its directory was made
		}
		if err != nil {
			return nil, fmt.Errorf("read the results of %s: %w", m[1], err)
		}
		var checks []conformanceCheck
		if err := json.Unmarshal(b, &checks); err != nil {
			return nil, fmt.Errorf("parse the results of %s: %w", m[1], err)
		}
		if _, dup := results[m[1]]; dup {
			return nil, fmt.Errorf("two results for %s", m[1])
		}
		results[m[1]] = checks
	}
	return results, nil
}

// conformanceSummary is the end of the suite's output, from its summary
// (one line per scenario), or the whole output when it has none.
func conformanceSummary(out string) string {
	if i := strings.Index(out, "=== SUMMARY ==="); i >= 0 {
		return out[i:]
	}
	return out
}
