package tests

import (
	"encoding/base64"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mcpgateway/mcpgateway/internal/proctest"
)

// A server bound to every interface (0.0.0.0) refuses a weak or known
// JWT_SECRET_KEY before it binds anything, naming the setting and how to
// make a good one. The test binds 0.0.0.0 only for the moment of the
// refusal, and reaches servers on 127.0.0.1 only.
func TestWeakSecretRefusedOnOpenBind(t *testing.T) {
	for _, key := range []string{"my-test-key", "test-secret", "REPLACE-ME-with-mcpgateway-secret", "short-key-of-20-byte"} {
		t.Run(key, func(t *testing.T) {
			dir := t.TempDir()
			port := proctest.MustFreePort(t)
			env := append(baseEnv(dir), "JWT_SECRET_KEY="+key)
			g := run(t, dir, env, "serve", "--bind", fmt.Sprintf("0.0.0.0:%d", port))
			if code := g.MustWait(t, 10*time.Second); code == 0 {
				t.Fatal("exit status 0 with a weak key on 0.0.0.0")
			}
			refusedBeforeBinding(t, g, port, []string{"JWT_SECRET_KEY", "mcpgateway secret", "32"})
			if strings.Contains(g.Log.String(), key) {
				t.Errorf("the error shows the key:\n%s", g.Log.String())
			}
			// `mcpgateway config` says the same.
			c := run(t, dir, env, "config", "--bind", fmt.Sprintf("0.0.0.0:%d", port))
			if code := c.MustWait(t, 10*time.Second); code == 0 || !strings.Contains(c.Log.String(), "JWT_SECRET_KEY") {
				t.Errorf("mcpgateway config: exit %d\n%s", code, c.Log.String())
			}
		})
	}
}

// The same weak key on a loopback bind is a development server: it starts,
// and checks Origin and Host on /rpc (DNS rebinding).
func TestWeakSecretOnLoopbackAndOriginChecks(t *testing.T) {
	g := serve(t, []string{"JWT_SECRET_KEY=test-secret", "ALLOWED_ORIGINS=http://app.localhost:3000"}, "--workers", "1")
	out, err := exec.Command(binary, "token", "-u", "admin@example.com", "-e", "60", "-s", "test-secret").Output()
	if err != nil {
		t.Fatalf("mcpgateway token: %v", err)
	}
	tok := strings.TrimSpace(string(out))
	post := func(headers ...string) (int, string, http.Header) {
		t.Helper()
		req, _ := http.NewRequest("POST", g.url("/rpc"), strings.NewReader(`{"jsonrpc":"2.0","id":1,"method":"ping"}`))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Authorization", "Bearer "+tok)
		for i := 0; i+1 < len(headers); i += 2 {
			if headers[i] == "Host" {
				req.Host = headers[i+1]
				continue
			}
			req.Header.Set(headers[i], headers[i+1])
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b), resp.Header
	}
	if code, body, _ := post(); code != 200 {
		t.Errorf("no Origin: %d %s", code, body)
	}
	host := fmt.Sprintf("127.0.0.1:%d", g.port)
	if code, body, _ := post("Origin", "http://"+host); code != 200 {
		t.Errorf("same origin: %d %s", code, body)
	}
	if code, body, _ := post("Origin", "https://evil.example"); code != 403 || !strings.Contains(body, `"error"`) {
		t.Errorf("foreign Origin: %d %s", code, body)
	}
	if code, body, h := post("Origin", "http://app.localhost:3000"); code != 200 || h.Get("Access-Control-Allow-Origin") != "http://app.localhost:3000" {
		t.Errorf("allowed Origin: %d %q %s", code, h.Get("Access-Control-Allow-Origin"), body)
	}
	rebound := fmt.Sprintf("evil.example:%d", g.port)
	if code, body, _ := post("Host", rebound, "Origin", "http://"+rebound); code != 403 || !strings.Contains(body, "Host") {
		t.Errorf("DNS rebinding (foreign Host, same origin): %d %s", code, body)
	}
}

// `make .env` (the Makefile's recipe, run in a copy) and `mcpgateway
// secret` make a new random key each time, of 32 bytes, that a server on
// 0.0.0.0 accepts.
func TestNewSecrets(t *testing.T) {
	keys := map[string]bool{}
	for range 2 {
		out, err := exec.Command(binary, "secret").Output()
		if err != nil {
			t.Fatalf("mcpgateway secret: %v", err)
		}
		keys[checkKey(t, strings.TrimSpace(string(out)))] = true
	}
	if len(keys) != 2 {
		t.Errorf("mcpgateway secret made the same key twice")
	}

	if _, err := exec.LookPath("make"); err != nil {
		t.Skip("no make")
	}
	keys = map[string]bool{}
	for _, withBinary := range []bool{true, false, true} {
		dir := t.TempDir()
		for _, name := range []string{"Makefile", ".env.example"} {
			data, err := os.ReadFile(filepath.Join("..", name))
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(dir, name), data, 0o644); err != nil {
				t.Fatal(err)
			}
		}
		if withBinary { // as after `make build`; else the recipe reads /dev/urandom
			if err := os.MkdirAll(filepath.Join(dir, "bin"), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.Symlink(binary, filepath.Join(dir, "bin", "mcpgateway")); err != nil {
				t.Fatal(err)
			}
		}
		cmd := exec.Command("make", "-s", ".env")
		cmd.Dir = dir
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("make .env: %v\n%s", err, out)
		}
		st, err := os.Stat(filepath.Join(dir, ".env"))
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Perm()&0o077 != 0 {
			t.Errorf(".env mode %v: others can read the key", st.Mode().Perm())
		}
		data, _ := os.ReadFile(filepath.Join(dir, ".env"))
		var key string
		for _, l := range strings.Split(string(data), "\n") {
			if v, ok := strings.CutPrefix(l, "JWT_SECRET_KEY="); ok {
				key = v
			}
		}
		keys[checkKey(t, key)] = true
		// The server reads it and accepts it on 0.0.0.0 (.env.example's HOST).
		c := run(t, dir, []string{"PATH=" + os.Getenv("PATH"), "HOME=" + dir, "XDG_RUNTIME_DIR=" + dir}, "config")
		if code := c.MustWait(t, 10*time.Second); code != 0 || !strings.Contains(c.Log.String(), "0.0.0.0:4444") {
			t.Errorf("mcpgateway config with the new .env: exit %d\n%s", code, c.Log.String())
		}
	}
	if len(keys) != 3 {
		t.Errorf("make .env made the same key twice")
	}
}

// checkKey: 32 random bytes in unpadded base64url.
func checkKey(t *testing.T, key string) string {
	t.Helper()
	raw, err := base64.RawURLEncoding.DecodeString(key)
	if err != nil || len(raw) < 32 {
		t.Errorf("key %q: %v, %d bytes", key, err, len(raw))
	}
	return key
}
