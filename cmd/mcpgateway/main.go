// Command mcpgateway is the MCP gateway's server: a master process that
// supervises fasthttp worker processes serving JSON-RPC.
package main

import (
	"fmt"
	"os"
	"runtime"
	"strings"

	"github.com/mcpgateway/mcpgateway/supervisor"
	"github.com/mcpgateway/mcpgateway/worker"
)

// version is set at build time: -ldflags "-X main.version=..."
var version = "0.1.0-dev"

const usage = `mcpgateway: the MCP gateway's multi-process server

Usage:
  mcpgateway [serve] [flags]   start the master and its workers (see: mcpgateway serve --help)
  mcpgateway config [flags]    print every resolved setting, its value and its source
  mcpgateway token -u EMAIL    mint a JWT the server accepts (see: mcpgateway token --help)
  mcpgateway secret            print a new random JWT_SECRET_KEY (32 bytes, base64url)
  mcpgateway certs [flags]     write a self-signed certs/cert.pem and certs/key.pem for SSL=true
  mcpgateway status [flags]    one line per worker of a running server (asks its control socket)
  mcpgateway reload [flags]    re-read the configuration and roll every worker (as HUP)
  mcpgateway scale N [flags]   run N workers
  mcpgateway stop [flags]      stop the server gracefully (as TERM)
  mcpgateway healthcheck       exit 0 when the local server's /health answers 200
  mcpgateway version           print the version

Settings come from, lowest first: profile defaults (HTTP_SERVER=gunicorn|granian),
gunicorn.conf.go, .env, the environment, flags. See docs/tuning.md.
`

// processEnv is what the client commands read: this process's environment
// and working directory, and its standard output and error.
func processEnv() env {
	return env{environ: os.Environ(), dir: ".", out: os.Stdout, err: os.Stderr}
}

func main() {
	if handled, code := supervisor.RunInit(); handled { // PID 1 in a container
		os.Exit(code)
	}
	args := os.Args[1:]
	cmd := "serve"
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		cmd, args = args[0], args[1:]
	}
	switch cmd {
	case "serve":
		os.Exit(serve(args))
	case "worker": // internal: started by the master
		os.Exit(worker.Run(setupWorker))
	case "migrate": // internal: started once by the master, settings on stdin
		os.Exit(migrate(args))
	case "config":
		os.Exit(printConfig(args))
	case "token":
		os.Exit(token(args, os.Stdout, os.Stderr))
	case "secret":
		os.Exit(secret(args, os.Stdout, os.Stderr))
	case "certs":
		os.Exit(certs(args, os.Stdout, os.Stderr))
	case "status":
		os.Exit(status(args, processEnv()))
	case "reload", "scale", "stop":
		os.Exit(clientCommand(cmd, args, processEnv()))
	case "healthcheck":
		os.Exit(healthcheck(args))
	case "version":
		fmt.Printf("mcpgateway %s (%s %s/%s)\n", version, runtime.Version(), runtime.GOOS, runtime.GOARCH)
	case "help":
		fmt.Print(usage)
	default:
		fmt.Fprintf(os.Stderr, "mcpgateway: unknown command %q\n\n%s", cmd, usage)
		os.Exit(2)
	}
}
