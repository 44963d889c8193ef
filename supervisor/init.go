package supervisor

import (
	"os"
	"os/exec"
	"os/signal"
	"syscall"

	"golang.org/x/sys/unix"
)

// envNoInit, set to 1, keeps a master that is PID 1 from starting the
// init below (the container runtime brought its own, such as tini).
const envNoInit = "MCPGATEWAY_NO_INIT"

// RunInit makes a program that runs as PID 1 (a container's entrypoint)
// behave as an init: it starts itself again as a child, with the same
// arguments, forwards every signal to it, reaps every process the kernel
// gives it (orphans of a tool's subprocesses land on PID 1, and the master
// cannot reap those without stealing its own children's exit statuses from
// os/exec), and exits with the child's status. Call it first in main; when
// it returns false the program runs as usual.
//
// The init is small: one process blocked in wait4, a few MiB mostly shared
// with the master.
func RunInit() (handled bool, code int) {
	if os.Getpid() != 1 || os.Getenv(envNoInit) == "1" {
		return false, 0
	}
	sigs := make(chan os.Signal, 32)
	signal.Notify(sigs) // every signal, before the child exists: none is lost
	cmd := exec.Command("/proc/self/exe", os.Args[1:]...)
	cmd.Args[0] = os.Args[0]
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	cmd.Env = append(os.Environ(), envNoInit+"=1")
	if err := cmd.Start(); err != nil {
		os.Stderr.WriteString("init: cannot start the master: " + err.Error() + "\n")
		return true, 1
	}
	child := cmd.Process.Pid
	go func() {
		for sig := range sigs {
			if sig == syscall.SIGCHLD || sig == syscall.SIGURG { // ours: reaping, and Go's preemption
				continue
			}
			_ = unix.Kill(child, sig.(syscall.Signal))
		}
	}()
	// os/exec is not used to wait: this loop reaps everything, the child
	// included, so its status is read here.
	for {
		var ws unix.WaitStatus
		pid, err := unix.Wait4(-1, &ws, 0, nil)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return true, 1 // ECHILD: nothing left, the child's status was lost
		}
		if pid != child {
			continue // an adopted orphan, reaped
		}
		if ws.Signaled() {
			return true, 128 + int(ws.Signal())
		}
		return true, ws.ExitStatus()
	}
}
