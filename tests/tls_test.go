package tests

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/mcpgateway/mcpgateway/internal/proctest"
)

// makeCerts writes a self-signed pair with the binary itself, as `make
// certs` does, and returns the directory.
func makeCerts(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	out, err := exec.Command(binary, "certs", "--dir", dir).CombinedOutput()
	if err != nil {
		t.Fatalf("mcpgateway certs: %v\n%s", err, out)
	}
	return dir
}

// sslEnv is SSL=true with the pair in certDir.
func sslEnv(certDir string, extra ...string) []string {
	return append([]string{"SSL=true", "CERT_FILE=" + filepath.Join(certDir, "cert.pem"),
		"KEY_FILE=" + filepath.Join(certDir, "key.pem")}, extra...)
}

func (g *gateway) https(path string) string {
	return fmt.Sprintf("https://127.0.0.1:%d%s", g.port, path)
}

// trusting returns a TLS client configuration that trusts certFile.
func trusting(t *testing.T, certFile string) *tls.Config {
	t.Helper()
	b, err := os.ReadFile(certFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		t.Fatal("no certificate in", certFile)
	}
	return &tls.Config{RootCAs: pool}
}

// h2Client prefers HTTP/2 over TLS, like a browser.
func h2TLSClient(t *testing.T, certFile string) *http.Client {
	tr := &http.Transport{TLSClientConfig: trusting(t, certFile), ForceAttemptHTTP2: true, MaxIdleConnsPerHost: 100}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 20 * time.Second}
}

// h2cClient speaks HTTP/2 with prior knowledge over plain TCP.
func h2cClient(t *testing.T) *http.Client {
	var p http.Protocols
	p.SetUnencryptedHTTP2(true)
	tr := &http.Transport{Protocols: &p}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 20 * time.Second}
}

// call sends one request and reads the whole answer.
func call(c *http.Client, method, url, token, body string) (resp *http.Response, text string, err error) {
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		return nil, "", err
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err = c.Do(req)
	if err != nil {
		return nil, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp, string(b), err
}

func mustCall(t *testing.T, c *http.Client, method, url, token, body string) (*http.Response, string) {
	t.Helper()
	resp, text, err := call(c, method, url, token, body)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	return resp, text
}

func checkSeedAnswer(t *testing.T, resp *http.Response, body string, proto int) {
	t.Helper()
	if resp.StatusCode != 200 || resp.ProtoMajor != proto || !strings.Contains(body, `"isError":false`) || !strings.Contains(body, "time_difference") {
		t.Fatalf("convert_time: %s %d %s", resp.Proto, resp.StatusCode, body)
	}
}

// curlProto runs curl and returns "HTTP_VERSION STATUS".
func curlProto(t *testing.T, args ...string) string {
	t.Helper()
	if _, err := exec.LookPath("curl"); err != nil {
		t.Skip("curl is not installed")
	}
	out, err := exec.Command("curl", append([]string{"-sS", "-o", "/dev/null", "-w", "%{http_version} %{http_code}", "--max-time", "10"}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("curl %v: %v\n%s", args, err, out)
	}
	return strings.TrimSpace(string(out))
}

func TestTLSServesHTTP2AndHTTP1(t *testing.T) {
	certs := makeCerts(t)
	g := serve(t, sslEnv(certs), "--workers", "2")
	tok := g.token()
	c := h2TLSClient(t, filepath.Join(certs, "cert.pem"))

	resp, body := mustCall(t, c, "GET", g.https("/health"), "", "")
	if resp.StatusCode != 200 || resp.ProtoMajor != 2 || !strings.Contains(body, "healthy") {
		t.Fatalf("/health: %s %d %s", resp.Proto, resp.StatusCode, body)
	}
	resp, body = mustCall(t, c, "POST", g.https("/rpc"), tok, seedPayload)
	checkSeedAnswer(t, resp, body, 2)
	if resp, _ := mustCall(t, c, "POST", g.https("/rpc"), "", seedPayload); resp.StatusCode != 401 {
		t.Fatalf("no token over h2: %d", resp.StatusCode)
	}
	if resp, body := mustCall(t, c, "GET", g.https("/metrics"), "", ""); resp.StatusCode != 200 || !strings.Contains(body, "mcpgateway_") {
		t.Fatalf("/metrics over h2: %d", resp.StatusCode)
	}

	// Real clients: curl negotiates h2 by ALPN, or HTTP/1.1 when asked; the
	// certificate from `mcpgateway certs` verifies for localhost.
	if got := curlProto(t, "--http2", "-k", g.https("/health")); got != "2 200" {
		t.Errorf("curl --http2 -k: %s", got)
	}
	if got := curlProto(t, "--http1.1", "-k", g.https("/health")); got != "1.1 200" {
		t.Errorf("curl --http1.1 -k: %s", got)
	}
	if got := curlProto(t, "--cacert", filepath.Join(certs, "cert.pem"), fmt.Sprintf("https://localhost:%d/health", g.port)); got != "2 200" {
		t.Errorf("curl --cacert (verified): %s", got)
	}
	// Plain HTTP on the TLS port is not served.
	if _, err := http.Get(g.url("/health")); err == nil {
		t.Error("plain HTTP answered on an SSL port")
	}

	// hey over h2, with the guide's payload.
	if _, err := exec.LookPath("hey"); err != nil {
		t.Log("hey is not installed: load part skipped")
	} else {
		payload := filepath.Join(g.dir, "payload.json")
		os.WriteFile(payload, []byte(seedPayload), 0o644)
		out, err := exec.Command("hey", "-n", "2000", "-c", "50", "-h2", "-m", "POST", "-T", "application/json",
			"-H", "Authorization: Bearer "+tok, "-D", payload, g.https("/rpc")).CombinedOutput()
		if err != nil {
			t.Fatalf("hey: %v\n%s", err, out)
		}
		if !strings.Contains(string(out), "[200]\t2000 responses") || strings.Contains(string(out), "Error distribution") {
			t.Fatalf("hey -h2: want 2000 answers 200 and no errors:\n%s", out)
		}
	}

	g.Signal(syscall.SIGTERM)
	if code := g.MustWait(t, 15*time.Second); code != 0 {
		t.Fatalf("exit status %d after TERM", code)
	}
}

func TestTLSEncryptedKeyWithPassword(t *testing.T) {
	testdata, _ := filepath.Abs("../worker/testdata")
	for _, key := range []string{"ec-pkcs8-default.key", "ec-legacy-aes256.key"} {
		t.Run(key, func(t *testing.T) {
			g := serve(t, []string{"SSL=true", "CERT_FILE=" + filepath.Join(testdata, "ec.crt"),
				"KEY_FILE=" + filepath.Join(testdata, key), "KEY_FILE_PASSWORD=s3cret"}, "--workers", "1")
			resp, _ := mustCall(t, h2TLSClient(t, filepath.Join(testdata, "ec.crt")), "GET",
				fmt.Sprintf("https://localhost:%d/health", g.port), "", "")
			if resp.StatusCode != 200 || resp.ProtoMajor != 2 {
				t.Fatalf("%s %d", resp.Proto, resp.StatusCode)
			}
		})
	}
}

func TestTLSWithHTTP1Only(t *testing.T) {
	certs := makeCerts(t)
	g := serve(t, sslEnv(certs, "GRANIAN_HTTP=1"), "--workers", "1")
	resp, body := mustCall(t, h2TLSClient(t, filepath.Join(certs, "cert.pem")), "POST", g.https("/rpc"), g.token(), seedPayload)
	checkSeedAnswer(t, resp, body, 1)
	if got := curlProto(t, "--http2", "-k", g.https("/health")); got != "1.1 200" {
		t.Errorf("curl --http2 -k with HTTP=1: %s", got)
	}
}

func TestTLSWithHTTP2Only(t *testing.T) {
	certs := makeCerts(t)
	g := serve(t, sslEnv(certs), "--workers", "1", "--http", "2")
	resp, body := mustCall(t, h2TLSClient(t, filepath.Join(certs, "cert.pem")), "POST", g.https("/rpc"), g.token(), seedPayload)
	checkSeedAnswer(t, resp, body, 2)
	if got := curlProto(t, "--http1.1", "-k", g.https("/health")); got != "1.1 505" {
		t.Errorf("curl --http1.1 -k with HTTP=2: %s", got)
	}
}

func TestH2CWithoutTLS(t *testing.T) {
	g := serve(t, []string{"GRANIAN_HTTP=2"}, "--workers", "2")
	c := h2cClient(t)
	resp, body := mustCall(t, c, "GET", g.url("/health"), "", "")
	if resp.StatusCode != 200 || resp.ProtoMajor != 2 {
		t.Fatalf("/health over h2c: %s %d %s", resp.Proto, resp.StatusCode, body)
	}
	resp, body = mustCall(t, c, "POST", g.url("/rpc"), g.token(), seedPayload)
	checkSeedAnswer(t, resp, body, 2)
	if got := curlProto(t, "--http2-prior-knowledge", g.url("/health")); got != "2 200" {
		t.Errorf("curl --http2-prior-knowledge: %s", got)
	}
}

// Without TLS, auto is plain HTTP/1.1: a client with prior knowledge of h2
// is not understood.
func TestPlainAutoIsHTTP1(t *testing.T) {
	g := serve(t, nil, "--workers", "1")
	if code, _ := get(t, g.url("/health")); code != 200 {
		t.Fatalf("/health: %d", code)
	}
	if _, _, err := call(h2cClient(t), "GET", g.url("/health"), "", ""); err == nil {
		t.Error("h2c answered while HTTP is auto without TLS")
	}
}

// A certificate that cannot be used stops the master before it binds, with
// the setting and the file in the message.
func TestBadCertificateRefusedBeforeBinding(t *testing.T) {
	testdata, _ := filepath.Abs("../worker/testdata")
	td := func(name string) string { return filepath.Join(testdata, name) }
	cases := []struct {
		name string
		env  []string
		want []string
	}{
		{"default paths missing", []string{"SSL=true"}, []string{"CertFile", "certs/cert.pem", "no such file", "default"}},
		{"key missing", []string{"SSL=true", "CERT_FILE=" + td("ec.crt"), "KEY_FILE=" + td("nope.key")}, []string{"KeyFile", td("nope.key"), "no such file", "KEY_FILE"}},
		{"mismatched pair", []string{"SSL=true", "CERT_FILE=" + td("ec.crt"), "KEY_FILE=" + td("other.key")}, []string{"KeyFile", td("other.key"), "does not belong"}},
		{"encrypted key, no password", []string{"SSL=true", "CERT_FILE=" + td("ec.crt"), "KEY_FILE=" + td("ec-pkcs8-default.key")}, []string{"KeyFile", td("ec-pkcs8-default.key"), "KEY_FILE_PASSWORD is not set"}},
		{"wrong password", []string{"SSL=true", "CERT_FILE=" + td("ec.crt"), "KEY_FILE=" + td("ec-legacy-aes256.key"), "KEY_FILE_PASSWORD=nope"}, []string{"KeyFilePassword", td("ec-legacy-aes256.key"), "does not decrypt"}},
		{"cert is a key", []string{"SSL=true", "CERT_FILE=" + td("ec.key"), "KEY_FILE=" + td("ec.key")}, []string{"CertFile", td("ec.key"), "no PEM CERTIFICATE"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			port := proctest.MustFreePort(t)
			g := run(t, dir, baseEnv(dir, c.env...), "serve", "--bind", fmt.Sprintf("127.0.0.1:%d", port))
			if code := g.MustWait(t, 10*time.Second); code != 1 {
				t.Fatalf("exit status %d, want 1", code)
			}
			refusedBeforeBinding(t, g, port, c.want)
		})
	}
	// --certfile and --keyfile are checked the same way.
	dir := t.TempDir()
	g := run(t, dir, baseEnv(dir), "serve", "--bind", fmt.Sprintf("127.0.0.1:%d", proctest.MustFreePort(t)), "--ssl",
		"--certfile", td("rsa.crt"), "--keyfile", td("ec.key"))
	if code := g.MustWait(t, 10*time.Second); code != 1 || !strings.Contains(g.Log.String(), "--keyfile") {
		t.Fatalf("flags: exit %d\n%s", code, g.Log)
	}
}

// seedLoad is a load of seed requests over one client, the goroutines
// sharing its connections; it counts the failures by kind.
type seedLoad struct {
	*proctest.Load
	status, bodyErrs, connErrs atomic.Int64
}

// startSeedLoad sends n seed requests in all (n <= 0: until Stop) from conns
// goroutines, each answer checked to be a convert_time result over HTTP/proto.
func startSeedLoad(c *http.Client, proto int, url, token string, conns, n int) *seedLoad {
	l := &seedLoad{}
	l.Load = proctest.StartLoad(context.Background(), conns, n, func(int) error {
		req, _ := http.NewRequest("POST", url, strings.NewReader(seedPayload))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := c.Do(req)
		if err != nil {
			l.connErrs.Add(1)
			return fmt.Errorf("request: %w", err)
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		switch {
		case err != nil:
			l.bodyErrs.Add(1)
			return fmt.Errorf("body: %w", err)
		case resp.StatusCode != 200 || resp.ProtoMajor != proto || !bytes.Contains(b, []byte("time_difference")):
			l.status.Add(1)
			return fmt.Errorf("%s %d %s", resp.Proto, resp.StatusCode, b)
		}
		return nil
	})
	return l
}

// Workers recycled every few hundred requests under HTTP/2 load: GOAWAY,
// drain, replacement; the client sees no failure at all.
func TestH2RecyclingUnderLoadDropsNothing(t *testing.T) {
	certs := makeCerts(t)
	g := serve(t, sslEnv(certs, "GUNICORN_MAX_REQUESTS=400", "GUNICORN_MAX_REQUESTS_JITTER=50"), "--workers", "2")
	tok := g.token()
	l := startSeedLoad(h2TLSClient(t, filepath.Join(certs, "cert.pem")), 2, g.https("/rpc"), tok, 16, 16*200)
	r := l.Wait()
	if r.OK != 16*200 {
		t.Errorf("ok %d of %d; status %d, body errors %d, connection errors %d: %v",
			r.OK, 16*200, l.status.Load(), l.bodyErrs.Load(), l.connErrs.Load(), r.Errors)
	}
	recycled := strings.Count(g.Log.String(), `"reason":"recycled"`)
	if recycled < 4 {
		t.Errorf("only %d workers recycled", recycled)
	}
	if strings.Contains(g.Log.String(), "graceful timeout") {
		t.Error("a worker's drain ran into the graceful timeout")
	}
	t.Logf("%d requests over h2, %d workers recycled", r.OK, recycled)
}

// SIGTERM during a load over TLS, HTTP/2 and HTTP/1.1: every request a
// worker served is answered in full, the workers drain without running into
// the graceful timeout and the master exits 0. Requests after the stop fail
// to connect, nothing else.
func TestSIGTERMDuringTLSLoadDrainsCleanly(t *testing.T) {
	for _, proto := range []int{2, 1} {
		t.Run(fmt.Sprintf("HTTP/%d", proto), func(t *testing.T) {
			certs := makeCerts(t)
			g := serve(t, sslEnv(certs, "GUNICORN_GRACEFUL_TIMEOUT=10"), "--workers", "2")
			tok := g.token()
			c := h2TLSClient(t, filepath.Join(certs, "cert.pem"))
			if proto == 1 {
				tr := &http.Transport{TLSClientConfig: trusting(t, filepath.Join(certs, "cert.pem")), MaxIdleConnsPerHost: 100,
					TLSNextProto: map[string]func(string, *tls.Conn) http.RoundTripper{}}
				t.Cleanup(tr.CloseIdleConnections)
				c = &http.Client{Transport: tr, Timeout: 20 * time.Second}
			}
			l := startSeedLoad(c, proto, g.https("/rpc"), tok, 16, 0)
			time.Sleep(700 * time.Millisecond)
			g.Signal(syscall.SIGTERM)
			code := g.MustWait(t, 15*time.Second)
			r := l.Stop()
			if code != 0 {
				t.Fatalf("exit status %d after TERM", code)
			}
			if r.OK < 100 {
				t.Errorf("only %d requests answered before the stop", r.OK)
			}
			if l.status.Load() != 0 || l.bodyErrs.Load() != 0 {
				t.Errorf("%d bad answers and %d cut-off bodies: %v", l.status.Load(), l.bodyErrs.Load(), r.Errors)
			}
			// Every request a worker served reached the client: none was
			// processed and then lost with its connection.
			if served := servedByWorkers(t, g.Log.String()); served != int64(r.OK) {
				t.Errorf("workers served %d requests, the client got %d answers", served, r.OK)
			}
			for _, err := range r.Errors {
				if !regexp.MustCompile(`connection refused|connection reset|EOF`).MatchString(err.Error()) {
					t.Errorf("unexpected failure after the stop: %s", err)
				}
			}
			out := g.Log.String()
			if strings.Contains(out, "graceful timeout") {
				t.Error("a worker's drain ran into the graceful timeout")
			}
			if n := strings.Count(out, `"msg":"worker stopped"`); n != 2 {
				t.Errorf("%d workers stopped cleanly, want 2", n)
			}
			t.Logf("%d answered, %d failed to connect after the stop", r.OK, l.connErrs.Load())
		})
	}
}

var servedRe = regexp.MustCompile(`"msg":"worker exited".*"served":(\d+)`)

// servedByWorkers adds up what every worker served, from the master's log.
func servedByWorkers(t *testing.T, out string) int64 {
	t.Helper()
	var total int64
	for _, m := range servedRe.FindAllStringSubmatch(out, -1) {
		var n int64
		fmt.Sscan(m[1], &n)
		total += n
	}
	return total
}

func TestCertsCommand(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "certs")
	out, err := exec.Command(binary, "certs", "--dir", dir, "--hosts", "localhost,127.0.0.1,::1,gw.example.test", "--days", "10").CombinedOutput()
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	st, err := os.Stat(filepath.Join(dir, "key.pem"))
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("key.pem: %v %v", st.Mode(), err)
	}
	certPEM, _ := os.ReadFile(filepath.Join(dir, "cert.pem"))
	block, _ := pem.Decode(certPEM)
	if block == nil {
		t.Fatal("cert.pem holds no PEM block")
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if pub, ok := cert.PublicKey.(*ecdsa.PublicKey); !ok || pub.Curve != elliptic.P256() {
		t.Errorf("public key %T, want ECDSA P-256", cert.PublicKey)
	}
	if got := strings.Join(cert.DNSNames, ","); got != "localhost,gw.example.test" || len(cert.IPAddresses) != 2 {
		t.Errorf("names %v, addresses %v", cert.DNSNames, cert.IPAddresses)
	}
	if d := time.Until(cert.NotAfter); d < 9*24*time.Hour || d > 10*24*time.Hour {
		t.Errorf("valid for %s, want 10 days", d)
	}
	if err := cert.VerifyHostname("gw.example.test"); err != nil {
		t.Error(err)
	}
	if _, err := tls.LoadX509KeyPair(filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")); err != nil {
		t.Fatal(err)
	}
	// Again: kept, so `make certs` is idempotent; --force replaces.
	if out, err := exec.Command(binary, "certs", "--dir", dir).CombinedOutput(); err != nil || !strings.Contains(string(out), "kept") {
		t.Fatalf("second run: %v %s", err, out)
	}
	if again, _ := os.ReadFile(filepath.Join(dir, "cert.pem")); !bytes.Equal(again, certPEM) {
		t.Error("existing certificate replaced without --force")
	}
	if out, err := exec.Command(binary, "certs", "--dir", dir, "--force").CombinedOutput(); err != nil {
		t.Fatalf("--force: %v %s", err, out)
	}
	if again, _ := os.ReadFile(filepath.Join(dir, "cert.pem")); bytes.Equal(again, certPEM) {
		t.Error("--force kept the old certificate")
	}
	// A key without its certificate is not replaced behind the user's back
	// (review 2.6): refused, the key kept.
	key, _ := os.ReadFile(filepath.Join(dir, "key.pem"))
	if err := os.Remove(filepath.Join(dir, "cert.pem")); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(binary, "certs", "--dir", dir).CombinedOutput(); err == nil || !strings.Contains(string(out), "only one of") {
		t.Fatalf("a key without its certificate: %v %s, want a refusal", err, out)
	}
	if again, _ := os.ReadFile(filepath.Join(dir, "key.pem")); !bytes.Equal(again, key) {
		t.Error("the lone key was replaced")
	}
}

// peerSerial is the serial number of the certificate the server presents.
func peerSerial(t *testing.T, port int) string {
	t.Helper()
	conn, err := tls.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port), &tls.Config{InsecureSkipVerify: true})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	return conn.ConnectionState().PeerCertificates[0].SerialNumber.String()
}

// HUP reads the certificate files anew (rotation without a restart); a
// reload with a broken key is refused and the running workers keep serving.
func TestHUPRotatesTheCertificate(t *testing.T) {
	certs := makeCerts(t)
	g := serve(t, sslEnv(certs), "--workers", "2")
	first := peerSerial(t, g.port)
	if out, err := exec.Command(binary, "certs", "--dir", certs, "--force").CombinedOutput(); err != nil {
		t.Fatalf("%v %s", err, out)
	}
	g.Signal(syscall.SIGHUP)
	g.MustWaitOutput(t, `"msg":"reload complete"`, 10*time.Second)
	// A connection accepted by an old worker just before its TERM still
	// gets the old certificate: new connections get the new one at once
	// after that.
	var second string
	if _, ok := proctest.Poll(5*time.Second, 20*time.Millisecond, func() bool { second = peerSerial(t, g.port); return second != first }); !ok {
		t.Fatal("the old certificate is still presented after HUP")
	}

	os.WriteFile(filepath.Join(certs, "key.pem"), []byte("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"), 0o600)
	g.Signal(syscall.SIGHUP)
	g.MustWaitOutput(t, "reload refused", 10*time.Second)
	if !strings.Contains(g.Log.String(), "KeyFile") {
		t.Errorf("the refusal does not name KeyFile:\n%s", g.Log)
	}
	if got := peerSerial(t, g.port); got != second {
		t.Error("the certificate changed after a refused reload")
	}
	resp, _ := mustCall(t, h2TLSClient(t, filepath.Join(certs, "cert.pem")), "GET", g.https("/health"), "", "")
	if resp.StatusCode != 200 || resp.ProtoMajor != 2 {
		t.Fatalf("after a refused reload: %s %d", resp.Proto, resp.StatusCode)
	}
}
