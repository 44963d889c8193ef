package supervisor_test

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/mcpgateway/mcpgateway/supervisor/control"
	"github.com/mcpgateway/mcpgateway/supervisor/protocol"
	"golang.org/x/sys/unix"
)

// notifyMsg is one datagram on a test NOTIFY_SOCKET, with its sender.
type notifyMsg struct {
	pid  int
	text string
}

// notifyListener is a stand-in for systemd's notify socket that records
// who sent what (SO_PASSCRED), as systemd itself does.
type notifyListener struct {
	path string
	mu   sync.Mutex
	msgs []notifyMsg
}

func listenNotify(t *testing.T) *notifyListener {
	t.Helper()
	n := &notifyListener{path: filepath.Join(t.TempDir(), "notify.sock")}
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: n.path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	raw, _ := conn.SyscallConn()
	raw.Control(func(fd uintptr) { unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_PASSCRED, 1) })
	go func() {
		buf, oob := make([]byte, 4096), make([]byte, 256)
		for {
			nb, noob, _, _, err := conn.ReadMsgUnix(buf, oob)
			if err != nil {
				return
			}
			m := notifyMsg{text: string(buf[:nb])}
			if cmsgs, err := unix.ParseSocketControlMessage(oob[:noob]); err == nil {
				for _, c := range cmsgs {
					if cred, err := unix.ParseUnixCredentials(&c); err == nil {
						m.pid = int(cred.Pid)
					}
				}
			}
			n.mu.Lock()
			n.msgs = append(n.msgs, m)
			n.mu.Unlock()
		}
	}()
	return n
}

func (n *notifyListener) all() []notifyMsg {
	n.mu.Lock()
	defer n.mu.Unlock()
	return append([]notifyMsg(nil), n.msgs...)
}

func (n *notifyListener) count(what string) int {
	c := 0
	for _, m := range n.all() {
		if strings.Contains(m.text, what) {
			c++
		}
	}
	return c
}

// lastMainPID is the MAINPID systemd would follow after these messages.
func (n *notifyListener) lastMainPID() string {
	last := ""
	for _, m := range n.all() {
		for _, line := range strings.Split(m.text, "\n") {
			if v, ok := strings.CutPrefix(line, "MAINPID="); ok {
				last = v
			}
		}
	}
	return last
}

// unixClient talks HTTP over a unix socket.
func unixClient(path string) *http.Client {
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", path)
		},
	}}
}

// newMasterPid is the pid of a master other than the first that logged msg.
func (s *server) otherMasterLogged(msg string) int {
	for _, l := range s.logs.find(msg) {
		if l["proc"] == "master" && int(l["pid"].(float64)) != s.cmd.Process.Pid {
			return int(l["pid"].(float64))
		}
	}
	return 0
}

// A USR2 upgrade that fails, or that the operator rolls back by stopping the
// new master, must leave the service as it was: systemd never hears
// STOPPING=1 (with NotifyAccess=all it would stop the unit, old master
// included), it follows the old master again, and the unix socket file the
// old master serves on is still there.
func TestUpgradeRollbackKeepsTheServiceAndItsSocketFile(t *testing.T) {
	for _, tc := range []struct {
		name string
		env  []string
	}{
		{"new master fails to boot", []string{"TESTSERVER_UPGRADE_BOOT_FAIL=1"}},
		{"new master stopped after it was ready", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := listenNotify(t)
			sock := filepath.Join(t.TempDir(), "gw.sock")
			env := append([]string{"NOTIFY_SOCKET=" + n.path}, tc.env...)
			s := start(t, env, "--bind", "unix:"+sock, "--workers", "2")
			if st, err := os.Stat(sock); err != nil || st.Mode().Perm() != 0o660 {
				t.Fatalf("unix socket mode %v (%v), want 0660: the owner and its group connect, no one else", st.Mode(), err)
			}
			old := fmt.Sprint(s.cmd.Process.Pid)
			waitFor(t, "READY=1", 5*time.Second, func() bool { return n.count("READY=1") > 0 })
			uc := unixClient(sock)
			stop := keepLoading(s.url("/pid"), 10)

			s.signal(syscall.SIGUSR2)
			if tc.env == nil {
				var newPid int
				waitFor(t, "the new master ready", 15*time.Second, func() bool {
					newPid = s.otherMasterLogged("server ready")
					return newPid != 0
				})
				waitFor(t, "systemd told of the new master", 5*time.Second, func() bool { return n.lastMainPID() == fmt.Sprint(newPid) })
				syscall.Kill(newPid, syscall.SIGTERM) // the documented rollback
			}
			s.waitLog("upgrade: the new master exited; this master keeps serving", 20*time.Second)
			stop().clean(t)

			if n.count("STOPPING=1") != 0 {
				t.Fatalf("systemd was told STOPPING=1: %v", n.all())
			}
			waitFor(t, "MAINPID back to the old master", 5*time.Second, func() bool { return n.lastMainPID() == old })
			if _, err := os.Stat(sock); err != nil {
				t.Fatalf("the unix socket file is gone: %v", err)
			}
			if code, _, err := post(uc, "http://gw/pid"); err != nil || code != 200 {
				t.Fatalf("the old master no longer serves on its unix socket: %d %v", code, err)
			}
			s.signal(syscall.SIGTERM)
			s.wait(10 * time.Second)
			if n.count("STOPPING=1") != 1 {
				t.Fatalf("a real stop must say STOPPING=1 once: %v", n.all())
			}
			if _, err := os.Stat(sock); !os.IsNotExist(err) {
				t.Fatalf("the master's own stop must remove its socket file: %v", err)
			}
		})
	}
}

// A HUP whose preparation (migrations) is slow must not freeze the master:
// crashed workers are replaced, systemd's watchdog is pinged, TERM is prompt.
func TestSlowReloadKeepsTheMasterLoopAlive(t *testing.T) {
	n := listenNotify(t)
	reload := filepath.Join(t.TempDir(), "reload.conf")
	os.WriteFile(reload, []byte("workers=2\n"), 0o644)
	s := start(t, []string{"NOTIFY_SOCKET=" + n.path, "WATCHDOG_USEC=400000"},
		"--workers", "2", "--reload-file", reload, "--reload-prepare-delay", "30s", "--graceful-timeout", "2s")
	s.signal(syscall.SIGHUP)
	waitFor(t, "RELOADING=1", 5*time.Second, func() bool { return n.count("RELOADING=1") > 0 })
	pings := n.count("WATCHDOG=1")

	victim := 0
	for pid := range readyPids(s.table()) {
		victim = pid
	}
	syscall.Kill(victim, syscall.SIGKILL)
	tb := s.table()
	waitFor(t, "the killed worker replaced during the reload", 5*time.Second, func() bool {
		r := readyPids(tb)
		return len(r) == 2 && !r[victim]
	})
	waitFor(t, "watchdog pings during the reload", 5*time.Second, func() bool { return n.count("WATCHDOG=1") >= pings+3 })

	start := time.Now()
	s.signal(syscall.SIGTERM)
	s.wait(10 * time.Second)
	if took := time.Since(start); took > 6*time.Second {
		t.Fatalf("TERM waited %s for the reload's preparation", took)
	}
}

// Once the server serves, a replacement that cannot boot (a certificate
// mid-rotation, a database blip) must not halt it: the old workers go on,
// and the replacement is retried until it boots.
func TestBootErrorAfterServingKeepsTheServerUp(t *testing.T) {
	fail := filepath.Join(t.TempDir(), "fail")
	s := start(t, []string{"TESTSERVER_BOOT_FAIL_FILE=" + fail}, "--workers", "2")
	tb := s.table()
	os.WriteFile(fail, nil, 0o644)
	victim := 0
	for pid := range readyPids(tb) {
		victim = pid
		break
	}
	syscall.Kill(victim, syscall.SIGKILL)
	waitFor(t, "a replacement failing to boot", 10*time.Second, func() bool {
		for _, l := range s.logs.find("worker exited") {
			if l["reason"] == protocol.ReasonBootFail {
				return true
			}
		}
		return false
	})
	r := load(s.url("/pid"), 200, 4)
	if len(r.errors) > 0 || r.byStatus[200] != 200 {
		t.Fatalf("the surviving worker must serve: %v %v", r.byStatus, r.errors)
	}
	if l := s.logs.find("master halted"); len(l) > 0 {
		t.Fatalf("the master halted: %v", l)
	}
	os.Remove(fail)
	waitFor(t, "back to two workers", 15*time.Second, func() bool { return len(readyPids(tb)) == 2 })
}

// A reload whose workers cannot boot rolls back: the old workers serve on.
func TestReloadWhoseWorkersCannotBootRollsBack(t *testing.T) {
	reload := filepath.Join(t.TempDir(), "reload.conf")
	os.WriteFile(reload, []byte("workers=2\n"), 0o644)
	s := start(t, nil, "--workers", "2", "--reload-file", reload)
	before := readyPids(s.table())
	os.WriteFile(reload, []byte("workers=2\nboot_fail=1\n"), 0o644)
	stop := keepLoading(s.url("/pid"), 10)
	s.signal(syscall.SIGHUP)
	s.waitLog("reload rolled back: the previous configuration stays", 15*time.Second)
	time.Sleep(300 * time.Millisecond)
	stop().clean(t)
	after := readyPids(s.table())
	for pid := range before {
		if !after[pid] {
			t.Fatalf("worker %d lost to a failed reload (now %v)", pid, after)
		}
	}
	// The next reload, with a good configuration, rolls as usual.
	os.WriteFile(reload, []byte("workers=2\n"), 0o644)
	s.signal(syscall.SIGHUP)
	s.waitLog("reload complete", 15*time.Second)
}

// Workers that served and then crash are replaced at once, however often:
// after repeated kills the server is back at full strength quickly, not
// left at part strength behind a backoff.
func TestRepeatedCrashesOfServingWorkersAreReplacedAtOnce(t *testing.T) {
	s := start(t, nil, "--workers", "2")
	tb := s.table()
	stop := keepLoading(s.url("/pid"), 10)
	defer stop()
	for i := 0; i < 12; i++ {
		var victim int
		waitFor(t, "a ready worker that served", time.Second, func() bool {
			for _, w := range tb.Snapshot().Workers {
				if w.State == protocol.StateReady && w.Counters.Served > 0 {
					victim = w.Pid
					return true
				}
			}
			return false
		})
		syscall.Kill(victim, syscall.SIGKILL)
		time.Sleep(250 * time.Millisecond)
	}
	took := waitFor(t, "full strength after the kills", 1500*time.Millisecond, func() bool { return len(readyPids(tb)) == 2 })
	t.Logf("12 kill -9 of serving workers: full strength %s after the last", took)
	if l := s.logs.find("master halted"); len(l) > 0 {
		t.Fatalf("the master halted: %v", l)
	}
}

// In the reuse-port layout a slot whose worker is dead for good (respawn
// off) must not keep a socket in the group: the kernel would go on routing
// a share of new connections to a queue nobody accepts from.
func TestDeadReusePortSlotDrawsNoConnections(t *testing.T) {
	s := start(t, nil, "--workers", "2", "--reuse-port", "--respawn-failed=false")
	victim := 0
	for pid := range readyPids(s.table()) {
		victim = pid
		break
	}
	syscall.Kill(victim, syscall.SIGKILL)
	s.waitLog("worker exited", 5*time.Second)
	c := &http.Client{Timeout: 3 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	for i := 0; i < 60; i++ {
		if code, _, err := post(c, s.url("/pid")); err != nil || code != 200 {
			t.Fatalf("connection %d: %d %v", i, code, err)
		}
	}
}

// Under socket activation the sockets are systemd's: a USR2 upgrade adopts
// them as they are, whatever --bind says.
func TestSocketActivationThenUpgrade(t *testing.T) {
	s := startActivated(t, "--workers", "2")
	s.waitLog("server ready", 10*time.Second)
	if w := s.waitLog("configuration", 2*time.Second); !strings.Contains(fmt.Sprint(w["warning"]), "127.0.0.1:1") {
		t.Fatalf("the ignored --bind is not warned about: %v", w)
	}
	stop := keepLoading(s.url("/pid"), 10)
	s.signal(syscall.SIGUSR2)
	waitFor(t, "the new master ready", 15*time.Second, func() bool { return s.otherMasterLogged("server ready") != 0 })
	s.signal(syscall.SIGWINCH)
	time.Sleep(500 * time.Millisecond)
	s.signal(syscall.SIGQUIT)
	// exec's Wait would also wait for the new master, which shares the
	// output pipe: watch the old master's process instead.
	waitFor(t, "old master gone", 10*time.Second, func() bool { return !alive(s.cmd.Process.Pid) })
	time.Sleep(200 * time.Millisecond)
	stop().clean(t)
	if code, _, err := post(client(1), s.url("/pid")); err != nil || code != 200 {
		t.Fatalf("the new master does not serve the activated socket: %d %v", code, err)
	}
}

// --timeout 0 means no timeout, as in Gunicorn.
func TestTimeoutZeroMeansNoTimeout(t *testing.T) {
	s := start(t, nil, "--workers", "1", "--timeout", "0")
	if code, body, err := post(client(1), s.url("/slow?ms=2500")); err != nil || code != 200 || body != "slept" {
		t.Fatalf("a long request under --timeout 0: %d %q %v", code, body, err)
	}
}

// Workers carry a process title, as Gunicorn's do: ps shows what they are.
func TestWorkersHaveAProcessTitle(t *testing.T) {
	s := start(t, nil, "--workers", "2")
	for pid := range readyPids(s.table()) {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(string(b), "testserver: worker ") {
			t.Fatalf("worker %d: cmdline %q", pid, b)
		}
	}
}

// As PID 1 (a container's entrypoint) the program runs a small init that
// reaps the orphans a tool's subprocesses leave (they land on PID 1) and
// forwards signals to the master. Without it they stay zombies.
func TestInitReapsOrphansAsPID1(t *testing.T) {
	if _, err := exec.LookPath("unshare"); err != nil || os.Geteuid() != 0 {
		t.Skip("needs unshare and root for a PID namespace")
	}
	for _, tc := range []struct {
		name    string
		env     []string
		zombies bool
	}{
		{"without the init (MCPGATEWAY_NO_INIT=1)", []string{"MCPGATEWAY_NO_INIT=1"}, true},
		{"with the init", nil, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cmd := exec.Command("unshare", "--pid", "--fork", testBinary, "--bind", "127.0.0.1:0", "--workers", "1")
			cmd.Env = append(os.Environ(), tc.env...)
			s := startCmd(t, cmd)
			s.ready()
			pid1 := 0 // PID 1 of the namespace, as this namespace sees it
			waitFor(t, "PID 1 of the namespace", 5*time.Second, func() bool {
				b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", s.cmd.Process.Pid, s.cmd.Process.Pid))
				_, err := fmt.Sscan(string(b), &pid1)
				return err == nil
			})
			c := client(1)
			for i := 0; i < 5; i++ {
				if code, _, err := post(c, s.url("/orphan")); err != nil || code != 200 {
					t.Fatalf("/orphan: %d %v", code, err)
				}
			}
			time.Sleep(time.Second) // the orphans' sleep 0.2 is over
			if got := zombiesOf(pid1); (got > 0) != tc.zombies {
				t.Fatalf("%d zombie children of PID 1, want zombies: %v", got, tc.zombies)
			}
			syscall.Kill(pid1, syscall.SIGTERM) // what docker stop sends
			if code := s.wait(10 * time.Second); code != 0 {
				t.Fatalf("exit status %d after TERM, want 0", code)
			}
		})
	}
}

// zombiesOf counts the zombie children of a process.
func zombiesOf(parent int) int {
	n := 0
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...: comm may hold spaces, so cut at the last ')'.
		rest := string(b[strings.LastIndexByte(string(b), ')')+1:])
		var state string
		var ppid int
		if _, err := fmt.Sscan(rest, &state, &ppid); err == nil && state == "Z" && ppid == parent {
			n++
		}
	}
	return n
}

// The control socket answers status, reload, scale and stop, goes to the new
// master on USR2, comes back to the old one when the upgrade is rolled back,
// and is removed by the real stop.
func TestControlSocket(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "gw.ctl")
	reload := filepath.Join(dir, "reload.conf")
	os.WriteFile(reload, []byte("workers=2\n"), 0o644)
	s := start(t, nil, "--workers", "2", "--control-socket", sock, "--reload-file", reload)
	call := func(req control.Request) control.Reply {
		t.Helper()
		r, err := control.Call(sock, req, 20*time.Second)
		if err != nil {
			t.Fatalf("%s: %v", req.Cmd, err)
		}
		return r
	}
	if st, err := os.Stat(sock); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("control socket: %v %v", st, err)
	}
	master := fmt.Sprintf("master %d ", s.cmd.Process.Pid)
	if r := call(control.Request{Cmd: control.CmdStatus}); !r.OK || !strings.HasPrefix(r.Status, master) || strings.Count(r.Status, "ready") != 2 {
		t.Fatalf("status: %+v", r)
	}
	tb := s.table()
	if r := call(control.Request{Cmd: control.CmdScale, N: 3}); !r.OK {
		t.Fatalf("scale: %+v", r)
	}
	waitFor(t, "3 workers", 10*time.Second, func() bool { return len(readyPids(tb)) == 3 })
	if r := call(control.Request{Cmd: control.CmdReload}); !r.OK {
		t.Fatalf("reload: %+v", r)
	}
	s.waitLog("reload complete", 15*time.Second)
	os.WriteFile(reload, []byte("bad\n"), 0o644)
	if r := call(control.Request{Cmd: control.CmdReload}); r.OK || !strings.Contains(r.Error, "bad setting") {
		t.Fatalf("a refused reload must say why: %+v", r)
	}

	// USR2: the new master answers; stopped, the old one answers again.
	s.signal(syscall.SIGUSR2)
	var newPid int
	waitFor(t, "the new master ready", 15*time.Second, func() bool {
		newPid = s.otherMasterLogged("server ready")
		return newPid != 0
	})
	if r := call(control.Request{Cmd: control.CmdStatus}); !strings.HasPrefix(r.Status, fmt.Sprintf("master %d ", newPid)) {
		t.Fatalf("after USR2 the new master must answer: %+v", r)
	}
	syscall.Kill(newPid, syscall.SIGTERM)
	s.waitLog("upgrade: the new master exited; this master keeps serving", 15*time.Second)
	waitFor(t, "the old master answering again", 5*time.Second, func() bool {
		r, err := control.Call(sock, control.Request{Cmd: control.CmdStatus}, 2*time.Second)
		return err == nil && strings.HasPrefix(r.Status, master)
	})
	if r := call(control.Request{Cmd: control.CmdStop}); !r.OK {
		t.Fatalf("stop: %+v", r)
	}
	if code := s.wait(15 * time.Second); code != 0 {
		t.Fatalf("exit %d after stop", code)
	}
	if _, err := os.Stat(sock); !os.IsNotExist(err) {
		t.Fatalf("the control socket file outlived the master: %v", err)
	}
}
