// Command bench is `make bench`: it measures mcpgateway against the bars of
// docs (DESIGN "Bars the benchmarks must reach") on this machine and prints
// one table of medians, each figure beside its bar with PASS or MISS. It
// writes the table to docs/performance.md (between markers, so the text
// around it is kept) and the raw figures to docs/bench.json.
//
// Every server it measures it starts itself on 127.0.0.1, on free ports, and
// every process it starts is stopped when it ends, also on error or Ctrl-C:
//
//   - the gateway: `mcpgateway serve`, 2 workers, gunicorn profile, SQLite in a
//     temporary directory (or PostgreSQL and Redis for the scenarios that say so);
//   - the ceiling: tests/bench/plain, the same rpc handler and store in one
//     default fasthttp.Server process (GOMAXPROCS = every core).
//
// The load generators are wrk and hey (make tools installs them); the
// overload scenario (overload.go) offers an open-loop constant arrival rate
// with vegeta, used as a library by this program re-executed as a child
// process pinned to its own core (loadgen.go), and compares the gateway and
// supervisor/internal/testserver with a plain counterpart of each.
//
//	go run ./tests/bench -only overload -quick -write=false -v
//
//	go run ./tests/bench            # the full run, 4 to 6 minutes on 2 cores
//	go run ./tests/bench -quick     # a one-minute smoke of the harness; writes nothing unless -write
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// config is what the flags select.
type config struct {
	quick        bool
	write        bool
	bin          string // prebuilt mcpgateway; empty: build it
	mdPath       string
	jsonPath     string
	overloadPath string // docs/overload.md: its figures section
	pgURL        string // server URL without a database name
	redisAddr    string
	redisDB      int
	only         string // comma-separated scenario names; empty: all
	verbose      bool
	keepTmp      bool
	pprofPlain   string
	niceLoad     int
	gwArgs       []string // appended to every `mcpgateway serve`

	// Durations and counts, set from quick.
	wrkDur      time.Duration
	rounds      int // wrk rounds per server, default backend
	roundsOther int // wrk rounds per server, PostgreSQL backends
	heyN        int
	heyRounds   int
	recycleDur  time.Duration
	kills       int
	overloadDur time.Duration
	capacityDur time.Duration // the closed-loop run that measures a route's capacity
	queueDelay  time.Duration // --max-queue-delay of the overload's servers
	pinServer   string        // taskset -c of the overload's servers
	pinLoad     string        // taskset -c of the overload's load generator
	ovRoutes    string        // the overload's routes, comma-separated; empty: all
	ovMultiples []float64     // the burn and slow routes' multiples; nil: their own
}

func main() {
	if handled, code := helperMain(); handled { // the overload's generator and prober
		os.Exit(code)
	}
	var c config
	flag.BoolVar(&c.quick, "quick", false, "a ~1 minute smoke of the harness (short runs, one round); writes docs only with -write")
	flag.BoolVar(&c.write, "write", true, "write docs/performance.md and docs/bench.json (default true, false with -quick)")
	flag.StringVar(&c.bin, "bin", "", "use this mcpgateway binary instead of building one (same flags as make build)")
	flag.StringVar(&c.mdPath, "md", "docs/performance.md", "the report to update (relative to the module root)")
	flag.StringVar(&c.overloadPath, "overload-md", "docs/overload.md", "the overload figures to update, between its markers (relative to the module root)")
	flag.StringVar(&c.jsonPath, "json", "docs/bench.json", "the machine-readable results (relative to the module root)")
	flag.StringVar(&c.pgURL, "pg", "postgresql://postgres@127.0.0.1:5432", "PostgreSQL server (a fresh database is created and dropped); empty: skip")
	flag.StringVar(&c.redisAddr, "redis", "127.0.0.1:6379", "Redis server; empty: skip the Redis scenario")
	flag.IntVar(&c.redisDB, "redis-db", 12, "Redis database number to use (keys under a unique prefix, deleted at the end)")
	flag.StringVar(&c.only, "only", "", "run only these scenarios, comma-separated: throughput,postgres,recycle,respawn,overload,stop,federation")
	flag.BoolVar(&c.verbose, "v", false, "print every run as it finishes, and the servers' log paths")
	flag.BoolVar(&c.keepTmp, "keep", false, "keep the temporary directory (server logs, SQLite, wrk script)")
	flag.StringVar(&c.pprofPlain, "pprof-plain", "", "serve net/http/pprof from the plain server on this address (for profiling a run)")
	flag.IntVar(&c.niceLoad, "nice-load", 0, "run the load generators at this nice level (0: as the servers)")
	flag.DurationVar(&c.queueDelay, "max-queue-delay", 50*time.Millisecond, "--max-queue-delay of the overload scenario's servers (gateway and testserver)")
	flag.DurationVar(&c.overloadDur, "overload-dur", 0, "length of each overload run (default 8s, -quick 3s)")
	flag.StringVar(&c.pinServer, "pin-server", "0", "CPUs (taskset -c) of the overload scenario's servers")
	flag.StringVar(&c.pinLoad, "pin-load", "1", "CPUs (taskset -c) of the overload scenario's load generator")
	flag.StringVar(&c.ovRoutes, "overload-routes", "", "run only these routes of the overload scenario, comma-separated: burn,slow,rpc (default all)")
	multiples := flag.String("overload-multiples", "", "multiples of capacity of the burn and slow routes, comma-separated (default 2,5,10 and 20)")
	gwArgs := flag.String("gateway-args", "", "extra flags for every `mcpgateway serve`, space-separated (to try a setting)")
	flag.Parse()
	c.gwArgs = strings.Fields(*gwArgs)
	for _, f := range strings.Split(*multiples, ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		m, err := strconv.ParseFloat(f, 64)
		if err != nil || m <= 0 {
			fmt.Fprintf(os.Stderr, "bench: -overload-multiples: %q is not a positive number\n", f)
			os.Exit(2)
		}
		c.ovMultiples = append(c.ovMultiples, m)
	}
	writeSet := false
	flag.Visit(func(f *flag.Flag) {
		if f.Name == "write" {
			writeSet = true
		}
	})
	if c.quick && !writeSet {
		c.write = false
	}
	ovDur := c.overloadDur
	if c.quick {
		c.wrkDur, c.rounds, c.roundsOther = 2*time.Second, 1, 1
		c.heyN, c.heyRounds = 10000, 1
		c.recycleDur, c.kills, c.overloadDur, c.capacityDur = 3*time.Second, 3, 3*time.Second, 1500*time.Millisecond
	} else {
		c.wrkDur, c.rounds, c.roundsOther = 4*time.Second, 7, 5
		c.heyN, c.heyRounds = 50000, 3
		c.recycleDur, c.kills, c.overloadDur, c.capacityDur = 10*time.Second, 20, 8*time.Second, 3*time.Second
	}
	if ovDur > 0 {
		c.overloadDur = ovDur
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	code := 0
	if err := run(ctx, &c); err != nil {
		fmt.Fprintf(os.Stderr, "bench: %v\n", err)
		code = 1
	}
	stop()
	os.Exit(code)
}

func run(ctx context.Context, c *config) (err error) {
	root, err := moduleRoot()
	if err != nil {
		return err
	}
	tools := []string{"wrk", "hey"}
	if !c.selected("throughput") && !c.selected("postgres") && !c.selected("recycle") && !c.selected("federation") {
		tools = nil // the other scenarios use neither
	}
	if c.selected("overload") {
		tools = append(tools, "taskset")
	}
	for _, tool := range tools {
		if _, err := lookPath(tool); err != nil {
			return fmt.Errorf("%s is not installed (make tools installs hey and wrk; taskset is in util-linux)", tool)
		}
	}
	h, err := newHarness(ctx, c, root)
	if err != nil {
		return err
	}
	defer func() {
		h.cleanup()
		if c.keepTmp {
			fmt.Fprintf(os.Stderr, "bench: kept %s\n", h.tmp)
		} else {
			os.RemoveAll(h.tmp)
		}
	}()
	h.quietBudget = 60 * time.Second
	if c.quick {
		h.quietBudget = 5 * time.Second
	}
	start := time.Now()
	if err := h.build(); err != nil {
		return err
	}
	h.logf("bench: %s, %d cores, %s; mode %s", h.machine.CPU, h.machine.NProc, h.machine.Kernel, mode(c))

	steps := []struct {
		name string
		fn   func() error
	}{
		{"throughput", h.throughputDefault}, // also memory and balance
		{"postgres", h.throughputPostgres},
		{"recycle", h.recycle},
		{"respawn", h.respawn},
		{"overload", h.overload},
		{"stop", h.stopScenario},
		{"federation", h.federation},
	}
	for _, s := range steps {
		if !c.selected(s.name) {
			continue
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		t := time.Now()
		h.logf("== %s", s.name)
		if err := s.fn(); err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			// One scenario failing does not lose the others' figures.
			h.failed(s.name, err)
			h.logf("!! %s: %v", s.name, err)
		}
		h.stopServers()
		h.logf("   (%s in %s)", s.name, time.Since(t).Round(time.Second))
	}
	h.elapsed = time.Since(start)

	rep := h.report()
	fmt.Println()
	fmt.Print(rep.text())
	if c.write {
		if err := rep.writeFiles(filepath.Join(root, c.mdPath), filepath.Join(root, c.jsonPath)); err != nil {
			return err
		}
		h.logf("bench: wrote %s and %s", c.mdPath, c.jsonPath)
		if len(h.overloadRuns) > 0 {
			if err := rep.writeOverloadDoc(h, filepath.Join(root, c.overloadPath)); err != nil {
				return err
			}
			h.logf("bench: wrote %s", c.overloadPath)
		}
	}
	if len(h.errors) > 0 {
		return errors.New("some scenarios failed: " + strings.Join(h.errors, "; "))
	}
	return nil
}

func mode(c *config) string {
	if c.quick {
		return "quick"
	}
	return "full"
}

func (c *config) selected(name string) bool {
	if c.only == "" {
		return true
	}
	for _, s := range strings.Split(c.only, ",") {
		if strings.TrimSpace(s) == name {
			return true
		}
	}
	return false
}

// moduleRoot finds the directory of this module's go.mod from the working
// directory up.
func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		b, err := os.ReadFile(filepath.Join(dir, "go.mod"))
		if err == nil && strings.Contains(string(b), "module github.com/mcpgateway/mcpgateway\n") {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("run from inside the mcpgateway module (go run ./tests/bench)")
		}
		dir = parent
	}
}
