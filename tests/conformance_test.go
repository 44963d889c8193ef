package tests

import (
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mcpgateway/mcpgateway/internal/proctest"
)

// The official MCP conformance suite (@modelcontextprotocol/conformance,
// installed with the Node 22 it needs by make mcp-servers) against the real
// binary: every server scenario of the revisions served that needs no
// fixture tools of the suite's own example server. A check the suite marks
// untestable (it looks for tools such as test_missing_capability) is the
// only failure accepted. The suite runs without a token, so the gateway
// serves with AUTH_REQUIRED=false; the tool with x-mcp-header annotations
// that http-custom-header-server-validation looks for is registered first,
// through the admin API of a run with authentication.
func TestConformanceSuite(t *testing.T) {
	_, file, _, _ := runtime.Caller(0)
	bin := filepath.Join(filepath.Dir(file), "upstream", "node_modules", ".bin")
	dir := t.TempDir()
	port := proctest.MustFreePort(t)
	args := []string{"serve", "--bind", fmt.Sprintf("127.0.0.1:%d", port), "--workers", "2"}

	first := run(t, dir, baseEnv(dir), args...)
	first.port = port
	first.waitReady()
	schema := `{"type":"object","properties":{"region":{"type":"string","x-mcp-header":"Region"},` +
		`"count":{"type":"integer","x-mcp-header":"Count"}},"required":["region"]}`
	if code, body := httpDo(freshClient, "PUT", first.url("/admin/tools/regional_lookup"), first.token(),
		`{"description":"a tool with header annotations","inputSchema":`+schema+`,"enabled":true}`); code != 200 {
		t.Fatalf("register the annotated tool: %d %s", code, body)
	}
	first.Signal(syscall.SIGTERM)
	if code := first.MustWait(t, 15*time.Second); code != 0 {
		t.Fatalf("first run: exit %d", code)
	}

	g := run(t, dir, baseEnv(dir, "AUTH_REQUIRED=false"), args...)
	g.port = port
	g.waitReady()
	for _, scenario := range []string{
		"server-initialize", "server-session-lifecycle", "logging-set-level", "ping", "tools-list",
		"server-sse-multiple-streams", "dns-rebinding-protection", // 2025-06-18, 2025-11-25
		"server-stateless", "caching", "http-header-validation", "http-custom-header-server-validation", // 2026-07-28
	} {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		cmd := exec.CommandContext(ctx, filepath.Join(bin, "node"), filepath.Join(bin, "conformance"),
			"server", "--url", g.url("/mcp"), "--scenario", scenario, "--verbose")
		out, _ := cmd.Output() // the exit status follows the failures, read below
		cancel()
		checks, err := conformanceChecks(out)
		if err != nil {
			t.Errorf("%s: %v\n%s", scenario, err, out)
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

// conformanceChecks reads the JSON array of checks that --verbose prints
// after its first line.
func conformanceChecks(out []byte) ([]conformanceCheck, error) {
	i := strings.IndexByte(string(out), '[')
	if i < 0 {
		return nil, fmt.Errorf("no checks in the output")
	}
	var checks []conformanceCheck
	if err := json.NewDecoder(strings.NewReader(string(out[i:]))).Decode(&checks); err != nil {
		return nil, fmt.Errorf("read the checks: %w", err)
	}
	return checks, nil
}
