package supervisor

import (
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"

	"github.com/mcpgateway/mcpgateway/supervisor/protocol"
	"go.uber.org/zap"
)

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
	files, primary, activated := m.sockets.forUpgrade()
	cmd.ExtraFiles = files
	cmd.Env = append(childEnv(false),
		protocol.EnvUpgradeFDs+"="+strconv.Itoa(len(files)),
		protocol.EnvUpgradePrimary+"="+strconv.Itoa(primary),
		protocol.EnvOldMaster+"="+strconv.Itoa(os.Getpid()))
	if activated {
		cmd.Env = append(cmd.Env, protocol.EnvUpgradeActivated+"=1")
	}
	cmd.Env = append(cmd.Env, m.o.UpgradeEnv...) // last: os/exec keeps the last value of a key
	var controlFile *os.File
	if m.control != nil {
		if f, err := m.control.File(); err == nil {
			controlFile = f
			cmd.ExtraFiles = append(cmd.ExtraFiles, f)
			cmd.Env = append(cmd.Env, protocol.EnvUpgradeControl+"=1")
		}
	}
	if m.o.Pidfile != "" {
		_ = os.Rename(m.o.Pidfile, m.o.Pidfile+".oldbin")
	}
	err = cmd.Start()
	if controlFile != nil {
		controlFile.Close()
	}
	if err != nil {
		m.log.Error("upgrade: cannot start the new master", zap.String("binary", exe), zap.Error(err))
		m.restorePidfile()
		return
	}
	if m.control != nil && controlFile != nil {
		// The new master answers the control socket now: commands reach the
		// master that will go on. A failed upgrade takes it back.
		m.control.KeepFile()
		m.control.Close()
		m.control = nil
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
	if m.control == nil {
		m.openControl()
	}
	// The new master may have become systemd's main process before it
	// died: the service is this master's again.
	m.notify.becomeMain("READY=1\nSTATUS=upgrade failed; the old master serves")
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
		m.transition(p, stopping, protocol.ReasonUpgrade)
	}
	// The new master holds copies of the reuse-port sockets its slots use;
	// ours of every other slot would keep drawing connections that nobody
	// accepts. A rolled-back upgrade opens them anew.
	m.sockets.closeOtherSlots(func(slot int) bool { return slot == 0 })
}

// childEnv is this process's environment without what belongs to the
// master alone: passed sockets, and for workers systemd's notify socket (a
// new master keeps it, to tell systemd its pid).
func childEnv(worker bool) []string {
	var env []string
	for _, kv := range os.Environ() {
		switch k, _, _ := strings.Cut(kv, "="); k {
		case "LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES", protocol.EnvUpgradeFDs, protocol.EnvUpgradePrimary,
			protocol.EnvUpgradeActivated, protocol.EnvOldMaster, protocol.EnvUpgradeControl:
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
