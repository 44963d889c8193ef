// Command smoke is the CI smoke test of a built mcpgateway binary (make smoke).
//
// It starts `mcpgateway serve` in a temporary directory (SQLite, its own
// JWT secret, nothing read from the developer's .env) on a free 127.0.0.1
// port, waits for the master's "server ready" line, checks /health, /ready,
// /metrics, one convert_time call with a token minted by `mcpgateway token`,
// and a 401 without one; runs a short keep-alive load in which every body is
// decoded and checked to be a successful convert_time result (and hey with
// the guide's payload when hey is installed); prints `mcpgateway status`;
// then stops the server with TERM and checks exit status 0, a clean stop in
// the log, no error lines, no process left and the pidfile removed.
//
// It exits non-zero on any failure and kills every process it started on
// every exit path, including its own interruption.
package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/mcpgateway/mcpgateway/internal/proctest"
)

var (
	binFlag     = flag.String("bin", "bin/mcpgateway", "the mcpgateway binary to test")
	payloadFlag = flag.String("payload", "tests/hey/payload.json", "the guide's convert_time payload")
	requests    = flag.Int("n", 2000, "requests in the load phase")
	conns       = flag.Int("c", 50, "concurrent keep-alive connections in the load phase")
	workers     = flag.Int("workers", 2, "worker processes")
	heyMode     = flag.String("hey", "auto", "also run hey with the guide's shape: auto (when installed), on, off")
	budget      = flag.Duration("timeout", 30*time.Second, "the whole smoke test must finish within this")
)

const (
	secret = "smoke-test-secret"
	email  = "admin@example.com"
)

func main() {
	flag.Parse()
	start := time.Now()
	s := &smoke{}
	code := 0
	if err := s.run(); err != nil {
		fmt.Fprintf(os.Stderr, "\nsmoke: FAIL: %v\n", err)
		if s.proc != nil {
			fmt.Fprintf(os.Stderr, "\n--- server output ---\n%s--- end of server output ---\n", s.proc.Log)
		}
		code = 1
	}
	s.cleanup()
	if code == 0 {
		if took := time.Since(start); took > *budget {
			fmt.Fprintf(os.Stderr, "smoke: FAIL: took %s, over the %s budget\n", took.Round(time.Millisecond), *budget)
			code = 1
		} else {
			fmt.Printf("smoke: PASS in %s\n", took.Round(time.Millisecond))
		}
	}
	os.Exit(code)
}

type smoke struct {
	bin, dir, base string
	env            []string
	payload        []byte
	proc           *proctest.Proc // the master, leader of the server's process group
	cleanOnce      sync.Once
}

func step(format string, args ...any) { fmt.Printf("smoke: "+format+"\n", args...) }

func (s *smoke) run() error {
	ctx, cancel := context.WithTimeout(context.Background(), *budget)
	defer cancel()

	// An interrupted smoke test still kills the server it started.
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	go func() {
		sig := <-sigs
		fmt.Fprintf(os.Stderr, "smoke: interrupted by %s, stopping the server\n", sig)
		s.cleanup()
		os.Exit(1)
	}()

	var err error
	if s.bin, err = filepath.Abs(*binFlag); err != nil {
		return err
	}
	if st, err := os.Stat(s.bin); err != nil || st.IsDir() {
		return fmt.Errorf("no binary at %s (run make build first)", s.bin)
	}
	if s.payload, err = os.ReadFile(*payloadFlag); err != nil {
		return fmt.Errorf("the guide's payload: %w", err)
	}
	if s.dir, err = os.MkdirTemp("", "mcpgateway-smoke-"); err != nil {
		return err
	}
	// A clean environment: the developer's .env and shell settings stay out.
	s.env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + s.dir, "HTTP_SERVER=gunicorn",
		"JWT_SECRET_KEY=" + secret, "DATABASE_URL=sqlite:///" + filepath.Join(s.dir, "mcp.db"),
		"XDG_RUNTIME_DIR=" + s.dir, // the control socket goes with the rest
		"PLATFORM_ADMIN_EMAIL=" + email}

	if err := s.start(ctx); err != nil {
		return err
	}
	if err := s.checkEndpoints(); err != nil {
		return err
	}
	token, err := s.mcpgateway("token", "-u", email, "-e", "10")
	if err != nil {
		return err
	}
	token = strings.TrimSpace(token)
	if err := s.checkOneCall(token); err != nil {
		return err
	}
	if err := s.load(ctx, token); err != nil {
		return err
	}
	if err := s.hey(ctx, token); err != nil {
		return err
	}
	if err := s.checkMetrics(); err != nil {
		return err
	}
	if out, err := s.mcpgateway("status", "--pidfile", s.pidfile()); err != nil {
		return err
	} else {
		fmt.Print(indent(out))
	}
	return s.stop()
}

func (s *smoke) pidfile() string { return filepath.Join(s.dir, "mcpgateway.pid") }

// start runs the server in its own process group on 127.0.0.1:0 and waits
// for "server ready", which names the port the kernel gave.
func (s *smoke) start(ctx context.Context) error {
	cmd := exec.Command(s.bin, "serve", "--bind", "127.0.0.1:0", "--workers", strconv.Itoa(*workers),
		"--pidfile", s.pidfile(), "--graceful-timeout", "5")
	cmd.Dir, cmd.Env = s.dir, s.env
	// Own process group (proctest), so cleanup reaches the workers too; and
	// the kernel kills the master if this program dies without cleaning up.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	p, err := proctest.Start(cmd)
	if err != nil {
		return fmt.Errorf("start %s: %w", s.bin, err)
	}
	s.proc = p
	step("started mcpgateway serve (pid %d, %d workers) in %s", p.Pid, *workers, s.dir)

	ready := regexp.MustCompile(`"msg":"server ready".*"listening":\["127\.0\.0\.1:(\d+)"\]`)
	began := time.Now()
	wait, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	var m []string
	err = p.Await(wait, func() bool { m = ready.FindStringSubmatch(p.Log.String()); return m != nil })
	switch {
	case errors.Is(err, proctest.ErrExited):
		return fmt.Errorf("the server exited before it was ready (%s)", cmd.ProcessState)
	case ctx.Err() != nil:
		return errors.New(`no "server ready" line within the time budget`)
	case err != nil:
		return errors.New(`no "server ready" line within 15s`)
	}
	s.base = "http://127.0.0.1:" + m[1]
	step("server ready on %s after %s", s.base, time.Since(began).Round(time.Millisecond))
	return nil
}

var client = &http.Client{Timeout: 5 * time.Second}

func (s *smoke) get(path string) (int, http.Header, []byte, error) {
	resp, err := client.Get(s.base + path)
	if err != nil {
		return 0, nil, nil, fmt.Errorf("GET %s: %w", path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, b, err
}

func (s *smoke) checkEndpoints() error {
	code, _, body, err := s.get("/health")
	if err != nil {
		return err
	}
	var health struct{ Status string }
	if code != 200 || json.Unmarshal(body, &health) != nil || health.Status != "healthy" {
		return fmt.Errorf("GET /health: want 200 {\"status\":\"healthy\"}, got %d %s", code, body)
	}
	step("GET /health: 200 %s", body)

	code, _, body, err = s.get("/ready")
	if err != nil {
		return err
	}
	var ready struct {
		Status string
		Items  []struct {
			Name string
			OK   bool
		} `json:"status_items"`
	}
	if code != 200 || json.Unmarshal(body, &ready) != nil || ready.Status != "ready" || len(ready.Items) == 0 {
		return fmt.Errorf("GET /ready: want 200 and status ready, got %d %s", code, body)
	}
	for _, it := range ready.Items {
		if !it.OK {
			return fmt.Errorf("GET /ready: %s is not ok: %s", it.Name, body)
		}
	}
	step("GET /ready: 200 %s", body)
	return nil
}

// checkOneCall makes the guide's call once, and once without a token.
func (s *smoke) checkOneCall(token string) error {
	code, body, err := s.post(client, token)
	if err != nil {
		return err
	}
	if err := checkConvertTime(code, body); err != nil {
		return fmt.Errorf("POST /rpc convert_time: %w", err)
	}
	step("POST /rpc convert_time: 200 %s", body)

	code, body, err = s.post(client, "")
	if err != nil {
		return err
	}
	if code != 401 || !json.Valid(body) {
		return fmt.Errorf("POST /rpc without a token: want 401 with a JSON body, got %d %s", code, body)
	}
	step("POST /rpc without a token: 401 %s", body)
	return nil
}

func (s *smoke) post(c *http.Client, token string) (int, []byte, error) {
	req, err := http.NewRequest("POST", s.base+"/rpc", bytes.NewReader(s.payload))
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := c.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, b, err
}

// checkConvertTime accepts only the JSON-RPC answer of a convert_time call
// that ran: Berlin 09:00 is Dublin 08:00 all year (both follow EU summer time).
func checkConvertTime(code int, body []byte) error {
	if code != 200 {
		return fmt.Errorf("status %d: %s", code, body)
	}
	var resp struct {
		JSONRPC string          `json:"jsonrpc"`
		ID      json.RawMessage `json:"id"`
		Error   json.RawMessage `json:"error"`
		Result  *struct {
			IsError bool `json:"isError"`
			Content []struct {
				Type string `json:"type"`
				Text string `json:"text"`
			} `json:"content"`
		} `json:"result"`
	}
	if err := json.Unmarshal(body, &resp); err != nil {
		return fmt.Errorf("not JSON (%v): %s", err, body)
	}
	switch {
	case resp.JSONRPC != "2.0" || string(resp.ID) != "1":
		return fmt.Errorf("want jsonrpc 2.0 and id 1: %s", body)
	case resp.Error != nil || resp.Result == nil:
		return fmt.Errorf("no result: %s", body)
	case resp.Result.IsError || len(resp.Result.Content) != 1 || resp.Result.Content[0].Type != "text":
		return fmt.Errorf("the tool did not succeed: %s", body)
	}
	var out struct {
		Source struct{ Timezone, Datetime string }
		Target struct{ Timezone, Datetime string }
		Diff   string `json:"time_difference"`
	}
	if err := json.Unmarshal([]byte(resp.Result.Content[0].Text), &out); err != nil {
		return fmt.Errorf("tool text is not JSON (%v): %s", err, body)
	}
	if out.Source.Timezone != "Europe/Berlin" || out.Target.Timezone != "Europe/Dublin" ||
		!strings.Contains(out.Source.Datetime, "T09:00:00") || !strings.Contains(out.Target.Datetime, "T08:00:00") ||
		out.Diff != "-1.0h" {
		return fmt.Errorf("wrong conversion: %s", resp.Result.Content[0].Text)
	}
	return nil
}

// load sends the payload over keep-alive connections and checks every body.
func (s *smoke) load(ctx context.Context, token string) error {
	c := proctest.KeepAliveClient(*conns, 10*time.Second)
	c.Transport.(*http.Transport).DisableCompression = true
	defer c.CloseIdleConnections()
	lat := make([][]time.Duration, *conns) // per connection
	r := proctest.RunLoad(ctx, *conns, *requests, func(conn int) error {
		t0 := time.Now()
		code, body, err := s.post(c, token)
		lat[conn] = append(lat[conn], time.Since(t0))
		if err != nil {
			return err
		}
		return checkConvertTime(code, body)
	})
	if ctx.Err() != nil {
		return fmt.Errorf("load: out of time after %d of %d requests", r.Calls, *requests)
	}
	if r.Failed > 0 {
		var first []string
		for _, err := range r.Errors[:min(5, len(r.Errors))] {
			first = append(first, err.Error())
		}
		return fmt.Errorf("load: %d of %d requests failed; first: %s", r.Failed, *requests, strings.Join(first, "; "))
	}
	all := slices.Concat(lat...)
	slices.Sort(all)
	step("load: %d/%d convert_time results verified, %d connections, %.0f req/s, p50 %s, p99 %s",
		r.OK, *requests, *conns, float64(*requests)/r.Took.Seconds(),
		all[len(all)/2].Round(time.Microsecond), all[len(all)*99/100].Round(time.Microsecond))
	return nil
}

// hey runs the guide's load test shape (tests/hey.sh) when hey is there; hey
// shows no bodies, so only its status distribution is checked.
func (s *smoke) hey(ctx context.Context, token string) error {
	path, err := exec.LookPath("hey")
	switch {
	case *heyMode == "off":
		return nil
	case err != nil && *heyMode == "on":
		return errors.New("hey is not installed (make tools), and -hey=on")
	case err != nil:
		step("hey: not installed, skipped (make tools installs it)")
		return nil
	}
	n := *requests / 2
	cmd := exec.CommandContext(ctx, path, "-n", strconv.Itoa(n), "-c", strconv.Itoa(*conns), "-m", "POST",
		"-T", "application/json", "-H", "Authorization: Bearer "+token, "-D", *payloadFlag, s.base+"/rpc")
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("hey: %v\n%s", err, out)
	}
	text := string(out)
	_, dist, _ := strings.Cut(text, "Status code distribution:")
	codes := regexp.MustCompile(`\[(\d+)\]\s+(\d+) responses`).FindAllStringSubmatch(dist, -1)
	if len(codes) != 1 || codes[0][1] != "200" || codes[0][2] != strconv.Itoa(n) || strings.Contains(text, "Error distribution") {
		return fmt.Errorf("hey: want %d responses, all 200, and no errors:\n%s", n, text)
	}
	rps := regexp.MustCompile(`Requests/sec:\s+([\d.]+)`).FindStringSubmatch(text)
	if rps == nil {
		return fmt.Errorf("hey: no Requests/sec in its output:\n%s", text)
	}
	step("hey -n %d -c %d (the guide's shape): all 200, %s req/s", n, *conns, rps[1])
	return nil
}

// checkMetrics: the whole server's counters saw the traffic, and no 5xx.
func (s *smoke) checkMetrics() error {
	code, _, body, err := s.get("/metrics")
	if err != nil {
		return err
	}
	if code != 200 {
		return fmt.Errorf("GET /metrics: %d %s", code, body)
	}
	value := func(series string) (float64, bool) {
		sc := bufio.NewScanner(bytes.NewReader(body))
		for sc.Scan() {
			if rest, ok := strings.CutPrefix(sc.Text(), series+" "); ok {
				v, err := strconv.ParseFloat(strings.TrimSpace(rest), 64)
				return v, err == nil
			}
		}
		return 0, false
	}
	ok2xx, found := value(`mcpgateway_http_requests_total{code="2xx"}`)
	if !found || ok2xx < float64(*requests) {
		return fmt.Errorf("GET /metrics: want mcpgateway_http_requests_total{code=\"2xx\"} >= %d, got %v (found %v)", *requests, ok2xx, found)
	}
	if v, found := value(`mcpgateway_http_requests_total{code="5xx"}`); found && v != 0 {
		return fmt.Errorf("GET /metrics: %v requests answered 5xx", v)
	}
	step("GET /metrics: %.0f requests answered 2xx, none 5xx", ok2xx)
	return nil
}

// mcpgateway runs a short command of the binary with the server's settings.
func (s *smoke) mcpgateway(args ...string) (string, error) {
	cmd := exec.Command(s.bin, args...)
	cmd.Dir, cmd.Env = s.dir, s.env
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("mcpgateway %s: %v: %s", strings.Join(args, " "), err, stderr.String())
	}
	return string(out), nil
}

// stop sends TERM and checks a clean, complete stop.
func (s *smoke) stop() error {
	p := s.proc
	if err := p.Signal(syscall.SIGTERM); err != nil {
		return fmt.Errorf("TERM: %w", err)
	}
	began := time.Now()
	code, ok := p.Wait(15 * time.Second)
	if !ok {
		return errors.New("the server did not stop within 15s of TERM")
	}
	if code != 0 {
		return fmt.Errorf("exit status %d after TERM (%s)", code, p.Cmd.ProcessState)
	}
	out := p.Log.String()
	if !strings.Contains(out, `"msg":"master stopped"`) {
		return errors.New(`no "master stopped" line after TERM`)
	}
	for _, line := range strings.Split(out, "\n") {
		if strings.Contains(line, `"level":"error"`) || strings.Contains(line, `"level":"fatal"`) || strings.Contains(line, "panic:") {
			return fmt.Errorf("error in the server log: %s", line)
		}
	}
	if n := strings.Count(out, `"msg":"worker exited"`); n < *workers {
		return fmt.Errorf("want %d worker exits in the log, got %d", *workers, n)
	}
	// Every worker is gone with its master: nothing is left in the group.
	if p.GroupAlive() {
		return errors.New("processes of the server are still running after it exited")
	}
	if _, err := os.Stat(s.pidfile()); !os.IsNotExist(err) {
		return errors.New("the pidfile was left behind")
	}
	if c, err := net.DialTimeout("tcp", strings.TrimPrefix(s.base, "http://"), time.Second); err == nil {
		c.Close()
		return errors.New("the port still accepts connections after the stop")
	}
	step("TERM: exit 0 after %s, clean stop, no process left", time.Since(began).Round(time.Millisecond))
	return nil
}

// cleanup kills whatever is left of the server and removes the directory.
func (s *smoke) cleanup() {
	s.cleanOnce.Do(func() {
		if s.proc != nil {
			s.proc.Kill()
		}
		if s.dir != "" {
			os.RemoveAll(s.dir)
		}
	})
}

func indent(s string) string {
	var b strings.Builder
	for _, line := range strings.Split(strings.TrimRight(s, "\n"), "\n") {
		b.WriteString("    " + line + "\n")
	}
	return b.String()
}
