package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"sort"
	"strings"
	"text/tabwriter"
	"time"
)

// row is one line of the table: a figure beside its bar.
type row struct {
	Scenario string  `json:"scenario"`
	Measure  string  `json:"measure"`
	Value    float64 `json:"value"`
	Text     string  `json:"text"`
	Bar      string  `json:"bar,omitempty"`
	Result   string  `json:"result"` // PASS, MISS, info, n/a, FAIL (the scenario did not complete)
}

type report struct {
	Date     string      `json:"date"`
	Mode     string      `json:"mode"`
	Seconds  float64     `json:"seconds"`
	Machine  machine     `json:"machine"`
	Method   []string    `json:"method"`
	Rows     []row       `json:"rows"`
	Runs     []runRecord `json:"runs"`
	Overload []ovRun     `json:"overload,omitempty"`
	Errors   []string    `json:"errors,omitempty"`
	Passed   int         `json:"passed"`
	Missed   int         `json:"missed"`
	Complete bool        `json:"complete"` // every scenario ran
}

func (h *harness) report() *report {
	r := &report{
		Date: time.Now().UTC().Format("2006-01-02 15:04 MST"), Mode: mode(h.c), Seconds: h.elapsed.Seconds(),
		Machine: h.machine, Rows: h.rows, Runs: h.runs, Overload: h.overloadRuns, Errors: h.errors, Complete: len(h.errors) == 0 && h.c.only == "",
		Method: []string{
			"Servers started by the bench on 127.0.0.1: `mcpgateway serve --workers 2` (gunicorn profile, JWT_SECRET_KEY set, DISABLE_ACCESS_LOG=true) and tests/bench/plain (the same rpc handler and store in one default fasthttp.Server, GOMAXPROCS = all cores), on the same database.",
			"Load: tests/hey/payload.json (convert_time) with a JWT from `mcpgateway token -u admin@example.com -e 60`; wrk keep-alive (2 threads, Lua script) and hey in the guide's command shape; the load generators run on the same 2 cores.",
			fmt.Sprintf("Runs alternate the gateway and the plain server (ABBA); wrk %s × %d rounds (PostgreSQL: %d), hey -n %d × %d rounds; figures are medians over the rounds.", h.c.wrkDur, h.c.rounds, h.c.roundsOther, h.c.heyN, h.c.heyRounds),
			"Server CPU per request: utime+stime of every server process (master, workers, reaped workers via cutime/cstime) over the run, from /proc/PID/stat, ÷ requests served (gateway: /metrics mcpgateway_http_requests_total; plain: the load tool's count).",
			"Answers: every answer must be a 200 whose size is that of a correct convert_time result (wrk byte totals, hey Size/request); one body every 100 ms is parsed on a fresh connection; the recycling run checks every body in wrk's response().",
			"RSS from /proc/PID/status VmRSS (workers: the master's children), sampled every 250 ms. Balance: per-slot increase of mcpgateway_worker_requests_total between scrapes.",
			"Respawn: kill -9 of a ready worker, then back-to-back /metrics scrapes on fresh connections until the slot's new pid has answered one; 3 kills per master (it backs off after 3 crashes in 10 s by design), then a fresh master.",
			h.overloadMethod(),
			fmt.Sprintf("Reference (DESIGN.md, no Python here): Gunicorn 20.1 + Uvicorn, 2 workers, about %s RPS on this kind of machine; 3× is %s RPS.", thousands(gunicornRPS), thousands(3*gunicornRPS)),
		},
	}
	// Table order is scenario order (1 to 7), whatever order they ran in.
	sort.SliceStable(r.Rows, func(i, j int) bool { return scenarioNumber(r.Rows[i].Scenario) < scenarioNumber(r.Rows[j].Scenario) })
	for _, x := range r.Rows {
		switch x.Result {
		case "PASS":
			r.Passed++
		case "MISS", "FAIL":
			r.Missed++
		}
	}
	return r
}

// text is the table printed at the end of a run.
func (r *report) text() string {
	var b bytes.Buffer
	fmt.Fprintf(&b, "mcpgateway bench, %s, %s mode, %.0f s; %d cores %s, %s; commit %s%s\n\n",
		r.Date, r.Mode, r.Seconds, r.Machine.NProc, r.Machine.CPU, r.Machine.Kernel, r.Machine.Commit, dirty(r.Machine))
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	last := ""
	for _, x := range r.Rows {
		if x.Scenario != last {
			// A line without tabs ends the column block: each scenario's
			// rows are aligned on their own.
			fmt.Fprintf(tw, "\n%s\n", x.Scenario)
			last = x.Scenario
		}
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\n", x.Measure, x.Text, orDash(x.Bar), x.Result)
	}
	tw.Flush()
	fmt.Fprintf(&b, "\n%d PASS, %d MISS\n", r.Passed, r.Missed)
	return b.String()
}

func scenarioNumber(s string) int {
	n := 0
	for _, c := range s {
		if c < '0' || c > '9' {
			break
		}
		n = n*10 + int(c-'0')
	}
	if n == 0 {
		return 100
	}
	return n
}

func dirty(m machine) string {
	if m.Dirty {
		return " (with uncommitted changes)"
	}
	return ""
}

const (
	beginMark = "<!-- bench:begin: written by `make bench` (tests/bench); edit outside these markers -->"
	endMark   = "<!-- bench:end -->"
)

// markdown is the generated part of docs/performance.md.
func (r *report) markdown() string {
	var b strings.Builder
	b.WriteString(beginMark + "\n")
	fmt.Fprintf(&b, "## Latest run\n\n")
	fmt.Fprintf(&b, "- Date: %s; %s mode; the whole run took %.0f s.\n", r.Date, r.Mode, r.Seconds)
	fmt.Fprintf(&b, "- Machine: %d cores (nproc), %s, %s; %s.\n", r.Machine.NProc, r.Machine.CPU, r.Machine.Kernel, r.Machine.GoVersion)
	fmt.Fprintf(&b, "- Commit: `%s`%s.\n", r.Machine.Commit, dirty(r.Machine))
	fmt.Fprintf(&b, "- Result: %d PASS, %d MISS.", r.Passed, r.Missed)
	if !r.Complete {
		b.WriteString(" Not every scenario ran: see below.")
	}
	b.WriteString("\n\n")
	b.WriteString("| Scenario | Measure | Figure | Bar | |\n|---|---|---|---|---|\n")
	last := ""
	for _, x := range r.Rows {
		sc := x.Scenario
		if sc == last {
			sc = ""
		}
		last = x.Scenario
		res := x.Result
		if res == "PASS" || res == "MISS" || res == "FAIL" {
			res = "**" + res + "**"
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s |\n", md(sc), md(x.Measure), md(x.Text), md(orDash(x.Bar)), res)
	}
	if len(r.Errors) > 0 {
		b.WriteString("\nScenarios that did not complete:\n\n")
		for _, e := range r.Errors {
			fmt.Fprintf(&b, "- %s\n", md(strings.SplitN(e, "\n", 2)[0]))
		}
	}
	b.WriteString("\n### How it was measured\n\n")
	for _, m := range r.Method {
		fmt.Fprintf(&b, "- %s\n", m)
	}
	b.WriteString("\n### Runs\n\nThe medians above come from these runs (docs/bench.json has every field).\n\n")
	b.WriteString("| Scenario | Backend | Server | Tool | Round | RPS | p50 ms | p99 ms | CPU µs/req | Load tool CPU s | Other programs % | Peak RSS MiB (master / worker) | Verified |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|\n")
	for _, x := range r.Runs {
		if x.Tool == "" {
			continue
		}
		rss := fmt.Sprintf("%.1f", x.WorkerMiB)
		if x.MasterMiB > 0 {
			rss = fmt.Sprintf("%.1f / %.1f", x.MasterMiB, x.WorkerMiB)
		}
		cpu := "—"
		if x.CPUus > 0 {
			cpu = fmt.Sprintf("%.1f", x.CPUus)
		}
		ver := "—"
		if x.Scenario != "6 overload" {
			ver = "yes"
			if !x.Verified {
				ver = "**no** " + md(x.Note)
			}
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %d | %s | %.2f | %.1f | %s | %.1f | %.0f | %s | %s |\n", md(x.Scenario), md(x.Backend), x.Server, x.Tool,
			x.Round, thousands(x.RPS), x.P50ms, x.P99ms, cpu, x.LoadGenCPU, x.OtherPct, rss, ver)
	}
	b.WriteString(endMark + "\n")
	return b.String()
}

func md(s string) string { return strings.ReplaceAll(strings.ReplaceAll(s, "|", "\\|"), "\n", " ") }

// writeFiles writes docs/bench.json, and the generated part of
// docs/performance.md: the text outside the markers is kept.
func (r *report) writeFiles(mdPath, jsonPath string) error {
	js, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(jsonPath, append(js, '\n'), 0o644); err != nil {
		return err
	}
	gen := r.markdown()
	old, err := os.ReadFile(mdPath)
	var doc string
	switch {
	case err == nil && strings.Contains(string(old), beginMark) && strings.Contains(string(old), endMark):
		s := string(old)
		i := strings.Index(s, beginMark)
		j := strings.Index(s, endMark) + len(endMark)
		if j < len(s) && s[j] == '\n' {
			j++
		}
		doc = s[:i] + gen + s[j:]
	case err == nil:
		doc = strings.TrimRight(string(old), "\n") + "\n\n" + gen
	default:
		doc = "# Performance\n\n`make bench` (tests/bench) measures the gateway against the bars of the design on the machine it runs on and rewrites the part of this file between the markers.\n\n" + gen
	}
	return os.WriteFile(mdPath, []byte(doc), 0o644)
}
