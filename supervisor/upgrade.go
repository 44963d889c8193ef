package supervisor

import (
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"

	"go.uber.org/zap"
)

// envUpgradeFDs tells a new master, started by USR2, how many listening
// sockets its predecessor passed from fd 3 on.
const envUpgradeFDs = "MCPGATEWAY_UPGRADE_FDS"

// upgradeListeners adopts the sockets an old master passed, matched to the
// configured addresses; addresses it did not pass are opened fresh. In the
// reuse-port layout the old master also passes its other slots' sockets:
// they come back as spares for this master's slots, so no socket the kernel
// still routes connections to is closed with connections in its queue.
func upgradeListeners(binds []string, backlog int, reusePort bool) (primary, spares []*listener, upgraded bool, err error) {
	n, err := strconv.Atoi(os.Getenv(envUpgradeFDs))
	if err != nil || n <= 0 {
		return nil, nil, false, nil
	}
	os.Unsetenv(envUpgradeFDs)
	passed, err := inheritListeners(listenFDsStart, n)
	if err != nil {
		closeListeners(passed)
		return nil, nil, true, err
	}
	var out []*listener
	for _, b := range binds {
		var found *listener
		for i, l := range passed {
			if l != nil && sameAddress(b, l.bound) {
				found, passed[i] = l, nil
				break
			}
		}
		if found == nil {
			l, err := listenOne(b, backlog, reusePort)
			if err != nil {
				closeListeners(out)
				return nil, nil, true, err
			}
			found = l
		}
		found.addr = b
		if p, ok := strings.CutPrefix(b, "unix:"); ok {
			found.path = p // ours to unlink now
		}
		out = append(out, found)
	}
	for _, l := range passed {
		switch {
		case l == nil:
		case reusePort && !strings.HasPrefix(l.bound, "unix:"):
			spares = append(spares, l)
		default:
			l.file.Close()
		}
	}
	return out, spares, true, nil
}

// sameAddress matches a configured address with a bound one; port 0 in
// the configuration matches whatever port the old master got.
func sameAddress(configured, bound string) bool {
	if strings.HasPrefix(configured, "unix:") || strings.HasPrefix(bound, "unix:") {
		return configured == bound
	}
	ca, err1 := net.ResolveTCPAddr("tcp", configured)
	ba, err2 := net.ResolveTCPAddr("tcp", bound)
	if err1 != nil || err2 != nil {
		return false
	}
	return (ca.IP.Equal(ba.IP) || (ca.IP == nil && ba.IP.IsUnspecified())) && (ca.Port == ba.Port || ca.Port == 0)
}

// upgrade starts a new master from the binary on disk (which may be newer
// than the one running) with this master's sockets; both serve until the
// operator sends WINCH (stop the old workers) and QUIT (old master exits).
func (m *master) upgrade() {
	if m.child != nil {
		m.log.Warn("upgrade already in progress", zap.Int("new_master", m.child.Process.Pid))
		return
	}
	exe, err := os.Executable()
	if err != nil {
		m.log.Error("upgrade: cannot find the binary", zap.Error(err))
		return
	}
	cmd := exec.Command(exe, os.Args[1:]...)
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	for _, l := range m.listeners {
		cmd.ExtraFiles = append(cmd.ExtraFiles, l.file)
	}
	for slot := 1; slot < len(m.perSlot); slot++ {
		for _, l := range m.perSlot[slot] {
			if l.path == "" { // unix sockets are shared, passed once above
				cmd.ExtraFiles = append(cmd.ExtraFiles, l.file)
			}
		}
	}
	cmd.Env = append(childEnv(false), envUpgradeFDs+"="+strconv.Itoa(len(cmd.ExtraFiles)))
	if m.o.Pidfile != "" {
		_ = os.Rename(m.o.Pidfile, m.o.Pidfile+".oldbin")
	}
	if err := cmd.Start(); err != nil {
		m.log.Error("upgrade: cannot start the new master", zap.String("binary", exe), zap.Error(err))
		m.restorePidfile()
		return
	}
	m.child = cmd
	m.log.Info("upgrade: new master started", zap.Int("new_master", cmd.Process.Pid), zap.String("binary", exe))
	go func() {
		err := cmd.Wait()
		m.childDone <- err
	}()
}

// upgradeFailed handles the exit of the new master: this one goes on serving.
func (m *master) upgradeFailed(err error) {
	m.log.Error("upgrade: the new master exited; this master keeps serving",
		zap.Int("new_master", m.child.Process.Pid), zap.Error(err))
	m.child = nil
	m.restorePidfile()
	if m.winched {
		m.winched = false // serve again with our own workers
		m.log.Info("upgrade: restarting this master's workers")
	}
}

func (m *master) restorePidfile() {
	if m.o.Pidfile != "" {
		_ = os.Rename(m.o.Pidfile+".oldbin", m.o.Pidfile)
	}
}

// winch stops this master's workers gracefully without replacing them:
// after an upgrade, the new master's workers take the traffic.
func (m *master) winch() {
	if m.child == nil {
		m.log.Warn("WINCH ignored: no upgrade in progress (it would leave no worker serving)")
		return
	}
	m.winched = true
	m.log.Info("upgrade: stopping this master's workers", zap.Int("workers", len(m.procs)))
	for _, p := range m.procs {
		m.terminate(p, "upgrade")
	}
}

// childEnv is this process's environment without what belongs to the
// master alone: passed sockets, and for workers systemd's notify socket (a
// new master keeps it, to tell systemd its pid).
func childEnv(worker bool) []string {
	var env []string
	for _, kv := range os.Environ() {
		switch k, _, _ := strings.Cut(kv, "="); k {
		case "LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES", envUpgradeFDs:
		case "NOTIFY_SOCKET", "WATCHDOG_USEC":
			if !worker {
				env = append(env, kv)
			}
		case "WATCHDOG_PID":
			// Names the old master: a new one keeping it would never ping.
		default:
			env = append(env, kv)
		}
	}
	return env
}
