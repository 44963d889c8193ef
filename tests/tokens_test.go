package tests

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mcpgateway/mcpgateway/internal/proctest"
)

// Issue 12, item 4 (tokens) and item 7 (coherence when a writer cannot
// reach Redis), against real servers.

// tokClaims reads a token's claims without verifying it.
func tokClaims(t *testing.T, tok string) map[string]any {
	t.Helper()
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		t.Fatalf("not a JWT: %q", tok)
	}
	b, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	var c map[string]any
	if err := json.Unmarshal(b, &c); err != nil {
		t.Fatal(err)
	}
	return c
}

func tokJTI(t *testing.T, tok string) string {
	t.Helper()
	jti, _ := tokClaims(t, tok)["jti"].(string)
	if jti == "" {
		t.Fatalf("token without jti")
	}
	return jti
}

// tokRevoke revokes a jti through g's admin API.
func tokRevoke(t *testing.T, g *gateway, admin, jti string) {
	t.Helper()
	code, body := httpDo(freshClient, "POST", g.url("/admin/tokens/revoke"), admin, `{"jti":"`+jti+`","reason":"test"}`)
	if code != 200 {
		t.Fatalf("POST /admin/tokens/revoke: %d %s", code, body)
	}
}

// tokRefusedAs reports whether a request with tok through url gets 401 with
// exactly detail.
func tokRefusedAs(url, tok, detail string) error {
	code, body := httpDo(freshClient, "POST", url, tok, seedPayload)
	if code != 401 || body != `{"detail":"`+detail+`"}` {
		return fmt.Errorf("%d %.120s, want 401 %q", code, body, detail)
	}
	return nil
}

// acrossInstances runs check on two instances of two workers that share a
// store: PostgreSQL with CACHE_TYPE database, then with redis.
func acrossInstances(t *testing.T, check func(t *testing.T, b storeSetup, a, other *gateway)) {
	for _, b := range []storeSetup{postgresBackend("database"), postgresBackend("redis")} {
		t.Run(b.name, func(t *testing.T) {
			env := b.env(t)
			check(t, b, serve(t, env, "--workers", "2"), serve(t, env, "--workers", "2"))
		})
	}
}

// A token revoked through instance A is refused by every worker of
// instance B within the coherence bound (1 s), with a fixed 401 body; the
// user's other tokens keep working.
func TestTokenRevocationAcrossInstances(t *testing.T) {
	acrossInstances(t, func(t *testing.T, b storeSetup, a, other *gateway) {
		admin := a.token()
		adminPut(t, a, admin, "/admin/users/"+bobEmail, `{"active":true,"admin":false}`)
		bobTok := tokenFor(t, a, bobEmail)
		jti := tokJTI(t, bobTok)
		url := other.url("/rpc")
		warmEveryWorker(t, other, func() error { return checkSeed(httpDo(freshClient, "POST", url, bobTok, seedPayload)) })
		seen := expectChangeSeen(t, other, "revoke bob's token", func() { tokRevoke(t, a, admin, jti) },
			func() error { return tokRefusedAs(url, bobTok, "Token has been revoked") })
		t.Logf("%s: revoked token last accepted %v after the revocation", b.name, seen)
		// The writer's own workers refuse it too, and B's admin API shows the record.
		if err := tokRefusedAs(a.url("/rpc"), bobTok, "Token has been revoked"); err != nil {
			t.Error(err)
		}
		code, body := httpDo(freshClient, "GET", other.url("/admin/tokens/revoked/"+jti), admin, "")
		if code != 200 || !strings.Contains(body, `"revoked_by":"admin@example.com"`) {
			t.Errorf("GET /admin/tokens/revoked: %d %s", code, body)
		}
		if err := checkSeed(httpDo(freshClient, "POST", url, tokenFor(t, a, bobEmail), seedPayload)); err != nil {
			t.Errorf("bob's new token: %v", err)
		}
	})
}

// Item 7: instance W cannot reach Redis (its REDIS_URL is a closed port),
// instance R can; they share PostgreSQL. W's writes commit but their
// tombstones never reach Redis. R must still refuse a deactivated user and
// a revoked token within the coherence bound, through the database epoch,
// on every worker.
func TestCoherenceWhenTheWriterCannotReachRedis(t *testing.T) {
	pg := pgDatabase(t)
	prefix := redisPrefix(t)
	readerEnv := []string{"DATABASE_URL=" + pg, "CACHE_TYPE=redis", "REDIS_URL=redis://" + redisAddr + "/0", "CACHE_PREFIX=" + prefix}
	closed := proctest.MustFreePort(t)
	writerEnv := []string{"DATABASE_URL=" + pg, "CACHE_TYPE=redis", fmt.Sprintf("REDIS_URL=redis://127.0.0.1:%d/0", closed),
		"CACHE_PREFIX=" + prefix, "REDIS_SOCKET_TIMEOUT=0.5", "REDIS_SOCKET_CONNECT_TIMEOUT=0.5"}
	writer := serve(t, writerEnv, "--workers", "1")
	reader := serve(t, readerEnv, "--workers", "2")
	writer.MustWaitOutput(t, "redis unreachable", 5*time.Second)

	admin := writer.token()
	adminPut(t, writer, admin, "/admin/users/"+bobEmail, `{"active":true,"admin":false}`)
	bobTok := tokenFor(t, writer, bobEmail)
	url := reader.url("/rpc")
	// Every worker of the reader has bob, and "bob's token is not revoked",
	// in its near cache and in Redis.
	warmEveryWorker(t, reader, func() error { return checkSeed(httpDo(freshClient, "POST", url, bobTok, seedPayload)) })
	deact := expectChangeSeen(t, reader, "deactivate bob through the writer without Redis",
		func() { adminPut(t, writer, admin, "/admin/users/"+bobEmail, `{"active":false}`) },
		func() error { return tokRefusedAs(url, bobTok, "User account is inactive") })
	expectChangeSeen(t, reader, "reactivate bob through the writer without Redis",
		func() { adminPut(t, writer, admin, "/admin/users/"+bobEmail, `{"active":true}`) },
		func() error { return checkSeed(httpDo(freshClient, "POST", url, bobTok, seedPayload)) })
	warmEveryWorker(t, reader, func() error { return checkSeed(httpDo(freshClient, "POST", url, bobTok, seedPayload)) })
	rev := expectChangeSeen(t, reader, "revoke bob's token through the writer without Redis",
		func() { tokRevoke(t, writer, admin, tokJTI(t, bobTok)) },
		func() error { return tokRefusedAs(url, bobTok, "Token has been revoked") })
	t.Logf("old state last seen after the change: deactivation %v, revocation %v (bound 1 s)", deact, rev)
}

// --- Key rotation and public-key algorithms ------------------------------------

// tokServeIn starts a gateway in dir (whose .env the test wrote) with env.
func tokServeIn(t *testing.T, dir string, env []string, args ...string) *gateway {
	t.Helper()
	port := proctest.MustFreePort(t)
	args = append([]string{"serve", "--bind", fmt.Sprintf("127.0.0.1:%d", port), "--workers", "2"}, args...)
	g := run(t, dir, env, args...)
	g.port = port
	g.waitReady()
	return g
}

// tokMint runs `mcpgateway token` in dir with env, as an operator would there.
func tokMint(t *testing.T, dir string, env []string, args ...string) string {
	t.Helper()
	cmd := exec.Command(binary, append([]string{"token", "-u", "admin@example.com", "-e", "60"}, args...)...)
	cmd.Dir, cmd.Env = dir, env
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("mcpgateway token: %v\n%s", err, out)
	}
	return strings.TrimSpace(string(out))
}

// tokHUP reloads g and waits for the outcome: "reload complete" or "reload refused".
func tokHUP(t *testing.T, g *gateway) string {
	t.Helper()
	done, refused := len(g.Log.Events("reload complete")), strings.Count(g.Log.String(), "reload refused")
	g.Signal(syscall.SIGHUP)
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		switch {
		case len(g.Log.Events("reload complete")) > done:
			return "complete"
		case strings.Count(g.Log.String(), "reload refused") > refused:
			return "refused"
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatal("no reload outcome within 20 s")
	return ""
}

// tokMCPSession opens an MCP session and returns its id.
func tokMCPSession(t *testing.T, g *gateway, tok string) string {
	t.Helper()
	req, _ := tokRequest("POST", g.url("/mcp"), tok,
		`{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}`)
	req.Header.Set("Accept", "application/json, text/event-stream")
	resp, err := freshClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	sid := resp.Header.Get("Mcp-Session-Id")
	if resp.StatusCode != 200 || sid == "" {
		t.Fatalf("initialize: %d, session %q", resp.StatusCode, sid)
	}
	return sid
}

// tokMCPPing is the status of a ping in session sid.
func tokMCPPing(t *testing.T, g *gateway, tok, sid string) int {
	t.Helper()
	code, _, err := mcpDo(g, "POST", tok, sid, mcpPingBody)
	if err != nil {
		t.Fatal(err)
	}
	return code
}

func tokRequest(method, url, token, body string) (*http.Request, error) {
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+token)
	return req, nil
}

func tokStatus(tok string, g *gateway) int {
	code, _ := httpDo(freshClient, "POST", g.url("/rpc"), tok, `{"jsonrpc":"2.0","id":1,"method":"ping"}`)
	return code
}

// HS key rotation through .env and HUP: during the rotation tokens and MCP
// sessions of both keys work and new tokens use the new key; once the
// previous key is removed, only the new key's.
func TestHMACKeyRotation(t *testing.T) {
	const k1, k2 = "first-key-0123456789abcdef0123456789", "second-key-0123456789abcdef012345678"
	dir := t.TempDir()
	env := baseEnv(dir)[:1] // PATH only: the key comes from .env, which HUP re-reads
	env = append(env, "HOME="+dir, "XDG_RUNTIME_DIR="+dir, "DATABASE_URL=sqlite:///"+filepath.Join(dir, "mcp.db"))
	writeEnv := func(s string) {
		if err := os.WriteFile(filepath.Join(dir, ".env"), []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	writeEnv("JWT_SECRET_KEY=" + k1 + "\n")
	g := tokServeIn(t, dir, env)
	oldTok := tokMint(t, dir, env)
	sid := tokMCPSession(t, g, oldTok)

	writeEnv("JWT_SECRET_KEY=" + k2 + "\nJWT_SECRET_KEY_PREVIOUS=" + k1 + "\n")
	if got := tokHUP(t, g); got != "complete" {
		t.Fatalf("reload %s:\n%s", got, g.Log.String())
	}
	newTok := tokMint(t, dir, env)
	if s := tokStatus(oldTok, g); s != 200 {
		t.Errorf("old token during the rotation: %d", s)
	}
	if s := tokStatus(newTok, g); s != 200 {
		t.Errorf("new token during the rotation: %d", s)
	}
	if s := tokMCPPing(t, g, oldTok, sid); s != 200 {
		t.Errorf("MCP session of the old key during the rotation: %d", s)
	}
	// The new token is signed with the new key only.
	decode := exec.Command(binary, "token", "--decode", newTok, "-s", k1)
	decode.Dir, decode.Env = t.TempDir(), env[:1]
	if out, err := decode.CombinedOutput(); err == nil {
		t.Errorf("the new token verifies with the old key: %s", out)
	}

	writeEnv("JWT_SECRET_KEY=" + k2 + "\n")
	if got := tokHUP(t, g); got != "complete" {
		t.Fatalf("reload %s", got)
	}
	if s := tokStatus(oldTok, g); s != 401 {
		t.Errorf("old token after the rotation: %d", s)
	}
	if s := tokStatus(newTok, g); s != 200 {
		t.Errorf("new token after the rotation: %d", s)
	}
	if s := tokMCPPing(t, g, newTok, sid); s != 404 {
		t.Errorf("MCP session of the old key after the rotation: %d, want 404", s)
	}
}

func tokWriteRSA(t *testing.T, pubPath, privPath string) {
	t.Helper()
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := x509.MarshalPKIXPublicKey(&k.PublicKey)
	priv, _ := x509.MarshalPKCS8PrivateKey(k)
	if err := os.WriteFile(pubPath, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pub}), 0o644); err != nil {
		t.Fatal(err)
	}
	if privPath != "" {
		if err := os.WriteFile(privPath, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: priv}), 0o600); err != nil {
			t.Fatal(err)
		}
	}
}

// RS256: the master reads the key files (at start and on HUP) and the
// workers verify with the public key; `mcpgateway token` signs with the
// private key; a rotation keeps the previous public key for a while; a bad
// key stops the master (or refuses the reload) naming the setting.
func TestRS256Keys(t *testing.T) {
	keys := t.TempDir()
	pub, priv, old := filepath.Join(keys, "pub.pem"), filepath.Join(keys, "priv.pem"), filepath.Join(keys, "old.pem")
	tokWriteRSA(t, pub, priv)
	dir := t.TempDir()
	env := append(baseEnv(dir), "JWT_ALGORITHM=RS256", "JWT_PUBLIC_KEY_PATH="+pub, "JWT_PRIVATE_KEY_PATH="+priv)
	g := tokServeIn(t, dir, env)
	tok1 := tokMint(t, dir, env)
	if h := strings.Split(tok1, ".")[0]; !strings.Contains(string(tokB64(t, h)), `"RS256"`) {
		t.Fatalf("token header %s", tokB64(t, h))
	}
	if s := tokStatus(tok1, g); s != 200 {
		t.Fatalf("RS256 token: %d", s)
	}
	// An HS256 token (even with the server's JWT_SECRET_KEY) is refused.
	if code, body := httpDo(freshClient, "POST", g.url("/rpc"), tokMint(t, dir, baseEnv(dir)), seedPayload); code != 401 || body != `{"detail":"Invalid token"}` {
		t.Errorf("HS256 token on an RS256 server: %d %s", code, body)
	}

	// Rotate: new pair in place, the old public key as the previous one.
	data, _ := os.ReadFile(pub)
	os.WriteFile(old, data, 0o644)
	tokWriteRSA(t, pub, priv)
	os.WriteFile(filepath.Join(dir, ".env"), []byte("JWT_PUBLIC_KEY_PATH_PREVIOUS="+old+"\n"), 0o600)
	if got := tokHUP(t, g); got != "complete" {
		t.Fatalf("reload %s:\n%s", got, g.Log.String())
	}
	tok2 := tokMint(t, dir, env)
	if s1, s2 := tokStatus(tok1, g), tokStatus(tok2, g); s1 != 200 || s2 != 200 {
		t.Errorf("during the rotation: old %d, new %d", s1, s2)
	}
	os.WriteFile(filepath.Join(dir, ".env"), nil, 0o600)
	if got := tokHUP(t, g); got != "complete" {
		t.Fatalf("reload %s", got)
	}
	if s1, s2 := tokStatus(tok1, g), tokStatus(tok2, g); s1 != 401 || s2 != 200 {
		t.Errorf("after the rotation: old %d, new %d", s1, s2)
	}

	// A broken key file: the reload is refused, naming the setting, and the
	// running workers keep their key.
	os.WriteFile(pub, []byte("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n"), 0o644)
	if got := tokHUP(t, g); got != "refused" || !strings.Contains(g.Log.String(), "JWTPublicKeyPath") {
		t.Errorf("reload with a broken key: %s", got)
	}
	if s := tokStatus(tok2, g); s != 200 {
		t.Errorf("after a refused reload: %d", s)
	}

	// At start: a missing file, or a key of the wrong type, stops the master
	// before it binds anything.
	for name, envs := range map[string][]string{
		"missing":    {"JWT_PUBLIC_KEY_PATH=" + filepath.Join(keys, "nope.pem")},
		"wrong type": {"JWT_ALGORITHM=ES256"},
		"no path":    {"JWT_PUBLIC_KEY_PATH="},
	} {
		t.Run(name, func(t *testing.T) {
			d := t.TempDir()
			port := proctest.MustFreePort(t)
			tokWriteRSA(t, filepath.Join(d, "pub.pem"), "")
			e := append(baseEnv(d), "JWT_ALGORITHM=RS256", "JWT_PUBLIC_KEY_PATH="+filepath.Join(d, "pub.pem"))
			e = append(e, envs...)
			s := run(t, d, e, "serve", "--bind", fmt.Sprintf("127.0.0.1:%d", port))
			if code := s.MustWait(t, 10*time.Second); code == 0 {
				t.Fatal("exit status 0")
			}
			refusedBeforeBinding(t, s, port, []string{"JWTPublicKeyPath", "JWT_"})
		})
	}
}

func tokB64(t *testing.T, s string) []byte {
	t.Helper()
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
