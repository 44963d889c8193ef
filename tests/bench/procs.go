package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/mcpgateway/mcpgateway/internal/proctest"
)

// harness is one bench run: its temporary directory, binaries, servers and
// results.
type harness struct {
	ctx  context.Context
	c    *config
	root string
	tmp  string

	gwBin, plainBin string
	testBin         string // supervisor/internal/testserver, for the overload
	payload         []byte
	payloadPath     string
	machine         machine

	mu      sync.Mutex
	servers []*server
	seq     int

	pg        *pgDatabase
	redisKeys string // CACHE_PREFIX of this run's Redis keys, deleted at the end

	quietBudget time.Duration // time left for waiting for a quiet machine

	rows         []row
	runs         []runRecord
	overloadRuns []ovRun
	errors       []string
	elapsed      time.Duration
}

type machine struct {
	NProc     int    `json:"nproc"`
	CPU       string `json:"cpu"`
	Kernel    string `json:"kernel"`
	GoVersion string `json:"go"`
	Commit    string `json:"commit"`
	Dirty     bool   `json:"dirty"`
}

func newHarness(ctx context.Context, c *config, root string) (*harness, error) {
	tmp, err := os.MkdirTemp("", "mcpgw-bench-")
	if err != nil {
		return nil, err
	}
	h := &harness{ctx: ctx, c: c, root: root, tmp: tmp}
	h.payloadPath = filepath.Join(root, "tests", "hey", "payload.json")
	if h.payload, err = os.ReadFile(h.payloadPath); err != nil {
		os.RemoveAll(tmp)
		return nil, err
	}
	h.machine = readMachine(root)
	h.redisKeys = fmt.Sprintf("mcpgw-bench-%d-%d:", os.Getpid(), time.Now().Unix())
	return h, nil
}

func (h *harness) logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, format+"\n", args...)
}

func (h *harness) vlogf(format string, args ...any) {
	if h.c.verbose {
		h.logf(format, args...)
	}
}

func (h *harness) failed(scenario string, err error) {
	h.errors = append(h.errors, scenario+": "+err.Error())
	h.add(row{Scenario: scenario, Measure: "scenario failed", Text: err.Error(), Result: "FAIL"})
}

// build compiles the gateway (as `make build` does) and the plain server
// with the same flags, so that the two differ only in their code.
func (h *harness) build() error {
	h.plainBin = filepath.Join(h.tmp, "plain")
	targets := [][2]string{{h.plainBin, "./tests/bench/plain"}}
	if h.c.selected("overload") {
		h.testBin = filepath.Join(h.tmp, "testserver")
		targets = append(targets, [2]string{h.testBin, "./supervisor/internal/testserver"})
	}
	if h.c.bin != "" {
		abs, err := filepath.Abs(h.c.bin)
		if err != nil {
			return err
		}
		h.gwBin = abs
	} else {
		h.gwBin = filepath.Join(h.tmp, "mcpgateway")
		targets = append(targets, [2]string{h.gwBin, "./cmd/mcpgateway"})
	}
	for _, t := range targets {
		h.logf("bench: go build %s", t[1])
		cmd := exec.CommandContext(h.ctx, "go", "build", "-trimpath", "-ldflags", "-s -w -X main.version=bench", "-o", t[0], t[1])
		cmd.Dir = h.root
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("go build %s: %v\n%s", t[1], err, out)
		}
	}
	return nil
}

func readMachine(root string) machine {
	m := machine{NProc: runtime.NumCPU(), GoVersion: runtime.Version()}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPU = strings.TrimSpace(v)
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = "Linux " + strings.TrimSpace(string(b))
	}
	if out, err := exec.Command("git", "-C", root, "rev-parse", "--short=12", "HEAD").Output(); err == nil {
		m.Commit = strings.TrimSpace(string(out))
	}
	if out, err := exec.Command("git", "-C", root, "status", "--porcelain", "--untracked-files=no").Output(); err == nil {
		m.Dirty = len(bytes.TrimSpace(out)) > 0
	}
	if out, err := exec.Command("git", "-C", root, "status", "--porcelain").Output(); err == nil && !m.Dirty {
		m.Dirty = len(bytes.TrimSpace(out)) > 0 // untracked sources count too
	}
	return m
}

// backend is a database and cache configuration.
type backend struct {
	Name string // shown in the table
	Env  []string
}

func (h *harness) sqliteBackend(cache string) backend {
	h.seq++
	db := filepath.Join(h.tmp, fmt.Sprintf("bench%d.db", h.seq))
	return backend{
		Name: "SQLite, CACHE_TYPE=" + cache,
		Env:  []string{"DATABASE_URL=sqlite:///" + db, "CACHE_TYPE=" + cache},
	}
}

// server is one server process this bench started: the gateway's master
// (its workers are its children) or the plain server.
type server struct {
	h       *harness
	name    string // "gateway" or "plain"
	gateway bool
	addr    string
	dir     string
	env     []string
	logPath string
	proc    *sessProc // leader of the server's session and process group
	pin     string    // taskset -c CPUS for the server's processes; "": any core
	bare    bool      // not an rpc server (testserver): no token, no payload check
	health  string    // the master's health port (--health-bind), if any
	jwt     string
	script  string // wrk script posting the payload with this server's token
	expect  expected
}

// baseEnv is the environment of every server: nothing inherited but PATH
// and HOME, so the caller's GUNICORN_* and the like change nothing.
func baseEnv() []string {
	return []string{
		"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME"),
		"HTTP_SERVER=gunicorn",
		"JWT_SECRET_KEY=bench-" + strconv.Itoa(os.Getpid()) + "-secret-key-of-32-bytes-or-more",
		"DISABLE_ACCESS_LOG=true",
		"PLATFORM_ADMIN_EMAIL=admin@example.com",
		"LOG_LEVEL=info",
	}
}

// startGateway starts `mcpgateway serve` with 2 workers and args, and waits
// until both workers are ready.
func (h *harness) startGateway(be backend, args ...string) (*server, error) {
	s, err := h.newServer("gateway", be)
	if err != nil {
		return nil, err
	}
	s.gateway = true
	argv := append(append([]string{"serve", "--workers", "2", "--bind", s.addr}, args...), h.c.gwArgs...)
	if err := s.start(h.gwBin, argv...); err != nil {
		return nil, err
	}
	return s, s.ready(2)
}

// startPlain starts the plain fasthttp server on the same settings.
func (h *harness) startPlain(be backend) (*server, error) {
	s, err := h.newServer("plain", be)
	if err != nil {
		return nil, err
	}
	argv := []string{"-addr", s.addr}
	if h.c.pprofPlain != "" {
		argv = append(argv, "-pprof", h.c.pprofPlain)
	}
	if err := s.start(h.plainBin, argv...); err != nil {
		return nil, err
	}
	return s, s.ready(0)
}

func (h *harness) newServer(name string, be backend) (*server, error) {
	h.mu.Lock()
	h.seq++
	n := h.seq
	h.mu.Unlock()
	dir := filepath.Join(h.tmp, fmt.Sprintf("%s%d", name, n))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	port, err := proctest.FreePort()
	if err != nil {
		return nil, err
	}
	env := append(baseEnv(), be.Env...)
	env = append(env, "XDG_RUNTIME_DIR="+dir) // the control socket goes with the rest
	return &server{h: h, name: name, addr: "127.0.0.1:" + strconv.Itoa(port), dir: dir, env: env,
		logPath: filepath.Join(dir, "server.log")}, nil
}

func (s *server) start(bin string, args ...string) error {
	logf, err := os.Create(s.logPath)
	if err != nil {
		return err
	}
	defer logf.Close() // the server has its own copy
	cmd := exec.Command(bin, args...)
	if s.pin != "" {
		cmd = exec.Command("taskset", append([]string{"-c", s.pin, bin}, args...)...) // taskset execs bin: same pid
	}
	cmd.Dir, cmd.Env = s.dir, s.env
	cmd.Stdout, cmd.Stderr = logf, logf
	// Its own session (so its own CFS autogroup: with autogrouping on, the
	// CPU is shared between sessions first, and a server in this program's
	// session would share one group's slice with it) and so its own process
	// group, so that stop reaches the workers too; killed with this program
	// even if it dies without cleaning up.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	p, err := startSession(cmd)
	if err != nil {
		return err
	}
	s.proc = p
	s.h.mu.Lock()
	s.h.servers = append(s.h.servers, s)
	s.h.mu.Unlock()
	s.h.vlogf("   started %s pid %d on %s (log %s)", s.name, p.Pid, s.addr, s.logPath)
	return nil
}

func (s *server) pid() int { return s.proc.Pid }

// sessProc is a process started in a session of its own (setsid), so also
// the leader of a new process group: what proctest.Start does with a
// process group only (a session leader cannot also ask for setpgid).
type sessProc struct {
	Pid  int
	cmd  *exec.Cmd
	done chan struct{} // closed when the process has exited and been reaped
}

func startSession(cmd *exec.Cmd) (*sessProc, error) {
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Setsid = true
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	p := &sessProc{Pid: cmd.Process.Pid, cmd: cmd, done: make(chan struct{})}
	go func() {
		cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

func (p *sessProc) Done() <-chan struct{} { return p.done }

// Stop sends sig to the process, waits at most grace for it to exit, then
// kills whatever is left of its process group (by its id).
func (p *sessProc) Stop(sig syscall.Signal, grace time.Duration) {
	syscall.Kill(p.Pid, sig)
	select {
	case <-p.done:
	case <-time.After(grace):
	}
	syscall.Kill(-p.Pid, syscall.SIGKILL)
	select {
	case <-p.done:
	case <-time.After(5 * time.Second):
	}
}

func (s *server) exited() bool {
	select {
	case <-s.proc.Done():
		return true
	default:
		return false
	}
}

// ready waits for /health, and for a gateway for its workers to be ready;
// then it mints a token and writes the wrk script.
func (s *server) ready(workers int) error {
	deadline := time.Now().Add(30 * time.Second)
	for {
		if s.exited() {
			return fmt.Errorf("%s exited while starting:\n%s", s.name, tail(s.logPath, 20))
		}
		if err := s.h.ctx.Err(); err != nil {
			return err
		}
		ok := false
		if r, err := fetch(s.addr, getReq("/health", true)); err == nil && r.status == 200 {
			ok = true
			if workers > 0 {
				m, err := scrape(s.addr)
				ok = err == nil && m.readyWorkers() >= workers
			}
		}
		if ok {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not ready after 30s:\n%s", s.name, tail(s.logPath, 20))
		}
		time.Sleep(20 * time.Millisecond)
	}
	if s.bare {
		return nil
	}
	cmd := exec.CommandContext(s.h.ctx, s.h.gwBin, "token", "-u", "admin@example.com", "-e", "60")
	cmd.Dir, cmd.Env = s.dir, s.env
	out, err := cmd.Output()
	if err != nil {
		return fmt.Errorf("mcpgateway token: %v", err)
	}
	s.jwt = strings.TrimSpace(string(out))
	s.script = filepath.Join(s.dir, "post.lua")
	if err := writeWrkScript(s.script, s.jwt, s.h.payload, false); err != nil {
		return err
	}
	s.expect, err = s.probeExpected()
	return err
}

// stop ends the server and everything in its process group: INT (a fast
// stop), then KILL after a few seconds.
func (s *server) stop() {
	if s.proc == nil || s.exited() {
		return
	}
	s.proc.Stop(syscall.SIGINT, 5*time.Second) // then the group: a worker left behind goes too
}

// stopServers stops every server started so far.
func (h *harness) stopServers() {
	h.mu.Lock()
	servers := h.servers
	h.servers = nil
	h.mu.Unlock()
	var wg sync.WaitGroup
	for _, s := range servers {
		wg.Add(1)
		go func() { defer wg.Done(); s.stop() }()
	}
	wg.Wait()
}

// cleanup stops every process and drops what the run created in
// PostgreSQL and Redis.
func (h *harness) cleanup() {
	h.stopServers()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if h.pg != nil {
		if err := h.pg.drop(ctx); err != nil {
			h.logf("bench: drop PostgreSQL database %s: %v", h.pg.name, err)
		}
	}
	if h.c.redisAddr != "" {
		if err := deleteRedisKeys(ctx, h.c.redisAddr, h.c.redisDB, h.redisKeys); err != nil {
			h.vlogf("bench: delete Redis keys %s*: %v", h.redisKeys, err)
		}
	}
}

func tail(path string, lines int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	ls := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(ls) > lines {
		ls = ls[len(ls)-lines:]
	}
	return strings.Join(ls, "\n")
}

func lookPath(name string) (string, error) { return exec.LookPath(name) }

// Process accounting from /proc.

// clockTick is USER_HZ, the unit of /proc/PID/stat times: 100 on Linux.
const clockTick = 100

type procStat struct {
	ppid                         int
	utime, stime, cutime, cstime uint64
}

func readStat(pid int) (procStat, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return procStat{}, err
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return procStat{}, errors.New("bad stat")
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 15 {
		return procStat{}, errors.New("short stat")
	}
	var st procStat
	st.ppid, _ = strconv.Atoi(f[1])
	st.utime, _ = strconv.ParseUint(f[11], 10, 64)
	st.stime, _ = strconv.ParseUint(f[12], 10, 64)
	st.cutime, _ = strconv.ParseUint(f[13], 10, 64)
	st.cstime, _ = strconv.ParseUint(f[14], 10, 64)
	return st, nil
}

// childrenOf lists the live children of pid (the kernel here has no
// /proc/PID/task/TID/children, so /proc is scanned).
func childrenOf(pid int) []int {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var kids []int
	for _, e := range ents {
		n, err := strconv.Atoi(e.Name())
		if err != nil || n == pid {
			continue
		}
		if st, err := readStat(n); err == nil && st.ppid == pid {
			kids = append(kids, n)
		}
	}
	return kids
}

// cpu is the CPU time the server has used so far: its own (every thread),
// its reaped children's (recycled workers, the migrate child), and its live
// children's (the workers).
func (s *server) cpu() time.Duration {
	st, err := readStat(s.pid())
	if err != nil {
		return 0
	}
	ticks := st.utime + st.stime + st.cutime + st.cstime
	if s.gateway {
		for _, k := range childrenOf(s.pid()) {
			if cst, err := readStat(k); err == nil {
				ticks += cst.utime + cst.stime + cst.cutime + cst.cstime
			}
		}
	}
	return time.Duration(ticks) * time.Second / clockTick
}

// procMem is VmRSS and RssAnon of a process in KiB, 0 when it is gone.
// RssAnon is the process's own memory; the rest of its RSS is mostly the
// binary's pages, which the master and its workers share.
func procMem(pid int) (rss, anon int64) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0, 0
	}
	kib := func(v string) int64 {
		n, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
		return n
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			rss = kib(v)
		} else if v, ok := strings.CutPrefix(line, "RssAnon:"); ok {
			anon = kib(v)
		}
	}
	return rss, anon
}

// memory is the RSS of the master (or plain process) and of each worker.
type memory struct {
	master, masterAnon int64         // KiB
	workers            map[int]int64 // pid -> KiB
	workersAnon        map[int]int64
}

func (s *server) memory() memory {
	m := memory{workers: map[int]int64{}, workersAnon: map[int]int64{}}
	m.master, m.masterAnon = procMem(s.pid())
	if s.gateway {
		for _, k := range childrenOf(s.pid()) {
			if r, a := procMem(k); r > 0 {
				m.workers[k], m.workersAnon[k] = r, a
			}
		}
	}
	return m
}

func (m memory) maxWorker() int64 {
	var mx int64
	for _, r := range m.workers {
		mx = max(mx, r)
	}
	return mx
}

func (m memory) maxWorkerAnon() int64 {
	var mx int64
	for _, r := range m.workersAnon {
		mx = max(mx, r)
	}
	return mx
}

func mib(kib int64) float64 { return float64(kib) / 1024 }
