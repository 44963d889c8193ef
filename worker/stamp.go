package worker

import (
	"io"
	"net"
	"os"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Receive timestamps. A listening socket with SO_TIMESTAMPNS set passes
// the option to every connection it accepts, and the kernel then stamps
// each packet as it arrives (CLOCK_REALTIME), before any queue of ours: the
// accept queue, the socket's receive buffer, the Go scheduler. recvmsg
// returns the stamp of the last packet it read with the data; a request's
// queueing delay is the time from that stamp to its handler starting.

// enableStamps sets SO_TIMESTAMPNS on a listening socket.
func enableStamps(ln net.Listener) error {
	sc, ok := ln.(syscall.Conn)
	if !ok {
		return nil
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := raw.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_TIMESTAMPNS, 1)
	}); err != nil {
		return err
	}
	return serr
}

// stampedReader reads a connection with recvmsg, keeping the receive
// timestamp. Its buffers live as long as the connection, so a read
// allocates nothing.
type stampedReader struct {
	raw   syscall.RawConn
	fn    func(fd uintptr) bool // recv, bound once
	p     []byte
	n     int
	errno syscall.Errno
	msg   unix.Msghdr
	iov   unix.Iovec
	oob   [unix.SizeofCmsghdr + 16]byte // one cmsg: a struct timespec
	at    int64                         // the last stamp, Unix ns; 0: none yet
}

func newStampedReader(c net.Conn) *stampedReader {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return nil
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return nil
	}
	r := &stampedReader{raw: raw}
	r.fn = r.recv
	r.msg.Iov = &r.iov
	r.msg.Iovlen = 1
	return r
}

func (r *stampedReader) recv(fd uintptr) bool {
	r.iov.Base = &r.p[0]
	r.iov.SetLen(len(r.p))
	r.msg.Control = &r.oob[0]
	r.msg.SetControllen(len(r.oob))
	for {
		n, _, e := unix.Syscall(unix.SYS_RECVMSG, fd, uintptr(unsafe.Pointer(&r.msg)), unix.MSG_CMSG_CLOEXEC)
		switch e {
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			return false // not readable yet: the poller waits, then calls again
		}
		r.n, r.errno = int(n), e
		if e == 0 && r.msg.Controllen >= uint64(len(r.oob)) {
			h := (*unix.Cmsghdr)(unsafe.Pointer(&r.oob[0]))
			if h.Level == unix.SOL_SOCKET && h.Type == unix.SO_TIMESTAMPNS {
				ts := (*unix.Timespec)(unsafe.Pointer(&r.oob[unix.SizeofCmsghdr]))
				r.at = ts.Nano()
			}
		}
		return true
	}
}

// read is net.Conn.Read, through recvmsg.
func (r *stampedReader) read(c net.Conn, p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	r.p = p
	err := r.raw.Read(r.fn)
	r.p = nil
	r.iov.Base = nil
	switch {
	case err != nil: // closed, or a deadline passed
		return 0, &net.OpError{Op: "read", Net: c.LocalAddr().Network(), Source: c.LocalAddr(), Addr: c.RemoteAddr(), Err: err}
	case r.errno != 0:
		return 0, &net.OpError{Op: "read", Net: c.LocalAddr().Network(), Source: c.LocalAddr(), Addr: c.RemoteAddr(), Err: os.NewSyscallError("recvmsg", r.errno)}
	case r.n == 0:
		return 0, io.EOF
	}
	return r.n, nil
}

// delay is how long ago the data of the last read reached the host: the
// queueing delay of a request whose head that read completed. 0 when
// there is no stamp, or the wall clock stepped.
func (r *stampedReader) delay(now time.Time) int64 {
	if r == nil || r.at == 0 {
		return 0
	}
	d := now.UnixNano() - r.at
	if d < 0 || d > int64(time.Hour) {
		return 0
	}
	return d
}
