package supervisor_test

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mcpgateway/mcpgateway/supervisor/protocol"
)

func TestHUPRollsEveryWorkerUnderLoad(t *testing.T) {
	t.Run("every slot at once", func(t *testing.T) { testHUPRoll(t, 0) })
	t.Run("every slot at once, reuse-port", func(t *testing.T) { testHUPRoll(t, 0, "--reuse-port") })
	// A reload limited to one slot at a time (the database holds only one
	// extra pool): never two old workers being replaced at once.
	t.Run("one slot at a time", func(t *testing.T) { testHUPRoll(t, 1) })
}

func testHUPRoll(t *testing.T, surge int, args ...string) {
	reload := filepath.Join(t.TempDir(), "reload.conf")
	os.WriteFile(reload, []byte("workers=3\n"), 0o644)
	s := start(t, nil, append([]string{"--workers", "2", "--reload-file", reload, "--reload-surge", fmt.Sprint(surge)}, args...)...)
	tb := s.table()
	before := readyPids(tb)
	stop := keepLoading(s.url("/pid"), 50)
	time.Sleep(300 * time.Millisecond)
	s.signal(syscall.SIGHUP)
	s.waitLog("reload complete", 10*time.Second)
	waitFor(t, "old workers gone", 10*time.Second, func() bool {
		for pid := range before {
			if alive(pid) {
				return false
			}
		}
		return true
	})
	time.Sleep(300 * time.Millisecond)
	served := stop().clean(t)
	after := readyPids(tb)
	if len(after) != 3 {
		t.Fatalf("want the reloaded 3 workers, have %d", len(after))
	}
	for pid := range after {
		if before[pid] {
			t.Fatalf("worker %d survived the reload", pid)
		}
	}
	if most := mostAtOnce(s, protocol.ReasonReload); surge > 0 && most != surge {
		t.Fatalf("a reload with surge %d replaced %d workers at once", surge, most)
	}
	t.Logf("HUP under load (surge %d): %d requests, none failed", surge, served)
}

func TestHUPWithBrokenConfigurationKeepsServing(t *testing.T) {
	reload := filepath.Join(t.TempDir(), "reload.conf")
	os.WriteFile(reload, []byte("workers=2\nbad\n"), 0o644)
	s := start(t, nil, "--workers", "2", "--reload-file", reload)
	before := readyPids(s.table())
	s.signal(syscall.SIGHUP)
	refused := s.waitLog("reload refused: the running configuration stays", 5*time.Second)
	if !strings.Contains(fmt.Sprint(refused["error"]), "reload.conf:2") {
		t.Fatalf("the error does not name file and line: %v", refused)
	}
	time.Sleep(300 * time.Millisecond)
	after := readyPids(s.table())
	if len(after) != 2 {
		t.Fatalf("workers changed: %v", after)
	}
	for pid := range before {
		if !after[pid] {
			t.Fatalf("worker %d replaced by a refused reload", pid)
		}
	}
	if code, _, err := post(client(1), s.url("/pid")); err != nil || code != 200 {
		t.Fatalf("not serving after a refused reload: %d %v", code, err)
	}
}

func TestTTINAndTTOUScaleUnderLoad(t *testing.T) {
	eachLayout(t, []string{"--workers", "2"}, testScale)
}

// testScale scales 2 -> 4 -> 1 under two loads: keep-alive connections, and
// a new connection for every request, which the kernel routes to whatever
// socket is listening as workers come and go.
func testScale(t *testing.T, s *server) {
	tb := s.table()
	stop := keepLoading(s.url("/pid"), 30)
	stopFresh := keepLoadingFresh(s.url("/pid"), 4)
	s.signal(syscall.SIGTTIN)
	waitFor(t, "3 workers", 5*time.Second, func() bool { return len(readyPids(tb)) == 3 })
	s.signal(syscall.SIGTTIN)
	waitFor(t, "4 workers", 5*time.Second, func() bool { return len(readyPids(tb)) == 4 })
	// Signals of one kind sent together coalesce in the kernel: one at a time.
	for want := 3; want >= 1; want-- {
		s.signal(syscall.SIGTTOU)
		waitFor(t, fmt.Sprintf("%d workers", want), 10*time.Second, func() bool { return len(tb.Snapshot().Workers) == want })
	}
	time.Sleep(300 * time.Millisecond)
	served := stop().clean(t)
	fresh := stopFresh()
	if strings.Contains(s.cmd.String(), "--reuse-port") {
		// A removed slot's socket leaves the kernel's group when its worker
		// closes its copy at the start of its drain; a connection queued on
		// it at that instant is reset. Measured, not zero by construction.
		fresh.mu.Lock()
		failed, ok := len(fresh.errors), fresh.byStatus[200]
		fresh.mu.Unlock()
		migrate := readSysctl("net/ipv4/tcp_migrate_req") == "1"
		t.Logf("reuse-port, new connections while scaling 2 -> 4 -> 1: %d served, %d reset (net.ipv4.tcp_migrate_req=%v)", ok, failed, migrate)
		switch {
		case ok == 0:
			t.Fatal("no new connection was served")
		case migrate && failed > 0:
			t.Fatalf("with tcp_migrate_req the kernel moves a closing socket's queue: %d reset", failed)
		case failed > max(5, ok/50):
			t.Fatalf("reuse-port scaling lost %d new connections (served %d): more than the few queued at a socket's close", failed, ok)
		}
	} else {
		fresh.clean(t)
	}
	t.Logf("scaled 2 -> 4 -> 1 under load: %d keep-alive requests, none failed", served)
	for _, l := range s.logs.find("worker exited") {
		if l["reason"] != protocol.ReasonScale {
			t.Fatalf("unexpected exit: %v", l)
		}
	}
	// TTOU stops the oldest worker, as Gunicorn's does: the one left is the
	// youngest, started by the second TTIN in slot 3.
	if w := tb.Snapshot().Workers; len(w) != 1 || w[0].Slot != 3 {
		t.Fatalf("after TTOU thrice the youngest worker (slot 3) must be left: %+v", w)
	}
}

func TestUSR2UpgradeThenWINCHAndQUITUnderLoad(t *testing.T) {
	for _, layout := range []string{"shared", "reuse-port"} {
		t.Run(layout, func(t *testing.T) {
			args := []string{"--workers", "2"}
			if layout == "reuse-port" {
				args = append(args, "--reuse-port")
			}
			testUpgrade(t, args)
		})
	}
}

func testUpgrade(t *testing.T, args []string) {
	pidfile := filepath.Join(t.TempDir(), "master.pid")
	s := start(t, nil, append(args, "--pidfile", pidfile)...)
	oldWorkers := readyPids(s.table())
	stop := keepLoading(s.url("/pid"), 50)
	time.Sleep(200 * time.Millisecond)

	s.signal(syscall.SIGUSR2)
	started := s.waitLog("upgrade: new master started", 5*time.Second)
	newMaster := int(started["new_master"].(float64))
	waitFor(t, "new master ready", 10*time.Second, func() bool {
		for _, l := range s.logs.find("server ready") {
			if int(l["pid"].(float64)) == newMaster {
				return true
			}
		}
		return false
	})
	if b, _ := os.ReadFile(pidfile); strings.TrimSpace(string(b)) != fmt.Sprint(newMaster) {
		t.Fatalf("pidfile holds %q, want the new master %d", b, newMaster)
	}
	if b, _ := os.ReadFile(pidfile + ".oldbin"); strings.TrimSpace(string(b)) != fmt.Sprint(s.cmd.Process.Pid) {
		t.Fatalf("pidfile.oldbin holds %q, want the old master", b)
	}
	s.signal(syscall.SIGWINCH)
	waitFor(t, "old workers gone", 10*time.Second, func() bool {
		for pid := range oldWorkers {
			if alive(pid) {
				return false
			}
		}
		return true
	})
	time.Sleep(200 * time.Millisecond)
	s.signal(syscall.SIGQUIT)
	// exec's Wait would also wait for the new master, which shares the
	// output pipe: watch the old master's process instead.
	waitFor(t, "old master gone", 5*time.Second, func() bool { return !alive(s.cmd.Process.Pid) })
	if stopped := s.waitLog("master stopped", 5*time.Second); int(stopped["pid"].(float64)) != s.cmd.Process.Pid {
		t.Fatalf("the old master did not stop cleanly: %v", stopped)
	}
	time.Sleep(300 * time.Millisecond)
	r := stop()
	served := r.clean(t)
	newTable, err := protocol.OpenMasterTable(newMaster)
	if err != nil {
		t.Fatal(err)
	}
	defer newTable.Close()
	newWorkers := readyPids(newTable)
	if len(newWorkers) != 2 {
		t.Fatalf("new master has %d ready workers", len(newWorkers))
	}
	if code, body, err := post(client(1), s.url("/pid")); err != nil || code != 200 || !newWorkers[atoi(body)] {
		t.Fatalf("after the upgrade the new master's workers must serve: %d %q %v", code, body, err)
	}
	if _, err := os.Stat(pidfile + ".oldbin"); !os.IsNotExist(err) {
		t.Fatal("pidfile.oldbin left behind")
	}
	syscall.Kill(newMaster, syscall.SIGTERM)
	waitFor(t, "new master stopped", 10*time.Second, func() bool { return !alive(newMaster) })
	t.Logf("USR2 + WINCH + QUIT under load: %d requests, none failed", served)
}

func atoi(s string) int {
	var n int
	fmt.Sscan(s, &n)
	return n
}

func TestNotifySocketSeesReadyReloadWatchdogStopping(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "notify.sock")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	msgs := make(chan string, 100)
	go func() {
		buf := make([]byte, 4096)
		for {
			n, _, err := conn.ReadFromUnix(buf)
			if err != nil {
				return
			}
			msgs <- string(buf[:n])
		}
	}()
	expect := func(what string) string {
		t.Helper()
		deadline := time.After(10 * time.Second)
		for {
			select {
			case m := <-msgs:
				if strings.Contains(m, what) {
					return m
				}
			case <-deadline:
				t.Fatalf("no %q on the notify socket", what)
			}
		}
	}
	reload := filepath.Join(dir, "reload.conf")
	os.WriteFile(reload, []byte("workers=2\n"), 0o644)
	s := start(t, []string{"NOTIFY_SOCKET=" + sock, "WATCHDOG_USEC=400000"}, "--workers", "2", "--reload-file", reload)
	if m := expect("READY=1"); !strings.Contains(m, "STATUS=2/2 workers ready") {
		t.Fatalf("READY without status: %q", m)
	}
	expect("WATCHDOG=1")
	expect("WATCHDOG=1")
	s.signal(syscall.SIGHUP)
	if m := expect("RELOADING=1"); !strings.Contains(m, "MONOTONIC_USEC=") {
		t.Fatalf("RELOADING without MONOTONIC_USEC: %q", m)
	}
	expect("READY=1")
	s.signal(syscall.SIGTERM)
	expect("STOPPING=1")
	s.wait(10 * time.Second)
}

func TestSocketActivation(t *testing.T) {
	s := startActivated(t, "--workers", "2")
	ready := s.waitLog("server ready", 10*time.Second)
	if got := fmt.Sprint(ready["listening"]); !strings.Contains(got, s.addr) {
		t.Fatalf("serving on %s, want the passed socket %s", got, s.addr)
	}
	if code, _, err := post(client(1), s.url("/pid")); err != nil || code != 200 {
		t.Fatalf("passed socket not served: %d %v", code, err)
	}
}

func TestLifetimeRecyclesOneAtATime(t *testing.T) {
	s := start(t, nil, "--workers", "2", "--max-worker-lifetime", "1s")
	stop := keepLoading(s.url("/pid"), 20)
	time.Sleep(4 * time.Second)
	stop().clean(t)
	exits := s.logs.find("worker exited")
	if len(exits) < 2 {
		t.Fatalf("want workers recycled for their lifetime, got %d exits", len(exits))
	}
	for _, l := range exits {
		if l["reason"] != protocol.ReasonLifetime {
			t.Fatalf("unexpected exit: %v", l)
		}
	}
	// One at a time: in the order the events happened, never two lifetime
	// replacements outstanding (asked for, not yet exited).
	if most := mostAtOnce(s, protocol.ReasonLifetime); most != 1 {
		t.Fatalf("at most one lifetime replacement at a time, saw %d at once", most)
	}
}

func TestRSSLimitRecyclesAGrowingWorker(t *testing.T) {
	s := start(t, nil, "--workers", "1", "--max-worker-rss", "64")
	c := client(1)
	_, pid, _ := post(c, s.url("/pid"))
	if code, _, err := post(c, s.url("/grow?mb=100")); err != nil || code != 200 {
		t.Fatalf("grow: %d %v", code, err)
	}
	exited := s.waitLog("worker exited", 15*time.Second)
	if exited["reason"] != protocol.ReasonRSS || fmt.Sprint(exited["worker_pid"]) != pid {
		t.Fatalf("want worker %s recycled for rss, got %v", pid, exited)
	}
	replacing := s.logs.find("replacing worker")
	if len(replacing) == 0 || replacing[0]["rss"].(float64) < 64<<20 {
		t.Fatalf("no rss figure in the log: %v", replacing)
	}
}

func TestFailedUpgradeLeavesTheOldMasterServing(t *testing.T) {
	pidfile := filepath.Join(t.TempDir(), "master.pid")
	s := start(t, []string{"TESTSERVER_UPGRADE_FAIL=1"}, "--workers", "2", "--pidfile", pidfile)
	before := readyPids(s.table())
	stop := keepLoading(s.url("/pid"), 20)
	s.signal(syscall.SIGUSR2)
	s.waitLog("upgrade: the new master exited; this master keeps serving", 5*time.Second)
	time.Sleep(200 * time.Millisecond)
	stop().clean(t)
	if b, _ := os.ReadFile(pidfile); strings.TrimSpace(string(b)) != fmt.Sprint(s.cmd.Process.Pid) {
		t.Fatalf("pidfile not restored: %q", b)
	}
	after := readyPids(s.table())
	for pid := range before {
		if !after[pid] {
			t.Fatalf("worker %d lost to a failed upgrade", pid)
		}
	}
	// A second attempt is possible.
	s.signal(syscall.SIGUSR2)
	waitFor(t, "second attempt", 5*time.Second, func() bool { return len(s.logs.find("upgrade: new master started")) == 2 })
}

// readSysctl reads a sysctl ("net/ipv4/tcp_migrate_req"), "" if it cannot.
func readSysctl(name string) string {
	b, err := os.ReadFile("/proc/sys/" + name)
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}
