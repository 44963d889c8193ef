package protocol

import (
	"fmt"
	"os"
	"path/filepath"
)

// SharedPath is where the workers of one master keep a shared-memory file
// of their own (the rate-limit buckets: internal/ratelimit), named after
// the master's pid and start time so that no other master, nor a later
// master with a reused pid, meets it: in /dev/shm (tmpfs) when there is
// one, else the temporary directory. The master removes its files when it
// exits (RemoveShared); a master killed with SIGKILL leaves them behind.
func (t *Table) SharedPath(name string) string {
	h := t.Header()
	return sharedPath(int(h.Load(HMasterPID)), int64(h.Load(HMasterStarted)), name)
}

func sharedDir() string {
	if st, err := os.Stat("/dev/shm"); err == nil && st.IsDir() {
		return "/dev/shm"
	}
	return os.TempDir()
}

func sharedPath(pid int, started int64, name string) string {
	return filepath.Join(sharedDir(), fmt.Sprintf("mcpgateway-%d-%d-%s", pid, started, name))
}

// RemoveShared removes the shared files of this master's workers. Master
// only, when it exits.
func (t *Table) RemoveShared() {
	h := t.Header()
	prefix := sharedPath(int(h.Load(HMasterPID)), int64(h.Load(HMasterStarted)), "")
	matches, _ := filepath.Glob(prefix + "*")
	for _, m := range matches {
		os.Remove(m)
	}
}
