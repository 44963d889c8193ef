package tests

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mcpgateway/mcpgateway/internal/proctest"
)

// HUP re-reads gunicorn.conf.go: a good file rolls the workers to it, a
// broken one is refused with file and line while the old workers serve.
func TestHUPReadsGunicornConfGo(t *testing.T) {
	g := serve(t, nil, "--pidfile", "gw.pid")
	conf := filepath.Join(g.dir, "gunicorn.conf.go")
	os.WriteFile(conf, []byte("//go:build ignore\n\npackage main\n\nconst Workers = 3\n"), 0o644)
	g.Signal(syscall.SIGHUP)
	g.MustWaitOutput(t, `"msg":"reload complete","proc":"master","pid":`, 10*time.Second)
	if !strings.Contains(g.Log.String(), `"msg":"reload complete"`) || !strings.Contains(g.Log.String(), `"workers":3`) {
		t.Fatalf("reload to 3 workers not seen")
	}
	status := func() ([]byte, error) {
		cmd := exec.Command(binary, "status", "--pidfile", "gw.pid")
		cmd.Dir = g.dir
		cmd.Env = baseEnv(g.dir)
		return cmd.Output()
	}
	out, err := status()
	if err != nil {
		t.Fatalf("mcpgateway status: %v", err)
	}
	if n := strings.Count(string(out), " ready "); n != 3 {
		t.Fatalf("status shows %d ready workers, want 3:\n%s", n, out)
	}

	os.WriteFile(conf, []byte("//go:build ignore\n\npackage main\n\nconst (\n\tWorkers = 2\n\tTimeout = \"never\"\n)\n"), 0o644)
	g.Signal(syscall.SIGHUP)
	g.MustWaitOutput(t, "reload refused", 10*time.Second)
	if !strings.Contains(g.Log.String(), "gunicorn.conf.go:7") {
		t.Fatalf("refusal does not name the file and line:\n%s", g.Log)
	}
	time.Sleep(200 * time.Millisecond)
	if code, body := get(t, g.url("/health")); code != 200 {
		t.Fatalf("not serving after a refused reload: %d %s", code, body)
	}
	out, _ = status()
	if n := strings.Count(string(out), " ready "); n != 3 {
		t.Fatalf("after a refused reload status shows %d ready workers, want the same 3:\n%s", n, out)
	}
}

// USR1 reopens the log file, as logrotate expects.
func TestUSR1ReopensTheLogFile(t *testing.T) {
	dir := t.TempDir()
	logPath := filepath.Join(dir, "error.log")
	g := run(t, dir, baseEnv(dir), "serve", "--bind", "127.0.0.1:0", "--workers", "1", "--error-logfile", logPath)
	if _, ok := proctest.Poll(10*time.Second, 10*time.Millisecond, func() bool {
		b, _ := os.ReadFile(logPath)
		return strings.Contains(string(b), "server ready")
	}); !ok {
		t.Fatal("no server ready in the log file after 10s")
	}
	os.Rename(logPath, logPath+".1")
	g.Signal(syscall.SIGUSR1)
	time.Sleep(300 * time.Millisecond)
	g.Signal(syscall.SIGTERM)
	g.MustWait(t, 10*time.Second)
	b, err := os.ReadFile(logPath)
	if err != nil {
		t.Fatalf("no new log file after USR1: %v", err)
	}
	for _, want := range []string{`"msg":"master stopped"`, `"proc":"worker"`} {
		if !strings.Contains(string(b), want) {
			t.Fatalf("new log file lacks %s:\n%s", want, b)
		}
	}
	old, _ := os.ReadFile(logPath + ".1")
	if strings.Contains(string(old), "master stopped") {
		t.Fatal("the rotated file was still written after USR1")
	}
}
