package config

import (
	"errors"
	"flag"
	"strings"
	"testing"
)

// TestWeakSecretRefusedOffLoopback: a short or known key is refused when a
// listener is not loopback, naming JWT_SECRET_KEY and how to make a good
// one; it is allowed when every listener is loopback.
func TestWeakSecretRefusedOffLoopback(t *testing.T) {
	weak := []string{"my-test-key", "changeme", "change-me", "secret", "REPLACE-ME", "test-secret",
		"CHANGEME", " secret ", "short", strings.Repeat("x", 31),
		"REPLACE-ME-with-the-output-of-mcpgateway-secret-0123456789"}
	open := [][]string{nil, {"HOST=0.0.0.0"}, {"HOST=::"}, {"GUNICORN_BIND=:4444"},
		{"GUNICORN_BIND=127.0.0.1:1,0.0.0.0:2"}, {"GUNICORN_BIND=unix:/run/gw.sock"},
		{"HOST=gateway.example.com"}, {"HOST=10.0.0.5"}}
	for _, key := range weak {
		for _, env := range open {
			e := mustFail(t, in(t, nil, append([]string{"JWT_SECRET_KEY=" + key}, env...)...))
			if e.Setting != "JWTSecretKey" || e.Source != "env JWT_SECRET_KEY" || !errors.Is(e, ErrWeakSecret) {
				t.Errorf("%q %v: error %#v", key, env, e)
			}
			msg := e.Error()
			for _, want := range []string{"JWT_SECRET_KEY", "mcpgateway secret", "32", "127.0.0.1"} {
				if !strings.Contains(msg, want) {
					t.Errorf("%q %v: %q does not say %q", key, env, msg, want)
				}
			}
			if k := strings.TrimSpace(key); (strings.Contains(k, "-") || len(k) > 20) && strings.Contains(msg, k) {
				t.Errorf("%q: the error shows the key: %s", key, msg)
			}
		}
	}
	loopback := [][]string{{"HOST=127.0.0.1"}, {"HOST=localhost"}, {"HOST=::1"}, {"HOST=[::1]"},
		{"GUNICORN_BIND=127.0.0.1:1,[::1]:2,localhost:3"}, {"HOST=127.0.0.2"}}
	for _, key := range weak {
		for _, env := range loopback {
			r := mustLoad(t, in(t, nil, append([]string{"JWT_SECRET_KEY=" + key}, env...)...))
			if r.Settings.JWTSecretKey != key {
				t.Errorf("%q %v: key %q", key, env, r.Settings.JWTSecretKey)
			}
		}
	}
	// Other layers name their source: .env, flags, conf file.
	input := in(t, []string{"--bind", "0.0.0.0:4444"})
	writeFile(t, input.Dir, ".env", "JWT_SECRET_KEY=my-test-key\n")
	e := mustFail(t, input)
	checkError(t, e, "JWTSecretKey", "dotenv .env:1 JWT_SECRET_KEY", "********")
	input = in(t, nil)
	writeFile(t, input.Dir, ".env", "HOST=127.0.0.1\nJWT_SECRET_KEY=my-test-key\n")
	mustLoad(t, input)
	if e := mustFail(t, withArgs(input, "--bind", "0.0.0.0:1")); e.Setting != "JWTSecretKey" {
		t.Errorf("flag --bind 0.0.0.0 over a loopback .env: %v", e)
	}
}

func withArgs(input Input, args ...string) Input {
	input.Args = args
	return input
}

// TestGoodSecretAnywhere: 32 bytes or more that are no known default pass on
// any bind; a generated key (JWT_SECRET_KEY unset) passes too.
func TestGoodSecretAnywhere(t *testing.T) {
	for _, key := range []string{testKey, "Zm9vYmFyYmF6cXV4cXV1eHF1dXhxdXV4cXV1eHF1dXg", strings.Repeat("k", 32)} {
		for _, env := range [][]string{nil, {"HOST=0.0.0.0"}, {"GUNICORN_BIND=unix:/run/gw.sock"}, {"HOST=127.0.0.1"}} {
			mustLoad(t, in(t, nil, append([]string{"JWT_SECRET_KEY=" + key}, env...)...))
		}
	}
	r := mustLoad(t, in(t, nil, "HOST=0.0.0.0"))
	if r.Sources["JWTSecretKey"].Kind != "generated" || WeakSecret(r.Settings.JWTSecretKey) != "" {
		t.Errorf("generated key %q from %v", r.Settings.JWTSecretKey, r.Sources["JWTSecretKey"])
	}
}

func TestWeakSecret(t *testing.T) {
	for key, want := range map[string]string{
		"my-test-key": "known public default", "Secret": "known public default", "changeme": "placeholder", "my-secret-key": "known public default",
		"REPLACE-ME": "placeholder", "replace-me-0123456789-0123456789-0123456789": "placeholder",
		"abc": "3 bytes long", strings.Repeat("a", 31): "31 bytes long", "": "0 bytes long",
		testKey: "",
	} {
		got := WeakSecret(key)
		if (want == "") != (got == "") || !strings.Contains(got, want) {
			t.Errorf("WeakSecret(%q) = %q, want %q", key, got, want)
		}
	}
}

func TestLoopbackOnly(t *testing.T) {
	for binds, want := range map[string]bool{
		"127.0.0.1:4444": true, "localhost:1": true, "[::1]:1": true, "127.1.2.3:1,[::1]:2": true,
		"0.0.0.0:4444": false, ":4444": false, "[::]:1": false, "127.0.0.1:1,0.0.0.0:2": false,
		"unix:/run/x.sock": false, "example.com:80": false, "": false,
	} {
		var list []string
		if binds != "" {
			list = strings.Split(binds, ",")
		}
		if got := LoopbackOnly(list); got != want {
			t.Errorf("LoopbackOnly(%q) = %v, want %v", binds, got, want)
		}
	}
}

func TestAllowedOrigins(t *testing.T) {
	r := mustLoad(t, in(t, nil))
	if len(r.Settings.AllowedOrigins) != 0 || !r.Settings.CORSEnabled {
		t.Errorf("defaults: AllowedOrigins %q CORSEnabled %v", r.Settings.AllowedOrigins, r.Settings.CORSEnabled)
	}
	r = mustLoad(t, in(t, nil, "ALLOWED_ORIGINS=https://App.Example.com/, http://localhost:3000", "CORS_ENABLED=false"))
	if got := strings.Join(r.Settings.AllowedOrigins, " "); got != "https://app.example.com http://localhost:3000" || r.Settings.CORSEnabled {
		t.Errorf("AllowedOrigins %q CORSEnabled %v", got, r.Settings.CORSEnabled)
	}
	if r := mustLoad(t, in(t, nil, "ALLOWED_ORIGINS=*")); strings.Join(r.Settings.AllowedOrigins, ",") != "*" {
		t.Errorf("*: %q", r.Settings.AllowedOrigins)
	}
	for _, bad := range []string{"example.com", "https://example.com/app", "https://user@example.com"} {
		e := mustFail(t, in(t, nil, "ALLOWED_ORIGINS="+bad))
		if e.Setting != "AllowedOrigins" || e.Source != "env ALLOWED_ORIGINS" {
			t.Errorf("%q: %v", bad, e)
		}
	}
}

// TestWeakSecretClientCommands: status, reload, scale and stop only find the
// server (Input.Command set): a weak key does not stop them.
func TestWeakSecretClientCommands(t *testing.T) {
	input := in(t, nil, "JWT_SECRET_KEY=my-test-key", "HOST=0.0.0.0")
	input.Command = flag.NewFlagSet("status", flag.ContinueOnError)
	mustLoad(t, input)
}

// TestWeakSecretNoSecretCheck: token and healthcheck serve nothing.
func TestWeakSecretNoSecretCheck(t *testing.T) {
	input := in(t, nil, "JWT_SECRET_KEY=my-test-key", "HOST=0.0.0.0")
	input.NoSecretCheck = true
	if r := mustLoad(t, input); r.Settings.JWTSecretKey != "my-test-key" {
		t.Errorf("key %q", r.Settings.JWTSecretKey)
	}
}
