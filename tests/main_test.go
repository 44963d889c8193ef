// Package tests drives the real mcpgateway binary: it is built once, started
// on 127.0.0.1 with real settings, sent real traffic and real signals, and
// every process it starts is killed at the end.
package tests

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "mcpgw-tests")
	if err != nil {
		panic(err)
	}
	binary = filepath.Join(dir, "mcpgateway")
	build := exec.Command("go", "build", "-o", binary, "../cmd/mcpgateway")
	build.Stderr = os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build mcpgateway:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// freePort returns a port that was free a moment ago.
func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// portFree reports whether nothing listens on the port.
func portFree(port int) bool {
	l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		return false
	}
	l.Close()
	return true
}

// syncBuffer is an io.Writer safe for the process's two streams.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// gateway is one running `mcpgateway serve`.
type gateway struct {
	t    *testing.T
	cmd  *exec.Cmd
	dir  string
	port int
	out  *syncBuffer
	done chan struct{}
}

// baseEnv is a clean environment: nothing from the developer's shell leaks in.
func baseEnv(dir string, extra ...string) []string {
	env := []string{"PATH=" + os.Getenv("PATH"), "HOME=" + dir,
		"JWT_SECRET_KEY=test-secret", "DATABASE_URL=sqlite:///" + filepath.Join(dir, "mcp.db")}
	return append(env, extra...)
}

// run starts the binary in its own directory and process group.
func run(t *testing.T, dir string, env []string, args ...string) *gateway {
	t.Helper()
	g := &gateway{t: t, dir: dir, out: &syncBuffer{}, done: make(chan struct{})}
	g.cmd = exec.Command(binary, args...)
	g.cmd.Dir = dir
	g.cmd.Env = env
	g.cmd.Stdout, g.cmd.Stderr = g.out, g.out
	g.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := g.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { g.cmd.Wait(); close(g.done) }()
	t.Cleanup(func() {
		syscall.Kill(-g.cmd.Process.Pid, syscall.SIGKILL)
		<-g.done
		if t.Failed() {
			t.Logf("output:\n%s", g.out)
		}
	})
	return g
}

// serve starts a gateway on a free port and waits until it is ready.
func serve(t *testing.T, extraEnv []string, args ...string) *gateway {
	t.Helper()
	dir := t.TempDir()
	port := freePort(t)
	args = append([]string{"serve", "--bind", fmt.Sprintf("127.0.0.1:%d", port)}, args...)
	g := run(t, dir, baseEnv(dir, extraEnv...), args...)
	g.port = port
	deadline := time.Now().Add(15 * time.Second)
	for !strings.Contains(g.out.String(), `"msg":"server ready"`) {
		select {
		case <-g.done:
			t.Fatalf("gateway exited before it was ready")
		default:
		}
		if time.Now().After(deadline) {
			t.Fatal("gateway not ready after 15s")
		}
		time.Sleep(10 * time.Millisecond)
	}
	return g
}

func (g *gateway) url(path string) string { return fmt.Sprintf("http://127.0.0.1:%d%s", g.port, path) }

// wait returns the exit code, failing after the timeout.
func (g *gateway) wait(timeout time.Duration) int {
	g.t.Helper()
	select {
	case <-g.done:
		return g.cmd.ProcessState.ExitCode()
	case <-time.After(timeout):
		g.t.Fatalf("still running after %s", timeout)
		return -1
	}
}

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
