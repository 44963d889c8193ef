// Package pgcluster runs a throwaway PostgreSQL cluster of a test's own, so
// that a test can stop and start its database server without disturbing the
// shared one other tests use: initdb in a new temporary directory, pg_ctl on
// a free port of 127.0.0.1 with the Unix socket in that directory too.
//
// initdb refuses to run as root, so when the test runs as root the commands
// run as the postgres user (runuser -u postgres --), and the directory is
// handed to that user. The binaries are the newest under
// /usr/lib/postgresql/*/bin, else initdb and pg_ctl from PATH.
//
// Everything it starts is stopped at the end of the test (pg_ctl stop -m
// immediate, then SIGKILL of the postmaster by the pid in postmaster.pid if
// it is still there), and the directory removed.
package pgcluster

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/mcpgateway/mcpgateway/internal/proctest"
)

// Cluster is one running (or stopped) throwaway cluster.
type Cluster struct {
	Dir  string // data directory; also holds the socket and the server log
	Port int
	bin  string // directory of initdb and pg_ctl
	as   []string
	t    proctest.TB
}

// Start makes a new cluster and starts it, failing t if it cannot. It is
// removed at the end of the test.
func Start(t proctest.TB) *Cluster {
	t.Helper()
	c, err := start(t)
	if err != nil {
		t.Fatalf("throwaway PostgreSQL cluster: %v", err)
	}
	return c
}

func start(t proctest.TB) (*Cluster, error) {
	bin, err := binDir()
	if err != nil {
		return nil, err
	}
	port, err := proctest.FreePort()
	if err != nil {
		return nil, err
	}
	// Not under t.TempDir(): its parents are private to root, and the
	// server runs as postgres.
	dir, err := os.MkdirTemp("", "pgcluster-")
	if err != nil {
		return nil, err
	}
	c := &Cluster{Dir: dir, Port: port, bin: bin, t: t}
	t.Cleanup(c.remove)
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			return nil, fmt.Errorf("running as root, and no postgres user to run initdb as: %w", err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		if err := os.Chown(dir, uid, gid); err != nil {
			return nil, err
		}
		c.as = []string{"runuser", "-u", "postgres", "--"}
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		return nil, err
	}
	if out, err := c.run(60*time.Second, "initdb", "-D", c.data(), "-U", "postgres", "-A", "trust",
		"-E", "UTF8", "--locale=C", "--no-sync", "--no-instructions"); err != nil {
		return nil, fmt.Errorf("initdb: %v\n%s", err, out)
	}
	if err := c.StartServer(); err != nil {
		return nil, err
	}
	return c, nil
}

// binDir finds the directory of initdb and pg_ctl.
func binDir() (string, error) {
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	sort.Slice(dirs, func(i, j int) bool { // newest major version first
		vi, _ := strconv.Atoi(filepath.Base(filepath.Dir(dirs[i])))
		vj, _ := strconv.Atoi(filepath.Base(filepath.Dir(dirs[j])))
		return vi > vj
	})
	for _, d := range dirs {
		if _, err := os.Stat(filepath.Join(d, "pg_ctl")); err == nil {
			return d, nil
		}
	}
	p, err := exec.LookPath("pg_ctl")
	if err != nil {
		return "", errors.New("no PostgreSQL server binaries (pg_ctl, initdb) under /usr/lib/postgresql/*/bin or in PATH")
	}
	return filepath.Dir(p), nil
}

func (c *Cluster) data() string { return filepath.Join(c.Dir, "data") }

// run runs one of the cluster's binaries (as postgres when root) and returns
// its output.
func (c *Cluster) run(timeout time.Duration, name string, args ...string) (string, error) {
	argv := append(append(append([]string{}, c.as...), filepath.Join(c.bin, name)), args...)
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Dir = c.Dir
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "LC_ALL=C"}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		return "", err
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		return out.String(), err
	case <-time.After(timeout):
		_ = cmd.Process.Kill() // by its pid: the one command this started
		<-done
		return out.String(), fmt.Errorf("%s did not finish within %v", name, timeout)
	}
}

// URL is the cluster's postgres database, over TCP.
func (c *Cluster) URL() string {
	return fmt.Sprintf("postgresql://postgres@127.0.0.1:%d/postgres?sslmode=disable", c.Port)
}

// StartServer starts the (stopped) server and waits until it accepts
// connections.
func (c *Cluster) StartServer() error {
	opts := fmt.Sprintf("-p %d -k %s -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off "+
		"-c full_page_writes=off -c shared_buffers=16MB -c max_connections=60", c.Port, c.Dir)
	out, err := c.run(60*time.Second, "pg_ctl", "start", "-D", c.data(), "-w", "-t", "50",
		"-l", filepath.Join(c.Dir, "server.log"), "-o", opts)
	if err != nil {
		log, _ := os.ReadFile(filepath.Join(c.Dir, "server.log"))
		return fmt.Errorf("pg_ctl start: %v\n%s\n%s", err, out, log)
	}
	return nil
}

// StopServer stops the server with pg_ctl stop -m mode ("fast": sessions
// terminated, as pg_ctlcluster stop does; "immediate": no shutdown
// checkpoint) and waits until it is gone.
func (c *Cluster) StopServer(mode string) error {
	out, err := c.run(60*time.Second, "pg_ctl", "stop", "-D", c.data(), "-m", mode, "-w", "-t", "50")
	if err != nil {
		return fmt.Errorf("pg_ctl stop -m %s: %v\n%s", mode, err, out)
	}
	return nil
}

// postmasterPID is the pid in postmaster.pid, or 0.
func (c *Cluster) postmasterPID() int {
	b, err := os.ReadFile(filepath.Join(c.data(), "postmaster.pid"))
	if err != nil {
		return 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	pid, _ := strconv.Atoi(strings.TrimSpace(line))
	return pid
}

// remove stops the server if it runs and deletes the directory.
func (c *Cluster) remove() {
	if pid := c.postmasterPID(); pid > 0 && proctest.Alive(pid) {
		if err := c.StopServer("immediate"); err != nil {
			c.t.Logf("%v", err)
		}
		if proctest.Alive(pid) {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
	if err := os.RemoveAll(c.Dir); err != nil {
		c.t.Logf("remove %s: %v", c.Dir, err)
	}
}
