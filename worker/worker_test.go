package worker

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/mcpgateway/mcpgateway/supervisor/protocol"
	"github.com/valyala/fasthttp"
)

// blockOn returns a handler that blocks /slow until release is closed and
// answers every other path with its own name.
func blockOn(release <-chan struct{}, started chan<- struct{}) fasthttp.RequestHandler {
	return func(ctx *fasthttp.RequestCtx) {
		if string(ctx.Path()) == "/slow" {
			if started != nil {
				started <- struct{}{}
			}
			<-release
		}
		ctx.SetBodyString("answer to " + string(ctx.Path()))
	}
}

// releaseOnCleanup closes ch when the test ends, so stuck handlers return.
// Call it after startTestWorker: cleanups run last first, and the worker's
// own cleanup waits for its handlers before it unmaps the status table.
func releaseOnCleanup(t *testing.T, ch chan struct{}) {
	t.Cleanup(func() { close(ch) })
}

// readResponse reads one HTTP/1.1 response and its body.
func readResponse(t *testing.T, br *bufio.Reader) (*http.Response, string) {
	t.Helper()
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("read response: %v", err)
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatalf("read body: %v", err)
	}
	return resp, string(b)
}

// Defect 5: with pipelined requests A (fast) then B (stuck), A's answer is
// still in fasthttp's buffer when B overruns. The 504 must come after it,
// as B's answer, never in A's place.
func TestPipelinedTimeoutKeepsResponseOrder(t *testing.T) {
	release := make(chan struct{})
	w, addr := startTestWorker(t, protocol.WorkerOptions{Timeout: 500 * time.Millisecond}, blockOn(release, nil))
	releaseOnCleanup(t, release)
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	// One write: B is in fasthttp's read buffer when A is answered, so A's
	// answer waits in its write buffer for B's.
	if _, err := io.WriteString(c, "GET /fast HTTP/1.1\r\nHost: x\r\n\r\nGET /slow HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	resp, body := readResponse(t, br)
	if resp.StatusCode != 200 || body != "answer to /fast" {
		t.Fatalf("first answer (A's): %d %q", resp.StatusCode, body)
	}
	resp, body = readResponse(t, br)
	if resp.StatusCode != 504 || !strings.Contains(body, `"code":-32603`) {
		t.Fatalf("second answer (B's): %d %q", resp.StatusCode, body)
	}
	if _, err := br.ReadByte(); err != io.EOF {
		t.Errorf("after the 504: %v, want the connection closed", err)
	}
	if got := w.row.Load(protocol.CTimeouts); got != 1 {
		t.Errorf("timeouts counted: %d, want 1", got)
	}
}

// A request that overruns the timeout alone on its connection gets the
// JSON-RPC 504, the worker asks to be replaced, and the connection is gone
// while the handler is still stuck: a drain does not wait for it.
func TestTimeoutAnswers504AndRetires(t *testing.T) {
	release := make(chan struct{})
	w, addr := startTestWorker(t, protocol.WorkerOptions{Timeout: 300 * time.Millisecond}, blockOn(release, nil))
	releaseOnCleanup(t, release)
	start := time.Now()
	resp, body := do(t, http.DefaultClient, "POST", "http://"+addr+"/slow", "{}")
	if resp.StatusCode != 504 || resp.Header.Get("Content-Type") != "application/json" || !resp.Close {
		t.Fatalf("overdue request: %d %v close=%v", resp.StatusCode, resp.Header, resp.Close)
	}
	if !strings.Contains(body, `"jsonrpc":"2.0"`) || !strings.Contains(body, `"code":-32603`) || !strings.Contains(body, "timed out after 300ms") {
		t.Fatalf("body %q", body)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("504 after %s", d)
	}
	waitFor(t, "the worker to ask for a replacement", func() bool { return len(sent(w)) > 0 })
	if got := sent(w); len(got) != 1 || got[0] != retireLine(protocol.ReasonTimeout) {
		t.Errorf("messages to the master: %q", got)
	}
	if st := w.row.Load(protocol.FState); st != protocol.StateRetiring {
		t.Errorf("state %s, want retiring", protocol.StateName(st))
	}
	waitFor(t, "the connection to stop counting for a drain", func() bool { return w.conns.busy() == 0 })
	if n := w.row.Load(protocol.FInFlight); n != 1 {
		t.Errorf("in flight %d while the handler is stuck, want 1", n)
	}
	begin := time.Now()
	w.drain("test", nil)
	if d := time.Since(begin); d > 2*time.Second {
		t.Errorf("drain waited %s for a stuck handler whose client has its answer", d)
	}
}

// --timeout 0 means no timeout: nothing is answered 504, however long.
func TestNoTimeout(t *testing.T) {
	w, addr := startTestWorker(t, protocol.WorkerOptions{}, func(ctx *fasthttp.RequestCtx) {
		time.Sleep(300 * time.Millisecond)
		ctx.SetBodyString("late but fine")
	})
	resp, body := do(t, http.DefaultClient, "GET", "http://"+addr+"/x", "")
	if resp.StatusCode != 200 || body != "late but fine" || w.row.Load(protocol.CTimeouts) != 0 {
		t.Fatalf("%d %q, timeouts %d", resp.StatusCode, body, w.row.Load(protocol.CTimeouts))
	}
}

// A panicking handler on the timeout path (its own goroutine) is still
// answered 500 and counted.
func TestPanicWithTimeout(t *testing.T) {
	w, addr := startTestWorker(t, protocol.WorkerOptions{Timeout: 5 * time.Second}, func(*fasthttp.RequestCtx) { panic("boom") })
	resp, _ := do(t, http.DefaultClient, "GET", "http://"+addr+"/x", "")
	if resp.StatusCode != 500 || w.row.Load(protocol.CPanics) != 1 {
		t.Fatalf("%d, panics %d", resp.StatusCode, w.row.Load(protocol.CPanics))
	}
}

// bigHandler answers every request with size bytes.
func bigHandler(size int) fasthttp.RequestHandler {
	body := make([]byte, size)
	return func(ctx *fasthttp.RequestCtx) { ctx.SetBody(body) }
}

// neverReads opens a connection that asks for 64 answers of 512 KiB, far
// more than the socket buffers hold, and reads none of them.
func neverReads(t *testing.T, addr string) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.(*net.TCPConn).SetReadBuffer(64 << 10)
	if _, err := io.WriteString(c, strings.Repeat("GET /big HTTP/1.1\r\nHost: x\r\n\r\n", 64)); err != nil {
		t.Fatal(err)
	}
}

// Defect 10: a client that sends requests and never reads its answers is
// disconnected once a write makes no progress for the write timeout (here
// the request timeout, 1 s), and so cannot stretch a drain.
func TestClientThatNeverReadsIsDisconnected(t *testing.T) {
	w, addr := startTestWorker(t, protocol.WorkerOptions{Timeout: time.Second, GracefulTimeout: 8 * time.Second}, bigHandler(512<<10))
	neverReads(t, addr)
	waitFor(t, "the server to be stuck writing", func() bool { return w.conns.open() == 1 && w.row.Load(protocol.CServed) >= 1 })
	start := time.Now()
	w.drain("test", nil)
	took := time.Since(start)
	if n := w.conns.open(); n != 0 {
		t.Errorf("open connections after drain: %d", n)
	}
	if took > 5*time.Second {
		t.Errorf("drain took %s: the client that never reads held it (graceful timeout 8s)", took)
	}
}

// The same without a drain: the connection goes away by itself.
func TestClientThatNeverReadsLosesItsConnection(t *testing.T) {
	w, addr := startTestWorker(t, protocol.WorkerOptions{Timeout: time.Second}, bigHandler(512<<10))
	neverReads(t, addr)
	waitFor(t, "the connection to be accepted", func() bool { return w.row.Load(protocol.CServed) >= 1 })
	deadline := time.Now().Add(6 * time.Second)
	for w.conns.open() != 0 {
		if time.Now().After(deadline) {
			t.Fatal("a client that never reads still holds its connection after 6s (write timeout 1s)")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// A slow reader is not a stalled one: the bound is on progress, so a
// client that takes a large answer slowly, over longer than the write
// timeout in all, gets all of it.
func TestSlowReaderGetsItsAnswer(t *testing.T) {
	const size = 4 << 20
	_, addr := startTestWorker(t, protocol.WorkerOptions{Timeout: time.Second}, bigHandler(size))
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.(*net.TCPConn).SetReadBuffer(32 << 10)
	io.WriteString(c, "GET /big HTTP/1.1\r\nHost: x\r\n\r\n")
	c.SetDeadline(time.Now().Add(30 * time.Second))
	br := bufio.NewReaderSize(c, 16<<10)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	n, buf := 0, make([]byte, 64<<10)
	for {
		m, err := resp.Body.Read(buf)
		n += m
		if err != nil {
			break
		}
		time.Sleep(25 * time.Millisecond) // about 2.5 MB/s at most: 1.6 s or more in all
	}
	if n != size {
		t.Fatalf("got %d of %d bytes after %s", n, size, time.Since(start))
	}
	if d := time.Since(start); d < 1200*time.Millisecond {
		t.Logf("the slow read took only %s; the test shows less than it should", d)
	}
}

// HTTP/2: a stream whose client grants no flow-control window (it never
// reads the body) is reset after the write timeout, and a drain does not
// wait for it.
func TestH2ClientThatNeverReadsIsReset(t *testing.T) {
	w, addr := startTestWorker(t, protocol.WorkerOptions{HTTP: "2", Timeout: time.Second, GracefulTimeout: 8 * time.Second}, bigHandler(1<<20))
	var p http.Protocols
	p.SetUnencryptedHTTP2(true)
	tr := &http.Transport{Protocols: &p, HTTP2: &http.HTTP2Config{MaxReceiveBufferPerStream: 64 << 10}}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr}).Get("http://" + addr + "/big")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close() // never read before the drain
	waitFor(t, "the request to be answered", func() bool { return w.row.Load(protocol.CServed) == 1 })
	start := time.Now()
	w.drain("test", nil)
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("drain took %s: the stream that never reads held it (graceful timeout 8s)", d)
	}
	if _, err := io.Copy(io.Discard, resp.Body); err == nil {
		t.Error("the whole body arrived: the stream was never reset")
	}
}

// Defect 12: app.Close runs within the graceful timeout. A Close that
// blocks (pgxpool.Close waiting for a connection a stuck handler holds)
// does not keep the worker alive past it.
func TestDrainBoundsAppClose(t *testing.T) {
	w, _ := startTestWorker(t, protocol.WorkerOptions{GracefulTimeout: time.Second}, echo)
	block := make(chan struct{})
	releaseOnCleanup(t, block)
	var closed atomic.Bool
	w.app.Close = func() { closed.Store(true); <-block }
	done := make(chan time.Duration, 1)
	go func() {
		start := time.Now()
		w.drain("test", nil)
		done <- time.Since(start)
	}()
	select {
	case d := <-done:
		if !closed.Load() {
			t.Error("app.Close was not called")
		}
		if d > 3*time.Second {
			t.Errorf("drain took %s with a 1s graceful timeout", d)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("drain still waiting for app.Close after 10s (graceful timeout 1s)")
	}
}

// runLoop runs the worker's loop (signals, heartbeat, parent check) on its
// own goroutine; its exit code comes on the channel.
func runLoop(w *worker, sigs <-chan os.Signal) <-chan int {
	code := make(chan int, 1)
	go func() { code <- w.loop(sigs) }()
	return code
}

// Defect 12: INT during a drain (the master escalating a stop) makes the
// worker exit at once, in-flight requests or not.
func TestINTDuringDrainExitsAtOnce(t *testing.T) {
	release := make(chan struct{})
	started := make(chan struct{}, 1)
	w, addr := startTestWorker(t, protocol.WorkerOptions{GracefulTimeout: 20 * time.Second}, blockOn(release, started))
	releaseOnCleanup(t, release)
	go http.Post("http://"+addr+"/slow", "application/json", strings.NewReader("{}"))
	<-started
	sigs := make(chan os.Signal, 2)
	code := runLoop(w, sigs)
	sigs <- syscall.SIGTERM
	waitFor(t, "the drain to start", func() bool { return w.draining.Load() })
	start := time.Now()
	sigs <- syscall.SIGINT
	select {
	case c := <-code:
		if c != 0 {
			t.Errorf("exit code %d", c)
		}
		if d := time.Since(start); d > 2*time.Second {
			t.Errorf("INT took %s", d)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("INT during a drain ignored for 5s (graceful timeout 20s)")
	}
}

// INT also cuts short an app.Close that blocks.
func TestINTDuringAppCloseExitsAtOnce(t *testing.T) {
	w, _ := startTestWorker(t, protocol.WorkerOptions{GracefulTimeout: 20 * time.Second}, echo)
	block := make(chan struct{})
	releaseOnCleanup(t, block)
	closing := make(chan struct{})
	w.app.Close = func() { close(closing); <-block }
	sigs := make(chan os.Signal, 2)
	code := runLoop(w, sigs)
	sigs <- syscall.SIGTERM
	<-closing
	start := time.Now()
	sigs <- syscall.SIGINT
	select {
	case <-code:
		if d := time.Since(start); d > 2*time.Second {
			t.Errorf("INT took %s", d)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("INT during app.Close ignored for 5s (graceful timeout 20s)")
	}
}

// quietConn opens a keep-alive connection, makes one request on it, and
// leaves it quiet.
func quietConn(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	io.WriteString(c, "GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if resp, _ := readResponse(t, bufio.NewReader(c)); resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	return c
}

// drainAsync runs drain on its own goroutine and reports when it returns.
func drainAsync(w *worker) <-chan time.Duration {
	done := make(chan time.Duration, 1)
	go func() {
		start := time.Now()
		w.drain("test", nil)
		done <- time.Since(start)
	}()
	return done
}

// The recycle drain keeps a quiet keep-alive connection (its client may be
// writing on it right now); once the whole server stops (HStopping, which
// the master may set while this worker drains) quiet connections close at
// once: the decision is re-read on every pass.
func TestDrainClosesQuietConnectionsOnceTheServerStops(t *testing.T) {
	w, addr := startTestWorker(t, protocol.WorkerOptions{KeepAlive: 30 * time.Second, GracefulTimeout: 30 * time.Second}, echo)
	quietConn(t, addr)
	done := drainAsync(w)
	time.Sleep(500 * time.Millisecond)
	select {
	case d := <-done:
		t.Fatalf("a recycle drain closed a quiet keep-alive connection (drain ended after %s)", d)
	default:
	}
	if n := w.conns.open(); n != 1 {
		t.Fatalf("open connections %d during a recycle drain, want 1", n)
	}
	w.table.Header().Store(protocol.HStopping, 1)
	select {
	case <-done:
	case <-time.After(3 * time.Second):
		t.Fatal("the server stops, and the draining worker still keeps its quiet connection after 3s")
	}
}

// The master dies while a worker drains for a recycle: quiet connections
// close at once, nobody would serve them later.
func TestDrainClosesQuietConnectionsOnceTheMasterDies(t *testing.T) {
	w, addr := startTestWorker(t, protocol.WorkerOptions{KeepAlive: 30 * time.Second, GracefulTimeout: 30 * time.Second}, echo)
	var ppid atomic.Int64
	ppid.Store(int64(os.Getppid()))
	w.getppid = func() int { return int(ppid.Load()) }
	quietConn(t, addr)
	done := drainAsync(w)
	time.Sleep(300 * time.Millisecond)
	ppid.Store(1) // reparented
	select {
	case <-done:
	case <-time.After(3 * time.Second):
		t.Fatal("the master died, and the draining worker still keeps its quiet connection after 3s")
	}
}

// masterDies makes w's parent check see a dead master.
func masterDies(w *worker) func() {
	var gone atomic.Bool
	ppid := os.Getppid()
	w.getppid = func() int {
		if gone.Load() {
			return 1
		}
		return ppid
	}
	return func() { gone.Store(true) }
}

// refused is true once a new connection to addr is refused.
func refused(addr string) bool {
	c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
	if err != nil {
		return true
	}
	c.Close()
	return false
}

// Defect 14: a worker whose master died stops accepting within 1 s, and
// exits within 1 s when idle, also with every CPU busy.
func TestMasterGoneIdleWorkerExits(t *testing.T) {
	for _, busy := range []bool{false, true} {
		t.Run(fmt.Sprintf("cpu-busy=%v", busy), func(t *testing.T) {
			w, addr := startTestWorker(t, protocol.WorkerOptions{GracefulTimeout: 20 * time.Second}, echo)
			kill := masterDies(w)
			code := runLoop(w, nil)
			if busy {
				stop := make(chan struct{})
				defer close(stop)
				for range 2 * runtime.GOMAXPROCS(0) {
					go func() {
						for {
							select {
							case <-stop:
								return
							default:
							}
							for i := 0; i < 1e6; i++ {
							}
						}
					}()
				}
			}
			start := time.Now()
			kill()
			select {
			case c := <-code:
				if d := time.Since(start); d > time.Second+500*time.Millisecond {
					t.Errorf("exited %s after the master died", d)
				}
				if c != 0 {
					t.Errorf("exit code %d", c)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("still running 5s after the master died")
			}
			if !refused(addr) {
				t.Error("the listener still accepts")
			}
		})
	}
}

// With a request in flight, the worker whose master died stops accepting
// within 1 s, answers the request, and exits then.
func TestMasterGoneBusyWorkerFinishesItsRequest(t *testing.T) {
	release := make(chan struct{})
	started := make(chan struct{}, 1)
	w, addr := startTestWorker(t, protocol.WorkerOptions{GracefulTimeout: 20 * time.Second}, blockOn(release, started))
	result := postInBackground(http.DefaultClient, "http://"+addr+"/slow")
	<-started
	kill := masterDies(w)
	code := runLoop(w, nil)
	kill()
	waitFor(t, "the listener to close", func() bool { return w.draining.Load() && refused(addr) })
	select {
	case <-code:
		t.Fatal("exited with a request in flight")
	case <-time.After(300 * time.Millisecond):
	}
	close(release)
	if got := <-result; got != "200 answer to /slow" {
		t.Errorf("in-flight request: %s", got)
	}
	select {
	case <-code:
	case <-time.After(3 * time.Second):
		t.Fatal("still running 3s after its last request")
	}
}

// Review 1.17: a serve goroutine that ends while the worker is not
// draining leaves a socket without an acceptor: the worker asks to be
// replaced instead of staying "ready".
func TestListenerFailureRetires(t *testing.T) {
	for _, tc := range []struct {
		name string
		err  error
	}{
		{"permanent error", errors.New("accept: something broke")},
		{"closed under it", net.ErrClosed}, // fasthttp returns nil for this one
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, mode := range []protocol.WorkerOptions{{}, {TLS: testTLS}, {HTTP: "2"}} {
				ln := &failingListener{addr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 1}, err: tc.err}
				w := startTestWorkerOn(t, mode, echo, ln)
				waitFor(t, "the worker to ask for a replacement", func() bool { return len(sent(w)) > 0 })
				if got := sent(w); got[0] != retireLine(protocol.ReasonListener) {
					t.Errorf("%+v: messages %q", mode, got)
				}
				if st := w.row.Load(protocol.FState); st != protocol.StateRetiring {
					t.Errorf("%+v: state %s, want retiring", mode, protocol.StateName(st))
				}
			}
		})
	}
}

// A listener whose Accept fails at once.
type failingListener struct {
	addr net.Addr
	err  error
}

func (l *failingListener) Accept() (net.Conn, error) { return nil, l.err }
func (l *failingListener) Close() error              { return nil }
func (l *failingListener) Addr() net.Addr            { return l.addr }

// A temporary accept error (EMFILE) is ridden out, not taken as the end of
// the listener: fasthttp would take it as one.
func TestTemporaryAcceptErrorIsRiddenOut(t *testing.T) {
	real, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln := &flakyListener{Listener: real}
	ln.fails.Store(3)
	w := startTestWorkerOn(t, protocol.WorkerOptions{}, echo, ln)
	resp, _ := do(t, http.DefaultClient, "GET", "http://"+real.Addr().String()+"/health", "")
	if resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	if got := sent(w); len(got) != 0 {
		t.Errorf("messages %q: a temporary error retired the worker", got)
	}
}

type flakyListener struct {
	net.Listener
	fails atomic.Int32
}

func (l *flakyListener) Accept() (net.Conn, error) {
	if l.fails.Add(-1) >= 0 {
		return nil, &net.OpError{Op: "accept", Net: "tcp", Err: os.NewSyscallError("accept4", syscall.EMFILE)}
	}
	return l.Listener.Accept()
}

// gateTestWorker is a worker whose accept gate sees 10 connections of its
// own against an idle ready sibling: in the shared layout it holds back on
// every accept.
func gateTestWorker(t *testing.T, reusePort bool) (*gatedListener, string) {
	t.Helper()
	tb, err := protocol.CreateTable(2)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tb.Close() })
	tb.Header().Store(protocol.HMaxRow, 2)
	tb.Row(1).Store(protocol.FState, protocol.StateReady)
	tb.Row(2).Store(protocol.FState, protocol.StateReady)
	w := &worker{opts: protocol.WorkerOptions{WorkerConnections: 1000, ReusePort: reusePort}, table: tb, row: tb.Row(1),
		refusers: make(chan struct{}, maxRefusers)}
	w.conns.row = w.row
	for range 10 {
		c := &trackedConn{}
		w.conns.add(c)
		c.idleSince.Store(0) // busy: a worker at its cap closes idle ones instead of refusing
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return &gatedListener{Listener: ln, w: w}, ln.Addr().String()
}

// acceptN dials and accepts n connections, and says how long it took.
func acceptN(t *testing.T, gl *gatedListener, addr string, n int) time.Duration {
	t.Helper()
	start := time.Now()
	for range n {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		a, err := gl.Accept()
		if err != nil {
			t.Fatal(err)
		}
		defer a.Close()
	}
	return time.Since(start)
}

// Review 1.11: with SO_REUSEPORT the kernel has already picked this
// worker: the balancing wait (up to 20 ms per accept) is skipped, the cap
// stays.
func TestReusePortSkipsTheBalancingWait(t *testing.T) {
	gl, addr := gateTestWorker(t, true)
	if d := acceptN(t, gl, addr, 100); d > time.Second {
		t.Errorf("100 accepts took %s with reuse-port: the balancing wait is still on", d)
	}
	// The shared layout does hold back: 100 accepts take 2 s or more.
	gl, addr = gateTestWorker(t, false)
	if d := acceptN(t, gl, addr, 100); d < 1500*time.Millisecond {
		t.Errorf("100 accepts took %s in the shared layout: the balancing wait is off", d)
	}
}

// A worker at its connection cap answers a new connection at once, with a
// 503 and a clean close (never a reset), in both layouts; once a
// connection goes away it serves new ones again.
func TestConnectionPastTheCapIsRefusedCleanly(t *testing.T) {
	for _, reusePort := range []bool{false, true} {
		gl, addr := gateTestWorker(t, reusePort)
		gl.w.opts.WorkerConnections = 10 // already at it
		accepted := make(chan net.Conn, 1)
		go func() {
			if a, err := gl.Accept(); err == nil {
				accepted <- a
			}
		}()
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.WriteString(c, "POST /rpc HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello"); err != nil {
			t.Fatal(err)
		}
		answer, err := io.ReadAll(c) // to the server's FIN: a reset would be an error here
		c.Close()
		if err != nil {
			t.Fatalf("reuse-port %v: refused connection ended with %v after %q", reusePort, err, answer)
		}
		if !bytes.HasPrefix(answer, []byte("HTTP/1.1 503 ")) || !bytes.Contains(answer, []byte("Retry-After: 1")) ||
			!bytes.Contains(answer, []byte("Connection: close")) {
			t.Fatalf("reuse-port %v: past the cap, got %q", reusePort, answer)
		}
		if n := gl.w.row.Load(protocol.CRefusedConnections); n != 1 {
			t.Errorf("reuse-port %v: %d refusals of reason connections, want 1", reusePort, n)
		}
		select {
		case <-accepted:
			t.Fatal("accepted past the connection cap")
		default:
		}
		gl.w.conns.state(firstConn(gl.w), fasthttp.StateClosed) // one goes away
		c2, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		select {
		case a := <-accepted:
			a.Close()
		case <-time.After(5 * time.Second):
			t.Fatal("no accept after a connection closed")
		}
		c2.Close()
	}
}

func firstConn(w *worker) *trackedConn {
	w.conns.mu.Lock()
	defer w.conns.mu.Unlock()
	for c := range w.conns.conns {
		return c
	}
	return nil
}

// Review 1.18: max_requests counts admitted requests only: /health,
// /metrics and the 503s of backpressure do not bring a recycle closer.
func TestMaxRequestsCountsAdmittedRequestsOnly(t *testing.T) {
	release := make(chan struct{})
	started := make(chan struct{}, 1)
	w, addr := startTestWorker(t, protocol.WorkerOptions{Backpressure: 1}, blockOn(release, started))
	w.maxRequests = 2
	base := "http://" + addr
	first := make(chan int, 1)
	go func() {
		resp, err := http.Post(base+"/slow", "application/json", strings.NewReader("{}"))
		if err != nil {
			first <- 0
			return
		}
		resp.Body.Close()
		first <- resp.StatusCode
	}()
	<-started
	for range 5 {
		if resp, _ := do(t, http.DefaultClient, "POST", base+"/rpc", "{}"); resp.StatusCode != 503 {
			t.Fatalf("over the in-flight limit: %d, want 503", resp.StatusCode)
		}
		do(t, http.DefaultClient, "GET", base+"/health", "")
		do(t, http.DefaultClient, "GET", base+"/metrics", "")
	}
	close(release)
	if code := <-first; code != 200 {
		t.Fatalf("admitted request: %d", code)
	}
	if got := sent(w); len(got) != 0 {
		t.Fatalf("retired after 1 admitted request of max 2 (and 15 others): %q", got)
	}
	if served := w.row.Load(protocol.CServed); served != 16 {
		t.Errorf("served (for metrics) %d, want 16: every answer still counts there", served)
	}
	do(t, http.DefaultClient, "POST", base+"/rpc", "{}")
	waitFor(t, "the recycle", func() bool { return len(sent(w)) == 1 })
	if got := sent(w); got[0] != retireLine(protocol.ReasonRecycled) {
		t.Errorf("messages %q", got)
	}
}

// Defect 4, worker side: the certificate comes from the bytes the master
// read; the key file renamed since (as a rotation does) does not matter.
func TestTLSFromTheMastersBytes(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile := writeSelfSigned(t, dir, time.Now().Add(-time.Hour), time.Now().Add(time.Hour))
	certPEM, keyPEM, err := ReadCertificateFiles(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(keyFile, filepath.Join(dir, "key.pem.old")); err != nil {
		t.Fatal(err)
	}
	opts := protocol.WorkerOptions{TLS: &protocol.TLS{CertFile: certFile, KeyFile: keyFile, CertPEM: certPEM, KeyPEM: keyPEM}}
	_, addr := startTestWorker(t, opts, echo) // fails here if it reads the files
	tr := &http.Transport{TLSClientConfig: clientTLSFor(t, certPEM)}
	defer tr.CloseIdleConnections()
	resp, _ := do(t, &http.Client{Transport: tr}, "GET", "https://"+addr+"/health", "")
	if resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
}

// Without bytes (an embedder that hands none over), the files are read.
func TestTLSFromFilesWithoutBytes(t *testing.T) {
	w := &worker{opts: protocol.WorkerOptions{TLS: &protocol.TLS{CertFile: td("ec.crt"), KeyFile: td("nope.key")}}}
	err := w.setupTLS()
	var ce *CertError
	if !errors.As(err, &ce) || ce.Setting != "KeyFile" || !strings.Contains(err.Error(), "no such file") {
		t.Fatalf("missing key file: %v", err)
	}
	w.opts.TLS.KeyFile = td("ec.key")
	if err := w.setupTLS(); err != nil || w.tls == nil {
		t.Fatalf("files: %v", err)
	}
}

// Bad bytes fail like a bad file, naming the file they came from.
func TestParseCertificateNamesTheFile(t *testing.T) {
	certPEM, err := os.ReadFile(td("ec.crt"))
	if err != nil {
		t.Fatal(err)
	}
	_, err = ParseCertificate(certPEM, []byte("garbage"), "", "/etc/c.pem", "/etc/k.pem")
	var ce *CertError
	if !errors.As(err, &ce) || ce.Setting != "KeyFile" || ce.File != "/etc/k.pem" {
		t.Fatalf("%v", err)
	}
}

func clientTLSFor(t *testing.T, certPEM []byte) *tls.Config {
	t.Helper()
	cfg := clientTLS(t)
	if !cfg.RootCAs.AppendCertsFromPEM(certPEM) {
		t.Fatal("bad certificate PEM")
	}
	return cfg
}

func TestProcessName(t *testing.T) {
	for slot, want := range map[int]string{0: "mcpgateway-w0", 42: "mcpgateway-w42", 511: "mcpgateway-w511"} {
		if got := processName(slot); got != want || len(got) > 15 {
			t.Errorf("processName(%d) = %q, want %q (15 bytes at most)", slot, got, want)
		}
	}
}

// A quiet connection that a drain closes and a request that arrives on it
// at the same moment: exactly one wins. If the close claimed it first, the
// request is dropped unrun (handle); if the request went active first, the
// close leaves the connection alone.
func TestQuietCloseAndArrivingRequestHaveOneWinner(t *testing.T) {
	var set connSet
	a, b := net.Pipe()
	defer b.Close()
	c := &trackedConn{Conn: a}
	set.add(c)
	set.state(c, fasthttp.StateIdle)
	set.closeIdle(protocol.Nanotime() + 1) // claimed and closed
	set.state(c, fasthttp.StateActive)     // the request fasthttp had already read
	if !claimedForClose(c) {
		t.Fatal("a request on a connection the drain claimed would run")
	}

	x, y := net.Pipe()
	defer y.Close()
	d := &trackedConn{Conn: x}
	set.add(d)
	set.state(d, fasthttp.StateIdle)
	set.state(d, fasthttp.StateActive) // the request came first
	set.closeIdle(protocol.Nanotime() + 1)
	if claimedForClose(d) {
		t.Fatal("an active connection was claimed")
	}
	if err := x.SetDeadline(time.Time{}); err != nil { // io.ErrClosedPipe once closed
		t.Fatalf("the active connection was closed: %v", err)
	}
	if err := a.SetDeadline(time.Time{}); err == nil {
		t.Fatal("the claimed connection was not closed")
	}
}
