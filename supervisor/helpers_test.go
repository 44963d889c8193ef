package supervisor_test

import (
	"bytes"
	"encoding/json"
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

	"github.com/mcpgateway/mcpgateway/supervisor/protocol"
)

// testBinary is the testserver program, built once for all tests.
var testBinary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "mcpgw-supervisor-test")
	if err != nil {
		panic(err)
	}
	testBinary = filepath.Join(dir, "testserver")
	args := []string{"build", "-o", testBinary}
	if raceEnabled {
		args = append(args, "-race")
	}
	build := exec.Command("go", append(args, "./internal/testserver")...)
	build.Stderr = os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build testserver:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// server is one running testserver master.
type server struct {
	t    *testing.T
	cmd  *exec.Cmd
	addr string
	logs *logBuffer
	done chan struct{}
}

// logBuffer collects the JSON log lines of all the server's processes.
type logBuffer struct {
	mu      sync.Mutex
	lines   []map[string]any
	raw     bytes.Buffer
	races   bool // the race detector reported in some process
	raceOut bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if bytes.Contains(p, []byte("DATA RACE")) {
		b.races = true
	}
	if b.races && b.raceOut.Len() < 64<<10 {
		b.raceOut.Write(p) // the report is not JSON: keep it to show
	}
	b.raw.Write(p)
	for {
		line, err := b.raw.ReadBytes('\n')
		if err != nil {
			b.raw.Write(line) // incomplete: keep for later
			break
		}
		var m map[string]any
		if json.Unmarshal(line, &m) == nil {
			b.lines = append(b.lines, m)
		}
	}
	return len(p), nil
}

// find returns the log lines with this message.
func (b *logBuffer) find(msg string) []map[string]any {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []map[string]any
	for _, l := range b.lines {
		if l["msg"] == msg {
			out = append(out, l)
		}
	}
	return out
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	var sb strings.Builder
	for _, l := range b.lines {
		j, _ := json.Marshal(l)
		sb.Write(j)
		sb.WriteByte('\n')
	}
	return sb.String()
}

// start runs the testserver on an ephemeral port and waits until it is ready.
func start(t *testing.T, env []string, args ...string) *server {
	t.Helper()
	s := startNoWait(t, env, args...)
	s.waitLog("server ready", 10*time.Second)
	ready := s.logs.find("server ready")[0]
	s.addr = ready["listening"].([]any)[0].(string)
	return s
}

func startNoWait(t *testing.T, env []string, args ...string) *server {
	t.Helper()
	s := &server{t: t, logs: &logBuffer{}, done: make(chan struct{})}
	s.cmd = exec.Command(testBinary, append([]string{"--bind", "127.0.0.1:0"}, args...)...)
	s.cmd.Env = append(os.Environ(), env...)
	s.cmd.Stderr = s.logs
	s.cmd.Stdout = s.logs
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { s.cmd.Wait(); close(s.done) }()
	t.Cleanup(func() {
		// Whatever a test did, no process of it outlives it.
		syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL)
		<-s.done
		s.logs.mu.Lock()
		races := s.logs.races
		s.logs.mu.Unlock()
		if races {
			t.Errorf("the race detector reported a data race in the server's processes:\n%s", s.logs.raceOut.String())
		}
		if t.Failed() {
			t.Logf("server log:\n%s", s.logs)
		}
	})
	return s
}

func (s *server) waitLog(msg string, timeout time.Duration) map[string]any {
	s.t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if l := s.logs.find(msg); len(l) > 0 {
			return l[len(l)-1]
		}
		select {
		case <-s.done:
			if l := s.logs.find(msg); len(l) > 0 {
				return l[len(l)-1]
			}
			s.t.Fatalf("server exited before logging %q", msg)
		case <-time.After(5 * time.Millisecond):
		}
	}
	s.t.Fatalf("no %q in the log after %s", msg, timeout)
	return nil
}

func (s *server) signal(sig syscall.Signal) {
	s.t.Helper()
	if err := s.cmd.Process.Signal(sig); err != nil {
		s.t.Fatal(err)
	}
}

// wait waits for the master to exit and returns its exit code.
func (s *server) wait(timeout time.Duration) int {
	s.t.Helper()
	select {
	case <-s.done:
		return s.cmd.ProcessState.ExitCode()
	case <-time.After(timeout):
		s.t.Fatalf("master still running after %s", timeout)
		return -1
	}
}

// table maps the master's status table, as `mcpgateway status` does.
func (s *server) table() *protocol.Table {
	s.t.Helper()
	tb, err := protocol.OpenMasterTable(s.cmd.Process.Pid)
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

func (s *server) url(path string) string { return "http://" + s.addr + path }

// client is a keep-alive client that never retries behind our back: POST
// requests are not replayable, so a connection the server drops shows up
// as an error instead of a silent second attempt.
func client(conns int) *http.Client {
	return &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		MaxIdleConns: conns, MaxIdleConnsPerHost: conns, MaxConnsPerHost: conns,
		DialContext: (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
	}}
}

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

// load sends n POST requests over conns keep-alive connections.
func load(url string, n, conns int) *loadResult {
	r := newLoadResult()
	c := client(conns)
	defer c.CloseIdleConnections()
	jobs := make(chan struct{}, n)
	for i := 0; i < n; i++ {
		jobs <- struct{}{}
	}
	close(jobs)
	var wg sync.WaitGroup
	for i := 0; i < conns; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range jobs {
				r.record(post(c, url))
			}
		}()
	}
	wg.Wait()
	return r
}

// loadFresh sends n POST requests, each on a new connection.
func loadFresh(url string, n, conns int) *loadResult {
	r := newLoadResult()
	c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	var wg sync.WaitGroup
	for i := 0; i < conns; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := 0; j < n/conns; j++ {
				r.record(post(c, url))
			}
		}()
	}
	wg.Wait()
	return r
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

func alive(pid int) bool {
	// A zombie still answers kill(0); read its state instead.
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	f := strings.Fields(string(b))
	return len(f) > 2 && f[2] != "Z"
}

func waitFor(t *testing.T, what string, timeout time.Duration, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for time.Since(start) < timeout {
		if cond() {
			return time.Since(start)
		}
		time.Sleep(2 * time.Millisecond)
	}
	t.Fatalf("%s: not within %s", what, timeout)
	return 0
}

// keepLoading sends POST requests over conns keep-alive connections until
// the returned stop is called, which reports what the load saw.
func keepLoading(url string, conns int) (stop func() *loadResult) {
	r := newLoadResult()
	c := client(conns)
	done := make(chan struct{})
	var wg sync.WaitGroup
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
				r.record(post(c, url))
			}
		}()
	}
	return func() *loadResult {
		close(done)
		wg.Wait()
		c.CloseIdleConnections()
		return r
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
