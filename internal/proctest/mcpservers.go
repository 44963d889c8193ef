package proctest

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"time"
)

// MustStartEverything starts the reference MCP server "everything"
// (@modelcontextprotocol/server-everything from npm, installed under
// tests/upstream by make mcp-servers) over Streamable HTTP on a free port of
// 127.0.0.1, stopped at the end of the test. It returns its /mcp URL.
func MustStartEverything(t TB) (string, *Proc) {
	t.Helper()
	return startEverything(t, "streamableHttp", "listening on port", "/mcp")
}

// MustStartEverythingSSE starts the reference MCP server "everything" over
// the HTTP+SSE transport of 2024-11-05 (its sse mode) on a free port of
// 127.0.0.1, stopped at the end of the test. It returns the URL of its
// event stream (/sse); it names /message?sessionId=... as the endpoint.
func MustStartEverythingSSE(t TB) (string, *Proc) {
	t.Helper()
	return startEverything(t, "sse", "running on port", "/sse")
}

// startEverything runs the reference server in mode on a free port and
// waits for its ready line; it returns the URL of path.
func startEverything(t TB, mode, ready, path string) (string, *Proc) {
	t.Helper()
	port := MustFreePort(t)
	cmd := exec.Command(everythingBin(t), mode)
	cmd.Env = append(os.Environ(), fmt.Sprintf("PORT=%d", port))
	p := MustStart(t, cmd)
	p.MustWaitOutput(t, ready, 20*time.Second)
	return fmt.Sprintf("http://127.0.0.1:%d%s", port, path), p
}

// everythingBin is the reference server's command, installed by make
// mcp-servers.
func everythingBin(t TB) string {
	t.Helper()
	_, file, _, _ := runtime.Caller(0)
	bin := filepath.Join(filepath.Dir(file), "..", "..", "tests", "upstream", "node_modules", ".bin", "mcp-server-everything")
	if _, err := os.Stat(bin); err != nil {
		t.Fatalf("the reference MCP server is not installed (%v): run make mcp-servers", err)
	}
	return bin
}
