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
	_, file, _, _ := runtime.Caller(0)
	bin := filepath.Join(filepath.Dir(file), "..", "..", "tests", "upstream", "node_modules", ".bin", "mcp-server-everything")
	if _, err := os.Stat(bin); err != nil {
		t.Fatalf("the reference MCP server is not installed (%v): run make mcp-servers", err)
	}
	port := MustFreePort(t)
	cmd := exec.Command(bin, "streamableHttp")
	cmd.Env = append(os.Environ(), fmt.Sprintf("PORT=%d", port))
	p := MustStart(t, cmd)
	p.MustWaitOutput(t, "listening on port", 20*time.Second)
	return fmt.Sprintf("http://127.0.0.1:%d/mcp", port), p
}
