package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/mcpgateway/mcpgateway/config"
	"github.com/mcpgateway/mcpgateway/supervisor/control"
)

// The commands that talk to a running master over its control socket:
// status (status.go), reload, scale N and stop. Each finds the socket the
// way serve finds its settings (flags, environment, .env, gunicorn.conf.go),
// so that, run in the server's directory with the server's configuration,
// it reaches that server.

// Default --wait of each command: how long the master may take to answer.
// A reload answers after the new configuration is read and the database
// checked, which may take as long as the migrations (up to 2 minutes).
var defaultWait = map[string]time.Duration{
	control.CmdStatus: 10 * time.Second,
	control.CmdReload: 3 * time.Minute,
	control.CmdScale:  time.Minute,
	control.CmdStop:   time.Minute,
}

// env is what a command reads besides its arguments; main passes the
// process's, tests their own.
type env struct {
	environ  []string
	dir      string
	out, err io.Writer
}

// clientUsage is the help of reload, scale and stop.
const clientUsage = `Usage:
  mcpgateway reload [flags]    re-read the configuration and roll every worker (as HUP)
  mcpgateway scale N [flags]   run N workers (as TTIN/TTOU)
  mcpgateway stop [flags]      stop gracefully (as TERM)

They talk to the master's control socket (ControlSocket), found from the same
settings as serve: run them with the server's configuration (directory, .env,
environment, and flags such as --bind, --control-socket, --config, --env-file).

Flags:
  --wait DURATION   how long to wait for the answer (reload 3m, scale and stop 1m)
  any flag of mcpgateway serve (see mcpgateway serve --help)
`

// clientCommand runs reload, scale or stop. Exit status: 0 done, 1 refused
// or no server, 2 bad arguments.
func clientCommand(cmd string, args []string, e env) int {
	fs := flag.NewFlagSet(cmd, flag.ContinueOnError)
	wait := fs.Duration("wait", defaultWait[cmd], "how long to wait for the master's answer")
	req, given, rest, err := scaleArg(cmd, args)
	if err != nil {
		fmt.Fprintf(e.err, "mcpgateway %s: %v\n", cmd, err)
		return 2
	}
	res, code := loadClient(cmd, rest, fs, e)
	if res == nil {
		return code
	}
	switch {
	case cmd == control.CmdScale && !given && len(res.Args) == 1:
		// mcpgateway scale --bind ... 3: the number after the flags.
		n, err := strconv.Atoi(res.Args[0])
		if err != nil {
			fmt.Fprintf(e.err, "mcpgateway scale: %q is not a number of workers\n", res.Args[0])
			return 2
		}
		req.N, given = n, true
	case len(res.Args) > 0:
		fmt.Fprintf(e.err, "mcpgateway %s: unexpected argument %q\n", cmd, res.Args[0])
		return 2
	}
	if cmd == control.CmdScale && !given {
		fmt.Fprintln(e.err, "mcpgateway scale: scale needs a number of workers: mcpgateway scale N [flags]")
		return 2
	}
	if err := req.Check(); err != nil {
		fmt.Fprintf(e.err, "mcpgateway %s: %v\n", cmd, err)
		return 2
	}
	reply, path, err := callServer(res, req, *wait, e)
	if err != nil {
		fmt.Fprintf(e.err, "mcpgateway %s: %v\n", cmd, err)
		return 1
	}
	if !reply.OK {
		fmt.Fprintf(e.err, "mcpgateway %s: refused by the server on %s: %s\n", cmd, path, reply.Error)
		return 1
	}
	if reply.Status != "" {
		fmt.Fprint(e.out, strings.TrimSuffix(reply.Status, "\n")+"\n")
	} else {
		fmt.Fprintf(e.out, "%s: done\n", cmd)
	}
	return 0
}

// scaleArg takes scale's number when it comes first (mcpgateway scale 3
// --bind ...): Go's flag parsing stops at the first argument that is not a
// flag, so it must be taken out before. given says whether it was there.
// Other commands take no number.
func scaleArg(cmd string, args []string) (req control.Request, given bool, rest []string, err error) {
	req = control.Request{Cmd: cmd}
	if cmd != control.CmdScale || len(args) == 0 || strings.HasPrefix(args[0], "-") {
		return req, false, args, nil
	}
	n, err := strconv.Atoi(args[0])
	if err != nil {
		return req, false, nil, fmt.Errorf("%q is not a number of workers", args[0])
	}
	req.N = n
	return req, true, args[1:], nil
}

// loadClient resolves the configuration with a command's own flags (fs)
// added to serve's. It prints the help or the error itself and returns nil
// and the exit status then. Warnings are not printed: they are the
// server's business, and it logged them when it started.
func loadClient(cmd string, args []string, fs *flag.FlagSet, e env) (*config.Resolved, int) {
	res, err := config.Load(config.Input{Args: args, Environ: e.environ, Dir: e.dir, Command: fs})
	switch {
	case errors.Is(err, flag.ErrHelp):
		if cmd == control.CmdStatus {
			fmt.Fprint(e.out, statusUsage)
		} else {
			fmt.Fprint(e.out, clientUsage)
		}
		return nil, 0
	case err != nil:
		fmt.Fprintf(e.err, "mcpgateway %s: %v\n", cmd, err)
		var ce *config.Error
		if errors.As(err, &ce) && !strings.HasPrefix(ce.Source, "flag") {
			return nil, 1 // the configuration, not the command line
		}
		return nil, 2
	}
	return res, -1
}

// socketCandidates are the paths where the server's control socket may be.
// A derived path depends on XDG_RUNTIME_DIR, which a login shell sets and a
// system service (or a container) does not: then the server's socket is in
// config.FallbackRuntimeDir, which is tried second.
func socketCandidates(res *config.Resolved, dir string) []string {
	s := res.Settings
	paths := []string{s.ControlSocket}
	if res.Sources["ControlSocket"].Kind == "derived" {
		if alt := config.DefaultControlSocket(s.Bind, dir, ""); alt != s.ControlSocket {
			paths = append(paths, alt)
		}
	}
	return paths
}

// errControlOff is callServer's error when ControlSocket is "off".
var errControlOff = errors.New("the control socket is off")

// callServer sends req to the first candidate socket a server answers on,
// and returns the reply and that socket's path.
func callServer(res *config.Resolved, req control.Request, wait time.Duration, e env) (control.Reply, string, error) {
	if res.Settings.ControlSocket == config.ControlSocketOff {
		return control.Reply{}, "", fmt.Errorf("%w (ControlSocket: %s): use the signals, "+
			"or start the server with a control socket", errControlOff, res.Sources["ControlSocket"])
	}
	paths := socketCandidates(res, e.dir)
	for _, path := range paths {
		reply, err := control.Call(path, req, wait)
		if errors.Is(err, control.ErrNotRunning) {
			continue
		}
		return reply, path, err
	}
	return control.Reply{}, "", fmt.Errorf("%w on %s (ControlSocket: %s): is the server running, with this configuration? "+
		"Give the same --bind or --control-socket as the server", control.ErrNotRunning,
		strings.Join(paths, " or "), res.Sources["ControlSocket"])
}
