package main

import (
	"errors"
	"fmt"
	"math"
	"os"
	"os/exec"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/mcpgateway/mcpgateway/internal/proctest"
)

// 6. Overload, open loop. Each route's capacity is measured first (a short
// closed-loop run); then a constant arrival rate of a multiple of it is
// offered (vegeta, open loop, keep-alive, as many connections as the
// requests in flight need) to the supervised server and to a plain one
// (the same handler in one default fasthttp.Server process, no shedding),
// while a prober process times GET /health on fresh connections. Every
// server runs in its own session pinned to one core (-pin-server), the
// generator on the other (-pin-load).

const (
	barServedCPU   = 50 * time.Millisecond  // served p99, a CPU-bound route
	barServedIO    = 150 * time.Millisecond // served p99, the 100 ms route
	barGoodputIO   = 0.90                   // of the in-flight capacity
	barRSSHalves   = 0.10                   // second half's mean RSS within ±10% of the first's
	discardBelow   = 0.95                   // achieved ÷ offered below this: the run is discarded
	stallDiscardMs = 50                     // a longer gap between two sends (ms) also discards it: the generator stalled
	ovTimeout      = time.Second            // per request, and per /health probe
	ovGoodWithin   = time.Second            // goodput: 200s within this
	ovProbeEvery   = 50 * time.Millisecond  // 20 probes/s per port
	// ioBackpressure is the I/O-bound route's in-flight limit per worker:
	// 8 rather than 16, so that 20x its in-flight capacity (3,200/s) is
	// within what one core of vegeta sends; at 16 (6,400/s) it reached
	// 75-84% and every run was discarded.
	ioBackpressure = 8
	ioSleep        = 100 * time.Millisecond
	ovWorkers      = 2
)

// ovRoute is one route the overload measures.
type ovRoute struct {
	key       string
	title     string
	cpu       bool // CPU-bound (else I/O-bound)
	path      string
	post      bool // the guide's payload: POST /rpc with the JWT
	capConns  int  // connections of the closed-loop capacity run
	multiples []float64
}

// The CPU-bound route burns 2 ms a request: one core of vegeta sends some
// 6,000 requests a second here, and 10x the capacity of a server on one
// core must stay under that (at 500 us the capacity is about 1,800/s, and
// 10x of it, 18,000/s, is out of the generator's reach).
func (h *harness) ovRoutes() []ovRoute {
	// The I/O-bound route first: its 5 ms bar on 503s is the one most
	// sensitive to what earlier runs leave behind on the server's core
	// (503 p99 1.2-1.3 ms run alone, 3.4-9.5 ms after the CPU-bound runs).
	return []ovRoute{
		{key: "slow", title: "/slow?ms=100 (I/O-bound), testserver --backpressure 8", path: "/slow?ms=100", capConns: 2 * ioBackpressure, multiples: []float64{20}},
		{key: "burn", title: "/burn?us=2000 (CPU-bound), testserver", cpu: true, path: "/burn?us=2000", capConns: 16, multiples: []float64{2, 5, 10}},
		{key: "rpc", title: "guide payload (POST /rpc, JWT), mcpgateway", cpu: true, path: "/rpc", post: true, capConns: 64},
	}
}

// ovRun is one run against one server, as docs/bench.json keeps it.
type ovRun struct {
	Route       string             `json:"route"`
	Server      string             `json:"server"` // "gateway" (supervised) or "plain"
	Binary      string             `json:"binary"`
	Kind        string             `json:"kind"` // "capacity" (closed loop), "open" (constant arrival rate) or "ramp" (a short open-loop step)
	Multiple    float64            `json:"multiple,omitempty"`
	Offered     float64            `json:"offered_rps,omitempty"`
	Conns       int                `json:"connections,omitempty"` // closed loop
	Seconds     float64            `json:"seconds"`
	Achieved    float64            `json:"achieved_rps"`
	Discarded   bool               `json:"discarded"`
	Requests    int64              `json:"requests"`
	Goodput     float64            `json:"goodput_rps"` // 200s within 1 s, per second of the run
	OK          latStats           `json:"ok"`
	Refused     latStats           `json:"refused_503"`
	Codes       map[string]int64   `json:"codes"`
	Timeouts    int64              `json:"timeouts"`
	ConnErrors  int64              `json:"conn_errors"`
	OtherErrors int64              `json:"other_errors"`
	ErrorKinds  map[string]int64   `json:"error_kinds,omitempty"`
	BadSize     int64              `json:"bad_size"`
	PerSecond   []secondCounts     `json:"per_second,omitempty"`
	LongestGap  float64            `json:"longest_send_gap_ms,omitempty"`
	Health      *probeStats        `json:"health_port,omitempty"`
	Main        *probeStats        `json:"main_port,omitempty"`
	RSSFirst    float64            `json:"rss_first_half_mib"` // mean, master + workers
	RSSSecond   float64            `json:"rss_second_half_mib"`
	RSSChange   float64            `json:"rss_change"` // second ÷ first − 1
	RefusedBy   map[string]float64 `json:"refused_by_reason,omitempty"`
	QueueP50ms  float64            `json:"queue_p50_ms,omitempty"` // mcpgateway_request_queue_seconds
	QueueP99ms  float64            `json:"queue_p99_ms,omitempty"`
	Machine     float64            `json:"machine_cpu_seconds"`     // /proc/stat, every core, user..softirq
	ServerSide  float64            `json:"server_side_cpu_seconds"` // machine − generator − prober − bench − other programs
	OtherCPU    float64            `json:"other_cpu_seconds"`       // other programs' processes (/proc), kernel threads not included
	OtherTop    string             `json:"other_top,omitempty"`     // the other programs that used the most
	ServerCPU   float64            `json:"server_cpu_seconds"`      // the server's processes (utime+stime)
	LoadGenCPU  float64            `json:"loadgen_cpu_seconds"`
	ProberCPU   float64            `json:"prober_cpu_seconds"`
	Wall        float64            `json:"wall_seconds"`
	CoreBusy    []float64          `json:"core_busy_pct"` // per core, over the run
	OtherPct    float64            `json:"other_cpu_pct"` // of the machine, used by other programs
	GenMaxRSS   float64            `json:"loadgen_max_rss_mib"`
	GenCorePct  float64            `json:"loadgen_core_pct"` // the generator's CPU ÷ (wall × its cores): near 100, its own latency weighs on the figures
	Note        string             `json:"note,omitempty"`
}

func (r *ovRun) shortLabel() string {
	switch r.Kind {
	case "capacity":
		return "closed loop"
	case "ramp":
		return trimFloat(r.Multiple) + "× (ramp step)"
	}
	return trimFloat(r.Multiple) + "×"
}

func (r *ovRun) label() string {
	if r.Kind == "capacity" {
		return fmt.Sprintf("capacity (closed loop, %d conns)", r.Conns)
	}
	return fmt.Sprintf("%s× (%s/s)", trimFloat(r.Multiple), thousands(r.Offered))
}

// clean: at most 5% of the requests timed out or failed without an answer
// (the server's work on those is counted under neither kind).
func (r *ovRun) clean() bool {
	return float64(r.Timeouts+r.ConnErrors+r.OtherErrors) <= 0.05*float64(r.Requests)
}

func trimFloat(v float64) string { return strconv.FormatFloat(v, 'f', -1, 64) }

func (h *harness) overload() error {
	var errs []error
	for _, rt := range h.ovRoutes() {
		if h.c.ovRoutes != "" && !strings.Contains(","+h.c.ovRoutes+",", ","+rt.key+",") {
			continue
		}
		if err := h.ctx.Err(); err != nil {
			return err
		}
		if err := h.overloadRoute(rt); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", rt.key, err))
			h.failed("6 overload · "+rt.title, err)
		}
		h.stopServers()
	}
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	return nil
}

// ovServers starts the route's supervised server and its plain counterpart.
func (h *harness) ovServers(rt ovRoute) (gw, pl *server, err error) {
	qd := h.c.queueDelay.String()
	switch rt.key {
	case "rpc":
		be := h.sqliteBackend("database")
		gw, err = h.ovStart("gateway", h.gwBin, be, true, false, func(s *server) []string {
			a := []string{"serve", "--workers", strconv.Itoa(ovWorkers), "--bind", s.addr, "--health-bind", s.health}
			if h.gatewayHas("--max-queue-delay") {
				a = append(a, "--max-queue-delay", qd)
			}
			return append(a, h.c.gwArgs...)
		})
		if err != nil {
			return nil, nil, err
		}
		pl, err = h.ovStart("plain", h.plainBin, be, false, false, func(s *server) []string { return []string{"-addr", s.addr} })
	default:
		// Both servers burn the same work per request: the loop's speed is
		// measured once, on the servers' core, and handed to both.
		out, cerr := exec.Command("taskset", "-c", h.c.pinServer, h.testBin, "-calibrate").Output()
		if cerr != nil {
			return nil, nil, fmt.Errorf("testserver -calibrate: %w", cerr)
		}
		be := backend{Env: []string{"TESTSERVER_BURN_ROUNDS_PER_US=" + strings.TrimSpace(string(out))}}
		gw, err = h.ovStart("gateway", h.testBin, be, true, true, func(s *server) []string {
			a := []string{"--bind", s.addr, "--workers", strconv.Itoa(ovWorkers), "--health-bind", s.health, "--max-queue-delay", qd}
			if rt.key == "slow" {
				a = append(a, "--backpressure", strconv.Itoa(ioBackpressure))
			}
			return a
		})
		if err != nil {
			return nil, nil, err
		}
		pl, err = h.ovStart("plain", h.testBin, be, false, true, func(s *server) []string { return []string{"--plain", s.addr} })
	}
	return gw, pl, err
}

func (h *harness) ovStart(name, bin string, be backend, supervised, bare bool, argv func(*server) []string) (*server, error) {
	s, err := h.newServer(name, be)
	if err != nil {
		return nil, err
	}
	s.pin, s.gateway, s.bare = h.c.pinServer, supervised, bare
	workers := 0
	if supervised {
		port, err := proctest.FreePort()
		if err != nil {
			return nil, err
		}
		s.health = "127.0.0.1:" + strconv.Itoa(port)
		workers = ovWorkers
	}
	if err := s.start(bin, argv(s)...); err != nil {
		return nil, err
	}
	return s, s.ready(workers)
}

var gwHelp struct {
	once sync.Once
	text string
}

// gatewayHas says whether `mcpgateway serve` knows a flag (the overload
// flags land while this bench is written: it works with and without).
func (h *harness) gatewayHas(flag string) bool {
	gwHelp.once.Do(func() {
		out, _ := exec.Command(h.gwBin, "serve", "--help").CombinedOutput()
		gwHelp.text = string(out)
	})
	return strings.Contains(gwHelp.text, flag+" ")
}

func (s *server) binary() string {
	switch {
	case s.bare:
		return "testserver"
	case s.gateway:
		return "mcpgateway"
	}
	return "tests/bench/plain"
}

// ovSpec is the attack of a route on a server, closed loop until the
// caller sets a rate.
func (h *harness) ovSpec(s *server, rt ovRoute) genSpec {
	spec := genSpec{Method: "GET", URL: "http://" + s.addr + rt.path, Timeout: ovTimeout, GoodWithin: ovGoodWithin}
	if rt.post {
		spec.Method, spec.Body, spec.ExpectBody = "POST", h.payload, s.expect.body
		spec.Header = map[string]string{"Content-Type": "application/json", "Authorization": "Bearer " + s.jwt}
	}
	return spec
}

func (h *harness) overloadRoute(rt ovRoute) error {
	gw, pl, err := h.ovServers(rt)
	if err != nil {
		return err
	}
	h.logf("   %s: gateway %s (health port %s, %s), plain %s; servers on CPU %s, generator on CPU %s",
		rt.title, gw.addr, gw.health, gw.binary(), pl.addr, h.c.pinServer, h.c.pinLoad)
	var runs []*ovRun
	// Capacity: a closed loop, short, on each server (the plain one's is
	// shown; the gateway's sets the offered rates).
	var capOf = map[string]*ovRun{}
	for _, s := range []*server{gw, pl} {
		spec := h.ovSpec(s, rt)
		spec.Conns, spec.Duration = rt.capConns, h.c.capacityDur
		r, err := h.ovMeasure(s, rt, spec, "capacity", 0, 0)
		if err != nil {
			return err
		}
		runs, capOf[s.name] = append(runs, r), r
	}
	capacity := capOf["gateway"].Goodput
	capNote := fmt.Sprintf("measured, closed loop over %d connections for %s", rt.capConns, h.c.capacityDur)
	serverCore := capOf["gateway"].serverCoreBusy(h)
	if !rt.cpu {
		capacity = float64(ovWorkers*ioBackpressure) / ioSleep.Seconds()
		capNote = fmt.Sprintf("in-flight capacity %d workers × %d ÷ %s (measured closed loop: %s/s)", ovWorkers, ioBackpressure, ioSleep, thousands(capOf["gateway"].Goodput))
	} else if serverCore > 0 && serverCore < 90 {
		// The generator, not the server, set the pace: scale to a busy core.
		capacity = capacity * 100 / serverCore
		capNote += fmt.Sprintf("; the server's core was only %.0f%% busy (the generator was the limit), so ÷ %.2f", serverCore, serverCore/100)
	}
	if capacity <= 0 {
		return fmt.Errorf("capacity run answered no 200:\n%s", tail(gw.logPath, 10))
	}
	multiples := rt.multiples
	if h.c.ovMultiples != nil && rt.multiples != nil {
		multiples = h.c.ovMultiples
	}
	var multNote string
	if multiples == nil {
		m, ramp, note, err := h.ovRamp(gw, rt, capacity)
		if err != nil {
			return err
		}
		runs = append(runs, ramp...)
		multiples, multNote = []float64{m}, note
	}
	for i, m := range multiples {
		order := []*server{gw, pl}
		if i%2 == 1 {
			order = []*server{pl, gw}
		}
		for _, s := range order {
			r, err := h.ovOpen(s, rt, m, capacity)
			if err != nil {
				return err
			}
			if r.Discarded && r.LongestGap > stallDiscardMs && rt.multiples != nil {
				// The generator stalled: its open loop was broken, and
				// the latencies it measured include the stall. Once more.
				h.vlogf("   %s %s: %s× was discarded (the generator stalled %.0f ms); once more", rt.key, s.name, trimFloat(m), r.LongestGap)
				runs = append(runs, r)
				if r, err = h.ovOpen(s, rt, m, capacity); err != nil {
					return err
				}
			}
			if r.Discarded && s == gw && rt.multiples == nil {
				// The generator did not keep up: once more at what it reached.
				m2 := math.Round(100*0.9*r.Achieved/capacity) / 100
				if m2 <= 0 {
					return fmt.Errorf("the generator sent only %s/s of %s/s", thousands(r.Achieved), thousands(r.Offered))
				}
				h.vlogf("   %s: %s× was discarded (achieved %s/s); trying %s×", rt.key, trimFloat(m), thousands(r.Achieved), trimFloat(m2))
				multNote += fmt.Sprintf("; %s× (%s/s) was discarded (achieved %s/s), so %s× (90%% of that)", trimFloat(m), thousands(m*capacity), thousands(r.Achieved), trimFloat(m2))
				runs = append(runs, r)
				m = m2
				if r, err = h.ovOpen(s, rt, m, capacity); err != nil {
					return err
				}
			}
			runs = append(runs, r)
		}
	}
	h.overloadRuns = append(h.overloadRuns, derefRuns(runs)...)
	h.ovRows(rt, runs, capacity, capNote, multNote)
	return nil
}

func derefRuns(rs []*ovRun) []ovRun {
	out := make([]ovRun, len(rs))
	for i, r := range rs {
		out[i] = *r
	}
	return out
}

// serverCoreBusy is how busy the servers' core was, in percent (the mean
// over the cores of -pin-server; 0 if unknown).
func (r *ovRun) serverCoreBusy(h *harness) float64 {
	cpus := parseCPUList(h.c.pinServer)
	if len(cpus) == 0 {
		return 0
	}
	t := 0.0
	for _, c := range cpus {
		if c >= len(r.CoreBusy) {
			return 0
		}
		t += r.CoreBusy[c]
	}
	return t / float64(len(cpus))
}

func parseCPUList(s string) []int {
	var out []int
	for _, part := range strings.Split(s, ",") {
		a, b, isRange := strings.Cut(strings.TrimSpace(part), "-")
		lo, err := strconv.Atoi(a)
		if err != nil {
			return nil
		}
		hi := lo
		if isRange {
			if hi, err = strconv.Atoi(b); err != nil {
				return nil
			}
		}
		for c := lo; c <= hi; c++ {
			out = append(out, c)
		}
	}
	return out
}

// ovRamp finds the highest multiple of capacity the generator reaches:
// short open-loop runs on the gateway at rising rates, until one falls
// below 95% of its offered rate.
func (h *harness) ovRamp(gw *server, rt ovRoute, capacity float64) (float64, []*ovRun, string, error) {
	dur := 2 * time.Second
	if h.c.quick {
		dur = time.Second
	}
	var runs []*ovRun
	var steps []string
	best := 0.0
	for _, m := range []float64{0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1, 1.2, 1.5, 2, 3, 5, 10} {
		r, err := h.ovOpenFor(gw, rt, m, capacity, dur, "ramp")
		if err != nil {
			return 0, nil, "", err
		}
		runs = append(runs, r)
		steps = append(steps, fmt.Sprintf("%s× %.0f%%", trimFloat(m), 100*r.Achieved/r.Offered))
		if r.Discarded {
			break
		}
		best = m
	}
	if best == 0 {
		best = 0.1
	}
	note := fmt.Sprintf("%s×, the highest multiple at which the generator sent ≥ 95%% of the offered rate in a %s ramp on the gateway (achieved: %s)", trimFloat(best), dur, strings.Join(steps, ", "))
	if best < 1.2 {
		note += "; the generator cannot offer more than the capacity on this route: this is no overload"
	}
	return best, runs, note, nil
}

// ovOpen is one open-loop run at multiple × capacity.
func (h *harness) ovOpen(s *server, rt ovRoute, multiple, capacity float64) (*ovRun, error) {
	return h.ovOpenFor(s, rt, multiple, capacity, h.c.overloadDur, "open")
}

func (h *harness) ovOpenFor(s *server, rt ovRoute, multiple, capacity float64, dur time.Duration, kind string) (*ovRun, error) {
	rate := int(math.Round(multiple * capacity))
	spec := h.ovSpec(s, rt)
	spec.Rate, spec.Duration = max(rate, 1), dur
	// Enough workers (one connection each) for every request the timeout
	// lets be in flight, within the open-files limit.
	spec.MaxWorkers = min(int(float64(rate)*(ovTimeout+250*time.Millisecond).Seconds())+100, noFileLimit()-512)
	return h.ovMeasure(s, rt, spec, kind, multiple, float64(spec.Rate))
}

// ovMeasure runs the generator (and, open loop, the prober) against s and
// gathers what the server, /metrics and /proc show meanwhile.
func (h *harness) ovMeasure(s *server, rt ovRoute, spec genSpec, kind string, multiple, offered float64) (*ovRun, error) {
	h.ovSettle(s)
	h.waitQuiet()
	r := &ovRun{Route: rt.key, Server: s.name, Binary: s.binary(), Kind: kind, Multiple: multiple, Offered: offered,
		Seconds: spec.Duration.Seconds()}
	if kind == "capacity" {
		r.Conns = spec.Conns
	}
	var m0 metrics
	if s.gateway {
		m0, _ = scrapeWithin(s.addr, 5*time.Second)
	}
	others := newOthersTracker(s.pid())
	rss := startRSS(s, 250*time.Millisecond, others)
	cores0, srv0, self0, t0 := readCores(), s.cpu(), selfCPU(), time.Now()
	var (
		pr     probeResult
		prCPU  time.Duration
		prErr  error
		wg     sync.WaitGroup
		probed = kind == "open"
	)
	if probed {
		addrs := []string{s.addr}
		if s.health != "" {
			addrs = append(addrs, s.health)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			prCPU, prErr = h.runHelper(probeCommand, "", probeSpec{Addrs: addrs, Every: ovProbeEvery, Timeout: ovTimeout, Duration: spec.Duration}, &pr)
		}()
	}
	var g genResult
	genCPU, err := h.runHelper(genCommand, h.c.pinLoad, spec, &g)
	wg.Wait()
	cores1, srv1, self1, wall := readCores(), s.cpu(), selfCPU(), time.Since(t0)
	samples := rss.finish()
	others.sample(false) // after the sampler's last use of it
	if err != nil {
		return nil, err
	}
	if prErr != nil {
		return nil, prErr
	}
	var m1 metrics
	if s.gateway {
		var serr error
		if m1, serr = scrapeWithin(s.addr, 5*time.Second); serr != nil {
			r.Note = "no /metrics after the run: " + serr.Error()
		}
	}

	r.Requests, r.Codes, r.OK, r.Refused, r.BadSize = g.Requests, g.Codes, g.OK, g.Refused, g.BadSize
	r.Timeouts, r.ConnErrors, r.OtherErrors, r.ErrorKinds, r.PerSecond = g.Timeouts, g.ConnErrors, g.OtherErrors, g.ErrorKinds, g.PerSecond
	r.Goodput = float64(g.Good) / spec.Duration.Seconds()
	r.GenMaxRSS, r.LongestGap = g.MaxRSSMiB, g.LongestGap
	if kind == "capacity" {
		r.Achieved = float64(g.OK.N) / spec.Duration.Seconds()
		r.Goodput = r.Achieved
		r.PerSecond = nil
	} else {
		r.Achieved = g.Rate
		r.Discarded = g.Rate < discardBelow*offered || g.LongestGap > stallDiscardMs
	}
	for _, p := range pr.Ports {
		p := p
		if p.Addr == s.health {
			r.Health = &p
		} else {
			r.Main = &p
		}
	}
	// RSS: the mean of each half of the attack.
	var first, second []float64
	for _, sm := range samples {
		switch {
		case sm.at < spec.Duration/2:
			first = append(first, mib(sm.total))
		case sm.at <= spec.Duration:
			second = append(second, mib(sm.total))
		}
	}
	r.RSSFirst, r.RSSSecond = mean(first), mean(second)
	if r.RSSFirst > 0 {
		r.RSSChange = r.RSSSecond/r.RSSFirst - 1
	}
	// CPU.
	r.Wall = wall.Seconds()
	r.Machine = cores1[0].sub(cores0[0]).busySeconds()
	for i := 1; i < len(cores0) && i < len(cores1); i++ {
		d := cores1[i].sub(cores0[i])
		if d.total > 0 {
			r.CoreBusy = append(r.CoreBusy, 100*float64(d.busy)/float64(d.total))
		}
	}
	r.ServerCPU = (srv1 - srv0).Seconds()
	r.LoadGenCPU, r.ProberCPU = genCPU.Seconds(), prCPU.Seconds()
	r.GenCorePct = 100 * r.LoadGenCPU / (r.Wall * float64(max(len(parseCPUList(h.c.pinLoad)), 1)))
	self := (self1 - self0).Seconds()
	r.OtherCPU = others.total().Seconds()
	r.OtherTop = others.top(3)
	r.ServerSide = r.Machine - r.LoadGenCPU - r.ProberCPU - self - r.OtherCPU
	r.OtherPct = 100 * r.OtherCPU / (r.Wall * float64(h.machine.NProc))
	// /metrics: refusals by reason, the queueing delay.
	if s.gateway && m0 != nil && m1 != nil {
		r.RefusedBy = refusalsByReason(m0, m1)
		if p50, ok := histQuantile(m0, m1, "mcpgateway_request_queue_seconds", 0.50); ok {
			r.QueueP50ms = 1000 * p50
			p99, _ := histQuantile(m0, m1, "mcpgateway_request_queue_seconds", 0.99)
			r.QueueP99ms = 1000 * p99
		}
	}
	if r.OtherPct > 10 {
		h.vlogf("   (other programs used %.0f%% of the machine in this run: %s)", r.OtherPct, r.OtherTop)
	}
	h.vlogf("   %-4s %-7s %-32s gen %3.0f%%  achieved %7s/s%s  goodput %7s/s  200 %6d p50 %6.1f p99 %6.1f ms  503 %6d p99 %5.1f ms  timeouts %d conn %d other %d  health %s  main %s  RSS %.1f→%.1f MiB  CPU server %.2fs gen %.2fs machine %.2fs  cores %v  other %.0f%%%s",
		rt.key, s.name, r.label(), r.GenCorePct, thousands(r.Achieved), map[bool]string{true: " DISCARDED", false: ""}[r.Discarded], thousands(r.Goodput),
		r.OK.N, r.OK.P50, r.OK.P99, r.Refused.N, r.Refused.P99, r.Timeouts, r.ConnErrors, r.OtherErrors,
		probeText(r.Health), probeText(r.Main), r.RSSFirst, r.RSSSecond, r.ServerCPU, r.LoadGenCPU, r.Machine, roundAll(r.CoreBusy), r.OtherPct,
		refusedText(r.RefusedBy, ""))
	if kind != "capacity" {
		var slow []string
		for _, sec := range r.PerSecond {
			slow = append(slow, strconv.FormatInt(sec.Slow, 10))
		}
		h.vlogf("   %-4s %-7s 200s over %v, by second of the run: %s; longest gap between sends %.1f ms", rt.key, s.name, lateServed, strings.Join(slow, " "), r.LongestGap)
	}
	return r, nil
}

func roundAll(v []float64) []int {
	out := make([]int, len(v))
	for i, x := range v {
		out[i] = int(math.Round(x))
	}
	return out
}

func mean(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	t := 0.0
	for _, x := range v {
		t += x
	}
	return t / float64(len(v))
}

func probeText(p *probeStats) string {
	if p == nil {
		return "—"
	}
	s := fmt.Sprintf("p99 %.1f ms (n=%d", p.P99, p.N)
	if p.N > p.OK {
		var f []string
		for k, v := range p.Fails {
			f = append(f, fmt.Sprintf("%s %d", k, v))
		}
		sort.Strings(f)
		s += ", failed: " + strings.Join(f, ", ")
	}
	return s + ")"
}

// ovSettle waits, at most 15 s, until the server has gone idle after the
// previous run (a plain server may still work through a queue its clients
// gave up on, which would take the core from the next run).
func (h *harness) ovSettle(s *server) {
	deadline := time.Now().Add(15 * time.Second)
	for _, x := range h.servers {
		for time.Now().Before(deadline) && h.ctx.Err() == nil {
			c0 := x.cpu()
			time.Sleep(250 * time.Millisecond)
			if x.cpu()-c0 <= 20*time.Millisecond { // under 8% of a core
				break
			}
		}
	}
	_ = s
}

// rssSampler samples the RSS of a server (master and workers) over a run.
type rssSampler struct {
	stop    chan struct{}
	done    chan struct{}
	samples []rssSample
}

type rssSample struct {
	at    time.Duration
	total int64 // KiB
}

func startRSS(s *server, every time.Duration, others *othersTracker) *rssSampler {
	r := &rssSampler{stop: make(chan struct{}), done: make(chan struct{})}
	start := time.Now()
	go func() {
		defer close(r.done)
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			m := s.memory()
			total := m.master
			for _, w := range m.workers {
				total += w
			}
			if total > 0 {
				r.samples = append(r.samples, rssSample{at: time.Since(start), total: total})
			}
			if len(r.samples)%2 == 0 {
				others.sample(false) // every 500 ms
			}
			select {
			case <-r.stop:
				return
			case <-t.C:
			}
		}
	}()
	return r
}

func (r *rssSampler) finish() []rssSample {
	close(r.stop)
	<-r.done
	return r.samples
}

// coreStat is one line of /proc/stat in ticks: busy is user, nice, system,
// irq and softirq (guest time is in user already); total adds idle,
// iowait and steal.
type coreStat struct{ busy, total uint64 }

func (a coreStat) sub(b coreStat) coreStat { return coreStat{a.busy - b.busy, a.total - b.total} }
func (a coreStat) busySeconds() float64    { return float64(a.busy) / clockTick }

// readCores is the machine ("cpu") and then each core ("cpuN").
func readCores() []coreStat {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return []coreStat{{}}
	}
	var out []coreStat
	for _, line := range strings.Split(string(b), "\n") {
		if !strings.HasPrefix(line, "cpu") {
			continue
		}
		f := strings.Fields(line)
		var st coreStat
		for i, v := range f[1:] {
			if i >= 8 {
				break
			}
			n, _ := strconv.ParseUint(v, 10, 64)
			st.total += n
			switch i {
			case 0, 1, 2, 5, 6: // user nice system irq softirq
				st.busy += n
			}
		}
		out = append(out, st)
	}
	if len(out) == 0 {
		return []coreStat{{}}
	}
	return out
}

var refusalReasons = []string{"queue_delay", "in_flight", "connections"}

// refusalsByReason is the increase of mcpgateway_http_requests_refused_total
// by reason; a series without a reason label counts as "unlabelled"; nil
// when the series is absent.
func refusalsByReason(m0, m1 metrics) map[string]float64 {
	const name = "mcpgateway_http_requests_refused_total"
	out := map[string]float64{}
	found := false
	for _, s := range m1 {
		if s.name == name {
			found = true
			reason := s.labels["reason"]
			if reason == "" {
				reason = "unlabelled"
			}
			out[reason] += s.value
		}
	}
	if !found {
		return nil
	}
	for _, s := range m0 {
		if s.name == name {
			reason := s.labels["reason"]
			if reason == "" {
				reason = "unlabelled"
			}
			out[reason] -= s.value
		}
	}
	return out
}

func refusedText(by map[string]float64, empty string) string {
	if by == nil {
		return empty
	}
	var parts []string
	for _, k := range refusalReasons {
		parts = append(parts, fmt.Sprintf("%s %s", k, thousands(by[k])))
	}
	var others []string
	for k := range by {
		if k != "queue_delay" && k != "in_flight" && k != "connections" {
			others = append(others, k)
		}
	}
	sort.Strings(others)
	for _, k := range others {
		parts = append(parts, fmt.Sprintf("%s %s", k, thousands(by[k])))
	}
	return "  refused: " + strings.Join(parts, ", ")
}

// histQuantile is the q-quantile of the increase of a Prometheus histogram
// (summed over its series) between two scrapes, interpolated linearly in
// its bucket; ok is false when the histogram is absent or empty.
func histQuantile(m0, m1 metrics, name string, q float64) (float64, bool) {
	buckets := map[float64]float64{}
	add := func(m metrics, sign float64) {
		for _, s := range m {
			if s.name != name+"_bucket" {
				continue
			}
			le, err := strconv.ParseFloat(s.labels["le"], 64)
			if s.labels["le"] == "+Inf" {
				le, err = math.Inf(1), nil
			}
			if err == nil {
				buckets[le] += sign * s.value
			}
		}
	}
	add(m1, 1)
	add(m0, -1)
	if len(buckets) == 0 {
		return 0, false
	}
	les := make([]float64, 0, len(buckets))
	for le := range buckets {
		les = append(les, le)
	}
	sort.Float64s(les)
	total := buckets[les[len(les)-1]]
	if total <= 0 {
		return 0, false
	}
	rank := q * total
	prevLe, prevCount := 0.0, 0.0
	for _, le := range les {
		c := buckets[le]
		if c >= rank {
			if math.IsInf(le, 1) {
				return prevLe, true
			}
			if c == prevCount {
				return le, true
			}
			return prevLe + (le-prevLe)*(rank-prevCount)/(c-prevCount), true
		}
		prevLe, prevCount = le, c
	}
	return prevLe, true
}

// cpuFit estimates the CPU of one 200 and of one 503 from a server's runs
// of a route: least squares of CPU = a·(200s) + b·(503s) over the runs
// (the closed-loop run is all 200s, the overloaded ones mostly 503s).
func cpuFit(runs []*ovRun, cpu func(*ovRun) float64) (per200, per503 float64, ok bool) {
	var s11, s12, s22, s1y, s2y float64
	for _, r := range runs {
		x1, x2 := float64(r.OK.N), float64(r.Refused.N)
		y := cpu(r)
		s11 += x1 * x1
		s12 += x1 * x2
		s22 += x2 * x2
		s1y += x1 * y
		s2y += x2 * y
	}
	if s22 == 0 { // no 503s (a plain server): one unknown
		if s11 == 0 {
			return 0, 0, false
		}
		return s1y / s11, 0, true
	}
	det := s11*s22 - s12*s12
	if len(runs) < 2 || math.Abs(det) < 1e-6*s11*s22 {
		return 0, 0, false // the runs' mixes are too alike to tell the two apart
	}
	return (s1y*s22 - s2y*s12) / det, (s2y*s11 - s1y*s12) / det, true
}

// ovRows turns a route's runs into the table's rows.
func (h *harness) ovRows(rt ovRoute, runs []*ovRun, capacity float64, capNote, multNote string) {
	head := "6 overload · " + rt.title
	var capGW, capPL *ovRun
	for _, r := range runs {
		if r.Kind == "capacity" {
			if r.Server == "gateway" {
				capGW = r
			} else {
				capPL = r
			}
		}
	}
	text := fmt.Sprintf("%s/s used (%s); gateway %s/s (server core %.0f%% busy), plain %s/s (%.0f%%), closed loop",
		thousands(capacity), capNote, thousands(capGW.Goodput), capGW.serverCoreBusy(h), thousands(capPL.Goodput), capPL.serverCoreBusy(h))
	if multNote != "" {
		text += "; guide payload offered at " + multNote
	}
	h.add(row{Scenario: head, Measure: "capacity", Value: capacity, Text: text, Result: "info"})

	// CPU per 200 and per 503, from a server's runs of the route in which
	// (nearly) every request got an answer.
	for _, name := range []string{"gateway", "plain"} {
		var rs []*ovRun
		var used []string
		other := 0.0
		for _, r := range runs {
			if r.Server == name && r.clean() && !r.Discarded {
				rs = append(rs, r)
				used = append(used, r.shortLabel())
				other = max(other, r.OtherPct)
			}
		}
		a, b, ok := cpuFit(rs, func(r *ovRun) float64 { return r.ServerSide })
		if !ok {
			h.add(row{Scenario: head, Measure: "CPU per request, " + name,
				Text: fmt.Sprintf("cannot tell a 200's CPU from a 503's: too few runs with at most 5%% timeouts, or too alike (%s)", orDash(strings.Join(used, ", "))), Result: "n/a"})
			continue
		}
		am, bm, _ := cpuFit(rs, func(r *ovRun) float64 { return r.Machine })
		ap, bp, _ := cpuFit(rs, func(r *ovRun) float64 { return r.ServerCPU })
		var t string
		if b != 0 || bm != 0 {
			t = fmt.Sprintf("per 200 %.1f µs, per 503 %.1f µs (machine − generator − prober − bench − other programs); whole machine %.1f / %.1f µs; the server's processes alone %.1f / %.1f µs",
				a*1e6, b*1e6, am*1e6, bm*1e6, ap*1e6, bp*1e6)
		} else {
			t = fmt.Sprintf("per answer %.1f µs (machine − generator − prober − bench − other programs); whole machine %.1f µs; the server's processes alone %.1f µs; no 503s",
				a*1e6, am*1e6, ap*1e6)
		}
		t += fmt.Sprintf("; fit over %s; other programs used up to %.0f%% of the machine meanwhile", strings.Join(used, ", "), other)
		h.add(row{Scenario: head, Measure: "CPU per request, " + name + " (least squares over its runs)", Value: b * 1e6, Text: t, Result: "info"})
	}

	byMult := map[float64][2]*ovRun{}
	var mults []float64
	for _, r := range runs {
		if r.Kind != "open" {
			continue
		}
		p := byMult[r.Multiple]
		if _, seen := byMult[r.Multiple]; !seen {
			mults = append(mults, r.Multiple)
		}
		if r.Server == "gateway" {
			p[0] = r
		} else {
			p[1] = r
		}
		byMult[r.Multiple] = p
	}
	sort.Float64s(mults)
	for _, m := range mults {
		g, p := byMult[m][0], byMult[m][1]
		if g == nil {
			continue
		}
		sc := fmt.Sprintf("%s · %s× capacity, %s/s offered for %.0f s", head, trimFloat(m), thousands(g.Offered), g.Seconds)
		rate := func(r *ovRun) string {
			if r == nil {
				return "—"
			}
			s := fmt.Sprintf("%s/s (%.0f%%", thousands(r.Achieved), 100*r.Achieved/r.Offered)
			if r.Discarded {
				s += ", DISCARDED"
			}
			if r.LongestGap > stallDiscardMs {
				s += fmt.Sprintf(", the generator stalled %.0f ms", r.LongestGap)
			}
			return s + fmt.Sprintf("; generator %.0f%% of its core)", r.GenCorePct)
		}
		valid := !g.Discarded
		judge := func(ok bool) string {
			if !valid {
				return "n/a"
			}
			return passIf(ok)
		}
		res := "info"
		if g.Discarded || (p != nil && p.Discarded) {
			res = "n/a"
		}
		h.add(row{Scenario: sc, Measure: "achieved rate (runs below 95% are discarded)", Value: g.Achieved,
			Text: fmt.Sprintf("gateway %s; plain %s", rate(g), rate(p)), Bar: "≥ 95% of offered", Result: res})

		// Goodput.
		gp := fmt.Sprintf("gateway %s/s (%.0f%% of capacity)", thousands(g.Goodput), 100*g.Goodput/capacity)
		if p != nil {
			gp += fmt.Sprintf("; plain %s/s", thousands(p.Goodput))
		}
		if rt.cpu {
			ok := p != nil && g.Goodput >= p.Goodput
			r := judge(ok)
			if p == nil || p.Discarded {
				r = "n/a"
			}
			h.add(row{Scenario: sc, Measure: "goodput (200 within 1 s)", Value: g.Goodput, Text: gp, Bar: "≥ plain", Result: r})
		} else {
			want := barGoodputIO * capacity
			h.add(row{Scenario: sc, Measure: "goodput (200 within 1 s)", Value: g.Goodput, Text: gp,
				Bar: fmt.Sprintf("≥ %s/s (%.0f%% of %s)", thousands(want), 100*barGoodputIO, thousands(capacity)), Result: judge(g.Goodput >= want)})
		}
		// Served latency.
		bar := barServedCPU
		if !rt.cpu {
			bar = barServedIO
		}
		st := fmt.Sprintf("gateway %.1f / %.1f ms (n=%s)", g.OK.P50, g.OK.P99, thousands(float64(g.OK.N)))
		if p != nil {
			st += fmt.Sprintf("; plain %.1f / %.1f ms (n=%s)", p.OK.P50, p.OK.P99, thousands(float64(p.OK.N)))
		}
		if g.Timeouts > 0 {
			st += fmt.Sprintf("; the gateway's %s timeouts (no answer in 1 s) are not in it", thousands(float64(g.Timeouts)))
		}
		h.add(row{Scenario: sc, Measure: "served (200) p50 / p99", Value: g.OK.P99, Text: st,
			Bar: fmt.Sprintf("p99 ≤ %.0f ms", ms(bar)), Result: judge(g.OK.N > 0 && g.OK.P99 <= ms(bar))})
		// 503s.
		rt503 := fmt.Sprintf("gateway %s (%.0f%% of requests), p50 / p99 %.2f / %.2f ms", thousands(float64(g.Refused.N)),
			100*float64(g.Refused.N)/math.Max(float64(g.Requests), 1), g.Refused.P50, g.Refused.P99)
		if p != nil {
			rt503 += fmt.Sprintf("; plain %s", thousands(float64(p.Refused.N)))
		}
		if rt.cpu {
			h.add(row{Scenario: sc, Measure: "503 answers", Value: g.Refused.P99, Text: rt503, Result: "info"})
		} else {
			h.add(row{Scenario: sc, Measure: "503 answers", Value: g.Refused.P99, Text: rt503,
				Bar: fmt.Sprintf("p99 ≤ %.0f ms", ms(bar503P99)), Result: judge(g.Refused.N > 0 && g.Refused.P99 <= ms(bar503P99))})
		}
		// Errors.
		errText := func(r *ovRun) string {
			var other []string
			for c, n := range r.Codes {
				if c != "200" && c != "503" {
					other = append(other, fmt.Sprintf("%s×%d", c, n))
				}
			}
			sort.Strings(other)
			s := fmt.Sprintf("timeouts %s, connection errors %s, other %s", thousands(float64(r.Timeouts)), thousands(float64(r.ConnErrors)), thousands(float64(r.OtherErrors)))
			if len(other) > 0 {
				s += ", statuses " + strings.Join(other, " ")
			}
			if r.BadSize > 0 {
				s += fmt.Sprintf(", 200s of the wrong size %d", r.BadSize)
			}
			return s
		}
		et := "gateway: " + errText(g)
		if p != nil {
			et += "; plain: " + errText(p)
		}
		h.add(row{Scenario: sc, Measure: "other errors and timeouts (1 s)", Value: float64(g.Timeouts + g.ConnErrors + g.OtherErrors), Text: et, Result: "info"})
		// /health.
		ht := fmt.Sprintf("health port %s; main port %s", probeText(g.Health), probeText(g.Main))
		if p != nil {
			ht += "; plain, main port " + probeText(p.Main)
		}
		hp := math.Inf(1)
		if g.Health != nil && g.Health.N > 0 {
			hp = g.Health.P99
		}
		h.add(row{Scenario: sc, Measure: "/health p99, fresh connections (prober process)", Value: hp, Text: ht,
			Bar: fmt.Sprintf("health port ≤ %.0f ms", ms(barHealthP99)), Result: judge(hp <= ms(barHealthP99))})
		// RSS.
		rt2 := fmt.Sprintf("gateway %.1f → %.1f MiB (%+.1f%%)", g.RSSFirst, g.RSSSecond, 100*g.RSSChange)
		if p != nil {
			rt2 += fmt.Sprintf("; plain %.1f → %.1f MiB (%+.1f%%)", p.RSSFirst, p.RSSSecond, 100*p.RSSChange)
		}
		h.add(row{Scenario: sc, Measure: "RSS, master + workers, mean of first half → second half", Value: 100 * g.RSSChange, Text: rt2,
			Bar: fmt.Sprintf("±%.0f%%", 100*barRSSHalves), Result: judge(g.RSSFirst > 0 && math.Abs(g.RSSChange) <= barRSSHalves)})
		// Refusals by reason, queueing delay, CPU.
		rb := strings.TrimPrefix(refusedText(g.RefusedBy, "  refused: mcpgateway_http_requests_refused_total absent"), "  refused: ")
		if g.QueueP99ms > 0 || g.QueueP50ms > 0 {
			rb += fmt.Sprintf("; queueing delay (mcpgateway_request_queue_seconds) p50 %.1f ms, p99 %.1f ms", g.QueueP50ms, g.QueueP99ms)
		} else {
			rb += "; mcpgateway_request_queue_seconds absent or empty"
		}
		h.add(row{Scenario: sc, Measure: "refusals by reason (/metrics)", Text: rb, Result: "info"})
		cpuText := func(r *ovRun) string {
			t := fmt.Sprintf("machine %.2f s (cores %v %% busy), server %.2f s, generator %.2f s, other programs %.0f%% of the machine", r.Machine, roundAll(r.CoreBusy), r.ServerCPU, r.LoadGenCPU, r.OtherPct)
			if r.OtherPct >= 10 {
				t += " (" + r.OtherTop + ")"
			}
			return t
		}
		ct := "gateway: " + cpuText(g)
		if p != nil {
			ct += "; plain: " + cpuText(p)
		}
		h.add(row{Scenario: sc, Measure: "CPU over the run", Value: g.Machine, Text: ct, Result: "info"})
	}
}

// overloadMethodLines say how the overload was measured, one sentence each.
func (h *harness) overloadMethodLines() []string {
	return []string{
		fmt.Sprintf("Servers: for /burn and /slow, supervisor/internal/testserver `--workers %d --health-bind ADDR --max-queue-delay %s` (/slow adds `--backpressure %d`) against `testserver --plain ADDR` (the same handler in one default fasthttp.Server process, no supervisor, no shedding); for the guide's payload, `mcpgateway serve --workers %d --health-bind ADDR --max-queue-delay %s` against tests/bench/plain (SQLite).",
			ovWorkers, h.c.queueDelay, ioBackpressure, ovWorkers, h.c.queueDelay),
		fmt.Sprintf("Every server in a session of its own (setsid) pinned to CPU %s (taskset; GOMAXPROCS is then 1); the load generator, vegeta v12 as a library in a child process of the bench in its own session, pinned to CPU %s; the /health prober in a third process, unpinned.", h.c.pinServer, h.c.pinLoad),
		fmt.Sprintf("Capacity first, per route: a closed loop (vegeta, a fixed number of keep-alive connections, %s) on each server; the gateway's 200s per second set the offered rates (scaled up when its core was not saturated); /slow's capacity is its in-flight capacity, %d × %d ÷ %s = %.0f/s.",
			h.c.capacityDur, ovWorkers, ioBackpressure, ioSleep, float64(ovWorkers*ioBackpressure)/ioSleep.Seconds()),
		fmt.Sprintf("Then a constant arrival rate (open loop: vegeta spawns a worker and a keep-alive connection whenever all are waiting, up to what a %s timeout can keep in flight) of 2×, 5× and 10× capacity on /burn?us=2000, 20× on /slow?ms=100, and on the guide's payload the highest multiple the generator reaches (a ramp of short runs on the gateway, 0.2× to 10×, up to the first below 95%%), %s per run, the same rate on the gateway and on the plain server; a run whose achieved rate is below %.0f%% of the offered one, or in which the generator stalled (more than 50 ms between two sends, where it sends every millisecond or so), is discarded (shown, not judged), and a stalled one is run once more.",
			ovTimeout, h.c.overloadDur, 100*discardBelow),
		fmt.Sprintf("Goodput: 200s answered within %s, per second of the run; served and 503 latencies are vegeta's (send to end of body); timeouts are requests without an answer in %s; /health: GET on a fresh connection %.0f times a second on each port (the main port and the master's health port), %s timeout, a failure counted at the timeout.",
			ovGoodWithin, ovTimeout, float64(time.Second)/float64(ovProbeEvery), ovTimeout),
		"The generator's CPU share of its core is shown with each run: near 100%, its own queueing adds to the latencies and timeouts measured (one core of vegeta sends some 6,000 requests a second here, fewer when an overloaded server makes it reconnect), so such a run says less about the server than the bars suggest.",
		"RSS: VmRSS of the master and its workers (or the plain process) every 250 ms from /proc, the mean of the run's first half against its second half; refusals by reason and the queueing delay from the gateway's /metrics before and after each run.",
		"CPU: whole-machine busy time from /proc/stat (user, nice, system, irq, softirq) over each run, less the generator's, prober's and bench's own CPU time (their rusage) and other programs' (every other process's utime+stime from /proc, sampled every 500 ms; kernel threads left in); CPU per 200 and per 503 are the least-squares solution of CPU = a·(200s) + b·(503s) over a server's runs of a route with no more than 5% timeouts or errors (the closed-loop run is all 200s, the overloaded ones mostly 503s).",
		"Each new connection of the generator and the prober comes from the next of 253 loopback source addresses (127.0.0.x, 127.0.1.x), so that connections an overloaded server closes, and their TIME_WAIT, do not exhaust one address's ephemeral ports (which makes every connect a slow search and the generator the bottleneck).",
	}
}

func (h *harness) overloadMethod() string {
	return "Overload: " + strings.Join(h.overloadMethodLines(), " ")
}

const (
	overloadBegin = "<!-- bench:overload:start -->"
	overloadEnd   = "<!-- bench:overload:end -->"
)

// overloadMarkdown is the figures section of docs/overload.md.
func (r *report) overloadMarkdown(h *harness) string {
	var b strings.Builder
	b.WriteString(overloadBegin + "\n")
	b.WriteString("<!-- written by `make bench` (tests/bench/overload.go); edit outside these markers -->\n\n")
	passed, missed := 0, 0
	var rows []row
	for _, x := range r.Rows {
		if strings.HasPrefix(x.Scenario, "6 overload") {
			rows = append(rows, x)
			switch x.Result {
			case "PASS":
				passed++
			case "MISS", "FAIL":
				missed++
			}
		}
	}
	fmt.Fprintf(&b, "Latest run: %s, %s mode; %d cores (nproc), %s, %s; commit `%s`%s. Overload bars: %d PASS, %d MISS.\n\n",
		r.Date, r.Mode, r.Machine.NProc, r.Machine.CPU, r.Machine.Kernel, r.Machine.Commit, dirty(r.Machine), passed, missed)
	b.WriteString("How it was measured:\n\n")
	for _, m := range h.overloadMethodLines() {
		fmt.Fprintf(&b, "- %s\n", m)
	}
	b.WriteString("\n#### Runs\n\n")
	b.WriteString("| Route | Server | Load | Offered /s | Achieved /s | Goodput /s | 200: p50 / p99 ms | 503s: n, p50 / p99 ms | Timeouts, errors | /health p99 ms: health port / main port | RSS MiB, 1st → 2nd half | Refused by reason (queue_delay / in_flight / connections) | CPU s: machine / server / generator | Generator's core | Other programs |\n")
	b.WriteString("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n")
	dash := func(v float64, f string) string {
		if v == 0 {
			return "—"
		}
		return fmt.Sprintf(f, v)
	}
	for _, x := range r.Overload {
		load := x.shortLabel()
		achieved := thousands(x.Achieved)
		if x.Discarded {
			achieved += " **discarded**"
		}
		offered := "—"
		if x.Kind == "open" {
			offered = thousands(x.Offered)
		}
		hp := func(p *probeStats) string {
			if p == nil {
				return "—"
			}
			s := fmt.Sprintf("%.1f", p.P99)
			if p.N > p.OK {
				s += fmt.Sprintf(" (%d of %d failed)", p.N-p.OK, p.N)
			}
			return s
		}
		refused := "—"
		if x.RefusedBy != nil {
			refused = fmt.Sprintf("%s / %s / %s", thousands(x.RefusedBy["queue_delay"]), thousands(x.RefusedBy["in_flight"]), thousands(x.RefusedBy["connections"]))
			if u := x.RefusedBy["unlabelled"]; u != 0 {
				refused += fmt.Sprintf(" (unlabelled %s)", thousands(u))
			}
		}
		fmt.Fprintf(&b, "| %s | %s (%s) | %s | %s | %s | %s | %.1f / %.1f | %s, %s / %s | %s, %s | %s / %s | %.1f → %.1f | %s | %.2f / %.2f / %.2f | %.0f%% | %.0f%% |\n",
			x.Route, x.Server, x.Binary, load, offered, achieved, thousands(x.Goodput), x.OK.P50, x.OK.P99,
			thousands(float64(x.Refused.N)), dash(x.Refused.P50, "%.2f"), dash(x.Refused.P99, "%.2f"),
			thousands(float64(x.Timeouts)), thousands(float64(x.ConnErrors+x.OtherErrors)),
			hp(x.Health), hp(x.Main), x.RSSFirst, x.RSSSecond, refused, x.Machine, x.ServerCPU, x.LoadGenCPU, x.GenCorePct, x.OtherPct)
	}
	b.WriteString("\n#### Against the bars\n\n| Route · load | Measure | Figure | Bar | |\n|---|---|---|---|---|\n")
	last := ""
	for _, x := range rows {
		sc := strings.TrimPrefix(x.Scenario, "6 overload · ")
		if sc == last {
			sc = ""
		} else {
			last = sc
		}
		res := x.Result
		if res == "PASS" || res == "MISS" || res == "FAIL" {
			res = "**" + res + "**"
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s |\n", md(sc), md(x.Measure), md(x.Text), md(orDash(x.Bar)), res)
	}
	b.WriteString(overloadEnd + "\n")
	return b.String()
}

// writeOverloadDoc replaces the figures section of docs/overload.md,
// creating the file (a title, a placeholder, the markers) if need be.
func (r *report) writeOverloadDoc(h *harness, path string) error {
	gen := r.overloadMarkdown(h)
	old, err := os.ReadFile(path)
	var doc string
	switch {
	case err == nil && strings.Contains(string(old), overloadBegin) && strings.Contains(string(old), overloadEnd):
		s := string(old)
		i := strings.Index(s, overloadBegin)
		j := strings.Index(s, overloadEnd) + len(overloadEnd)
		if j < len(s) && s[j] == '\n' {
			j++
		}
		doc = s[:i] + gen + s[j:]
	case err == nil:
		doc = strings.TrimRight(string(old), "\n") + "\n\n## Figures (make bench)\n\n" + gen
	case errors.Is(err, os.ErrNotExist):
		doc = "# Overload\n\n(the lead writes the text)\n\n## Figures (make bench)\n\n" + gen
	default:
		return err
	}
	return os.WriteFile(path, []byte(doc), 0o644)
}

// othersTracker follows the CPU time (utime+stime) of every process on
// the machine over a run, sampled, to tell what other programs used: not
// this bench's servers (their sessions), generator or prober (children of
// this process), nor this process or kernel threads. A process first seen after the start counts from zero; one that
// lives between two samples only is missed. cutime is left out: a
// long-running program reaping a child would count all of the child's
// time at once.
type othersTracker struct {
	ours  map[int]bool // session ids
	self  int
	first map[int]procTicks
	last  map[int]procTicks
}

type procTicks struct {
	start uint64 // starttime, to tell a reused pid
	ticks uint64
	comm  string
}

func newOthersTracker(sessions ...int) *othersTracker {
	t := &othersTracker{ours: map[int]bool{}, self: os.Getpid(), first: map[int]procTicks{}, last: map[int]procTicks{}}
	for _, s := range sessions {
		t.ours[s] = true
	}
	t.sample(true)
	return t
}

func (t *othersTracker) sample(initial bool) {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return
	}
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == t.self {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		i := strings.LastIndexByte(string(b), ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(string(b[i+1:]))
		if len(f) < 20 {
			continue
		}
		ppid, _ := strconv.Atoi(f[1])
		sid, _ := strconv.Atoi(f[3])
		if pid == 2 || ppid == 2 || ppid == t.self || t.ours[sid] { // kernel threads; the generator and prober
			continue
		}
		num := func(k int) uint64 { n, _ := strconv.ParseUint(f[k], 10, 64); return n }
		p := procTicks{start: num(19), ticks: num(11) + num(12), comm: string(b[strings.IndexByte(string(b), '(')+1 : i])}
		if q, ok := t.first[pid]; !ok || q.start != p.start {
			base := p
			if !initial {
				base.ticks = 0 // started during the run
			}
			t.first[pid] = base
		}
		t.last[pid] = p
	}
}

// top names the other programs that used the most CPU, with their seconds.
func (t *othersTracker) top(n int) string {
	byComm := map[string]uint64{}
	for pid, p := range t.last {
		if q := t.first[pid]; p.ticks > q.ticks {
			byComm[p.comm] += p.ticks - q.ticks
		}
	}
	names := make([]string, 0, len(byComm))
	for c := range byComm {
		names = append(names, c)
	}
	sort.Slice(names, func(i, j int) bool { return byComm[names[i]] > byComm[names[j]] })
	var parts []string
	for _, c := range names[:min(n, len(names))] {
		parts = append(parts, fmt.Sprintf("%s %.1fs", c, ticks(byComm[c]).Seconds()))
	}
	return strings.Join(parts, ", ")
}

// total is the other programs' CPU time from the first sample to the last.
func (t *othersTracker) total() time.Duration {
	var n uint64
	for pid, p := range t.last {
		if q := t.first[pid]; p.ticks >= q.ticks {
			n += p.ticks - q.ticks
		}
	}
	return ticks(n)
}
