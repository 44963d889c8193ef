package main

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// wrk: keep-alive load from a Lua script that posts the payload; its done()
// prints exact totals (requests, bytes, errors, latency percentiles in µs)
// on one line that is parsed here.

// writeWrkScript writes the script. check adds a response() callback that
// counts answers that are not a successful convert_time result (it costs
// wrk some speed, so the throughput runs check sizes and samples instead).
func writeWrkScript(path, jwt string, payload []byte, check bool) error {
	var b strings.Builder
	b.WriteString("-- written by tests/bench\n")
	b.WriteString("wrk.method = \"POST\"\nwrk.path = \"/rpc\"\n")
	b.WriteString("wrk.headers[\"Content-Type\"] = \"application/json\"\n")
	fmt.Fprintf(&b, "wrk.headers[\"Authorization\"] = \"Bearer %s\"\n", jwt)
	fmt.Fprintf(&b, "wrk.body = [==[%s]==]\n", payload)
	b.WriteString(`local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args) bad = 0 end
`)
	if check {
		b.WriteString(`function response(status, headers, body)
  if status ~= 200 or not string.find(body, '"isError":false', 1, true) or not string.find(body, 'Europe/Dublin', 1, true) then
    bad = bad + 1
  end
end
`)
	}
	b.WriteString(`function done(summary, latency, requests)
  local nbad = 0
  for _, t in ipairs(threads) do nbad = nbad + (t:get("bad") or 0) end
  local e = summary.errors
  io.write(string.format("BENCHWRK %d %d %d %d %d %d %d %d %d %d %d %d %d\n",
    summary.requests, summary.bytes, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max, nbad))
end
`)
	return os.WriteFile(path, []byte(b.String()), 0o644)
}

type wrkResult struct {
	Requests                               int64
	Bytes                                  int64
	Duration                               time.Duration
	Connect, Read, Write, Status, Timeouts int64
	P50, P90, P99, Max                     time.Duration
	Bad                                    int64         // answers the response() check refused
	CPU                                    time.Duration // wrk's own CPU time
}

func (r wrkResult) rps() float64 {
	if r.Duration <= 0 {
		return 0
	}
	return float64(r.Requests) / r.Duration.Seconds()
}

func (r wrkResult) socketErrors() int64 { return r.Connect + r.Read + r.Write + r.Timeouts }

// runWrk runs wrk with 2 threads (one per core of the target machine).
func (h *harness) runWrk(script, addr string, conns int, dur, timeout time.Duration) (wrkResult, error) {
	args := []string{"-t", "2", "-c", strconv.Itoa(conns), "-d", fmt.Sprintf("%.0fs", dur.Seconds()),
		"--timeout", fmt.Sprintf("%.0fs", timeout.Seconds()), "-s", script, "http://" + addr + "/rpc"}
	out, cpu, err := h.tool("wrk", args...)
	if err != nil {
		return wrkResult{}, err
	}
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) != 14 || f[0] != "BENCHWRK" {
			continue
		}
		n := make([]int64, 13)
		for i := range n {
			v, err := strconv.ParseFloat(f[i+1], 64)
			if err != nil {
				return wrkResult{}, fmt.Errorf("wrk output %q: %v", line, err)
			}
			n[i] = int64(v)
		}
		us := time.Microsecond
		return wrkResult{Requests: n[0], Bytes: n[1], Duration: time.Duration(n[2]) * us,
			Connect: n[3], Read: n[4], Write: n[5], Status: n[6], Timeouts: n[7],
			P50: time.Duration(n[8]) * us, P90: time.Duration(n[9]) * us, P99: time.Duration(n[10]) * us,
			Max: time.Duration(n[11]) * us, Bad: n[12], CPU: cpu}, nil
	}
	return wrkResult{}, fmt.Errorf("wrk printed no totals:\n%s", out)
}

// hey: the guide's command shape, `hey -n N -c 200 -m POST -T application/json
// -H "Authorization: Bearer $JWT" -D payload URL`.

type heyResult struct {
	RPS        float64
	P50, P99   time.Duration
	Responses  int64         // every answer, any status
	OK         int64         // 200s
	Errors     int64         // requests without an answer
	SizePerReq int64         // body bytes per answer (hey's integer average)
	CPU        time.Duration // hey's own CPU time
	ErrText    string        // hey's error distribution, shortened
}

func (h *harness) runHey(s *server, n, conns int) (heyResult, error) {
	out, cpu, err := h.tool("hey", "-n", strconv.Itoa(n), "-c", strconv.Itoa(conns), "-m", "POST",
		"-T", "application/json", "-H", "Authorization: Bearer "+s.jwt, "-D", h.payloadPath,
		"http://"+s.addr+"/rpc")
	if err != nil {
		return heyResult{}, err
	}
	r := heyResult{CPU: cpu}
	section := ""
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		switch {
		case strings.HasSuffix(line, ":") && !strings.Contains(line, "\t"):
			section = line
			continue
		case strings.HasPrefix(line, "Requests/sec:"):
			r.RPS, _ = strconv.ParseFloat(strings.TrimSpace(strings.TrimPrefix(line, "Requests/sec:")), 64)
		case strings.HasPrefix(line, "Size/request:"):
			v := strings.TrimSuffix(strings.TrimSpace(strings.TrimPrefix(line, "Size/request:")), " bytes")
			r.SizePerReq, _ = strconv.ParseInt(v, 10, 64)
		case section == "Latency distribution:" && strings.Contains(line, "% in "):
			pct, rest, _ := strings.Cut(line, "% in ")
			secs, _ := strconv.ParseFloat(strings.TrimSuffix(rest, " secs"), 64)
			d := time.Duration(secs * float64(time.Second))
			switch pct {
			case "50":
				r.P50 = d
			case "99":
				r.P99 = d
			}
		case section == "Status code distribution:" && strings.HasPrefix(line, "["):
			code, rest, _ := strings.Cut(strings.TrimPrefix(line, "["), "]")
			cnt, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " responses"), 10, 64)
			r.Responses += cnt
			if code == "200" {
				r.OK += cnt
			}
		case section == "Error distribution:" && strings.HasPrefix(line, "["):
			cnt, _, _ := strings.Cut(strings.TrimPrefix(line, "["), "]")
			c, _ := strconv.ParseInt(cnt, 10, 64)
			r.Errors += c
			if len(r.ErrText) < 300 {
				r.ErrText = strings.TrimPrefix(r.ErrText+"; "+line, "; ")
			}
		}
	}
	if r.RPS == 0 {
		return r, fmt.Errorf("hey printed no summary:\n%s", out)
	}
	return r, nil
}

// tool runs a load generator to its end (killed if the bench is stopped).
// It returns what the tool printed and the CPU time it used.
func (h *harness) tool(name string, args ...string) (string, time.Duration, error) {
	if h.c.niceLoad > 0 {
		args = append([]string{"-n", strconv.Itoa(h.c.niceLoad), name}, args...)
		name = "nice"
	}
	cmd := exec.CommandContext(h.ctx, name, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return "", 0, fmt.Errorf("%s: %v\n%s%s", name, err, out.String(), errb.String())
	}
	return out.String(), cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime(), nil
}

// sampler checks the bodies of a sample of answers while a load runs: one
// /rpc request on a fresh connection every interval.
type sampler struct {
	n, bad   atomic.Int64
	firstErr atomic.Pointer[string]
	stop     chan struct{}
	wg       sync.WaitGroup
}

func startSampler(s *server, every time.Duration) *sampler {
	sm := &sampler{stop: make(chan struct{})}
	req := postRPC(s.jwt, s.h.payload, true)
	sm.wg.Add(1)
	go func() {
		defer sm.wg.Done()
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-sm.stop:
				return
			case <-t.C:
			}
			r, err := fetch(s.addr, req)
			if err == nil {
				err = verifyConvertTime(r.status, r.body)
			}
			sm.n.Add(1)
			if err != nil {
				sm.bad.Add(1)
				msg := err.Error()
				sm.firstErr.CompareAndSwap(nil, &msg)
			}
		}
	}()
	return sm
}

func (sm *sampler) finish() (n, bad int64, firstErr string) {
	close(sm.stop)
	sm.wg.Wait()
	if p := sm.firstErr.Load(); p != nil {
		firstErr = *p
	}
	return sm.n.Load(), sm.bad.Load(), firstErr
}

// monitor samples a server while a load runs: the RSS of its processes, and
// for a gateway the per-worker request counters of /metrics, from which the
// balance between worker slots is computed.
type monitor struct {
	s    *server
	stop chan struct{}
	done chan struct{}

	masterPeak, workerPeak int64 // KiB
	masterAnon, workerAnon int64 // KiB, peaks of RssAnon
	rssSeries              []memSample

	// balance: per slot, the sum over consecutive scrapes of the slot's
	// increase (a drop, when a replaced process exits, counts as none).
	last    map[int]*workerSeries
	perSlot map[int]float64
}

type memSample struct {
	at      time.Duration
	master  int64
	workers int64 // the largest worker
}

func startMonitor(s *server, every time.Duration) *monitor {
	m := &monitor{s: s, stop: make(chan struct{}), done: make(chan struct{}), perSlot: map[int]float64{}}
	start := time.Now()
	m.sample(0)
	go func() {
		defer close(m.done)
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-m.stop:
				m.sample(time.Since(start))
				return
			case <-t.C:
				m.sample(time.Since(start))
			}
		}
	}()
	return m
}

func (m *monitor) sample(at time.Duration) {
	mem := m.s.memory()
	m.masterPeak = max(m.masterPeak, mem.master)
	m.workerPeak = max(m.workerPeak, mem.maxWorker())
	m.masterAnon = max(m.masterAnon, mem.masterAnon)
	m.workerAnon = max(m.workerAnon, mem.maxWorkerAnon())
	m.rssSeries = append(m.rssSeries, memSample{at: at, master: mem.master, workers: mem.maxWorker()})
	if !m.s.gateway {
		return
	}
	// A short timeout: under overload a scrape may wait, the RSS samples
	// must not.
	met, err := scrapeWithin(m.s.addr, time.Second)
	if err != nil {
		return
	}
	ws := met.workers()
	for slot, w := range ws {
		if prev, ok := m.last[slot]; ok {
			m.perSlot[slot] += max(0, w.served-prev.served)
		} else if _, seen := m.perSlot[slot]; !seen {
			m.perSlot[slot] += 0
		}
	}
	m.last = ws
}

func (m *monitor) finish() {
	close(m.stop)
	<-m.done
}

// balance is the busiest slot's requests over the median slot's.
func (m *monitor) balance() (ratio float64, perSlot []int64) {
	slots := make([]int, 0, len(m.perSlot))
	for s := range m.perSlot {
		slots = append(slots, s)
	}
	sort.Ints(slots)
	vals := make([]float64, 0, len(slots))
	for _, s := range slots {
		perSlot = append(perSlot, int64(m.perSlot[s]))
		vals = append(vals, m.perSlot[s])
	}
	med := median(vals)
	if med <= 0 {
		return 0, perSlot
	}
	mx := 0.0
	for _, v := range vals {
		mx = max(mx, v)
	}
	return mx / med, perSlot
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

func percentile(v []time.Duration, p float64) time.Duration {
	if len(v) == 0 {
		return 0
	}
	s := append([]time.Duration(nil), v...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	i := int(p/100*float64(len(s))+0.5) - 1
	return s[min(max(i, 0), len(s)-1)]
}

// pause sleeps, or returns early with the context's error.
func (h *harness) pause(d time.Duration) error {
	select {
	case <-h.ctx.Done():
		return h.ctx.Err()
	case <-time.After(d):
		return nil
	}
}

// The machine's CPU use, to tell how much of it went to other programs
// (the machine is shared): /proc/stat busy time minus what the servers, the
// load tool and this program used.

type cpuStat struct{ busy, total uint64 } // ticks, all cores

func readCPUStat() cpuStat {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return cpuStat{}
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	var st cpuStat
	for i, v := range f[1:] {
		n, _ := strconv.ParseUint(v, 10, 64)
		if i >= 8 { // guest and guest_nice are already in user and nice
			break
		}
		st.total += n
		if i != 3 && i != 4 { // idle, iowait
			st.busy += n
		}
	}
	return st
}

func ticks(n uint64) time.Duration { return time.Duration(n) * time.Second / clockTick }

// selfCPU is this program's CPU time (probes, samplers, monitors).
func selfCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// waitQuiet waits, within a budget for the whole run, until other programs
// leave the machine alone (under 10% of it busy over 200 ms), at most 2 s.
func (h *harness) waitQuiet() {
	start := time.Now()
	for time.Since(start) < 2*time.Second && h.quietBudget > time.Since(start) && h.ctx.Err() == nil {
		a := readCPUStat()
		time.Sleep(200 * time.Millisecond)
		b := readCPUStat()
		if b.total > a.total && float64(b.busy-a.busy) < 0.10*float64(b.total-a.total) {
			break
		}
	}
	h.quietBudget -= time.Since(start)
}
