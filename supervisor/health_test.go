package supervisor_test

import (
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mcpgateway/mcpgateway/supervisor"
	"github.com/mcpgateway/mcpgateway/supervisor/protocol"
)

// healthPort picks a free address for --health-bind.
func healthPort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// readyBody is the health port's /ready body.
type readyBody struct {
	Status   string
	Workers  struct{ Ready, Target int }
	Shedding int
	Database struct {
		Status     string
		AgeSeconds *float64 `json:"age_seconds"`
	}
	Reasons []string
}

// probe asks the health port once, on a fresh connection, within timeout.
func probe(hp, path string, timeout time.Duration) (int, string, time.Duration, error) {
	c := &http.Client{Timeout: timeout, Transport: &http.Transport{DisableKeepAlives: true}}
	begin := time.Now()
	resp, err := c.Get("http://" + hp + path)
	if err != nil {
		return 0, "", time.Since(begin), err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), time.Since(begin), err
}

func mustReady(t *testing.T, hp string) (int, readyBody) {
	t.Helper()
	code, body, _, err := probe(hp, "/ready", time.Second)
	if err != nil {
		t.Fatalf("/ready: %v", err)
	}
	var r readyBody
	if err := json.Unmarshal([]byte(body), &r); err != nil {
		t.Fatalf("/ready body is not JSON: %v: %s", err, body)
	}
	return code, r
}

// The health port is the master's: with every worker stopped (SIGSTOP, for
// less than the timeout) each of 50 probes of /health and of /ready, on a
// fresh connection, is answered within a second, and readiness holds: a
// worker that is merely slow to be scheduled is not a reason to leave the
// load balancer.
func TestHealthPortNeverWaitsForWorkers(t *testing.T) {
	hp := healthPort(t)
	s := start(t, nil, "--workers", "2", "--health-bind", hp, "--timeout", "30s")
	waitFor(t, "ready on the health port", 5*time.Second, func() bool { code, _, _, _ := probe(hp, "/ready", time.Second); return code == 200 })
	pids := readyPids(s.table())
	if len(pids) != 2 {
		t.Fatalf("ready workers: %v", pids)
	}
	for pid := range pids {
		if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
			t.Fatal(err)
		}
	}
	cont := func() {
		for pid := range pids {
			syscall.Kill(pid, syscall.SIGCONT)
		}
	}
	t.Cleanup(cont) // also when the test fails half-way
	var slowest time.Duration
	for i := 0; i < 50; i++ {
		for _, path := range []string{"/health", "/ready"} {
			code, body, took, err := probe(hp, path, time.Second)
			if err != nil {
				t.Fatalf("%s #%d with every worker stopped: %v (after %v)", path, i, err, took)
			}
			slowest = max(slowest, took)
			if path == "/ready" && code != 200 {
				t.Fatalf("/ready #%d with every worker stopped: %d %s", i, code, body)
			}
		}
	}
	t.Logf("100 probes with every worker stopped, the slowest in %v", slowest)
	cont()
	if code, r := mustReady(t, hp); code != 200 || r.Workers.Ready != 2 || r.Workers.Target != 2 || r.Database.Status != "unknown" {
		t.Fatalf("/ready after SIGCONT: %d %+v", code, r)
	}
}

// writableTable maps the master's status table read-write, as a worker
// maps its rows: the test then writes a worker's row as the worker's
// Info.ReportDatabase and shedder would.
func writableTable(t *testing.T, master int) *protocol.Table {
	t.Helper()
	dir := filepath.Join("/proc", strconv.Itoa(master), "fd")
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		target, err := os.Readlink(filepath.Join(dir, e.Name()))
		if err != nil || !strings.Contains(target, "memfd:mcpgateway-status") {
			continue
		}
		f, err := os.OpenFile(filepath.Join(dir, e.Name()), os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		tb, err := protocol.AttachTable(f, true)
		if err != nil {
			f.Close()
			t.Fatal(err)
		}
		t.Cleanup(func() { tb.Close() })
		return tb
	}
	t.Fatalf("master %d has no status table", master)
	return nil
}

// reportDatabase writes what worker.Info.ReportDatabase writes: the
// outcome, then its time.
func reportDatabase(r *protocol.Row, ok bool, at int64) {
	v := uint64(protocol.DBCheckFailed)
	if ok {
		v = protocol.DBCheckOK
	}
	r.Store(protocol.FDBCheck, v)
	r.Store(protocol.FDBCheckAt, uint64(at))
}

// The health port's readiness follows the latest database check of the
// server: 503 while it failed, whichever worker made it, 200 again once a
// later one passes; a worker that sheds is reported and never fails it.
func TestHealthPortReadyFollowsTheLatestDatabaseCheck(t *testing.T) {
	hp := healthPort(t)
	// A shutdown delay keeps the stop's "/ready stopping" up longer than the
	// probes below need: idle workers stop in milliseconds, and on a busy
	// machine the master was gone before a probe saw it (a CI failure).
	s := start(t, nil, "--workers", "2", "--health-bind", hp, "--shutdown-delay", "2s")
	waitFor(t, "ready on the health port", 5*time.Second, func() bool { code, _, _, _ := probe(hp, "/ready", time.Second); return code == 200 })
	tb := writableTable(t, s.p.Pid)
	var rows []*protocol.Row
	for _, w := range tb.Snapshot().Workers {
		if w.State == protocol.StateReady {
			rows = append(rows, tb.Row(w.Row))
		}
	}
	if len(rows) != 2 {
		t.Fatalf("ready workers: %d", len(rows))
	}
	now := protocol.Nanotime()
	reportDatabase(rows[0], true, now-int64(2*time.Second))
	reportDatabase(rows[1], true, now)
	waitFor(t, "the database check on the health port", time.Second, func() bool { _, r := mustReady(t, hp); return r.Database.Status == "ok" })
	if code, r := mustReady(t, hp); code != 200 || r.Status != "ready" || r.Database.AgeSeconds == nil || *r.Database.AgeSeconds > 1 || len(r.Reasons) != 0 {
		t.Fatalf("both checks passed: %d %+v", code, r)
	}

	// An older failure does not count: the latest check passed.
	reportDatabase(rows[0], false, now-int64(time.Second))
	time.Sleep(300 * time.Millisecond) // three ticks of the master's loop
	if code, r := mustReady(t, hp); code != 200 {
		t.Fatalf("an older check failed: %d %+v", code, r)
	}

	// The latest fails: 503, and the body says why.
	reportDatabase(rows[0], false, protocol.Nanotime())
	waitFor(t, "/ready failing", time.Second, func() bool { code, _ := mustReady(t, hp); return code == 503 })
	code, r := mustReady(t, hp)
	if r.Status != "unready" || r.Database.Status != "failed" || len(r.Reasons) != 1 || r.Reasons[0] != "the latest database check failed" || r.Workers.Ready != 2 {
		t.Fatalf("the latest check failed: %d %+v", code, r)
	}
	if code, body, _, _ := probe(hp, "/health", time.Second); code != 200 {
		t.Fatalf("/health is liveness, not the database: %d %s", code, body)
	}

	// The other worker's next check passes: ready again.
	reportDatabase(rows[1], true, protocol.Nanotime())
	waitFor(t, "/ready passing", time.Second, func() bool { code, _ := mustReady(t, hp); return code == 200 })

	// Shedding is reported, never a 503. (No request reaches the workers
	// here, so their shedders leave the word as written.)
	rows[0].Store(protocol.FShedding, 1)
	rows[1].Store(protocol.FShedding, 1)
	waitFor(t, "shedding reported", time.Second, func() bool { _, r := mustReady(t, hp); return r.Shedding == 2 })
	if code, r := mustReady(t, hp); code != 200 || r.Status != "ready" {
		t.Fatalf("every worker shedding: %d %+v", code, r)
	}

	// A check from the future (a corrupt row) is not "the latest" for ever.
	reportDatabase(rows[0], false, protocol.Nanotime()+int64(time.Hour))
	time.Sleep(300 * time.Millisecond)
	if code, r := mustReady(t, hp); code != 200 {
		t.Fatalf("a failure dated an hour ahead counted: %d %+v", code, r)
	}

	// Stopping: 503 with that reason at once.
	s.signal(syscall.SIGTERM)
	waitFor(t, "/ready stopping", time.Second, func() bool {
		code, body, _, err := probe(hp, "/ready", time.Second)
		return err == nil && code == 503 && strings.Contains(body, `"status":"stopping"`) && strings.Contains(body, "the server is stopping")
	})
	s.wait(10 * time.Second)
}

// ReadinessOf, on a table written by hand: which rows count, which check
// is the latest, and the body.
func TestReadinessOfTable(t *testing.T) {
	tb, err := protocol.CreateTable(8)
	if err != nil {
		t.Fatal(err)
	}
	defer tb.Close()
	h := tb.Header()
	h.Store(protocol.HWorkersTarget, 2)
	h.Store(protocol.HMaxRow, 5)
	now := protocol.Nanotime()
	row := func(i int, state uint64, shedding bool, check uint64, at int64) {
		r := tb.Row(i)
		r.Store(protocol.FPid, uint64(1000+i))
		r.Store(protocol.FState, state)
		if shedding {
			r.Store(protocol.FShedding, 1)
		}
		r.Store(protocol.FDBCheck, check)
		r.Store(protocol.FDBCheckAt, uint64(at))
	}
	if r := supervisor.ReadinessOf(tb); r.OK() || r.Status() != "unready" || !slices.Equal(r.Reasons(), []string{supervisor.ReasonNoWorker}) {
		t.Fatalf("no worker: %+v", r)
	}
	row(1, protocol.StateReady, false, protocol.DBCheckOK, now-int64(3*time.Second))
	row(2, protocol.StateRetiring, true, protocol.DBCheckOK, now-int64(time.Second))
	row(3, protocol.StateBooting, false, protocol.DBCheckFailed, now) // not serving: does not count
	row(4, protocol.StateDraining, true, protocol.DBCheckFailed, now) // not serving: does not count
	row(5, protocol.StateReady, false, 7, now)                        // not a check outcome
	row(6, protocol.StateReady, false, protocol.DBCheckFailed, now)   // beyond HMaxRow
	r := supervisor.ReadinessOf(tb)
	if !r.OK() || r.Ready != 3 || r.Target != 2 || r.Shedding != 1 || r.DBCheck != protocol.DBCheckOK || r.DBCheckAt != now-int64(time.Second) {
		t.Fatalf("ready: %+v", r)
	}
	if got, want := string(r.AppendJSON(nil, now)), `{"status":"ready","workers":{"ready":3,"target":2},"database":{"status":"ok","age_seconds":1.000},"shedding":1,"upstream_circuits_open":0,"reasons":[]}`; got != want {
		t.Fatalf("body:\n got %s\nwant %s", got, want)
	}
	row(1, protocol.StateReady, false, protocol.DBCheckFailed, now+int64(time.Hour)) // from the future: corrupt
	if r := supervisor.ReadinessOf(tb); !r.OK() {
		t.Fatalf("a check an hour ahead counted: %+v", r)
	}
	row(1, protocol.StateReady, false, protocol.DBCheckFailed, now)
	h.Store(protocol.HStopping, 1)
	r = supervisor.ReadinessOf(tb)
	if r.OK() || r.Status() != "stopping" || r.Database() != "failed" {
		t.Fatalf("stopping, database failed: %+v", r)
	}
	if got, want := string(r.AppendJSON(nil, now)), `{"status":"stopping","workers":{"ready":3,"target":2},"database":{"status":"failed","age_seconds":0.000},"shedding":1,"upstream_circuits_open":0,"reasons":["the server is stopping","the latest database check failed"]}`; got != want {
		t.Fatalf("body:\n got %s\nwant %s", got, want)
	}
	if got := string((supervisor.Readiness{}).AppendJSON(nil, now)); got != `{"status":"unready","workers":{"ready":0,"target":0},"database":{"status":"unknown"},"shedding":0,"upstream_circuits_open":0,"reasons":["no worker is ready"]}` {
		t.Fatalf("empty: %s", got)
	}
}
