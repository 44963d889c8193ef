package control

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Limits of one exchange on the server side. A client writes its one line
// at once, so a connection that has not within ReadTimeout is dropped: a
// stuck or malicious client never holds a goroutine for long.
const (
	MaxRequestLine = 4 << 10
	ReadTimeout    = 5 * time.Second
	WriteTimeout   = 5 * time.Second
)

// Listener is a control socket: a unix listener that knows which socket
// file it created, so that Close removes that file and never a newer one
// another master bound at the same path.
type Listener struct {
	*net.UnixListener
	path     string
	dev, ino uint64

	mu   sync.Mutex
	keep bool // Close leaves the file: another process serves on it now
}

// Path is the socket file's path.
func (l *Listener) Path() string { return l.path }

// KeepFile makes Close leave the socket file in place, for a master that
// handed this socket to a new one (USR2) which now serves on the path.
func (l *Listener) KeepFile() {
	l.mu.Lock()
	l.keep = true
	l.mu.Unlock()
}

// Close stops listening and removes the socket file, if it is still the one
// this listener bound (same device and inode) and KeepFile was not called.
func (l *Listener) Close() error {
	err := l.UnixListener.Close()
	l.mu.Lock()
	keep := l.keep
	l.mu.Unlock()
	if !keep {
		var st unix.Stat_t
		if unix.Lstat(l.path, &st) == nil && uint64(st.Dev) == l.dev && st.Ino == l.ino {
			_ = os.Remove(l.path)
		}
	}
	return err
}

// Listen creates the control socket at path with mode 0600, whatever the
// umask, so that only the server's user (and root) can connect. It refuses
// to take the path from a server that answers on it, and replaces a stale
// socket file that a dead master left behind. A path that exists and is not
// a socket is never removed.
func Listen(path string) (*Listener, error) {
	if err := clearStale(path); err != nil {
		return nil, err
	}
	lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
		// Linux gives the socket file the socket inode's mode (less the
		// umask) at bind: set it first, so the file is never open to
		// others, not even between bind and the chmod below.
		var err error
		if cerr := c.Control(func(fd uintptr) { err = unix.Fchmod(int(fd), 0o600) }); cerr != nil {
			return cerr
		}
		return err
	}}
	ln, err := lc.Listen(context.Background(), "unix", path)
	if err != nil {
		return nil, fmt.Errorf("control socket: %w", err)
	}
	ul := ln.(*net.UnixListener)
	// The listener's own unlink would remove whatever file is at the path
	// when it closes; Listener.Close checks the inode first.
	ul.SetUnlinkOnClose(false)
	// A umask such as 0277 would leave 0400, which the owner cannot
	// connect to: set the exact mode.
	if err := os.Chmod(path, 0o600); err != nil {
		ul.Close()
		os.Remove(path)
		return nil, fmt.Errorf("control socket: %w", err)
	}
	l := &Listener{UnixListener: ul, path: path}
	if err := l.stat(); err != nil {
		l.Close()
		return nil, err
	}
	return l, nil
}

// Adopt serves on a control socket another master created and handed over
// (USR2): f is its listening socket, path its file, which this listener now
// owns (Close removes it unless KeepFile is called).
func Adopt(f *os.File, path string) (*Listener, error) {
	ln, err := net.FileListener(f)
	if err != nil {
		return nil, fmt.Errorf("control socket: adopt %s: %w", path, err)
	}
	ul, ok := ln.(*net.UnixListener)
	if !ok {
		ln.Close()
		return nil, fmt.Errorf("control socket: adopt %s: not a unix socket", path)
	}
	ul.SetUnlinkOnClose(false)
	l := &Listener{UnixListener: ul, path: path}
	if err := l.stat(); err != nil {
		ul.Close()
		return nil, err
	}
	return l, nil
}

func (l *Listener) stat() error {
	var st unix.Stat_t
	if err := unix.Lstat(l.path, &st); err != nil {
		return fmt.Errorf("control socket: %w", &os.PathError{Op: "lstat", Path: l.path, Err: err})
	}
	l.dev, l.ino = uint64(st.Dev), st.Ino
	return nil
}

// clearStale makes path free for a new socket: nothing there, or a socket
// nobody answers on (removed). A live server or a file that is not a socket
// is an error.
func clearStale(path string) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("control socket: %w", err)
	}
	if fi.Mode().Type() != os.ModeSocket {
		return fmt.Errorf("control socket: %s exists and is not a socket: refusing to replace it", path)
	}
	c, err := net.DialTimeout("unix", path, time.Second)
	switch {
	case err == nil:
		c.Close()
		return fmt.Errorf("control socket: a server already answers on %s (another mcpgateway master?): "+
			"stop it, or give this one another ControlSocket", path)
	case errors.Is(err, syscall.ECONNREFUSED):
		// Nobody listens: its master died without removing it.
		if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("control socket: remove stale %s: %w", path, err)
		}
		return nil
	case errors.Is(err, os.ErrNotExist):
		return nil // removed meanwhile
	}
	return fmt.Errorf("control socket: check %s: %w", path, err)
}

// Serve answers every connection accepted on ln with handle's reply to its
// one request line, until ln is closed (then it returns nil). handle may be
// called from several goroutines at once. Peers that are not this process's
// user or root are refused: the file mode already keeps them out, this
// holds even if someone loosens it.
func Serve(ln net.Listener, handle func(Request) Reply) error {
	var delay time.Duration
	for {
		c, err := ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			// Out of file descriptors, most likely: wait and retry
			// rather than spin or give up on the socket.
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() || errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) ||
				errors.Is(err, syscall.ECONNABORTED) || errors.Is(err, syscall.EINTR) {
				delay = min(max(2*delay, 5*time.Millisecond), time.Second)
				time.Sleep(delay)
				continue
			}
			return fmt.Errorf("control socket: accept: %w", err)
		}
		delay = 0
		go serveConn(c, handle)
	}
}

func serveConn(c net.Conn, handle func(Request) Reply) {
	defer c.Close()
	reply := answer(c, handle)
	line, err := EncodeReply(reply)
	if err != nil {
		return
	}
	_ = c.SetWriteDeadline(time.Now().Add(WriteTimeout))
	_, _ = c.Write(line)
}

// answer reads the request and asks handle, or says why it cannot.
func answer(c net.Conn, handle func(Request) Reply) Reply {
	if err := checkPeer(c); err != nil {
		return Reply{Error: err.Error()}
	}
	_ = c.SetReadDeadline(time.Now().Add(ReadTimeout))
	r := bufio.NewReaderSize(io.LimitReader(c, MaxRequestLine), MaxRequestLine)
	line, err := r.ReadSlice('\n')
	switch {
	case err == nil, errors.Is(err, io.EOF) && len(line) > 0: // a last line without "\n" is fine
	case errors.Is(err, bufio.ErrBufferFull), errors.Is(err, io.EOF) && len(line) == MaxRequestLine:
		return Reply{Error: fmt.Sprintf("request longer than %d bytes", MaxRequestLine)}
	default:
		return Reply{Error: fmt.Sprintf("read request: %v", err)}
	}
	req, err := DecodeRequest(line)
	if err != nil {
		return Reply{Error: err.Error()}
	}
	return handle(req)
}

// checkPeer accepts this process's user and root.
func checkPeer(c net.Conn) error {
	uc, ok := c.(*net.UnixConn)
	if !ok {
		return nil // not a unix socket (tests over a pipe): nothing to check
	}
	raw, err := uc.SyscallConn()
	if err != nil {
		return fmt.Errorf("peer credentials: %w", err)
	}
	var cred *unix.Ucred
	var credErr error
	if err := raw.Control(func(fd uintptr) {
		cred, credErr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return fmt.Errorf("peer credentials: %w", err)
	}
	if credErr != nil {
		return fmt.Errorf("peer credentials: %w", credErr)
	}
	if cred.Uid != 0 && int(cred.Uid) != os.Geteuid() {
		return fmt.Errorf("permission denied: uid %d is neither this server's user (%d) nor root", cred.Uid, os.Geteuid())
	}
	return nil
}
