package supervisor_test

import (
	"context"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/mcpgateway/mcpgateway/internal/proctest"
	"github.com/mcpgateway/mcpgateway/supervisor/protocol"
)

// testBinary is the testserver program, built once for all tests (with the
// race detector under `go test -race`, so that the master and worker
// processes themselves are checked).
var testBinary string

func TestMain(m *testing.M) {
	var args []string
	if raceEnabled {
		args = append(args, "-race")
	}
	os.Exit(proctest.BuildAndRun(m, &testBinary, "./internal/testserver", args...))
}

// server is one running testserver master, the leader of its own process
// group: its workers, and a new master it starts on USR2, are in the group.
type server struct {
	t    *testing.T
	p    *proctest.Proc
	cmd  *exec.Cmd
	addr string
	logs *logBuffer
	done <-chan struct{} // the master has exited and the output is closed
}

// logBuffer collects the output of all the server's processes: its JSON
// log lines and the race detector's reports.
type logBuffer struct{ *proctest.LogBuffer }

// find returns the log lines with this message, in the order written.
func (b *logBuffer) find(msg string) []map[string]any {
	var out []map[string]any
	for _, e := range b.Events(msg) {
		out = append(out, e)
	}
	return out
}

// start runs the testserver on an ephemeral port and waits until it is ready.
func start(t *testing.T, env []string, args ...string) *server {
	t.Helper()
	s := startNoWait(t, env, args...)
	s.ready()
	return s
}

func startNoWait(t *testing.T, env []string, args ...string) *server {
	t.Helper()
	cmd := exec.Command(testBinary, append([]string{"--bind", "127.0.0.1:0"}, args...)...)
	cmd.Env = append(os.Environ(), env...)
	return startCmd(t, cmd)
}

// startCmd starts cmd, a testserver master however it is run, as a server:
// in a process group of its own, its output collected. When the test ends
// the whole group is killed, a data race reported in its output fails the
// test (showing the report), and the output is logged if the test failed.
func startCmd(t *testing.T, cmd *exec.Cmd) *server {
	t.Helper()
	p := proctest.MustStart(t, cmd)
	return &server{t: t, p: p, cmd: cmd, logs: &logBuffer{p.Log}, done: p.Done()}
}

// startActivated starts the testserver as systemd's socket activation does:
// with a listening socket at fd 3 (LISTEN_FDS=1), and a --bind it must
// ignore. s.addr is the passed socket's address.
func startActivated(t *testing.T, args ...string) *server {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f, err := ln.(*net.TCPListener).File()
	ln.Close()
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	// LISTEN_PID must be the server's own pid: the shell's, which exec keeps.
	cmd := exec.Command("/bin/sh", append([]string{"-c",
		`LISTEN_PID=$$ LISTEN_FDS=1 LISTEN_FDNAMES=http exec "$0" --bind 127.0.0.1:1 "$@"`, testBinary}, args...)...)
	cmd.ExtraFiles = []*os.File{f}
	s := startCmd(t, cmd)
	s.addr = ln.Addr().String()
	return s
}

// ready waits for the master's "server ready" line, takes the first address
// it listens on as s.addr and returns the line.
func (s *server) ready() map[string]any {
	s.t.Helper()
	l := s.waitLog("server ready", 10*time.Second)
	s.addr = l["listening"].([]any)[0].(string)
	return l
}

// waitLog waits for a log line with this message and returns the latest.
func (s *server) waitLog(msg string, timeout time.Duration) map[string]any {
	s.t.Helper()
	return s.p.MustWaitEvent(s.t, msg, timeout)
}

func (s *server) signal(sig syscall.Signal) {
	s.t.Helper()
	if err := s.p.Signal(sig); err != nil {
		s.t.Fatal(err)
	}
}

// wait waits for the master to exit and its output to close, and returns
// its exit code.
func (s *server) wait(timeout time.Duration) int {
	s.t.Helper()
	return s.p.MustWait(s.t, timeout)
}

// table maps the master's status table, as `mcpgateway status` does.
func (s *server) table() *protocol.Table {
	s.t.Helper()
	tb, err := protocol.OpenMasterTable(s.p.Pid)
	if err != nil {
		s.t.Fatal(err)
	}
	s.t.Cleanup(func() { tb.Close() })
	return tb
}

// readyPids are the pids of workers in the ready state.
func readyPids(tb *protocol.Table) map[int]bool {
	out := map[int]bool{}
	for _, w := range tb.Snapshot().Workers {
		if w.State == protocol.StateReady {
			out[w.Pid] = true
		}
	}
	return out
}

// mostAtOnce is the most replacements for reason that the master had under
// way at once (asked for, not yet exited), in the order its log says.
func mostAtOnce(s *server, reason string) int {
	outstanding, most := 0, 0
	for _, l := range s.logs.Events("") {
		if l["reason"] != reason || l["proc"] != "master" {
			continue
		}
		switch l["msg"] {
		case "replacing worker":
			outstanding++
		case "worker exited":
			outstanding--
		}
		most = max(most, outstanding)
	}
	return most
}

func (s *server) url(path string) string { return "http://" + s.addr + path }

// client is a keep-alive client that never retries behind our back: POST
// requests are not replayable, so a connection the server drops shows up
// as an error instead of a silent second attempt.
func client(conns int) *http.Client { return proctest.KeepAliveClient(conns, 30*time.Second) }

func post(c *http.Client, url string) (int, string, error) {
	resp, err := c.Post(url, "text/plain", strings.NewReader("x"))
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body), err
}

// loadResult counts what a load run saw.
type loadResult struct {
	mu       sync.Mutex
	byBody   map[string]int
	byStatus map[int]int
	errors   []error
}

func newLoadResult() *loadResult {
	return &loadResult{byBody: map[string]int{}, byStatus: map[int]int{}}
}

// posting is a load call: one POST to url with c, recorded in r.
func (r *loadResult) posting(c *http.Client, url string) func(int) error {
	return func(int) error {
		r.record(post(c, url))
		return nil // recorded, every error with it
	}
}

// load sends n POST requests over conns keep-alive connections.
func load(url string, n, conns int) *loadResult {
	r := newLoadResult()
	c := client(conns)
	defer c.CloseIdleConnections()
	proctest.RunLoad(context.Background(), conns, n, r.posting(c, url))
	return r
}

// loadFresh sends n POST requests (n/conns on each of conns goroutines),
// each on a new connection.
func loadFresh(url string, n, conns int) *loadResult {
	r := newLoadResult()
	c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	proctest.RunLoad(context.Background(), conns, n/conns*conns, r.posting(c, url))
	return r
}

// keepLoading sends POST requests over conns keep-alive connections until
// the returned stop is called, which reports what the load saw.
func keepLoading(url string, conns int) (stop func() *loadResult) {
	r := newLoadResult()
	c := client(conns)
	l := proctest.StartLoad(context.Background(), conns, 0, r.posting(c, url))
	return func() *loadResult {
		l.Stop()
		c.CloseIdleConnections()
		return r
	}
}

// keepLoadingFresh is keepLoading with a new connection for every request:
// it sees what happens to connections the kernel routes while workers come
// and go.
func keepLoadingFresh(url string, conns int) (stop func() *loadResult) {
	r := newLoadResult()
	c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	l := proctest.StartLoad(context.Background(), conns, 0, r.posting(c, url))
	return func() *loadResult {
		l.Stop()
		return r
	}
}

func (r *loadResult) record(code int, body string, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if err != nil {
		r.errors = append(r.errors, err)
	} else {
		r.byStatus[code]++
		r.byBody[body]++
	}
}

// clean fails the test when the load saw any failure.
func (r *loadResult) clean(t *testing.T) int {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.errors) > 0 {
		t.Fatalf("%d failed requests, first: %v", len(r.errors), r.errors[0])
	}
	total := 0
	for code, n := range r.byStatus {
		if code != 200 {
			t.Fatalf("%d answers %d", n, code)
		}
		total += n
	}
	if total == 0 {
		t.Fatal("the load got no answer at all")
	}
	return total
}

// alive reports whether pid runs (a zombie does not).
func alive(pid int) bool { return proctest.Alive(pid) }

func waitFor(t *testing.T, what string, timeout time.Duration, cond func() bool) time.Duration {
	t.Helper()
	return proctest.WaitFor(t, what, timeout, cond)
}

// eachLayout runs a test in both socket layouts: one shared socket, and one
// SO_REUSEPORT socket per worker slot.
func eachLayout(t *testing.T, args []string, test func(t *testing.T, s *server)) {
	for _, layout := range []string{"shared", "reuse-port"} {
		t.Run(layout, func(t *testing.T) {
			a := args
			if layout == "reuse-port" {
				a = append(append([]string{}, args...), "--reuse-port")
			}
			test(t, start(t, nil, a...))
		})
	}
}
