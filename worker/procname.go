package worker

import (
	"os"
	"path/filepath"
	"strconv"
	"unsafe"

	"golang.org/x/sys/unix"
)

// processName is what ps, top and pgrep show for the worker of a slot:
// "mcpgateway-wN", so that `pgrep mcpgateway` finds the workers with their
// master, as `pgrep gunicorn` does. The kernel keeps 15 bytes of it
// (comm), room for slots up to 999; the full title, "mcpgateway: worker
// N", is the command line the master gives it (ps -f, pgrep -f).
func processName(slot int) string {
	name := "mcpgateway-w" + strconv.Itoa(slot)
	return name[:min(len(name), 15)]
}

// setProcessName names every thread of this process after its slot, so that
// a worker is not just "exe" (it is exec'd as /proc/self/exe). ps, pgrep and
// top show the main thread's name, and PR_SET_NAME names only the calling
// thread, which in Go need not be the main one: so the name is written to
// each thread's /proc comm, and threads started later inherit it from the
// thread that starts them. Best effort: a name is a convenience.
func setProcessName(slot int) {
	name := processName(slot)
	tasks, _ := filepath.Glob("/proc/self/task/*/comm")
	named := false
	for _, comm := range tasks {
		if writeComm(comm, name) == nil {
			named = true
		}
	}
	if !named { // no /proc: this thread at least
		if p, err := unix.BytePtrFromString(name); err == nil {
			_ = unix.Prctl(unix.PR_SET_NAME, uintptr(unsafe.Pointer(p)), 0, 0, 0)
		}
	}
}

func writeComm(path, name string) error {
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	_, err = f.WriteString(name)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}
