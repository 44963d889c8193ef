package main

import (
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/mcpgateway/mcpgateway/config"
	"github.com/mcpgateway/mcpgateway/supervisor/control"
	"github.com/mcpgateway/mcpgateway/supervisor/protocol"
)

const statusUsage = `Usage: mcpgateway status [flags]

One line for the master and one per worker of a running server: pid,
generation, age, state, requests in flight, connections, served, refused, RSS.

Without --pid or --pidfile it asks the master's control socket
(ControlSocket), found from the same settings as serve: run it with the
server's configuration (directory, .env, environment, and flags such as
--bind, --control-socket, --config, --env-file). When no control socket
answers, it reads the configured Pidfile, if any.

Flags:
  --pid PID          read the status table of this master directly
  --pidfile PATH     read the master's pid from this file, then its table
  --wait DURATION    how long to wait for the control socket's answer (10s)
  any flag of mcpgateway serve (see mcpgateway serve --help)
`

// status prints the status of a running server: through its control
// socket, or, with --pid / --pidfile (and when no control socket answers),
// read from the master's shared status table as before the socket existed.
func status(args []string, e env) int {
	fs := flag.NewFlagSet(control.CmdStatus, flag.ContinueOnError)
	pid := fs.Int("pid", 0, "the master's pid: read its status table directly")
	wait := fs.Duration("wait", defaultWait[control.CmdStatus], "how long to wait for the master's answer")
	res, code := loadClient(control.CmdStatus, args, fs, e)
	if res == nil {
		// --pid and --pidfile need no configuration: a broken .env must not
		// hide a running server.
		if code != 1 {
			return code
		}
		switch pidfile, given := pidfileArg(args); {
		case *pid > 0:
			return statusFromTable(*pid, "", e)
		case given:
			return statusFromTable(0, pidfile, e)
		}
		return code
	}
	if len(res.Args) > 0 {
		fmt.Fprintf(e.err, "mcpgateway status: unexpected argument %q\n", res.Args[0])
		return 2
	}
	s := res.Settings
	switch {
	case *pid > 0:
		return statusFromTable(*pid, "", e)
	case res.Sources["Pidfile"].Kind == "flag":
		return statusFromTable(0, s.Pidfile, e)
	}
	reply, path, err := callServer(res, control.Request{Cmd: control.CmdStatus}, *wait, e)
	switch {
	case err == nil && reply.OK:
		fmt.Fprint(e.out, reply.Status)
		return 0
	case err == nil:
		fmt.Fprintf(e.err, "mcpgateway status: refused by the server on %s: %s\n", path, reply.Error)
		return 1
	case (errors.Is(err, errControlOff) || errors.Is(err, control.ErrNotRunning)) && s.Pidfile != "":
		return statusFromTable(0, s.Pidfile, e)
	case errors.Is(err, errControlOff):
		fmt.Fprintf(e.err, "mcpgateway status: %v; pass --pid PID or --pidfile PATH, or set Pidfile\n", err)
		return 2
	}
	fmt.Fprintf(e.err, "mcpgateway status: %v\n", err)
	return 1
}

// pidfileArg finds --pidfile / -p on a command line that could not be
// loaded as a whole.
func pidfileArg(args []string) (string, bool) {
	for i, a := range args {
		name, value, hasValue := strings.Cut(strings.TrimLeft(a, "-"), "=")
		if !strings.HasPrefix(a, "-") || (name != "pidfile" && name != "p") {
			continue
		}
		if hasValue {
			return value, true
		}
		if i+1 < len(args) {
			return args[i+1], true
		}
	}
	return "", false
}

// statusFromTable prints the status read from the master's shared status
// table, the master given by its pid or by a pidfile.
func statusFromTable(pid int, pidfile string, e env) int {
	if pid == 0 {
		b, err := os.ReadFile(pidfile)
		if err == nil {
			pid, err = strconv.Atoi(strings.TrimSpace(string(b)))
		}
		if err != nil {
			fmt.Fprintf(e.err, "mcpgateway status: read pidfile %s: %v\n", pidfile, err)
			return 1
		}
	}
	tb, err := protocol.OpenMasterTable(pid)
	if err != nil {
		fmt.Fprintf(e.err, "mcpgateway status: %v\n", err)
		return 1
	}
	defer tb.Close()
	control.FormatStatus(e.out, tb.Snapshot(), protocol.Nanotime())
	return 0
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
		res, err := config.Load(config.Input{Environ: os.Environ(), Dir: ".", NoSecretCheck: true})
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
