package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	vegeta "github.com/tsenart/vegeta/v12/lib"
)

// The overload scenario's helper processes: the bench binary re-executes
// itself as the load generator (vegeta as a library, open loop) and as the
// /health prober, each in a session of its own, so that neither shares a
// CPU, a scheduler group or a Go runtime with the bench or the servers.
//
//	bench overload-gen   < genSpec JSON    > genResult JSON
//	bench overload-probe < probeSpec JSON  > probeResult JSON

const (
	genCommand   = "overload-gen"
	probeCommand = "overload-probe"
)

// helperMain runs a helper subcommand; handled is false for the bench itself.
func helperMain() (handled bool, code int) {
	if len(os.Args) < 2 {
		return false, 0
	}
	var err error
	switch os.Args[1] {
	case genCommand:
		err = genMain()
	case probeCommand:
		err = probeMain()
	case upstreamCommand:
		err = upstreamMain()
	default:
		return false, 0
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", os.Args[1], err)
		return true, 1
	}
	return true, 0
}

// genSpec is one attack.
type genSpec struct {
	Method string            `json:"method"`
	URL    string            `json:"url"`
	Header map[string]string `json:"header,omitempty"`
	Body   []byte            `json:"body,omitempty"`
	// Rate is the constant arrival rate (requests per second, open loop);
	// 0: closed loop over Conns connections (each sends its next request
	// when its answer came).
	Rate       int           `json:"rate"`
	Conns      int           `json:"conns"`
	MaxWorkers int           `json:"max_workers"` // open loop: requests in flight at most (one connection each)
	Duration   time.Duration `json:"duration"`
	Timeout    time.Duration `json:"timeout"`     // per request
	GoodWithin time.Duration `json:"good_within"` // goodput: 200s within this
	ExpectBody int           `json:"expect_body"` // length of a correct 200's body; 0: not checked
}

// latStats are percentiles of latencies, in milliseconds.
type latStats struct {
	N   int64   `json:"n"`
	P50 float64 `json:"p50_ms"`
	P99 float64 `json:"p99_ms"`
	Max float64 `json:"max_ms"`
}

func statsOf(v []float64) latStats {
	if len(v) == 0 {
		return latStats{}
	}
	sort.Float64s(v)
	at := func(p float64) float64 {
		i := int(math.Ceil(p/100*float64(len(v)))) - 1
		return v[min(max(i, 0), len(v)-1)]
	}
	return latStats{N: int64(len(v)), P50: at(50), P99: at(99), Max: v[len(v)-1]}
}

// secondCounts is what one second of an attack brought, by the second in
// which the requests were sent.
// lateServed is the served-latency bar of the overload runs: the 200s past
// it are counted per second, to show when in a run the tail happened.
const lateServed = 50 * time.Millisecond

type secondCounts struct {
	Sent    int64 `json:"sent"`
	OK      int64 `json:"ok"`
	Good    int64 `json:"good"`
	Slow    int64 `json:"slow"` // 200s over the served-latency bar (lateServed)
	Refused int64 `json:"refused"`
	Failed  int64 `json:"failed"`
}

type genResult struct {
	Requests    int64            `json:"requests"`      // sent
	SendSeconds float64          `json:"send_seconds"`  // first to last send
	Rate        float64          `json:"achieved_rate"` // Requests ÷ SendSeconds, as vegeta reports its rate
	Codes       map[string]int64 `json:"codes"`         // answers by status
	OK          latStats         `json:"ok"`            // 200s
	Good        int64            `json:"good"`          // 200s within GoodWithin
	Refused     latStats         `json:"refused"`       // 503s
	Timeouts    int64            `json:"timeouts"`      // no answer within Timeout
	ConnErrors  int64            `json:"conn_errors"`   // refused, reset or closed without an answer
	OtherErrors int64            `json:"other_errors"`
	ErrorKinds  map[string]int64 `json:"error_kinds,omitempty"`
	BadSize     int64            `json:"bad_size"` // 200s whose body is not the size of a correct one
	PerSecond   []secondCounts   `json:"per_second"`
	// LongestGap is the longest time between two sends, in ms: an open
	// loop at these rates sends every millisecond or so, and a longer gap
	// is the generator stalling (its latencies then include the stall).
	LongestGap float64 `json:"longest_send_gap_ms"`
	CPUSeconds float64 `json:"cpu_seconds"` // the generator's own user+system time
	MaxRSSMiB  float64 `json:"max_rss_mib"`
	GOMAXPROCS int     `json:"gomaxprocs"`
}

func raiseNoFile() {
	var r syscall.Rlimit
	if syscall.Getrlimit(syscall.RLIMIT_NOFILE, &r) == nil && r.Cur < r.Max {
		r.Cur = r.Max
		syscall.Setrlimit(syscall.RLIMIT_NOFILE, &r)
	}
}

// noFileLimit is the hard limit of open files, which bounds the
// connections a generator can hold.
func noFileLimit() int {
	var r syscall.Rlimit
	if syscall.Getrlimit(syscall.RLIMIT_NOFILE, &r) != nil {
		return 1024
	}
	return int(min(r.Max, 1<<20))
}

func genMain() error {
	var spec genSpec
	if err := json.NewDecoder(os.Stdin).Decode(&spec); err != nil {
		return err
	}
	raiseNoFile()
	// Fewer collections: with one core, a collection stalls the sends and
	// the reads of every request in flight, and the stall is then counted
	// in the server's latencies (sends 78 ms apart at 10x, measured).
	debug.SetGCPercent(800)
	if f := os.Getenv("BENCH_GEN_CPUPROFILE"); f != "" { // to see what the generator spends its core on
		if w, err := os.Create(f); err == nil {
			pprof.StartCPUProfile(w)
			defer pprof.StopCPUProfile()
		}
	}
	hdr := http.Header{}
	for k, v := range spec.Header {
		hdr.Set(k, v)
	}
	tgt := vegeta.Target{Method: spec.Method, URL: spec.URL, Body: spec.Body, Header: hdr}
	maxBody := int64(64)
	if spec.ExpectBody > 0 {
		maxBody = int64(spec.ExpectBody) + 1
	}
	// vegeta's own client, but for the dialer: each new connection comes
	// from the next of 253 loopback addresses, so that the connections an
	// overloaded server closes (and the TIME_WAIT they leave) do not use up
	// the ephemeral ports of one source address, which makes every connect
	// a slow search of the port range and the generator the bottleneck.
	tr := &http.Transport{
		DialContext:         (&sourceDialer{base: 2, timeout: spec.Timeout}).DialContext,
		MaxIdleConnsPerHost: max(spec.MaxWorkers, spec.Conns),
		ForceAttemptHTTP2:   false,
	}
	opts := []func(*vegeta.Attacker){
		vegeta.Client(&http.Client{Timeout: spec.Timeout, Transport: tr}),
		vegeta.MaxBody(maxBody), vegeta.Redirects(vegeta.NoFollow),
	}
	var pacer vegeta.Pacer
	if spec.Rate > 0 {
		// Open loop: a new worker (and connection) whenever every worker
		// waits for an answer, up to MaxWorkers; idle connections are kept.
		opts = append(opts, vegeta.Workers(uint64(min(spec.MaxWorkers, 64))), vegeta.MaxWorkers(uint64(spec.MaxWorkers)))
		pacer = vegeta.ConstantPacer{Freq: spec.Rate, Per: time.Second}
	} else {
		tr.MaxConnsPerHost = spec.Conns
		opts = append(opts, vegeta.Workers(uint64(spec.Conns)), vegeta.MaxWorkers(uint64(spec.Conns)))
		pacer = vegeta.ConstantPacer{} // as fast as the workers go
	}
	atk := vegeta.NewAttacker(opts...)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	go func() {
		<-ctx.Done()
		atk.Stop()
	}()

	res := genResult{Codes: map[string]int64{}, ErrorKinds: map[string]int64{}}
	var okLat, refLat []float64
	var sends []int64
	var first, last time.Time
	secs := int(spec.Duration/time.Second) + 2
	res.PerSecond = make([]secondCounts, secs)
	began := time.Now()
	for r := range atk.Attack(vegeta.NewStaticTargeter(tgt), pacer, spec.Duration, "") {
		if first.IsZero() || r.Timestamp.Before(first) {
			first = r.Timestamp
		}
		if r.Timestamp.After(last) {
			last = r.Timestamp
		}
		res.Requests++
		sends = append(sends, r.Timestamp.UnixNano())
		sec := &res.PerSecond[min(max(int(r.Timestamp.Sub(began)/time.Second), 0), secs-1)]
		sec.Sent++
		lat := float64(r.Latency) / float64(time.Millisecond)
		switch {
		case r.Code == 200:
			res.Codes["200"]++
			okLat = append(okLat, lat)
			sec.OK++
			if r.Latency <= spec.GoodWithin {
				res.Good++
				sec.Good++
			}
			if r.Latency > lateServed {
				sec.Slow++
			}
			if spec.ExpectBody > 0 && len(r.Body) != spec.ExpectBody {
				res.BadSize++
			}
		case r.Code == 503:
			res.Codes["503"]++
			refLat = append(refLat, lat)
			sec.Refused++
		case r.Code != 0:
			res.Codes[strconv.Itoa(int(r.Code))]++
			sec.Failed++
		default:
			sec.Failed++
			kind := errorKind(r.Error)
			res.ErrorKinds[kind]++
			switch kind {
			case "timeout":
				res.Timeouts++
			case "refused", "reset", "closed", "EOF", "broken pipe", "no free port", "too many open files":
				res.ConnErrors++
			default:
				res.OtherErrors++
			}
		}
	}
	if last.After(first) {
		res.SendSeconds = last.Sub(first).Seconds()
		res.Rate = float64(res.Requests) / res.SendSeconds
	}
	res.OK, res.Refused = statsOf(okLat), statsOf(refLat)
	slices.Sort(sends)
	for i := 1; i < len(sends); i++ {
		res.LongestGap = max(res.LongestGap, float64(sends[i]-sends[i-1])/1e6)
	}
	for len(res.PerSecond) > 0 && res.PerSecond[len(res.PerSecond)-1] == (secondCounts{}) {
		res.PerSecond = res.PerSecond[:len(res.PerSecond)-1]
	}
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) == nil {
		res.CPUSeconds = float64(ru.Utime.Nano()+ru.Stime.Nano()) / 1e9
		res.MaxRSSMiB = float64(ru.Maxrss) / 1024
	}
	res.GOMAXPROCS = runtime.GOMAXPROCS(0)
	return json.NewEncoder(os.Stdout).Encode(res)
}

// sourceDialer dials from 127.0.X.2 to 127.0.X.254 in turn (X = base), a
// new source address for each connection.
type sourceDialer struct {
	base    byte
	timeout time.Duration
	next    atomic.Uint32
}

func (d *sourceDialer) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	n := d.next.Add(1)
	src := net.IPv4(127, 0, d.base, byte(2+n%253))
	dl := net.Dialer{Timeout: d.timeout, LocalAddr: &net.TCPAddr{IP: src}, Control: bindNoPort}
	return dl.DialContext(ctx, network, addr)
}

// bindNoPort sets IP_BIND_ADDRESS_NO_PORT: the port is chosen at connect,
// for the whole 4-tuple, rather than at bind among the address's ports.
func bindNoPort(network, address string, c syscall.RawConn) error {
	const ipBindAddressNoPort = 24 // linux/in.h
	var serr error
	err := c.Control(func(fd uintptr) {
		serr = syscall.SetsockoptInt(int(fd), syscall.IPPROTO_IP, ipBindAddressNoPort, 1)
	})
	if err != nil {
		return err
	}
	return serr
}

// errorKind names a client error briefly.
func errorKind(e string) string {
	for _, k := range []struct{ sub, kind string }{
		{"Client.Timeout", "timeout"}, {"deadline exceeded", "timeout"}, {"i/o timeout", "timeout"},
		{"connection refused", "refused"}, {"connection reset", "reset"}, {"broken pipe", "broken pipe"},
		{"server closed idle connection", "closed"}, {"EOF", "EOF"},
		{"cannot assign requested address", "no free port"}, {"too many open files", "too many open files"},
	} {
		if strings.Contains(e, k.sub) {
			return k.kind
		}
	}
	if len(e) > 80 {
		e = e[:80]
	}
	return e
}

// probeSpec: GET /health on a fresh connection to each address, Every,
// each within Timeout (connecting included), for Duration.
type probeSpec struct {
	Addrs    []string      `json:"addrs"`
	Every    time.Duration `json:"every"`
	Timeout  time.Duration `json:"timeout"`
	Duration time.Duration `json:"duration"`
}

// probeStats is what the probes of one address saw. A failed probe (no
// answer within the timeout, or not a 200) counts at the timeout in the
// percentiles.
type probeStats struct {
	Addr  string           `json:"addr"`
	N     int64            `json:"n"`
	OK    int64            `json:"ok"`
	P50   float64          `json:"p50_ms"`
	P99   float64          `json:"p99_ms"`
	Max   float64          `json:"max_ms"`
	Fails map[string]int64 `json:"fails,omitempty"`
}

type probeResult struct {
	Ports      []probeStats `json:"ports"`
	CPUSeconds float64      `json:"cpu_seconds"`
}

func probeMain() error {
	var spec probeSpec
	if err := json.NewDecoder(os.Stdin).Decode(&spec); err != nil {
		return err
	}
	req := getReq("/health", true)
	out := probeResult{Ports: make([]probeStats, len(spec.Addrs))}
	dialer := &sourceDialer{base: 1, timeout: spec.Timeout} // apart from the generator's addresses
	var wg sync.WaitGroup
	end := time.Now().Add(spec.Duration)
	for i, addr := range spec.Addrs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// Staggered, so that the ports are not probed at the same instant.
			time.Sleep(time.Duration(i) * spec.Every / time.Duration(len(spec.Addrs)))
			ps := probeStats{Addr: addr, Fails: map[string]int64{}}
			var (
				lat   []float64
				mu    sync.Mutex
				probe sync.WaitGroup
			)
			t := time.NewTicker(spec.Every)
			defer t.Stop()
			// Each probe on a goroutine of its own: one that waits for its
			// timeout does not delay the next.
			for now := time.Now(); now.Before(end); now = <-t.C {
				probe.Add(1)
				go func() {
					defer probe.Done()
					d, fail := healthOnce(dialer, addr, req, spec.Timeout)
					mu.Lock()
					defer mu.Unlock()
					ps.N++
					if fail != "" {
						ps.Fails[fail]++
						d = spec.Timeout
					} else {
						ps.OK++
					}
					lat = append(lat, float64(d)/float64(time.Millisecond))
				}()
			}
			probe.Wait()
			st := statsOf(lat)
			ps.P50, ps.P99, ps.Max = st.P50, st.P99, st.Max
			out.Ports[i] = ps
		}()
	}
	wg.Wait()
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) == nil {
		out.CPUSeconds = float64(ru.Utime.Nano()+ru.Stime.Nano()) / 1e9
	}
	return json.NewEncoder(os.Stdout).Encode(out)
}

// healthOnce is one GET on a new connection; fail says why it failed.
func healthOnce(dialer *sourceDialer, addr string, req []byte, timeout time.Duration) (time.Duration, string) {
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	c, err := dialer.DialContext(ctx, "tcp4", addr)
	if err != nil {
		return time.Since(start), errorKind(err.Error())
	}
	defer c.Close()
	_ = c.SetDeadline(start.Add(timeout))
	if _, err := c.Write(req); err != nil {
		return time.Since(start), errorKind(err.Error())
	}
	r, err := readResponse(bufio.NewReaderSize(c, 4096))
	d := time.Since(start)
	if err != nil {
		return d, errorKind(err.Error())
	}
	if r.status != 200 {
		return d, "status " + strconv.Itoa(r.status)
	}
	return d, ""
}

// runHelper runs this binary as a helper subcommand in a session of its
// own, pinned to cpus if not empty, with in as its standard input; it
// decodes the JSON it prints into out and returns its CPU time.
func (h *harness) runHelper(cmdName, cpus string, in, out any) (time.Duration, error) {
	self, err := os.Executable()
	if err != nil {
		return 0, err
	}
	b, err := json.Marshal(in)
	if err != nil {
		return 0, err
	}
	argv := []string{self, cmdName}
	if cpus != "" {
		argv = append([]string{"taskset", "-c", cpus}, argv...)
	}
	cmd := exec.CommandContext(h.ctx, argv[0], argv[1:]...)
	cmd.Stdin = bytes.NewReader(b)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Pdeathsig: syscall.SIGKILL}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	if err := cmd.Run(); err != nil {
		return 0, fmt.Errorf("%s: %v\n%s", cmdName, err, stderr.String())
	}
	cpu := cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
	if err := json.Unmarshal(stdout.Bytes(), out); err != nil {
		return cpu, fmt.Errorf("%s printed %q: %v\n%s", cmdName, stdout.String(), err, stderr.String())
	}
	if stderr.Len() > 0 {
		h.vlogf("   %s: %s", cmdName, strings.TrimSpace(stderr.String()))
	}
	return cpu, nil
}
