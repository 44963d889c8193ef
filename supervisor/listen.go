package supervisor

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// listener is one listening socket, opened by the master and held for its
// whole life: workers come and go, the socket and its queue stay.
type listener struct {
	addr   string   // as configured
	file   *os.File // blocking mode in the master; workers make their copies non-blocking; nil once closed
	bound  string   // the address the kernel gave (port 0 resolved)
	path   string   // unix socket path, "" for TCP
	ino    uint64   // the path's inode when this master took it: unlink only that file
	origin origin
}

// listen opens every configured address, with the configured backlog.
func listen(binds []string, backlog int, reusePort bool) ([]*listener, error) {
	var out []*listener
	for _, addr := range binds {
		l, err := listenOne(addr, backlog, reusePort)
		if err != nil {
			closeListeners(out)
			return nil, fmt.Errorf("open listener %s: %w", addr, err)
		}
		out = append(out, l)
	}
	return out, nil
}

// closeListeners closes sockets that failed to become a server's: the
// unix socket files go too if this master made them.
func closeListeners(ls []*listener) {
	for _, l := range ls {
		l.close(l.origin == originBound)
	}
}

// listenOne makes the socket with system calls rather than net.Listen: the
// backlog must be ours, and the descriptor must stay in blocking mode in the
// master (os/exec would otherwise flip the shared file description to
// blocking under the workers' feet when it passes the file on).
func listenOne(addr string, backlog int, reusePort bool) (*listener, error) {
	if path, ok := strings.CutPrefix(addr, "unix:"); ok {
		return listenUnix(path, backlog)
	}
	ta, err := net.ResolveTCPAddr("tcp", addr)
	if err != nil {
		return nil, err
	}
	family, sa := unix.AF_INET, unix.Sockaddr(nil)
	if ip4 := ta.IP.To4(); ip4 != nil || ta.IP == nil {
		s := &unix.SockaddrInet4{Port: ta.Port}
		if ip4 != nil {
			copy(s.Addr[:], ip4)
		}
		sa = s
	} else {
		family = unix.AF_INET6
		s := &unix.SockaddrInet6{Port: ta.Port}
		copy(s.Addr[:], ta.IP.To16())
		sa = s
	}
	fd, err := unix.Socket(family, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, os.NewSyscallError("socket", err)
	}
	ok := false
	defer func() {
		if !ok {
			unix.Close(fd)
		}
	}()
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1); err != nil {
		return nil, os.NewSyscallError("setsockopt SO_REUSEADDR", err)
	}
	if reusePort {
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEPORT, 1); err != nil {
			return nil, os.NewSyscallError("setsockopt SO_REUSEPORT", err)
		}
	}
	if family == unix.AF_INET6 && ta.IP.IsUnspecified() {
		_ = unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_V6ONLY, 0) // [::] serves IPv4 too
	}
	if err := unix.Bind(fd, sa); err != nil {
		if errors.Is(err, syscall.EADDRINUSE) {
			return nil, fmt.Errorf("address already in use (another server on it?)")
		}
		return nil, os.NewSyscallError("bind", err)
	}
	if err := unix.Listen(fd, backlog); err != nil {
		return nil, os.NewSyscallError("listen", err)
	}
	bound, err := unix.Getsockname(fd)
	if err != nil {
		return nil, os.NewSyscallError("getsockname", err)
	}
	ok = true
	return &listener{addr: addr, file: os.NewFile(uintptr(fd), addr), bound: sockaddrString(bound)}, nil
}

// unixSocketMode is the mode of a unix socket file the master binds.
const unixSocketMode = 0o660

func listenUnix(path string, backlog int) (*listener, error) {
	if path == "" {
		return nil, errors.New("empty unix socket path")
	}
	// A socket file left by a crashed server is removed; one that still
	// answers belongs to a live server and is an error.
	if st, err := os.Lstat(path); err == nil {
		if st.Mode()&os.ModeSocket == 0 {
			return nil, fmt.Errorf("%s exists and is not a socket", path)
		}
		if c, err := net.Dial("unix", path); err == nil {
			c.Close()
			return nil, fmt.Errorf("another server is listening on %s", path)
		}
		os.Remove(path)
	}
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, os.NewSyscallError("socket", err)
	}
	if err := unix.Bind(fd, &unix.SockaddrUnix{Name: path}); err != nil {
		unix.Close(fd)
		return nil, os.NewSyscallError("bind", err)
	}
	// bind makes the file 0777 less the umask: under the usual 022 only
	// the owner may connect (connecting takes write permission), so a
	// proxy running as another user in the server's group cannot; under
	// systemd's UMask=0000 anyone can. The owner and the group it is, as
	// nginx in front needs, and no one else (review 2.5).
	if err := os.Chmod(path, unixSocketMode); err != nil {
		unix.Close(fd)
		os.Remove(path)
		return nil, fmt.Errorf("chmod %s: %w", path, err)
	}
	if err := unix.Listen(fd, backlog); err != nil {
		unix.Close(fd)
		os.Remove(path)
		return nil, os.NewSyscallError("listen", err)
	}
	return &listener{addr: "unix:" + path, file: os.NewFile(uintptr(fd), path), bound: "unix:" + path, path: path, ino: inode(path)}, nil
}

func sockaddrString(sa unix.Sockaddr) string {
	switch a := sa.(type) {
	case *unix.SockaddrInet4:
		return (&net.TCPAddr{IP: net.IP(a.Addr[:]), Port: a.Port}).String()
	case *unix.SockaddrInet6:
		return (&net.TCPAddr{IP: net.IP(a.Addr[:]), Port: a.Port}).String()
	}
	return fmt.Sprint(sa)
}
