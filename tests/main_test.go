// Package tests drives the real mcpgateway binary: it is built once, started
// on 127.0.0.1 with real settings, sent real traffic and real signals, and
// every process it starts is killed at the end.
package tests

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mcpgateway/mcpgateway/internal/proctest"
)

var binary string

func TestMain(m *testing.M) { os.Exit(proctest.BuildAndRun(m, &binary, "../cmd/mcpgateway")) }

// gateway is one running command of the binary (`mcpgateway serve` mostly),
// the leader of its own process group: its workers and any new master it
// starts are in the group, and all of them are killed at the end.
type gateway struct {
	*proctest.Proc
	t    *testing.T
	dir  string
	port int
}

// testSecret is the tests' JWT key: long enough for the master to accept on
// any address (a weak key is refused unless every bind is loopback).
const testSecret = "test-secret-0123456789abcdef0123456789"

// baseEnv is a clean environment: nothing from the developer's shell leaks in.
func baseEnv(dir string, extra ...string) []string {
	env := []string{"PATH=" + os.Getenv("PATH"), "HOME=" + dir,
		"JWT_SECRET_KEY=" + testSecret, "DATABASE_URL=sqlite:///" + filepath.Join(dir, "mcp.db"),
		// The default control socket lands in the test's directory, not in
		// /tmp, where a server killed at cleanup would leave it.
		"XDG_RUNTIME_DIR=" + dir}
	return append(env, extra...)
}

// run starts the binary in its own directory and process group.
func run(t *testing.T, dir string, env []string, args ...string) *gateway {
	t.Helper()
	return runBinary(t, binary, dir, env, args...)
}

// runBinary is run with another binary than the one built for the tests.
func runBinary(t *testing.T, bin, dir string, env []string, args ...string) *gateway {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Dir, cmd.Env = dir, env
	return &gateway{Proc: proctest.MustStart(t, cmd), t: t, dir: dir}
}

// serve starts a gateway on a free port and waits until it is ready.
func serve(t *testing.T, extraEnv []string, args ...string) *gateway {
	t.Helper()
	dir := t.TempDir()
	port := proctest.MustFreePort(t)
	args = append([]string{"serve", "--bind", fmt.Sprintf("127.0.0.1:%d", port)}, args...)
	g := run(t, dir, baseEnv(dir, extraEnv...), args...)
	g.port = port
	g.waitReady()
	return g
}

// waitReady waits for the master's "server ready" line.
func (g *gateway) waitReady() {
	g.t.Helper()
	switch err := g.WaitOutput(`"msg":"server ready"`, 15*time.Second); {
	case errors.Is(err, proctest.ErrExited):
		g.t.Fatalf("the server exited before it was ready")
	case err != nil:
		g.t.Fatal("not ready after 15s")
	}
}

func (g *gateway) url(path string) string { return fmt.Sprintf("http://127.0.0.1:%d%s", g.port, path) }

// token mints a token with the binary itself, as a user would.
func (g *gateway) token() string {
	g.t.Helper()
	cmd := exec.Command(binary, "token", "-u", "admin@example.com", "-e", "60")
	cmd.Dir = g.dir
	cmd.Env = baseEnv(g.dir)
	out, err := cmd.Output()
	if err != nil {
		g.t.Fatalf("mcpgateway token: %v", err)
	}
	return strings.TrimSpace(string(out))
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// refusedBeforeBinding checks the output of a gateway (in dir, told to bind
// port) that refused its configuration: it names every want, and nothing
// was started, bound or created.
func refusedBeforeBinding(t *testing.T, g *gateway, port int, want []string) {
	t.Helper()
	out := g.Log.String()
	for _, w := range want {
		if !strings.Contains(out, w) {
			t.Errorf("error does not mention %q:\n%s", w, out)
		}
	}
	if strings.Contains(out, "master starting") || !proctest.PortFree(port) {
		t.Errorf("something was bound or started:\n%s", out)
	}
	if _, err := os.Stat(filepath.Join(g.dir, "mcp.db")); err == nil {
		t.Error("the database was created for a configuration that was refused")
	}
}
