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
type notifier struct {
	conn     *net.UnixConn
	watchdog time.Duration // WATCHDOG_USEC: ping at half of it
	lastPing time.Time
}

func newNotifier() *notifier {
	n := &notifier{}
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
	if n.conn != nil {
		_, _ = n.conn.Write([]byte(state))
	}
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
	if n.watchdog > 0 && time.Since(n.lastPing) >= n.watchdog/2 {
		n.lastPing = time.Now()
		n.send("WATCHDOG=1")
	}
}

// activatedListeners takes the sockets systemd passed (LISTEN_FDS,
// LISTEN_PID, LISTEN_FDNAMES), or none.
func activatedListeners() ([]*listener, error) {
	if os.Getenv("LISTEN_PID") != strconv.Itoa(os.Getpid()) {
		return nil, nil
	}
	n, err := strconv.Atoi(os.Getenv("LISTEN_FDS"))
	if err != nil || n <= 0 {
		return nil, nil
	}
	names := strings.Split(os.Getenv("LISTEN_FDNAMES"), ":")
	for _, k := range []string{"LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"} {
		os.Unsetenv(k) // not for the workers
	}
	ls, err := inheritListeners(listenFDsStart, n)
	for i, l := range ls {
		if i < len(names) && names[i] != "" && names[i] != "unknown" {
			l.addr = names[i] + "=" + l.bound
		}
		l.path = "" // systemd owns the socket file
	}
	return ls, err
}

// listenFDsStart is where passed sockets begin, for systemd and for an
// upgrading master alike.
const listenFDsStart = 3

// inheritListeners adopts n listening sockets from fd start on.
func inheritListeners(start, n int) ([]*listener, error) {
	var out []*listener
	for fd := start; fd < start+n; fd++ {
		unix.CloseOnExec(fd) // passed on to workers explicitly, never by accident
		if v, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ACCEPTCONN); err != nil || v != 1 {
			return out, fmt.Errorf("inherited fd %d is not a listening socket", fd)
		}
		sa, err := unix.Getsockname(fd)
		if err != nil {
			return out, fmt.Errorf("inherited fd %d: %w", fd, err)
		}
		bound := sockaddrString(sa)
		if u, ok := sa.(*unix.SockaddrUnix); ok {
			bound = "unix:" + u.Name
		}
		out = append(out, &listener{addr: bound, bound: bound, file: os.NewFile(uintptr(fd), bound)})
	}
	return out, nil
}
