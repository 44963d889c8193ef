package main

import (
	"crypto/tls"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/mcpgateway/mcpgateway/config"
	"github.com/mcpgateway/mcpgateway/supervisor/protocol"
)

// status prints one line per worker of a running server, read from the
// master's shared status table.
func status(args []string, out io.Writer) int {
	fs := flag.NewFlagSet("status", flag.ContinueOnError)
	pidfile := fs.String("pidfile", "", "the master's pidfile (default: Pidfile from the configuration)")
	pid := fs.Int("pid", 0, "the master's pid, instead of a pidfile")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *pid == 0 {
		if *pidfile == "" {
			if res, err := config.Load(config.Input{Environ: os.Environ(), Dir: "."}); err == nil {
				*pidfile = res.Settings.Pidfile
			}
		}
		if *pidfile == "" {
			fmt.Fprintln(os.Stderr, "mcpgateway status: no pidfile: start the server with --pidfile PATH (or Pidfile in the configuration), or pass --pid")
			return 2
		}
		b, err := os.ReadFile(*pidfile)
		if err == nil {
			*pid, err = strconv.Atoi(strings.TrimSpace(string(b)))
		}
		if err != nil {
			fmt.Fprintf(os.Stderr, "mcpgateway status: read pidfile %s: %v\n", *pidfile, err)
			return 1
		}
	}
	tb, err := protocol.OpenMasterTable(*pid)
	if err != nil {
		fmt.Fprintf(os.Stderr, "mcpgateway status: %v\n", err)
		return 1
	}
	defer tb.Close()
	printStatus(out, tb.Snapshot(), protocol.Nanotime())
	return 0
}

func printStatus(out io.Writer, s protocol.Snapshot, now int64) {
	fmt.Fprintf(out, "master %d  up %s  workers %d/%d  served %d  refused %d  timeouts %d  worker starts %d\n",
		s.MasterPID, age(now, s.MasterStarted), len(s.Workers), s.Target, s.Total.Served, s.Total.Refused, s.Total.Timeouts, s.Starts)
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "SLOT\tPID\tGEN\tAGE\tSTATE\tIN FLIGHT\tCONNS\tSERVED\tREFUSED\tRSS MiB\t")
	for _, w := range s.Workers {
		fmt.Fprintf(tw, "%d\t%d\t%d\t%s\t%s\t%d\t%d\t%d\t%d\t%.1f\t\n", w.Slot, w.Pid, w.Generation,
			age(now, w.Started), protocol.StateName(w.State), w.InFlight, w.Conns,
			w.Counters.Served, w.Counters.Refused, float64(w.RSS)/(1<<20))
	}
	tw.Flush()
}

func age(now, since int64) string {
	if since == 0 {
		return "-"
	}
	return time.Duration(now - since).Truncate(time.Second).String()
}

// healthcheck asks the local server's /health: the container HEALTHCHECK
// needs no shell tools this way.
func healthcheck(args []string) int {
	fs := flag.NewFlagSet("healthcheck", flag.ContinueOnError)
	url := fs.String("url", "", "URL to check (default: http://127.0.0.1:PORT/health from the configuration)")
	timeout := fs.Duration("timeout", 3*time.Second, "")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *url == "" {
		res, err := config.Load(config.Input{Environ: os.Environ(), Dir: "."})
		if err != nil {
			fmt.Fprintf(os.Stderr, "mcpgateway healthcheck: %v\n", err)
			return 1
		}
		scheme := "http"
		if res.Settings.SSL {
			scheme = "https"
		}
		*url = scheme + "://" + net.JoinHostPort("127.0.0.1", strconv.Itoa(res.Settings.Port)) + "/health"
	}
	// A liveness probe of our own server on loopback: it checks that the
	// server answers, not who signed its certificate (self-signed in dev).
	c := &http.Client{Timeout: *timeout, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, //nolint:gosec // loopback liveness only
	}}
	resp, err := c.Get(*url)
	if err != nil {
		fmt.Fprintf(os.Stderr, "mcpgateway healthcheck: %v\n", err)
		return 1
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		fmt.Fprintf(os.Stderr, "mcpgateway healthcheck: %s answered %d\n", *url, resp.StatusCode)
		return 1
	}
	return 0
}
