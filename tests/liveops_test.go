package tests

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// One continuous keep-alive load of 50 connections across HUP, TTIN, TTOU
// and a USR2 upgrade to a new binary followed by WINCH and QUIT of the old
// master: every answer a successful convert_time, and the worker count and
// the serving binary change as asked.
func TestLiveOperationsUnderOneLoadDropNothing(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "mcpgateway")
	copyFile(t, binary, bin)
	upgraded := filepath.Join(t.TempDir(), "mcpgateway-v2")
	build := exec.Command("go", "build", "-ldflags", "-X main.version=upgraded-v2", "-o", upgraded, "../cmd/mcpgateway")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build the new binary: %v\n%s", err, out)
	}

	port := freePort(t)
	g := &gateway{t: t, dir: dir, port: port, out: &syncBuffer{}, done: make(chan struct{})}
	conf := filepath.Join(dir, "gunicorn.conf.go") // the file HUP re-reads; a --workers flag would outrank it
	os.WriteFile(conf, []byte("//go:build ignore\n\npackage main\n\nconst Workers = 2\n"), 0o644)
	g.cmd = exec.Command(bin, "serve", "--bind", fmt.Sprintf("127.0.0.1:%d", port), "--pidfile", "gw.pid")
	g.cmd.Dir, g.cmd.Env = dir, baseEnv(dir)
	g.cmd.Stdout, g.cmd.Stderr = g.out, g.out
	g.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true} // the new master joins the group: cleanup kills both
	if err := g.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { g.cmd.Process.Wait(); close(g.done) }()
	t.Cleanup(func() {
		syscall.Kill(-g.cmd.Process.Pid, syscall.SIGKILL)
		if t.Failed() {
			t.Logf("output:\n%s", g.out)
		}
	})
	waitOutput(t, g, `"msg":"server ready"`, 15*time.Second)
	token := g.token()
	readyWorkers := func(pid int) int {
		cmd := exec.Command(bin, "status", "--pid", fmt.Sprint(pid))
		out, _ := cmd.Output()
		return strings.Count(string(out), " ready ")
	}
	waitWorkers := func(pid, n int) {
		t.Helper()
		deadline := time.Now().Add(15 * time.Second)
		for readyWorkers(pid) != n {
			if time.Now().After(deadline) {
				t.Fatalf("master %d: want %d ready workers, have %d", pid, n, readyWorkers(pid))
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	old := g.cmd.Process.Pid

	stop := keepCalling(g.url("/rpc"), token, 50)

	waitWorkers(old, 2)
	os.WriteFile(conf, []byte("//go:build ignore\n\npackage main\n\nconst Workers = 3\n"), 0o644)
	g.cmd.Process.Signal(syscall.SIGHUP)
	waitOutput(t, g, `"msg":"reload complete"`, 15*time.Second)
	waitWorkers(old, 3)
	g.cmd.Process.Signal(syscall.SIGTTIN)
	waitWorkers(old, 4)
	g.cmd.Process.Signal(syscall.SIGTTOU)
	waitWorkers(old, 3)

	if err := os.Rename(upgraded, bin); err != nil { // as a package manager replaces a running binary
		t.Fatal(err)
	}
	g.cmd.Process.Signal(syscall.SIGUSR2)
	waitOutput(t, g, `"msg":"upgrade: new master started"`, 10*time.Second)
	newMaster := 0
	if m := regexp.MustCompile(`"new_master":(\d+)`).FindStringSubmatch(g.out.String()); m != nil {
		fmt.Sscan(m[1], &newMaster)
	}
	waitWorkers(newMaster, 3) // it read gunicorn.conf.go too
	g.cmd.Process.Signal(syscall.SIGWINCH)
	waitWorkers(old, 0)
	time.Sleep(200 * time.Millisecond)
	g.cmd.Process.Signal(syscall.SIGQUIT)
	select {
	case <-g.done:
	case <-time.After(10 * time.Second):
		t.Fatal("the old master did not exit on QUIT")
	}
	time.Sleep(300 * time.Millisecond)
	answered, failures := stop()
	if len(failures) > 0 {
		t.Fatalf("%d of %d calls failed across the operations; first: %s", len(failures), answered+len(failures), failures[0])
	}
	t.Logf("%d calls across HUP, TTIN, TTOU, USR2+WINCH+QUIT: none failed", answered)

	req, _ := http.NewRequest("GET", g.url("/version"), nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(body), "upgraded-v2") {
		t.Fatalf("the new binary does not serve: /version says %s", body)
	}
	syscall.Kill(newMaster, syscall.SIGTERM)
}

// keepCalling sends the seed convert_time call over conns keep-alive
// connections until stop, which returns how many succeeded and what failed.
func keepCalling(url, token string, conns int) (stop func() (int, []string)) {
	var mu sync.Mutex
	var ok int
	var failures []string
	done := make(chan struct{})
	var wg sync.WaitGroup
	client := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: conns, MaxConnsPerHost: conns}}
	for i := 0; i < conns; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-done:
					return
				default:
				}
				failure := seedCall(client, url, token)
				mu.Lock()
				if failure == "" {
					ok++
				} else {
					failures = append(failures, failure)
				}
				mu.Unlock()
			}
		}()
	}
	return func() (int, []string) {
		close(done)
		wg.Wait()
		client.CloseIdleConnections()
		return ok, failures
	}
}

// seedCall makes one POST (never retried by Go's client) and checks the answer.
func seedCall(c *http.Client, url, token string) string {
	req, _ := http.NewRequest("POST", url, strings.NewReader(seedPayload))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := c.Do(req)
	if err != nil {
		return err.Error()
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return err.Error()
	}
	var r struct {
		Result struct {
			IsError bool `json:"isError"`
		} `json:"result"`
		Error any `json:"error"`
	}
	if resp.StatusCode != 200 || json.Unmarshal(body, &r) != nil || r.Error != nil || r.Result.IsError {
		return fmt.Sprintf("%d %s", resp.StatusCode, body)
	}
	return ""
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, 0o755); err != nil {
		t.Fatal(err)
	}
}
