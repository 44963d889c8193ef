package main

import (
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/mcpgateway/mcpgateway/config"
	"github.com/mcpgateway/mcpgateway/store"
	"github.com/mcpgateway/mcpgateway/supervisor/control"
	"github.com/mcpgateway/mcpgateway/supervisor/protocol"
)

// testEnv is a command's world: an empty directory (no gunicorn.conf.go,
// no .env), XDG_RUNTIME_DIR set to another one, and captured output.
type testEnv struct {
	env
	out, errOut *strings.Builder
	runtimeDir  string
}

func newTestEnv(t *testing.T) *testEnv {
	t.Helper()
	runtimeDir := shortTempDir(t)
	te := &testEnv{out: &strings.Builder{}, errOut: &strings.Builder{}, runtimeDir: runtimeDir}
	te.env = env{environ: []string{"XDG_RUNTIME_DIR=" + runtimeDir, "JWT_SECRET_KEY=k"}, dir: t.TempDir(), out: te.out, err: te.errOut}
	return te
}

// shortTempDir keeps socket paths under the 107-byte limit.
func shortTempDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "gwctl")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// fakeMaster serves a control socket at path and records the requests.
type fakeMaster struct {
	mu   sync.Mutex
	got  []control.Request
	resp control.Reply
}

func startFakeMaster(t *testing.T, path string, resp control.Reply) *fakeMaster {
	t.Helper()
	m := &fakeMaster{resp: resp}
	ln, err := control.Listen(path)
	if err != nil {
		t.Fatalf("Listen %s: %v", path, err)
	}
	done := make(chan error, 1)
	go func() {
		done <- control.Serve(ln, func(r control.Request) control.Reply {
			m.mu.Lock()
			defer m.mu.Unlock()
			m.got = append(m.got, r)
			return m.resp
		})
	}()
	t.Cleanup(func() { ln.Close(); <-done })
	return m
}

func (m *fakeMaster) requests() []control.Request {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]control.Request(nil), m.got...)
}

func TestClientArguments(t *testing.T) {
	te := newTestEnv(t)
	path := filepath.Join(te.runtimeDir, "gw.ctl")
	m := startFakeMaster(t, path, control.Reply{OK: true, Status: "scaling from 2 to 3"})
	for _, tc := range []struct {
		cmd  string
		args []string
		code int
		want control.Request // zero: no request reaches the master
		msg  string          // in the error output
	}{
		{"scale", []string{"3", "--control-socket", path}, 0, control.Request{Cmd: "scale", N: 3}, ""},
		{"scale", []string{"--control-socket", path, "5"}, 0, control.Request{Cmd: "scale", N: 5}, ""},
		{"scale", []string{"--control-socket=" + path, "--wait", "5s", "7"}, 0, control.Request{Cmd: "scale", N: 7}, ""},
		{"reload", []string{"--control-socket", path}, 0, control.Request{Cmd: "reload"}, ""},
		{"stop", []string{"--wait=2s", "--control-socket", path}, 0, control.Request{Cmd: "stop"}, ""},
		{"scale", []string{"--control-socket", path}, 2, control.Request{}, "scale needs a number"},
		{"scale", []string{"many", "--control-socket", path}, 2, control.Request{}, `"many" is not a number`},
		{"scale", []string{"--control-socket", path, "many"}, 2, control.Request{}, `"many" is not a number`},
		{"scale", []string{"0", "--control-socket", path}, 2, control.Request{}, "from 1 to 256"},
		{"scale", []string{"3", "--control-socket", path, "4"}, 2, control.Request{}, `unexpected argument "4"`},
		{"reload", []string{"now", "--control-socket", path}, 2, control.Request{}, `unexpected argument "now"`},
		{"stop", []string{"--bogus"}, 2, control.Request{}, "bogus"},
		{"stop", []string{"--wait", "soon"}, 2, control.Request{}, "wait"},
		{"reload", []string{"--workers", "abc"}, 2, control.Request{}, "Workers"},
	} {
		te.out.Reset()
		te.errOut.Reset()
		before := len(m.requests())
		code := clientCommand(tc.cmd, tc.args, te.env)
		got := m.requests()[before:]
		if code != tc.code {
			t.Errorf("%s %q: exit %d, want %d (stderr %q)", tc.cmd, tc.args, code, tc.code, te.errOut)
		}
		switch {
		case tc.want == (control.Request{}) && len(got) != 0:
			t.Errorf("%s %q: sent %+v", tc.cmd, tc.args, got)
		case tc.want != (control.Request{}) && (len(got) != 1 || got[0] != tc.want):
			t.Errorf("%s %q: sent %+v, want %+v", tc.cmd, tc.args, got, tc.want)
		}
		if tc.msg != "" && !strings.Contains(te.errOut.String(), tc.msg) {
			t.Errorf("%s %q: stderr %q lacks %q", tc.cmd, tc.args, te.errOut, tc.msg)
		}
		if tc.code == 0 && !strings.Contains(te.out.String(), "scaling from 2 to 3") {
			t.Errorf("%s %q: the answer is not printed: %q", tc.cmd, tc.args, te.out)
		}
	}

	te.out.Reset()
	if code := clientCommand("reload", []string{"--help"}, te.env); code != 0 || !strings.Contains(te.out.String(), "mcpgateway scale N") {
		t.Errorf("--help: exit %d, %q", code, te.out)
	}
}

// TestClientFindsTheServer: the same settings as the server give the same
// socket, from flags or .env, and a socket in /tmp is found when the
// server had no XDG_RUNTIME_DIR.
func TestClientFindsTheServer(t *testing.T) {
	te := newTestEnv(t)
	byFlag := startFakeMaster(t, config.DefaultControlSocket([]string{"127.0.0.1:4999"}, te.dir, te.runtimeDir), control.Reply{OK: true})
	if code := clientCommand("reload", []string{"--bind", "127.0.0.1:4999"}, te.env); code != 0 || len(byFlag.requests()) != 1 {
		t.Errorf("--bind: exit %d, requests %v, stderr %q", code, byFlag.requests(), te.errOut)
	}

	if err := os.WriteFile(filepath.Join(te.dir, ".env"), []byte("GUNICORN_BIND=127.0.0.1:4998\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	byDotenv := startFakeMaster(t, config.DefaultControlSocket([]string{"127.0.0.1:4998"}, te.dir, te.runtimeDir), control.Reply{OK: true})
	if code := clientCommand("stop", nil, te.env); code != 0 || len(byDotenv.requests()) != 1 {
		t.Errorf(".env: exit %d, requests %v, stderr %q", code, byDotenv.requests(), te.errOut)
	}

	// A server started without XDG_RUNTIME_DIR (a system service) listens in
	// /tmp; a relative unix: bind in this test's directory keeps the name
	// unique to the test.
	binds := []string{"unix:gw.sock"}
	inTmp := config.DefaultControlSocket(binds, te.dir, "")
	if filepath.Dir(inTmp) != config.FallbackRuntimeDir {
		t.Fatalf("fallback socket %s", inTmp)
	}
	fallback := startFakeMaster(t, inTmp, control.Reply{OK: true})
	if code := clientCommand("scale", []string{"2", "--bind", "unix:gw.sock"}, te.env); code != 0 || len(fallback.requests()) != 1 {
		t.Errorf("fallback to /tmp: exit %d, requests %v, stderr %q", code, fallback.requests(), te.errOut)
	}
}

func TestClientFailures(t *testing.T) {
	te := newTestEnv(t)
	path := filepath.Join(te.runtimeDir, "gw.ctl")
	startFakeMaster(t, path, control.Reply{Error: "reload refused: database capacity"})
	if code := clientCommand("reload", []string{"--control-socket", path}, te.env); code != 1 ||
		!strings.Contains(te.errOut.String(), "refused by the server") || !strings.Contains(te.errOut.String(), "database capacity") {
		t.Errorf("refused: exit %d, stderr %q", code, te.errOut)
	}

	te.errOut.Reset()
	if code := clientCommand("stop", []string{"--bind", "127.0.0.1:4997"}, te.env); code != 1 ||
		!strings.Contains(te.errOut.String(), "no server answers") || !strings.Contains(te.errOut.String(), "--bind or --control-socket") {
		t.Errorf("no server: exit %d, stderr %q", code, te.errOut)
	}

	te.errOut.Reset()
	if code := clientCommand("stop", []string{"--control-socket", "off"}, te.env); code != 1 || !strings.Contains(te.errOut.String(), "control socket is off") {
		t.Errorf("off: exit %d, stderr %q", code, te.errOut)
	}
}

func TestStatusCommand(t *testing.T) {
	te := newTestEnv(t)
	path := filepath.Join(te.runtimeDir, "gw.ctl")
	m := startFakeMaster(t, path, control.Reply{OK: true, Status: "master 1  up 1s\n"})
	if code := status([]string{"--control-socket", path}, te.env); code != 0 || te.out.String() != "master 1  up 1s\n" {
		t.Errorf("status: exit %d, out %q, stderr %q", code, te.out, te.errOut)
	}
	if got := m.requests(); len(got) != 1 || got[0] != (control.Request{Cmd: control.CmdStatus}) {
		t.Errorf("requests %+v", got)
	}

	missing := filepath.Join(te.dir, "missing.pid")
	for _, tc := range []struct {
		name    string
		args    []string
		environ []string
		dotenv  string
		code    int
		msg     string
	}{
		{"off, no pidfile", []string{"--control-socket", "off"}, nil, "", 2, "pass --pid PID or --pidfile PATH"},
		{"--pidfile wins over the socket", []string{"--control-socket", path, "--pidfile", missing}, nil, "", 1, "read pidfile " + missing},
		{"no server: the configured Pidfile", []string{"--bind", "127.0.0.1:4996"}, []string{"GUNICORN_PIDFILE=" + missing}, "", 1, "read pidfile " + missing},
		{"no server, no pidfile", []string{"--bind", "127.0.0.1:4996"}, nil, "", 1, "no server answers"},
		{"--pid reads the table", []string{"--pid", "1"}, nil, "", 1, "mcpgateway status:"},
		{"a broken .env does not stop --pidfile", []string{"--pidfile=" + missing}, nil, "GUNICORN_WORKERS=abc\n", 1, "read pidfile " + missing},
		{"a broken .env is reported", nil, nil, "GUNICORN_WORKERS=abc\n", 1, "Workers"},
		{"positional argument", []string{"now"}, nil, "", 2, `unexpected argument "now"`},
	} {
		te := newTestEnv(t)
		te.environ = append(te.environ, tc.environ...)
		if tc.dotenv != "" {
			os.WriteFile(filepath.Join(te.dir, ".env"), []byte(tc.dotenv), 0o644)
		}
		if code := status(tc.args, te.env); code != tc.code || !strings.Contains(te.errOut.String(), tc.msg) {
			t.Errorf("%s: exit %d (want %d), stderr %q (want %q)", tc.name, code, tc.code, te.errOut, tc.msg)
		}
	}

	te = newTestEnv(t)
	if code := status([]string{"-h"}, te.env); code != 0 || !strings.Contains(te.out.String(), "--pidfile PATH") {
		t.Errorf("-h: exit %d, %q", code, te.out)
	}
}

func TestPidfileArg(t *testing.T) {
	for _, tc := range []struct {
		args  []string
		want  string
		given bool
	}{
		{[]string{"--pidfile", "a.pid"}, "a.pid", true},
		{[]string{"-pidfile=b.pid"}, "b.pid", true},
		{[]string{"--bind", "x", "-p", "c.pid"}, "c.pid", true},
		{[]string{"--pid", "3"}, "", false},
		{[]string{"pidfile"}, "", false},
		{nil, "", false},
	} {
		if got, given := pidfileArg(tc.args); got != tc.want || given != tc.given {
			t.Errorf("%q: %q %v, want %q %v", tc.args, got, given, tc.want, tc.given)
		}
	}
}

// TestMasterPIDNameAgrees: the store names its sessions after the master
// whose pid the supervisor puts in this variable.
func TestMasterPIDNameAgrees(t *testing.T) {
	if store.EnvMasterPID != protocol.EnvMasterPID {
		t.Errorf("store.EnvMasterPID %q, protocol.EnvMasterPID %q", store.EnvMasterPID, protocol.EnvMasterPID)
	}
}
