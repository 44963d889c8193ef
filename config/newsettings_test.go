package config

import (
	"errors"
	"flag"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestTimeoutZero: 0 means no timeout, as in Gunicorn, in every layer and
// both profiles; a negative value is refused, naming the setting.
func TestTimeoutZero(t *testing.T) {
	for _, profile := range []string{ProfileGunicorn, ProfileGranian} {
		r := mustLoad(t, in(t, nil, "HTTP_SERVER="+profile, "GUNICORN_TIMEOUT=0"))
		if r.Settings.Timeout != 0 || r.Sources["Timeout"] != (Source{"env", "GUNICORN_TIMEOUT"}) {
			t.Errorf("%s: Timeout %s from %v", profile, r.Settings.Timeout, r.Sources["Timeout"])
		}
	}
	if r := mustLoad(t, in(t, []string{"--timeout", "0"})); r.Settings.Timeout != 0 {
		t.Errorf("--timeout 0: %s", r.Settings.Timeout)
	}
	input := in(t, nil)
	writeFile(t, input.Dir, "gunicorn.conf.go", "//go:build ignore\n\npackage main\n\nconst Timeout = 0\n")
	if r := mustLoad(t, input); r.Settings.Timeout != 0 || r.Sources["Timeout"].Kind != "file" {
		t.Errorf("conf file: Timeout %s from %v", r.Settings.Timeout, r.Sources["Timeout"])
	}
	e := mustFail(t, in(t, []string{"-t", "-5s"}))
	checkError(t, e, "Timeout", "flag -t", "-5s")
	if !strings.Contains(e.Error(), "0 = no timeout") {
		t.Errorf("message does not say what 0 means: %v", e)
	}
}

func TestLogFormat(t *testing.T) {
	if r := mustLoad(t, in(t, nil)); r.Settings.LogFormat != LogFormatAuto || r.Sources["LogFormat"].Kind != "default" {
		t.Errorf("default LogFormat %q from %v", r.Settings.LogFormat, r.Sources["LogFormat"])
	}
	for _, profile := range []string{ProfileGunicorn, ProfileGranian} {
		r := mustLoad(t, in(t, nil, "HTTP_SERVER="+profile, "LOG_FORMAT= JSON "))
		if r.Settings.LogFormat != LogFormatJSON || r.Sources["LogFormat"] != (Source{"env", "LOG_FORMAT"}) {
			t.Errorf("%s: LogFormat %q from %v", profile, r.Settings.LogFormat, r.Sources["LogFormat"])
		}
	}
	if r := mustLoad(t, in(t, []string{"--log-format", "console"}, "LOG_FORMAT=json")); r.Settings.LogFormat != LogFormatConsole {
		t.Errorf("--log-format beats LOG_FORMAT: %q", r.Settings.LogFormat)
	}
	input := in(t, nil)
	writeFile(t, input.Dir, "gunicorn.conf.go", "//go:build ignore\n\npackage main\n\nconst LogFormat = \"console\"\n")
	if r := mustLoad(t, input); r.Settings.LogFormat != LogFormatConsole {
		t.Errorf("conf file LogFormat: %q", r.Settings.LogFormat)
	}
	e := mustFail(t, in(t, []string{"--log-format", "pretty"}))
	checkError(t, e, "LogFormat", "flag --log-format", "pretty")
	for _, want := range []string{`"auto"`, `"json"`, `"console"`} {
		if !strings.Contains(e.Error(), want) {
			t.Errorf("%v does not list %s", e, want)
		}
	}
}

// TestPreloadAppWarns: accepted, but a true value says it does nothing.
func TestPreloadAppWarns(t *testing.T) {
	if r := mustLoad(t, in(t, nil)); hasWarning(r, "PreloadApp") {
		t.Errorf("default PreloadApp warned: %q", r.Warnings)
	}
	for _, input := range []Input{in(t, []string{"--preload"}), in(t, nil, "GUNICORN_PRELOAD_APP=true")} {
		r := mustLoad(t, input)
		if !r.Settings.PreloadApp || !hasWarning(r, "PreloadApp is true") || !hasWarning(r, "no effect") {
			t.Errorf("%v %v: PreloadApp %v, warnings %q", input.Args, input.Environ, r.Settings.PreloadApp, r.Warnings)
		}
	}
}

func TestControlSocket(t *testing.T) {
	r := mustLoad(t, in(t, nil, "XDG_RUNTIME_DIR=/run/user/1000"))
	if got, want := r.Settings.ControlSocket, "/run/user/1000/mcpgateway-0.0.0.0_4444.ctl"; got != want {
		t.Errorf("ControlSocket = %q, want %q", got, want)
	}
	if src := r.Sources["ControlSocket"]; src.Kind != "derived" || !strings.Contains(src.Name, "XDG_RUNTIME_DIR") {
		t.Errorf("source %v", src)
	}
	r = mustLoad(t, in(t, []string{"--bind", "127.0.0.1:8000"}))
	if got, want := r.Settings.ControlSocket, "/tmp/mcpgateway-127.0.0.1_8000.ctl"; got != want {
		t.Errorf("without XDG_RUNTIME_DIR: %q, want %q", got, want)
	}
	if src := r.Sources["ControlSocket"]; !strings.Contains(src.Name, "/tmp") {
		t.Errorf("source %v does not say /tmp", src)
	}

	for _, tc := range []struct {
		input Input
		want  string
		src   Source
	}{
		{in(t, []string{"--control-socket", "off"}), ControlSocketOff, Source{"flag", "--control-socket"}},
		{in(t, nil, "CONTROL_SOCKET=Off"), ControlSocketOff, Source{"env", "CONTROL_SOCKET"}},
		{in(t, nil, "GUNICORN_CONTROL_SOCKET=/run/m/m.ctl"), "/run/m/m.ctl", Source{"env", "GUNICORN_CONTROL_SOCKET"}},
		{in(t, []string{"--control-socket=gw.ctl"}), "gw.ctl", Source{"flag", "--control-socket"}},
	} {
		r := mustLoad(t, tc.input)
		if r.Settings.ControlSocket != tc.want || r.Sources["ControlSocket"] != tc.src {
			t.Errorf("%v %v: %q from %v, want %q from %v", tc.input.Args, tc.input.Environ,
				r.Settings.ControlSocket, r.Sources["ControlSocket"], tc.want, tc.src)
		}
	}
	long := "/" + strings.Repeat("d", 120) + "/m.ctl"
	checkError(t, mustFail(t, in(t, []string{"--control-socket", long})), "ControlSocket", "flag --control-socket", long)
	e := mustFail(t, in(t, nil, "XDG_RUNTIME_DIR=/"+strings.Repeat("r", 100)))
	if e.Setting != "ControlSocket" || !strings.Contains(e.Source, "derived") {
		t.Errorf("derived path too long: %v", e)
	}
}

// TestDefaultControlSocket: unique per instance, stable for a client.
func TestDefaultControlSocket(t *testing.T) {
	dirA, dirB := t.TempDir(), t.TempDir()
	seen := map[string]string{}
	for _, tc := range []struct {
		binds []string
		dir   string
	}{
		{[]string{"127.0.0.1:4444"}, dirA},
		{[]string{"127.0.0.1:4445"}, dirA},
		{[]string{"0.0.0.0:4444"}, dirA},
		{[]string{"[::1]:4444"}, dirA},
		{[]string{"[::]:4444"}, dirA},
		{[]string{"127.0.0.1:4444", "unix:/run/gw.sock"}, dirA},
		{[]string{"unix:gw.sock"}, dirA},
		{[]string{"unix:gw.sock"}, dirB}, // the same relative path in another directory
		{[]string{"unix:" + strings.Repeat("long/", 30) + "gw.sock"}, dirA},
	} {
		p := DefaultControlSocket(tc.binds, tc.dir, "")
		key := strings.Join(tc.binds, ",") + " in " + tc.dir
		if prev, dup := seen[p]; dup {
			t.Errorf("%s and %s share %s", prev, key, p)
		}
		seen[p] = key
		if filepath.Dir(p) != "/tmp" || !strings.HasPrefix(filepath.Base(p), "mcpgateway-") ||
			!strings.HasSuffix(p, ".ctl") || len(p) > maxSocketPath {
			t.Errorf("%s: %q", key, p)
		}
		if again := DefaultControlSocket(tc.binds, tc.dir, ""); again != p {
			t.Errorf("%s: not stable: %q then %q", key, p, again)
		}
	}
	// A relative unix: bind is the same socket whether given relative to
	// the directory or as its absolute path.
	if a, b := DefaultControlSocket([]string{"unix:gw.sock"}, dirA, ""), DefaultControlSocket([]string{"unix:" + filepath.Join(dirA, "gw.sock")}, "/", ""); a != b {
		t.Errorf("relative %q, absolute %q", a, b)
	}
}

// TestCommandFlags: client commands parse their own flags with serve's.
func TestCommandFlags(t *testing.T) {
	cmd := flag.NewFlagSet("scale", flag.ContinueOnError)
	pid := cmd.Int("pid", 0, "")
	wait := cmd.Duration("wait", time.Second, "")
	input := in(t, []string{"--pid", "42", "--bind", "127.0.0.1:9", "--wait=3s", "7"})
	input.Command = cmd
	r := mustLoad(t, input)
	if *pid != 42 || *wait != 3*time.Second || r.Settings.Bind[0] != "127.0.0.1:9" || len(r.Args) != 1 || r.Args[0] != "7" {
		t.Errorf("pid %d wait %s bind %q args %q", *pid, *wait, r.Settings.Bind, r.Args)
	}
	if !strings.Contains(r.Settings.ControlSocket, "127.0.0.1_9") {
		t.Errorf("control socket %q does not follow --bind", r.Settings.ControlSocket)
	}

	clash := flag.NewFlagSet("status", flag.ContinueOnError)
	clash.Duration("timeout", 0, "")
	input = in(t, nil)
	input.Command = clash
	if _, err := Load(input); err == nil || !strings.Contains(err.Error(), "--timeout") {
		t.Errorf("clashing flag: %v", err)
	}

	input = in(t, []string{"-h"})
	input.Command = flag.NewFlagSet("stop", flag.ContinueOnError)
	if _, err := Load(input); !errors.Is(err, flag.ErrHelp) {
		t.Errorf("-h: %v", err)
	}
}
