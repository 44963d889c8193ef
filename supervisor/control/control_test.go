package control

import (
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/mcpgateway/mcpgateway/supervisor/protocol"
)

func TestRequestCodec(t *testing.T) {
	for _, r := range []Request{{Cmd: CmdStatus}, {Cmd: CmdReload}, {Cmd: CmdStop}, {Cmd: CmdScale, N: 3}, {Cmd: CmdScale, N: MaxScale}} {
		line, err := EncodeRequest(r)
		if err != nil {
			t.Fatalf("encode %+v: %v", r, err)
		}
		if !strings.HasSuffix(string(line), "\n") || strings.Count(string(line), "\n") != 1 {
			t.Errorf("%+v: line %q", r, line)
		}
		back, err := DecodeRequest(line)
		if err != nil || back != r {
			t.Errorf("%+v: decoded %+v, %v", r, back, err)
		}
	}
	if got, _ := EncodeRequest(Request{Cmd: CmdScale, N: 3}); string(got) != "scale 3\n" {
		t.Errorf("scale 3 encodes as %q", got)
	}
	// Typed by hand: case, blanks and a missing newline are forgiven.
	for line, want := range map[string]Request{"  STATUS \r\n": {Cmd: CmdStatus}, "scale\t2": {Cmd: CmdScale, N: 2}, "stop": {Cmd: CmdStop}} {
		if r, err := DecodeRequest([]byte(line)); err != nil || r != want {
			t.Errorf("%q: %+v, %v", line, r, err)
		}
	}
	for _, line := range []string{"", "\n", "scale", "scale x", "scale 0", "scale -1", "scale 257", "scale 1 2", "status 1", "reload now", "bogus"} {
		if r, err := DecodeRequest([]byte(line)); err == nil {
			t.Errorf("%q accepted as %+v", line, r)
		}
	}
	if _, err := EncodeRequest(Request{Cmd: "restart"}); err == nil {
		t.Error("unknown command encoded")
	}
}

func TestReplyCodec(t *testing.T) {
	r := Reply{OK: true, Status: "master 1\nSLOT PID\n0 2\n"}
	line, err := EncodeReply(r)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Count(string(line), "\n") != 1 || !strings.HasSuffix(string(line), "\n") {
		t.Errorf("reply is not one line: %q", line)
	}
	if !strings.Contains(string(line), `"ok":true`) || !strings.Contains(string(line), `"status":"master 1\nSLOT`) {
		t.Errorf("wire form %s", line)
	}
	back, err := DecodeReply(line)
	if err != nil || back != r {
		t.Errorf("decoded %+v, %v", back, err)
	}
	if _, err := DecodeReply([]byte("not json\n")); err == nil {
		t.Error("bad reply decoded")
	}
}

// socketPath is a path for a control socket in a fresh directory (kept
// short: a unix socket path has at most 107 bytes).
func socketPath(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "ctl")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return filepath.Join(dir, "gw.ctl")
}

// serve listens on path and serves handle until the test ends.
func serve(t *testing.T, path string, handle func(Request) Reply) *Listener {
	t.Helper()
	ln, err := Listen(path)
	if err != nil {
		t.Fatalf("Listen: %v", err)
	}
	done := make(chan error, 1)
	go func() { done <- Serve(ln, handle) }()
	t.Cleanup(func() {
		ln.Close()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return ln
}

func TestRoundTrip(t *testing.T) {
	path := socketPath(t)
	var mu sync.Mutex
	var got []Request
	ln := serve(t, path, func(r Request) Reply {
		mu.Lock()
		got = append(got, r)
		mu.Unlock()
		switch r.Cmd {
		case CmdStatus:
			return Reply{OK: true, Status: "master 1\n"}
		case CmdScale:
			return Reply{Error: "not now"}
		}
		return Reply{OK: true}
	})
	sent := []Request{{Cmd: CmdStatus}, {Cmd: CmdReload}, {Cmd: CmdScale, N: 4}, {Cmd: CmdStop}}
	for _, r := range sent {
		reply, err := Call(path, r, 5*time.Second)
		if err != nil {
			t.Fatalf("Call %+v: %v", r, err)
		}
		switch r.Cmd {
		case CmdStatus:
			if !reply.OK || reply.Status != "master 1\n" {
				t.Errorf("status reply %+v", reply)
			}
		case CmdScale:
			if reply.OK || reply.Error != "not now" {
				t.Errorf("scale reply %+v", reply)
			}
		default:
			if !reply.OK {
				t.Errorf("%s reply %+v", r.Cmd, reply)
			}
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if len(got) != len(sent) {
		t.Fatalf("handled %+v, want %+v", got, sent)
	}
	for i := range sent {
		if got[i] != sent[i] {
			t.Errorf("request %d: handled %+v, sent %+v", i, got[i], sent[i])
		}
	}

	// Close removes the socket file, and Serve returns nil (checked in serve).
	ln.Close()
	if _, err := os.Lstat(path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("socket file after Close: %v", err)
	}
}

// TestBadRequests: the server answers what it cannot do, never hangs up silently.
func TestBadRequests(t *testing.T) {
	path := socketPath(t)
	var called atomic.Bool
	serve(t, path, func(Request) Reply { called.Store(true); return Reply{OK: true} })
	for send, want := range map[string]string{
		"bogus\n":                              "unknown command",
		"scale\n":                              "scale needs a number",
		strings.Repeat("x", MaxRequestLine+10): "longer than",
		"status":                               "", // no newline, then EOF: still a request
	} {
		c, err := net.Dial("unix", path)
		if err != nil {
			t.Fatal(err)
		}
		c.Write([]byte(send))
		c.(*net.UnixConn).CloseWrite()
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		line, err := readAll(c)
		c.Close()
		if err != nil {
			t.Fatalf("%.20q: %v", send, err)
		}
		reply, err := DecodeReply(line)
		if err != nil {
			t.Fatalf("%.20q: %v", send, err)
		}
		if want == "" {
			if !reply.OK {
				t.Errorf("%q: %+v", send, reply)
			}
			continue
		}
		if reply.OK || !strings.Contains(reply.Error, want) {
			t.Errorf("%.20q: reply %+v, want an error with %q", send, reply, want)
		}
	}
	if !called.Load() {
		t.Error("the good request was not handled")
	}
}

func readAll(c net.Conn) ([]byte, error) {
	var out []byte
	buf := make([]byte, 4096)
	for {
		n, err := c.Read(buf)
		out = append(out, buf[:n]...)
		if err != nil {
			if len(out) > 0 {
				return out, nil
			}
			return nil, err
		}
	}
}

// TestListenMode: 0600 whatever the umask, even one that would leave the
// owner unable to connect or everyone able to.
func TestListenMode(t *testing.T) {
	for _, mask := range []int{0, 0o022, 0o277} {
		old := syscall.Umask(mask)
		path := socketPath(t)
		ln, err := Listen(path)
		syscall.Umask(old)
		if err != nil {
			t.Fatalf("umask %03o: %v", mask, err)
		}
		fi, err := os.Lstat(path)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Type() != os.ModeSocket || fi.Mode().Perm() != 0o600 {
			t.Errorf("umask %03o: mode %v, want a socket with 0600", mask, fi.Mode())
		}
		ln.Close()
	}
}

func TestListenReplacesStaleSocket(t *testing.T) {
	path := socketPath(t)
	// A master that died leaves its socket file with nobody listening.
	dead, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	dead.SetUnlinkOnClose(false)
	dead.Close()
	if _, err := Call(path, Request{Cmd: CmdStatus}, time.Second); !errors.Is(err, ErrNotRunning) {
		t.Fatalf("Call on a stale socket: %v, want ErrNotRunning", err)
	}
	serve(t, path, func(Request) Reply { return Reply{OK: true, Status: "new"} })
	if reply, err := Call(path, Request{Cmd: CmdStatus}, 5*time.Second); err != nil || reply.Status != "new" {
		t.Errorf("after replacing the stale socket: %+v, %v", reply, err)
	}
}

func TestListenRefusesLiveServer(t *testing.T) {
	path := socketPath(t)
	serve(t, path, func(Request) Reply { return Reply{OK: true, Status: "first"} })
	if ln, err := Listen(path); err == nil {
		ln.Close()
		t.Fatal("a second Listen took the path of a live server")
	} else if !strings.Contains(err.Error(), "already answers") {
		t.Errorf("error: %v", err)
	}
	if reply, err := Call(path, Request{Cmd: CmdStatus}, 5*time.Second); err != nil || reply.Status != "first" {
		t.Errorf("the first server after the refused Listen: %+v, %v", reply, err)
	}
}

func TestListenRefusesOtherFiles(t *testing.T) {
	path := socketPath(t)
	if err := os.WriteFile(path, []byte("precious"), 0o644); err != nil {
		t.Fatal(err)
	}
	if ln, err := Listen(path); err == nil {
		ln.Close()
		t.Fatal("Listen replaced a regular file")
	}
	if b, err := os.ReadFile(path); err != nil || string(b) != "precious" {
		t.Errorf("file after Listen: %q, %v", b, err)
	}
	missingDir := filepath.Join(filepath.Dir(path), "nope", "gw.ctl")
	if _, err := Listen(missingDir); err == nil || !strings.Contains(err.Error(), "control socket") {
		t.Errorf("Listen in a missing directory: %v", err)
	}
}

// TestCloseRemovesOnlyItsOwnFile: a master that closes late must not
// remove the socket a newer master bound at the same path, and KeepFile
// leaves the file to the master it was handed to.
func TestCloseRemovesOnlyItsOwnFile(t *testing.T) {
	path := socketPath(t)
	old, err := Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	os.Remove(path) // someone cleaned up, and a new master started
	serve(t, path, func(Request) Reply { return Reply{OK: true} })
	old.Close()
	if _, err := Call(path, Request{Cmd: CmdStatus}, 5*time.Second); err != nil {
		t.Errorf("the newer socket after the old one closed: %v", err)
	}

	path2 := socketPath(t)
	handed, err := Listen(path2)
	if err != nil {
		t.Fatal(err)
	}
	f, err := handed.File()
	if err != nil {
		t.Fatal(err)
	}
	handed.KeepFile()
	handed.Close()
	if _, err := os.Lstat(path2); err != nil {
		t.Fatalf("KeepFile: socket file gone: %v", err)
	}
	adopted, err := Adopt(f, path2)
	f.Close()
	if err != nil {
		t.Fatalf("Adopt: %v", err)
	}
	done := make(chan error, 1)
	go func() { done <- Serve(adopted, func(Request) Reply { return Reply{OK: true, Status: "adopted"} }) }()
	if reply, err := Call(path2, Request{Cmd: CmdStatus}, 5*time.Second); err != nil || reply.Status != "adopted" {
		t.Errorf("adopted socket: %+v, %v", reply, err)
	}
	adopted.Close()
	if err := <-done; err != nil {
		t.Errorf("Serve: %v", err)
	}
	if _, err := os.Lstat(path2); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("adopted socket file after Close: %v", err)
	}
}

func TestCallNotRunning(t *testing.T) {
	_, err := Call(filepath.Join(t.TempDir(), "none.ctl"), Request{Cmd: CmdStatus}, time.Second)
	if !errors.Is(err, ErrNotRunning) {
		t.Errorf("missing socket: %v, want ErrNotRunning", err)
	}
	if _, err := Call("/nonexistent", Request{Cmd: "bogus"}, time.Second); err == nil || errors.Is(err, ErrNotRunning) {
		t.Errorf("bad request: %v", err)
	}
}

// TestCallTimeout: a master that does not answer in time is an error, not a hang.
func TestCallTimeout(t *testing.T) {
	path := socketPath(t)
	release := make(chan struct{})
	serve(t, path, func(Request) Reply { <-release; return Reply{OK: true} })
	defer close(release)
	start := time.Now()
	_, err := Call(path, Request{Cmd: CmdReload}, 200*time.Millisecond)
	if err == nil || !strings.Contains(err.Error(), "no answer") {
		t.Errorf("err = %v", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("Call took %s", d)
	}
}

func TestFormatStatus(t *testing.T) {
	now := int64(100 * time.Second)
	s := protocol.Snapshot{MasterPID: 10, MasterStarted: int64(40 * time.Second), Target: 2, Starts: 3,
		Total:   protocol.Counters{Served: 7, Refused: 1},
		Workers: []protocol.WorkerStatus{{Slot: 0, Pid: 11, Generation: 2, Started: int64(90 * time.Second), State: protocol.StateReady, RSS: 3 << 20}}}
	var b strings.Builder
	FormatStatus(&b, s, now)
	out := b.String()
	for _, want := range []string{"master 10  up 1m0s  workers 1/2  served 7  refused 1", "SLOT", "RSS MiB", "10s", "3.0"} {
		if !strings.Contains(out, want) {
			t.Errorf("status lacks %q:\n%s", want, out)
		}
	}
}
