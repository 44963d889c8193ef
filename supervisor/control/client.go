package control

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"syscall"
	"time"
)

// ErrNotRunning wraps Call's error when no server is there: the socket file
// is missing, or nothing listens on it (its master died).
var ErrNotRunning = errors.New("no server answers")

// MaxReplyLine bounds a reply: the status of the largest server is a few
// dozen KiB.
const MaxReplyLine = 1 << 20

// Call sends one request to the control socket at path and returns the
// master's reply, waiting at most timeout for the whole exchange. A reply
// with OK false is not an error here: its Error says why.
func Call(path string, req Request, timeout time.Duration) (Reply, error) {
	line, err := EncodeRequest(req)
	if err != nil {
		return Reply{}, err
	}
	c, err := net.DialTimeout("unix", path, timeout)
	if err != nil {
		if errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.ECONNREFUSED) {
			return Reply{}, fmt.Errorf("%w on %s: %w", ErrNotRunning, path, err)
		}
		return Reply{}, fmt.Errorf("connect to %s: %w", path, err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(timeout))
	if _, err := c.Write(line); err != nil {
		return Reply{}, fmt.Errorf("send %q to %s: %w", req.Cmd, path, err)
	}
	r := bufio.NewReader(io.LimitReader(c, MaxReplyLine))
	answer, err := r.ReadBytes('\n')
	if err != nil && !(errors.Is(err, io.EOF) && len(answer) > 0) {
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			return Reply{}, fmt.Errorf("no answer to %q from %s within %s", req.Cmd, path, timeout)
		}
		return Reply{}, fmt.Errorf("read the answer to %q from %s: %w", req.Cmd, path, err)
	}
	return DecodeReply(answer)
}
