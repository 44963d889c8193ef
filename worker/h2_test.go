package worker

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mcpgateway/mcpgateway/supervisor/protocol"
	"github.com/valyala/fasthttp"
	"go.uber.org/zap"
)

func tlsCertificate(t *testing.T) tls.Certificate {
	t.Helper()
	cert, err := LoadCertificate(td("ec.crt"), td("ec.key"), "")
	if err != nil {
		t.Fatal(err)
	}
	return cert
}

// startTestWorker runs the serving half of a worker in this process on a
// 127.0.0.1 listener, as run() does after setup.
func startTestWorker(t *testing.T, opts protocol.WorkerOptions, handler fasthttp.RequestHandler) (*worker, string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	w := startTestWorkerOn(t, opts, handler, ln)
	return w, ln.Addr().String()
}

// startTestWorkerOn is startTestWorker on a given listener. The worker's
// master is this process's parent, alive: a drain is a recycle drain unless
// a test says the server is stopping (HStopping) or the master is gone
// (w.getppid). Its messages to the master are in w.master, a *messages.
func startTestWorkerOn(t *testing.T, opts protocol.WorkerOptions, handler fasthttp.RequestHandler, ln net.Listener) *worker {
	t.Helper()
	tb, err := protocol.CreateTable(1)
	if err != nil {
		t.Fatal(err)
	}
	tb.Header().Store(protocol.HMaxRow, 1)
	if opts.GracefulTimeout == 0 {
		opts.GracefulTimeout = 5 * time.Second
	}
	if opts.WorkerConnections == 0 {
		opts.WorkerConnections = 100
	}
	if opts.KeepAlive == 0 {
		opts.KeepAlive = 5 * time.Second
	}
	w := &worker{opts: opts, table: tb, row: tb.Row(1), log: zap.NewNop(), stopped: make(chan struct{}),
		listeners: []net.Listener{ln}, master: &messages{}, getppid: os.Getppid,
		id: protocol.Identity{MasterPID: os.Getppid(), Row: 1}}
	w.access = w.log
	w.conns.row = w.row
	w.app.Handler = handler
	if err := w.setupTLS(); err != nil {
		t.Fatal(err)
	}
	w.metrics = MetricsHandler(tb, BuildInfo{Version: "test"}, w.listeners)
	w.row.Store(protocol.FState, protocol.StateBooting)
	w.serve()
	w.markReady()
	t.Cleanup(func() {
		if !w.draining.Load() {
			// The test is over, as if the server stopped: quiet
			// keep-alive connections need not live out their idle time.
			tb.Header().Store(protocol.HStopping, 1)
			w.drain("test over", nil)
		}
		w.stop()
		w.serving.Wait() // they read the table when their listener ends
		// A handler the test released may still be finishing: it writes
		// the row, which must still be mapped.
		for deadline := time.Now().Add(5 * time.Second); w.row.Load(protocol.FInFlight) != 0 && time.Now().Before(deadline); {
			time.Sleep(5 * time.Millisecond)
		}
		tb.Close()
	})
	return w
}

// messages records what a test worker sends its master, line by line.
type messages struct {
	mu    sync.Mutex
	lines []string
}

func (m *messages) Write(p []byte) (int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.lines = append(m.lines, strings.Split(strings.TrimSuffix(string(p), "\n"), "\n")...)
	return len(p), nil
}

func (m *messages) all() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]string(nil), m.lines...)
}

func sent(w *worker) []string { return w.master.(*messages).all() }

// retireLine is the message line (without its newline) of a retire.
func retireLine(reason string) string {
	return strings.TrimSuffix(string(protocol.EncodeRetire(reason)), "\n")
}

var testTLS = &protocol.TLS{CertFile: td("ec.crt"), KeyFile: td("ec.key")}

// clientTLS trusts testdata/ec.crt; protos is the client's ALPN offer.
func clientTLS(t *testing.T, protos ...string) *tls.Config {
	t.Helper()
	pem, err := os.ReadFile(td("ec.crt"))
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	return &tls.Config{RootCAs: pool, ServerName: "localhost", NextProtos: protos}
}

// h2Client speaks HTTP/2 over TLS only.
func h2Client(t *testing.T) *http.Client {
	var p http.Protocols
	p.SetHTTP2(true)
	tr := &http.Transport{TLSClientConfig: clientTLS(t), Protocols: &p}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 10 * time.Second}
}

// h1Client speaks HTTP/1.1 over TLS only.
func h1Client(t *testing.T) *http.Client {
	tr := &http.Transport{TLSClientConfig: clientTLS(t, "http/1.1"), TLSNextProto: map[string]func(string, *tls.Conn) http.RoundTripper{}}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 10 * time.Second}
}

// h2cClient speaks HTTP/2 with prior knowledge over plain TCP.
func h2cClient(t *testing.T) *http.Client {
	var p http.Protocols
	p.SetUnencryptedHTTP2(true)
	tr := &http.Transport{Protocols: &p}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 10 * time.Second}
}

// echo answers with what it saw, the way a handler reads a fasthttp request.
func echo(ctx *fasthttp.RequestCtx) {
	ctx.Response.Header.Set("X-Seen-Method", string(ctx.Method()))
	ctx.Response.Header.Set("X-Seen-Header", string(ctx.Request.Header.Peek("X-Test")))
	ctx.Response.Header.Set("X-Seen-Query", string(ctx.QueryArgs().Peek("q")))
	ctx.Response.Header.Set("X-Seen-TLS", fmt.Sprint(ctx.IsTLS()))
	ctx.Response.Header.Set("X-Seen-Remote", ctx.RemoteAddr().String())
	ctx.Response.Header.Set("X-Seen-Length", fmt.Sprint(ctx.Request.Header.ContentLength()))
	ctx.SetContentType("application/json")
	ctx.SetStatusCode(201)
	ctx.SetBody(ctx.PostBody())
}

func do(t *testing.T, c *http.Client, method, url, body string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("X-Test", "yes")
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, string(b)
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestTLSAutoServesH2AndHTTP1(t *testing.T) {
	w, addr := startTestWorker(t, protocol.WorkerOptions{TLS: testTLS, HTTP: "auto"}, echo)
	base := "https://" + addr

	h2 := h2Client(t)
	resp, body := do(t, h2, "POST", base+"/rpc?q=1", `{"hello":"h2"}`)
	if resp.ProtoMajor != 2 || resp.StatusCode != 201 || body != `{"hello":"h2"}` {
		t.Fatalf("h2: %s %d %q", resp.Proto, resp.StatusCode, body)
	}
	for k, want := range map[string]string{"X-Seen-Method": "POST", "X-Seen-Header": "yes", "X-Seen-Query": "1",
		"X-Seen-TLS": "true", "X-Seen-Length": "14", "Content-Type": "application/json", "Server": "mcpgateway", "Content-Length": "14"} {
		if got := resp.Header.Get(k); got != want {
			t.Errorf("h2 %s = %q, want %q", k, got, want)
		}
	}
	if !strings.HasPrefix(resp.Header.Get("X-Seen-Remote"), "127.0.0.1:") {
		t.Errorf("remote address %q", resp.Header.Get("X-Seen-Remote"))
	}
	resp, body = do(t, h2, "GET", base+"/health", "")
	if resp.ProtoMajor != 2 || resp.StatusCode != 200 || body != `{"status":"healthy"}` {
		t.Fatalf("h2 /health: %s %d %q", resp.Proto, resp.StatusCode, body)
	}
	resp, body = do(t, h2, "GET", base+"/metrics", "")
	if resp.StatusCode != 200 || !strings.Contains(body, "mcpgateway_") {
		t.Fatalf("h2 /metrics: %d", resp.StatusCode)
	}
	resp, body = do(t, h2, "HEAD", base+"/health", "")
	if resp.StatusCode != 200 || body != "" {
		t.Fatalf("h2 HEAD: %d %q", resp.StatusCode, body)
	}

	h1 := h1Client(t)
	resp, body = do(t, h1, "POST", base+"/rpc", `{"hello":"h1"}`)
	if resp.ProtoMajor != 1 || resp.StatusCode != 201 || body != `{"hello":"h1"}` || resp.Header.Get("X-Seen-Header") != "yes" {
		t.Fatalf("http/1.1: %s %d %q", resp.Proto, resp.StatusCode, body)
	}

	if served := w.row.Load(protocol.CServed); served != 5 {
		t.Errorf("served %d, want 5", served)
	}
	if n := w.conns.open(); n != 2 {
		t.Errorf("open connections %d, want 2 (one h2, one http/1.1)", n)
	}
	h2.Transport.(*http.Transport).CloseIdleConnections()
	h1.Transport.(*http.Transport).CloseIdleConnections()
	waitFor(t, "connections to be forgotten", func() bool { return w.conns.open() == 0 })
}

func TestTLSHTTP1Only(t *testing.T) {
	_, addr := startTestWorker(t, protocol.WorkerOptions{TLS: testTLS, HTTP: "1"}, echo)
	// A client that would rather have h2 gets HTTP/1.1.
	tr := &http.Transport{TLSClientConfig: clientTLS(t), ForceAttemptHTTP2: true}
	defer tr.CloseIdleConnections()
	resp, _ := do(t, &http.Client{Transport: tr}, "GET", "https://"+addr+"/health", "")
	if resp.ProtoMajor != 1 || resp.StatusCode != 200 {
		t.Fatalf("%s %d", resp.Proto, resp.StatusCode)
	}
}

func TestTLSHTTP2Only(t *testing.T) {
	_, addr := startTestWorker(t, protocol.WorkerOptions{TLS: testTLS, HTTP: "2"}, echo)
	resp, _ := do(t, h2Client(t), "GET", "https://"+addr+"/health", "")
	if resp.ProtoMajor != 2 || resp.StatusCode != 200 {
		t.Fatalf("%s %d", resp.Proto, resp.StatusCode)
	}
	// An HTTP/1.1-only client is told why it gets nothing else.
	resp, body := do(t, h1Client(t), "GET", "https://"+addr+"/health", "")
	if resp.StatusCode != 505 || !strings.HasSuffix(body, `"status":505}`) {
		t.Fatalf("http/1.1 client: %d %q", resp.StatusCode, body)
	}
}

func TestH2C(t *testing.T) {
	w, addr := startTestWorker(t, protocol.WorkerOptions{HTTP: "2"}, echo)
	resp, body := do(t, h2cClient(t), "POST", "http://"+addr+"/rpc", `{"hello":"h2c"}`)
	if resp.ProtoMajor != 2 || resp.StatusCode != 201 || body != `{"hello":"h2c"}` || resp.Header.Get("X-Seen-TLS") != "false" {
		t.Fatalf("h2c: %s %d %q %v", resp.Proto, resp.StatusCode, body, resp.Header)
	}
	if n := w.conns.open(); n != 1 {
		t.Errorf("open connections %d, want 1", n)
	}
}

func TestPlainAutoIsHTTP1(t *testing.T) {
	_, addr := startTestWorker(t, protocol.WorkerOptions{HTTP: "auto"}, echo)
	resp, _ := do(t, http.DefaultClient, "GET", "http://"+addr+"/health", "")
	if resp.ProtoMajor != 1 || resp.StatusCode != 200 {
		t.Fatalf("%s %d", resp.Proto, resp.StatusCode)
	}
}

func TestH2BackpressureAndHealth(t *testing.T) {
	release := make(chan struct{})
	started := make(chan struct{}, 1)
	_, addr := startTestWorker(t, protocol.WorkerOptions{TLS: testTLS, Backpressure: 1}, func(ctx *fasthttp.RequestCtx) {
		started <- struct{}{}
		<-release
		ctx.SetBodyString("done")
	})
	c := h2Client(t)
	base := "https://" + addr
	done := make(chan string, 1)
	go func() {
		resp, err := c.Post(base+"/rpc", "application/json", strings.NewReader("{}"))
		if err != nil {
			done <- err.Error()
			return
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		done <- fmt.Sprintf("%d %s", resp.StatusCode, b)
	}()
	<-started
	// Same connection, second stream: refused at once, /health still answered.
	resp, body := do(t, c, "POST", base+"/rpc", "{}")
	if resp.StatusCode != 503 || resp.Header.Get("Retry-After") != "1" || !strings.Contains(body, "server busy") {
		t.Fatalf("over the limit: %d %q", resp.StatusCode, body)
	}
	resp, _ = do(t, c, "GET", base+"/health", "")
	if resp.StatusCode != 200 {
		t.Fatalf("/health while busy: %d", resp.StatusCode)
	}
	close(release)
	if got := <-done; got != "200 done" {
		t.Fatalf("admitted request: %s", got)
	}
}

func TestH2RequestBodyLimit(t *testing.T) {
	_, addr := startTestWorker(t, protocol.WorkerOptions{TLS: testTLS, MaxRequestBodySize: 100}, echo)
	resp, _ := do(t, h2Client(t), "POST", "https://"+addr+"/rpc", strings.Repeat("x", 101))
	if resp.StatusCode != 413 {
		t.Fatalf("status %d, want 413", resp.StatusCode)
	}
}

// A request that overruns the timeout gets the watchdog's 504 on its own
// stream; the connection and its other streams are unharmed, and the stuck
// handler is counted in flight until it returns.
func TestH2TimeoutAnswersTheStream(t *testing.T) {
	unblock := make(chan struct{})
	var once sync.Once
	w, addr := startTestWorker(t, protocol.WorkerOptions{TLS: testTLS, Timeout: 200 * time.Millisecond}, func(ctx *fasthttp.RequestCtx) {
		if string(ctx.Path()) == "/slow" {
			<-unblock
		}
		ctx.SetBodyString("ok")
	})
	t.Cleanup(func() { once.Do(func() { close(unblock) }) })
	c := h2Client(t)
	base := "https://" + addr
	do(t, c, "GET", base+"/warm", "") // one connection, reused below

	start := time.Now()
	resp, body := do(t, c, "POST", base+"/slow", "{}")
	if resp.StatusCode != 504 || resp.ProtoMajor != 2 || !strings.Contains(body, "request timed out") {
		t.Fatalf("slow request: %s %d %q", resp.Proto, resp.StatusCode, body)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("504 after %s", d)
	}
	var reused bool
	ctx := httptrace.WithClientTrace(context.Background(), &httptrace.ClientTrace{GotConn: func(i httptrace.GotConnInfo) { reused = i.Reused }})
	req, _ := http.NewRequestWithContext(ctx, "GET", base+"/after", nil)
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 || !reused {
		t.Fatalf("next request on the same connection: %d reused=%v", resp.StatusCode, reused)
	}
	if n := w.row.Load(protocol.FInFlight); n != 1 {
		t.Errorf("in flight = %d while the handler is stuck, want 1", n)
	}
	waitFor(t, "the worker to ask for a replacement", func() bool { return len(sent(w)) > 0 })
	if got := sent(w); len(got) != 1 || got[0] != retireLine(protocol.ReasonTimeout) {
		t.Errorf("messages to the master: %q, want one retire for timeout", got)
	}
	if w.row.Load(protocol.CTimeouts) != 1 {
		t.Errorf("timeouts counted: %d", w.row.Load(protocol.CTimeouts))
	}
	once.Do(func() { close(unblock) })
	waitFor(t, "the stuck handler to finish", func() bool { return w.row.Load(protocol.FInFlight) == 0 })
	if n := w.row.Load(protocol.C5xx); n != 1 {
		t.Errorf("5xx counted: %d, want 1 (the 504, once the handler returned)", n)
	}
}

// Drain: in-flight h2 requests finish, the connection gets GOAWAY and
// closes, the worker's connection count reaches zero, all well within the
// graceful timeout.
func TestH2Drain(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts protocol.WorkerOptions
		c    func(*testing.T) *http.Client
		url  string
	}{
		{"tls", protocol.WorkerOptions{TLS: testTLS}, h2Client, "https://"},
		{"h2c", protocol.WorkerOptions{HTTP: "2"}, h2cClient, "http://"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			started := make(chan struct{}, 10)
			w, addr := startTestWorker(t, tc.opts, func(ctx *fasthttp.RequestCtx) {
				if string(ctx.Path()) == "/slow" {
					started <- struct{}{}
					time.Sleep(300 * time.Millisecond)
				}
				ctx.SetBodyString("ok")
			})
			c := tc.c(t)
			base := tc.url + addr
			do(t, c, "GET", base+"/health", "")
			results := make(chan string, 3)
			for range 3 {
				go func() {
					resp, err := c.Post(base+"/slow", "application/json", strings.NewReader("{}"))
					if err != nil {
						results <- err.Error()
						return
					}
					b, _ := io.ReadAll(resp.Body)
					resp.Body.Close()
					results <- fmt.Sprintf("%d %s %s", resp.StatusCode, resp.Proto, b)
				}()
			}
			for range 3 {
				<-started
			}
			if n := w.conns.open(); n != 1 {
				t.Errorf("open connections %d, want 1", n)
			}
			start := time.Now()
			w.drain("test", nil)
			took := time.Since(start)
			for range 3 {
				if got := <-results; got != "200 HTTP/2.0 ok" {
					t.Errorf("in-flight request: %s", got)
				}
			}
			if n := w.conns.open(); n != 0 {
				t.Errorf("open connections after drain: %d", n)
			}
			if took > 3*time.Second {
				t.Errorf("drain took %s", took)
			}
		})
	}
}

// A client that connects and never handshakes holds neither the GOAWAY of
// the others nor the drain for longer than a quiet connection may live: in
// a recycle drain, the keep-alive idle time.
func TestDrainWithAStalledHandshake(t *testing.T) {
	started := make(chan struct{}, 1)
	w, addr := startTestWorker(t, protocol.WorkerOptions{TLS: testTLS, KeepAlive: time.Second}, func(ctx *fasthttp.RequestCtx) {
		if string(ctx.Path()) == "/slow" {
			started <- struct{}{}
			time.Sleep(300 * time.Millisecond)
		}
		ctx.SetBodyString("ok")
	})
	stalled, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer stalled.Close()
	result := postInBackground(h2Client(t), "https://"+addr+"/slow")
	<-started
	waitFor(t, "both connections counted", func() bool { return w.conns.open() == 2 })
	start := time.Now()
	w.drain("test", nil)
	if got := <-result; got != "200 ok" {
		t.Errorf("in-flight request: %s", got)
	}
	if d := time.Since(start); d > 2500*time.Millisecond {
		t.Errorf("drain took %s", d)
	}
	if n := w.conns.open(); n != 0 {
		t.Errorf("open connections after drain: %d", n)
	}
}

// postInBackground posts {} to url and reports "status body", or the error.
func postInBackground(c *http.Client, url string) <-chan string {
	result := make(chan string, 1)
	go func() {
		resp, err := c.Post(url, "application/json", strings.NewReader("{}"))
		if err != nil {
			result <- err.Error()
			return
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		result <- fmt.Sprintf("%d %s", resp.StatusCode, b)
	}()
	return result
}
