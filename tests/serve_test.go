package tests

import (
	"io"
	"net/http"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"
)

const seedPayload = `{"jsonrpc":"2.0","id":1,"method":"convert_time","params":{"source_timezone":"Europe/Berlin","target_timezone":"Europe/Dublin","time":"09:00"}}`

func rpcCall(t *testing.T, url, token, body string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest("POST", url, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestServeAnswersTheGuidesPayloadAndStopsCleanly(t *testing.T) {
	g := serve(t, nil, "--workers", "2")
	if code, body := get(t, g.url("/health")); code != 200 || !strings.Contains(body, "healthy") {
		t.Fatalf("/health: %d %s", code, body)
	}
	if code, body := get(t, g.url("/ready")); code != 200 || !strings.Contains(body, `"ready"`) {
		t.Fatalf("/ready: %d %s", code, body)
	}
	tok := g.token()
	code, body := rpcCall(t, g.url("/rpc"), tok, seedPayload)
	if code != 200 || !strings.Contains(body, `"isError":false`) || !strings.Contains(body, `time_difference`) {
		t.Fatalf("convert_time: %d %s", code, body)
	}
	if code, _ := rpcCall(t, g.url("/rpc"), "", seedPayload); code != 401 {
		t.Fatalf("no token: want 401, got %d", code)
	}
	g.Signal(syscall.SIGTERM)
	if code := g.MustWait(t, 10*time.Second); code != 0 {
		t.Fatalf("exit status %d after TERM", code)
	}
	if !strings.Contains(g.Log.String(), `"msg":"master stopped"`) {
		t.Fatal("no clean stop in the log")
	}
}

func TestAccessLogWhenEnabled(t *testing.T) {
	g := serve(t, []string{"DISABLE_ACCESS_LOG=false"}, "--workers", "1")
	get(t, g.url("/health"))
	get(t, g.url("/nowhere"))
	time.Sleep(100 * time.Millisecond)
	out := g.Log.String()
	if n := strings.Count(out, `"msg":"request"`); n != 2 {
		t.Fatalf("want 2 access lines, got %d:\n%s", n, out)
	}
	if !strings.Contains(out, `"path":"/nowhere","status":404`) {
		t.Fatalf("access line lacks path and status:\n%s", out)
	}
	// Off by default.
	g2 := serve(t, nil, "--workers", "1")
	get(t, g2.url("/health"))
	time.Sleep(100 * time.Millisecond)
	if strings.Contains(g2.Log.String(), `"msg":"request"`) {
		t.Fatal("access log written although DISABLE_ACCESS_LOG defaults to true")
	}
}

func TestPidfileWrittenAndRemoved(t *testing.T) {
	dir := t.TempDir()
	pidfile := dir + "/gw.pid"
	g := serve(t, nil, "--workers", "1", "--pidfile", pidfile)
	b, err := os.ReadFile(pidfile)
	if err != nil || strings.TrimSpace(string(b)) == "" {
		t.Fatalf("pidfile: %q %v", b, err)
	}
	g.Signal(syscall.SIGTERM)
	g.MustWait(t, 10*time.Second)
	if _, err := os.Stat(pidfile); !os.IsNotExist(err) {
		t.Fatal("pidfile left behind after a clean stop")
	}
}

func TestLogLevelWarningHidesInfo(t *testing.T) {
	dir := t.TempDir()
	g := run(t, dir, baseEnv(dir, "GUNICORN_WORKERS=1"), "serve", "--bind", "127.0.0.1:0", "--log-level", "warning")
	time.Sleep(1500 * time.Millisecond)
	g.Signal(syscall.SIGTERM)
	if code := g.MustWait(t, 10*time.Second); code != 0 {
		t.Fatalf("exit %d", code)
	}
	if out := g.Log.String(); strings.Contains(out, `"level":"info"`) {
		t.Fatalf("info lines at --log-level warning:\n%s", out)
	}
}
