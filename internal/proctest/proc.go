// Package proctest is the scaffolding of the tests that run real processes:
// the process-level tests (tests/, supervisor/) and the programs tests/smoke
// and tests/bench.
//
// It starts a process in a process group of its own, its output captured in
// a LogBuffer that is safe for every process writing to it, and kills the
// whole group when done (by its id, never by a name); it waits for a line or
// a JSON log event in that output; it picks free ports on 127.0.0.1; it runs
// keep-alive load loops that stop on a signal and report what they saw; and
// it builds the binary a test package drives.
//
// It does not import testing, so that the programs can use it: the functions
// whose names begin with Must take a TB (a *testing.T or *testing.B) and fail
// the test; the others return errors.
package proctest

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// TB is the part of testing.TB this package uses.
type TB interface {
	Helper()
	Cleanup(func())
	Errorf(format string, args ...any)
	Fatalf(format string, args ...any)
	Logf(format string, args ...any)
	Failed() bool
}

// Proc is a process started by Start, the leader of its own process group:
// every process it forks (workers, a new master after USR2) is in the group
// too, unless it leaves it.
type Proc struct {
	Cmd *exec.Cmd
	// Log holds what the process and every process that inherited its
	// stdout and stderr wrote to them (see Start); nil when the caller sent
	// them elsewhere.
	Log *LogBuffer
	Pid int // also the process group's id

	exited chan struct{} // the process has exited and been reaped
	done   chan struct{} // exited, and its output is closed: nothing more is written to Log
}

// KillWait is how long Kill waits for the group's output to close after
// SIGKILL.
const KillWait = 5 * time.Second

// ErrExited is wrapped by the errors of the waits that end because the
// process exited and its output closed before what they waited for came.
var ErrExited = errors.New("the process exited")

// Start starts cmd as the leader of a new process group. When neither
// cmd.Stdout nor cmd.Stderr is set, both go into one pipe, copied into
// p.Log; otherwise they are left as the caller set them (and p.Log is the
// one that is a *LogBuffer, if any). Any SysProcAttr the caller set
// (Pdeathsig, say) is kept, with Setpgid added; so are ExtraFiles.
func Start(cmd *exec.Cmd) (*Proc, error) {
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Setpgid, cmd.SysProcAttr.Pgid = true, 0
	p := &Proc{Cmd: cmd, exited: make(chan struct{}), done: make(chan struct{})}
	// The pipe is this package's rather than exec's, so that the process's
	// exit (Exited) and the end of its output (Done) can be told apart: a
	// new master started by USR2 inherits the output and outlives the old.
	var r, w *os.File
	if cmd.Stdout == nil && cmd.Stderr == nil {
		var err error
		if r, w, err = os.Pipe(); err != nil {
			return nil, err
		}
		p.Log = &LogBuffer{}
		cmd.Stdout, cmd.Stderr = w, w
	} else if b, ok := cmd.Stderr.(*LogBuffer); ok {
		p.Log = b // exec copies into it: Exited and Done come together
	} else if b, ok := cmd.Stdout.(*LogBuffer); ok {
		p.Log = b
	}
	err := cmd.Start()
	if w != nil {
		w.Close() // the children hold their own copies
	}
	if err != nil {
		if r != nil {
			r.Close()
		}
		return nil, err
	}
	p.Pid = cmd.Process.Pid
	copied := make(chan struct{})
	if r != nil {
		go func() {
			io.Copy(p.Log, r)
			r.Close()
			close(copied)
		}()
	} else {
		close(copied)
	}
	go func() {
		cmd.Wait()
		close(p.exited)
		<-copied
		close(p.done)
	}()
	return p, nil
}

// MustStart starts cmd as Start does, failing t if it cannot, and kills
// the process at the end of the test as KillAtEnd says.
func MustStart(t TB, cmd *exec.Cmd) *Proc {
	t.Helper()
	p, err := Start(cmd)
	if err != nil {
		t.Fatalf("start %s: %v", cmd.Path, err)
	}
	p.KillAtEnd(t)
	return p
}

// KillAtEnd kills the whole process group when the test ends; a data race
// reported in the output fails the test, with the race detector's report,
// and the output is logged if the test failed. MustStart calls it; call it
// for a process started with Start.
func (p *Proc) KillAtEnd(t TB) {
	t.Cleanup(func() {
		// Whatever the test did, no process of it outlives it.
		p.Kill()
		if p.Log == nil {
			return
		}
		if race := p.Log.RaceReport(); race != "" {
			t.Errorf("the race detector reported a data race in the processes of %s:\n%s", p, race)
		}
		if t.Failed() {
			t.Logf("output of %s:\n%s", p, p.Log)
		}
	})
}

func (p *Proc) String() string {
	return fmt.Sprintf("%s (pid %d)", filepath.Base(p.Cmd.Path), p.Pid)
}

// Exited is closed when the process has exited. Processes that inherited
// its output may still write to it.
func (p *Proc) Exited() <-chan struct{} { return p.exited }

// Done is closed when the process has exited and its output is closed:
// every process that inherited it has exited too (or closed it).
func (p *Proc) Done() <-chan struct{} { return p.done }

// ExitCode is the process's exit status, or -1 while it runs or when a
// signal ended it.
func (p *Proc) ExitCode() int {
	select {
	case <-p.exited:
		return p.Cmd.ProcessState.ExitCode()
	default:
		return -1
	}
}

// Signal sends sig to the process (not to its group).
func (p *Proc) Signal(sig os.Signal) error { return p.Cmd.Process.Signal(sig) }

// Kill kills the whole process group with SIGKILL and waits, at most
// KillWait, until its output is closed.
func (p *Proc) Kill() {
	syscall.Kill(-p.Pid, syscall.SIGKILL)
	select {
	case <-p.done:
	case <-time.After(KillWait):
	}
}

// Stop sends sig to the process, waits at most grace for it to exit, then
// kills whatever is left of its group as Kill does.
func (p *Proc) Stop(sig syscall.Signal, grace time.Duration) {
	syscall.Kill(p.Pid, sig)
	select {
	case <-p.exited:
	case <-time.After(grace):
	}
	p.Kill()
}

// GroupAlive reports whether any process is left in the process group.
func (p *Proc) GroupAlive() bool {
	return !errors.Is(syscall.Kill(-p.Pid, 0), syscall.ESRCH)
}

// Wait waits at most timeout for Done and returns the exit code; ok is
// false if the process still runs or its output is still open.
func (p *Proc) Wait(timeout time.Duration) (code int, ok bool) {
	select {
	case <-p.done:
		return p.ExitCode(), true
	case <-time.After(timeout):
		return -1, false
	}
}

// MustWait is Wait, failing t after the timeout.
func (p *Proc) MustWait(t TB, timeout time.Duration) int {
	t.Helper()
	code, ok := p.Wait(timeout)
	if !ok {
		t.Fatalf("%s still running after %s", p, timeout)
	}
	return code
}

// Alive reports whether the process pid exists and is not a zombie (which
// still answers kill(pid, 0)).
func Alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// The name in parentheses may hold spaces ("mcpgateway: worker 1"): the
	// state is the first field after the last ')'.
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return false
	}
	f := strings.Fields(string(b[i+1:]))
	return len(f) > 0 && f[0] != "Z"
}
