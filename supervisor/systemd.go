package supervisor

import (
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// notifier speaks systemd's notify protocol (sd_notify): datagrams such as
// "READY=1" to the unix socket named by NOTIFY_SOCKET. Without
// NOTIFY_SOCKET every call is a no-op.
//
// Only the service's main process speaks. A master started by USR2 is not
// main until it is ready and says MAINPID: before that, with
// NotifyAccess=all, its STOPPING=1 would stop the whole service, old master
// included, when all it means is that the upgrade failed.
type notifier struct {
	conn     *net.UnixConn
	watchdog time.Duration // WATCHDOG_USEC: ping at half of it
	lastPing time.Time
	main     bool
}

func newNotifier(main bool) *notifier {
	n := &notifier{main: main}
	path := os.Getenv("NOTIFY_SOCKET")
	if path == "" {
		return n
	}
	if strings.HasPrefix(path, "@") {
		path = "\x00" + path[1:] // abstract namespace
	}
	conn, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		return n
	}
	n.conn = conn
	if usec, err := strconv.ParseInt(os.Getenv("WATCHDOG_USEC"), 10, 64); err == nil && usec > 0 {
		pid := os.Getenv("WATCHDOG_PID")
		if pid == "" || pid == strconv.Itoa(os.Getpid()) {
			n.watchdog = time.Duration(usec) * time.Microsecond
		}
	}
	return n
}

func (n *notifier) send(state string) {
	if n.conn != nil && n.main {
		_, _ = n.conn.Write([]byte(state))
	}
}

// becomeMain makes this master the service's main process: systemd follows
// it from now on.
func (n *notifier) becomeMain(state string) {
	n.main = true
	n.send(fmt.Sprintf("MAINPID=%d\n%s", os.Getpid(), state))
}

// handBack gives the service back to the master that started this one (a
// rolled-back upgrade): systemd must not see its main process exit.
func (n *notifier) handBack(pid int) {
	n.send(fmt.Sprintf("MAINPID=%d", pid))
	n.main = false
}

// reloading tells systemd a reload began (Type=notify-reload wants the
// monotonic timestamp too).
func (n *notifier) reloading() {
	var ts unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	n.send(fmt.Sprintf("RELOADING=1\nMONOTONIC_USEC=%d", ts.Nano()/1000))
}

// ping sends WATCHDOG=1 when half the watchdog interval has passed; the
// master's loop calls it, so a wedged loop stops the pings.
func (n *notifier) ping() {
	if n.main && n.watchdog > 0 && time.Since(n.lastPing) >= n.watchdog/2 {
		n.lastPing = time.Now()
		n.send("WATCHDOG=1")
	}
}
