package config

import (
	"encoding/json"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestProfileDefaults(t *testing.T) {
	gu := mustLoad(t, in(t, nil))
	if gu.Profile != ProfileGunicorn {
		t.Fatalf("profile = %q", gu.Profile)
	}
	s := gu.Settings
	if s.MaxRequests != 100000 || s.MaxRequestsJitter != 100 || s.Backpressure != 0 || s.HTTP1BufferSize != 8192 ||
		s.Timeout != 600*time.Second || s.GracefulTimeout != 30*time.Second || s.Backlog != 2048 ||
		s.KeepAlive != 5*time.Second || !s.RespawnFailed || s.Threads != 1 || s.DatabaseURL != "sqlite:///./mcp.db" {
		t.Errorf("gunicorn defaults: %+v", s)
	}
	gr := mustLoad(t, in(t, nil, "HTTP_SERVER=granian"))
	s = gr.Settings
	if gr.Profile != ProfileGranian || s.HTTPServer != ProfileGranian {
		t.Fatalf("profile = %q / %q", gr.Profile, s.HTTPServer)
	}
	if s.MaxRequests != 0 || s.MaxRequestsJitter != 0 || s.Backpressure != 512 || s.HTTP1BufferSize != 524288 || s.Backlog != 2048 {
		t.Errorf("granian defaults: %+v", s)
	}
	if src := gr.Sources["Backpressure"]; src != (Source{"default", "granian"}) {
		t.Errorf("Backpressure source = %v", src)
	}
	if src := gr.Sources["HTTPServer"]; src != (Source{"env", "HTTP_SERVER"}) {
		t.Errorf("HTTPServer source = %v", src)
	}
	// Every field has a source.
	for i := range settingsType.NumField() {
		if name := settingsType.Field(i).Name; gu.Sources[name].Kind == "" {
			t.Errorf("no source for %s", name)
		}
	}
}

func TestAutoWorkers(t *testing.T) {
	for _, tc := range []struct {
		profile string
		cpus    int
		want    int
	}{
		{"gunicorn", 1, 3}, {"gunicorn", 2, 5}, {"gunicorn", 4, 9}, {"gunicorn", 8, 16}, {"gunicorn", 64, 16},
		{"granian", 1, 1}, {"granian", 2, 2}, {"granian", 12, 12}, {"granian", 64, 16},
	} {
		input := in(t, nil, "HTTP_SERVER="+tc.profile)
		input.NumCPU = tc.cpus
		r := mustLoad(t, input)
		if r.Settings.Workers != tc.want || r.Sources["Workers"].Kind != "derived" {
			t.Errorf("%s on %d CPUs: Workers = %d (%v), want %d derived", tc.profile, tc.cpus, r.Settings.Workers, r.Sources["Workers"], tc.want)
		}
	}
	// An explicit "auto" is derived too, and says where it came from.
	r := mustLoad(t, in(t, []string{"-w", "auto"}))
	if r.Settings.Workers != 9 || r.Sources["Workers"].Kind != "derived" || !strings.Contains(r.Sources["Workers"].Name, "flag -w") {
		t.Errorf("Workers = %d from %v", r.Settings.Workers, r.Sources["Workers"])
	}
}

// TestPrecedence sets Workers in every layer and peels the layers off from the top.
func TestPrecedence(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, dir, "gunicorn.conf.go", "//go:build ignore\n\npackage main\n\nconst Workers = 2\n")
	writeFile(t, dir, ".env", "GUNICORN_WORKERS=3\n")
	args := []string{"--workers", "5"}
	environ := []string{"GUNICORN_WORKERS=4"}
	for _, tc := range []struct {
		args    []string
		environ []string
		dotenv  bool
		conf    bool
		want    int
		kind    string
	}{
		{args, environ, true, true, 5, "flag"},
		{nil, environ, true, true, 4, "env"},
		{nil, nil, true, true, 3, "dotenv"},
		{nil, nil, false, true, 2, "file"},
		{nil, nil, false, false, 9, "derived"},
	} {
		if !tc.dotenv {
			os.Remove(filepath.Join(dir, ".env"))
		}
		if !tc.conf {
			os.Remove(filepath.Join(dir, "gunicorn.conf.go"))
		}
		r := mustLoad(t, Input{Args: tc.args, Environ: tc.environ, Dir: dir, NumCPU: 4})
		if r.Settings.Workers != tc.want || r.Sources["Workers"].Kind != tc.kind {
			t.Errorf("Workers = %d from %v, want %d from %s", r.Settings.Workers, r.Sources["Workers"], tc.want, tc.kind)
		}
	}
}

func TestLayersSources(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, dir, "gunicorn.conf.go", "//go:build ignore\n\npackage main\n\nimport \"time\"\n\nconst (\n\tTimeout = 120 * time.Second\n\tLogLevel = \"debug\"\n)\n")
	writeFile(t, dir, ".env", "# comment\nexport CACHE_TYPE='memory'\nREDIS_URL=\"redis://r:6379/1\"\n")
	r := mustLoad(t, Input{Dir: dir, NumCPU: 2, Args: []string{"--port", "8080"},
		Environ: []string{"PORT=9090", "LOG_LEVEL=WARN", "HOST=::1"}})
	s := r.Settings
	want := map[string]Source{
		"Timeout":    {"file", "gunicorn.conf.go:8"},
		"LogLevel":   {"env", "LOG_LEVEL"},
		"CacheType":  {"dotenv", ".env:2 CACHE_TYPE"},
		"RedisURL":   {"dotenv", ".env:3 REDIS_URL"},
		"Port":       {"flag", "--port"},
		"ConfigFile": {"default", "./gunicorn.conf.go exists"},
		"Bind":       {"derived", "Host:Port"},
	}
	for field, src := range want {
		if r.Sources[field] != src {
			t.Errorf("%s source = %v, want %v", field, r.Sources[field], src)
		}
	}
	if s.Timeout != 2*time.Minute || s.LogLevel != "warning" || s.CacheType != "memory" || s.Port != 8080 ||
		s.RedisURL != "redis://r:6379/1" || s.ConfigFile != "gunicorn.conf.go" {
		t.Errorf("settings: %+v", s)
	}
	if !reflect.DeepEqual(s.Bind, []string{"[::1]:8080"}) {
		t.Errorf("Bind = %q, want [::1]:8080", s.Bind)
	}
	if os.Getenv("CACHE_TYPE") == "memory" {
		t.Error(".env leaked into the process environment")
	}
}

func TestEnvNamespaces(t *testing.T) {
	// The guide runs GRANIAN_WORKERS=4 make serve with the gunicorn profile.
	r := mustLoad(t, in(t, nil, "GRANIAN_WORKERS=4", "GRANIAN_BACKPRESSURE=64"))
	if r.Settings.Workers != 4 || r.Settings.Backpressure != 64 || r.Sources["Workers"] != (Source{"env", "GRANIAN_WORKERS"}) {
		t.Errorf("Workers %d from %v, Backpressure %d", r.Settings.Workers, r.Sources["Workers"], r.Settings.Backpressure)
	}
	both := []string{"GRANIAN_WORKERS=4", "GUNICORN_WORKERS=6", "WEB_CONCURRENCY=7"}
	for profile, want := range map[string]int{"gunicorn": 6, "granian": 4} {
		r := mustLoad(t, in(t, nil, append(both, "HTTP_SERVER="+profile)...))
		if r.Settings.Workers != want {
			t.Errorf("%s: Workers = %d, want %d", profile, r.Settings.Workers, want)
		}
		if !hasWarning(r, "are both set") {
			t.Errorf("%s: no warning about both names: %q", profile, r.Warnings)
		}
	}
	r = mustLoad(t, in(t, nil, "WEB_CONCURRENCY=7"))
	if r.Settings.Workers != 7 {
		t.Errorf("WEB_CONCURRENCY: Workers = %d", r.Settings.Workers)
	}
	r = mustLoad(t, in(t, nil, "GUNICORN_KEEPALIVE=2", "GRANIAN_RUNTIME_THREADS=3", "GRANIAN_PID_FILE=/run/g.pid", "GRANIAN_HOST=127.0.0.1"))
	if s := r.Settings; s.KeepAlive != 2*time.Second || s.Threads != 3 || s.Pidfile != "/run/g.pid" || s.Bind[0] != "127.0.0.1:4444" {
		t.Errorf("settings: %+v", s)
	}
	// The .env file uses the same names.
	input := in(t, nil)
	writeFile(t, input.Dir, ".env", "GRANIAN_BACKLOG=4096\nGUNICORN_BACKLOG=1024\n")
	r = mustLoad(t, input)
	if r.Settings.Backlog != 1024 || !hasWarning(r, "are both set (dotenv)") {
		t.Errorf("Backlog = %d, warnings %q", r.Settings.Backlog, r.Warnings)
	}
}

// TestHermetic: Load reads Input.Environ, never the process environment.
func TestHermetic(t *testing.T) {
	t.Setenv("GUNICORN_WORKERS", "7")
	r := mustLoad(t, in(t, nil))
	if r.Settings.Workers != 9 {
		t.Errorf("process environment leaked: Workers = %d", r.Settings.Workers)
	}
	as, _, err := readVars(nil, "env", ProfileGunicorn, func(s string) string { return s })
	if err != nil || len(as) != 0 {
		t.Errorf("nil map read the process environment: %v", as)
	}
}

func TestEnvWarnings(t *testing.T) {
	r := mustLoad(t, in(t, nil, "GRANIAN_LOOP=uvloop", "GUNICORN_WORKER_CLASS=gevent", "GRANIAN_BOGUS=1", "OTHER_THING=1", "GRANIAN_DEV_MODE=true"))
	for _, w := range []string{"GRANIAN_LOOP has no effect", "GUNICORN_WORKER_CLASS has no effect", "GRANIAN_BOGUS is not a setting", "GRANIAN_DEV_MODE has no effect"} {
		if !hasWarning(r, w) {
			t.Errorf("missing warning %q in %q", w, r.Warnings)
		}
	}
	if hasWarning(r, "OTHER_THING") {
		t.Errorf("warned about an unrelated variable: %q", r.Warnings)
	}
	for name := range noEffect {
		if _, read := envIndex[name]; read {
			t.Errorf("%s is both read and listed as having no effect", name)
		}
	}
}

func TestBadValues(t *testing.T) {
	t.Run("env type", func(t *testing.T) {
		e := mustFail(t, in(t, nil, "GUNICORN_WORKERS=abc"))
		checkError(t, e, "Workers", "env GUNICORN_WORKERS", "abc")
		want := `invalid value "abc" for Workers (env GUNICORN_WORKERS): accepted: "auto" or a whole number from 1 to 256`
		if e.Error() != want {
			t.Errorf("message\n got %s\nwant %s", e, want)
		}
	})
	t.Run("env parse via caarlos0", func(t *testing.T) {
		checkError(t, mustFail(t, in(t, nil, "GUNICORN_TIMEOUT=soon")), "Timeout", "env GUNICORN_TIMEOUT", "soon")
		checkError(t, mustFail(t, in(t, nil, "GRANIAN_RESPAWN_FAILED=maybe")), "RespawnFailed", "env GRANIAN_RESPAWN_FAILED", "maybe")
	})
	t.Run("env range", func(t *testing.T) {
		checkError(t, mustFail(t, in(t, nil, "PORT=70000")), "Port", "env PORT", "70000")
		checkError(t, mustFail(t, in(t, nil, "GUNICORN_WORKERS=0")), "Workers", "env GUNICORN_WORKERS", "0")
		checkError(t, mustFail(t, in(t, nil, "GRANIAN_HTTP=3")), "HTTP", "env GRANIAN_HTTP", "3")
		checkError(t, mustFail(t, in(t, nil, "CACHE_TYPE=disk")), "CacheType", "env CACHE_TYPE", "disk")
		checkError(t, mustFail(t, in(t, nil, "JWT_ALGORITHM=PS256")), "JWTAlgorithm", "env JWT_ALGORITHM", "PS256")
		checkError(t, mustFail(t, in(t, nil, "PLATFORM_ADMIN_EMAIL=admin")), "PlatformAdminEmail", "env PLATFORM_ADMIN_EMAIL", "admin")
		checkError(t, mustFail(t, in(t, nil, "GUNICORN_TIMEOUT=-1")), "Timeout", "env GUNICORN_TIMEOUT", "-1")
		checkError(t, mustFail(t, in(t, nil, "LOG_FORMAT=xml")), "LogFormat", "env LOG_FORMAT", "xml")
		checkError(t, mustFail(t, in(t, nil, "GRANIAN_HTTP1_BUFFER_SIZE=100")), "HTTP1BufferSize", "env GRANIAN_HTTP1_BUFFER_SIZE", "100")
		checkError(t, mustFail(t, in(t, nil, "GUNICORN_BIND=localhost")), "Bind", "env GUNICORN_BIND", "localhost")
		checkError(t, mustFail(t, in(t, nil, "REDIS_URL=http://x")), "RedisURL", "env REDIS_URL", "http://x")
	})
	t.Run("password masked in error", func(t *testing.T) {
		e := mustFail(t, in(t, nil, "DATABASE_URL=mysql://u:hunter2@h/db"))
		checkError(t, e, "DatabaseURL", "env DATABASE_URL", "mysql://u:xxxxx@h/db")
		if strings.Contains(e.Error(), "hunter2") {
			t.Errorf("password in %v", e)
		}
	})
	t.Run("dotenv", func(t *testing.T) {
		input := in(t, nil)
		writeFile(t, input.Dir, ".env", "# settings\nHOST=127.0.0.1\nGUNICORN_MAX_REQUESTS=lots\n")
		checkError(t, mustFail(t, input), "MaxRequests", "dotenv .env:3 GUNICORN_MAX_REQUESTS", "lots")
		writeFile(t, input.Dir, ".env", "\n\nGUNICORN_BACKLOG=0\n")
		checkError(t, mustFail(t, input), "Backlog", "dotenv .env:3 GUNICORN_BACKLOG", "0")
	})
	t.Run("file", func(t *testing.T) {
		input := in(t, nil)
		writeFile(t, input.Dir, "gunicorn.conf.go", "//go:build ignore\n\npackage main\n\nconst Workers = \"eight\"\n")
		checkError(t, mustFail(t, input), "Workers", "file gunicorn.conf.go:5", `"eight"`)
		writeFile(t, input.Dir, "gunicorn.conf.go", "//go:build ignore\n\npackage main\n\nconst (\n\tPort = 4444\n\tBacklog = -1\n)\n")
		checkError(t, mustFail(t, input), "Backlog", "file gunicorn.conf.go:7", "-1")
		writeFile(t, input.Dir, "gunicorn.conf.go", "//go:build ignore\n\npackage main\n\nvar PreloadApp = 1\n")
		checkError(t, mustFail(t, input), "PreloadApp", "file gunicorn.conf.go:5", "1")
	})
	t.Run("flag", func(t *testing.T) {
		checkError(t, mustFail(t, in(t, []string{"--port", "http"})), "Port", "flag --port", "http")
		checkError(t, mustFail(t, in(t, []string{"-w", "300"})), "Workers", "flag -w", "300")
		checkError(t, mustFail(t, in(t, []string{"--log-level", "loud"})), "LogLevel", "flag --log-level", "loud")
		checkError(t, mustFail(t, in(t, []string{"--preload=sometimes"})), "PreloadApp", "flag --preload", "sometimes")
		checkError(t, mustFail(t, in(t, []string{"-b", "127.0.0.1:80", "--bind", "unix:"})), "Bind", "flag -b", "unix:")
	})
	t.Run("overridden bad value is not an error", func(t *testing.T) {
		r := mustLoad(t, in(t, []string{"--port", "80"}, "PORT=70000"))
		if r.Settings.Port != 80 {
			t.Errorf("Port = %d", r.Settings.Port)
		}
	})
	t.Run("ssl needs a certificate", func(t *testing.T) {
		checkError(t, mustFail(t, in(t, []string{"--ssl", "--certfile", ""})), "CertFile", "flag --certfile", "")
	})
}

func TestHTTPServer(t *testing.T) {
	e := mustFail(t, in(t, nil, "HTTP_SERVER=bogus"))
	checkError(t, e, "HTTPServer", "env HTTP_SERVER", "bogus")
	for _, s := range []string{"HTTP_SERVER", "bogus", `"gunicorn" or "granian"`} {
		if !strings.Contains(e.Error(), s) {
			t.Errorf("%q does not mention %s", e, s)
		}
	}
	checkError(t, mustFail(t, in(t, []string{"--http-server", "uvicorn"})), "HTTPServer", "flag --http-server", "uvicorn")

	// The profile may come from .env; the environment and flags beat it.
	input := in(t, nil)
	writeFile(t, input.Dir, ".env", "HTTP_SERVER=granian\n")
	if r := mustLoad(t, input); r.Profile != ProfileGranian || r.Settings.Backpressure != 512 {
		t.Errorf("profile from .env = %q", r.Profile)
	}
	input.Environ = []string{"HTTP_SERVER=gunicorn"}
	if r := mustLoad(t, input); r.Profile != ProfileGunicorn {
		t.Errorf("env should beat .env, profile = %q", r.Profile)
	}
	input.Args = []string{"--http-server=GRANIAN"}
	if r := mustLoad(t, input); r.Profile != ProfileGranian || r.Settings.HTTPServer != ProfileGranian {
		t.Errorf("flag should beat env, profile = %q", r.Profile)
	}
}

func TestFlags(t *testing.T) {
	r := mustLoad(t, in(t, []string{"--workers", "3", "--bind", "127.0.0.1:0", "--bind", "unix:/tmp/a.sock",
		"--preload", "--respawn-failed=false", "-t", "90", "--keep-alive", "0", "--max-request-body-size", "1024"},
		"GUNICORN_BIND=0.0.0.0:1"))
	s := r.Settings
	if s.Workers != 3 || !s.PreloadApp || s.RespawnFailed || s.Timeout != 90*time.Second || s.KeepAlive != 0 || s.MaxRequestBodySize != 1024 {
		t.Errorf("settings: %+v", s)
	}
	if !reflect.DeepEqual(s.Bind, []string{"127.0.0.1:0", "unix:/tmp/a.sock"}) || r.Sources["Bind"].Kind != "flag" {
		t.Errorf("Bind = %q from %v", s.Bind, r.Sources["Bind"])
	}
	for _, args := range [][]string{{"-h"}, {"--help"}} {
		if _, err := Load(in(t, args)); !errors.Is(err, flag.ErrHelp) {
			t.Errorf("%v: err = %v, want flag.ErrHelp", args, err)
		}
	}
	if _, err := Load(in(t, []string{"--wokers", "3"})); err == nil || !strings.Contains(err.Error(), "wokers") {
		t.Errorf("unknown flag: err = %v", err)
	}
	if _, err := Load(in(t, []string{"--workers", "3", "extra"})); err == nil {
		t.Error("positional argument accepted")
	}
	r = mustLoad(t, in(t, []string{"-k", "uvicorn.workers.UvicornWorker"}))
	if !hasWarning(r, "flag -k has no effect") {
		t.Errorf("warnings = %q", r.Warnings)
	}
}

func TestFiles(t *testing.T) {
	t.Run("explicit config", func(t *testing.T) {
		input := in(t, []string{"-c", "conf/prod.go"})
		os.Mkdir(filepath.Join(input.Dir, "conf"), 0o755)
		writeFile(t, input.Dir, "conf/prod.go", "//go:build ignore\n\npackage main\n\nconst MaxRequests = 5000\n")
		r := mustLoad(t, input)
		if r.Settings.MaxRequests != 5000 || r.Sources["MaxRequests"] != (Source{"file", "conf/prod.go:5"}) ||
			r.Settings.ConfigFile != "conf/prod.go" || r.Sources["ConfigFile"] != (Source{"flag", "-c"}) {
			t.Errorf("MaxRequests %d from %v, ConfigFile %q", r.Settings.MaxRequests, r.Sources["MaxRequests"], r.Settings.ConfigFile)
		}
	})
	t.Run("config from env", func(t *testing.T) {
		input := in(t, nil)
		path := filepath.Join(input.Dir, "g.go")
		writeFile(t, input.Dir, "g.go", "//go:build ignore\n\npackage main\n\nconst Threads = 2\n")
		input.Environ = []string{"GUNICORN_CONFIG=" + path}
		if r := mustLoad(t, input); r.Settings.Threads != 2 || r.Settings.ConfigFile != path {
			t.Errorf("Threads = %d, ConfigFile %q", r.Settings.Threads, r.Settings.ConfigFile)
		}
	})
	t.Run("empty flags read no files", func(t *testing.T) {
		input := in(t, []string{"--config", "", "--env-file="})
		writeFile(t, input.Dir, "gunicorn.conf.go", "//go:build ignore\n\npackage main\n\nconst Threads = 2\n")
		writeFile(t, input.Dir, ".env", "DB_POOL_SIZE=9\n")
		r := mustLoad(t, input)
		if r.Settings.Threads != 1 || r.Settings.DBPoolSize != 5 || r.Settings.ConfigFile != "" || r.Sources["ConfigFile"].Kind != "flag" {
			t.Errorf("Threads %d, DBPoolSize %d, ConfigFile %q from %v", r.Settings.Threads, r.Settings.DBPoolSize, r.Settings.ConfigFile, r.Sources["ConfigFile"])
		}
	})
	t.Run("missing explicit config", func(t *testing.T) {
		checkError(t, mustFail(t, in(t, []string{"--config", "nope.go"})), "ConfigFile", "flag --config", "nope.go")
	})
	t.Run("missing explicit env file", func(t *testing.T) {
		checkError(t, mustFail(t, in(t, nil, "ENV_FILE=prod.env")), "EnvFile", "env ENV_FILE", "prod.env")
	})
	t.Run("explicit env file", func(t *testing.T) {
		input := in(t, []string{"--env-file", "prod.env"})
		writeFile(t, input.Dir, "prod.env", "DB_POOL_SIZE=20\nENV_FILE=other.env\n")
		writeFile(t, input.Dir, ".env", "DB_POOL_SIZE=1\n")
		r := mustLoad(t, input)
		if r.Settings.DBPoolSize != 20 || r.Settings.EnvFile != "prod.env" || !hasWarning(r, "cannot name another") {
			t.Errorf("DBPoolSize %d, EnvFile %q, warnings %q", r.Settings.DBPoolSize, r.Settings.EnvFile, r.Warnings)
		}
	})
	t.Run("bad .env line", func(t *testing.T) {
		input := in(t, nil)
		writeFile(t, input.Dir, ".env", "A=1\nnot a line\n")
		if _, err := Load(input); err == nil || !strings.Contains(err.Error(), ".env:2") {
			t.Errorf("err = %v", err)
		}
	})
}

func TestJWTSecretGenerated(t *testing.T) {
	a, b := mustLoad(t, in(t, nil)), mustLoad(t, in(t, nil))
	if len(a.Settings.JWTSecretKey) != 64 || a.Settings.JWTSecretKey == b.Settings.JWTSecretKey {
		t.Errorf("generated keys %q %q", a.Settings.JWTSecretKey, b.Settings.JWTSecretKey)
	}
	if a.Sources["JWTSecretKey"].Kind != "generated" || !hasWarning(a, "tokens stop working") {
		t.Errorf("source %v warnings %q", a.Sources["JWTSecretKey"], a.Warnings)
	}
	r := mustLoad(t, in(t, nil, "JWT_SECRET_KEY=s3cret-s3cret-s3cret-s3cret-s3cret"))
	if r.Settings.JWTSecretKey != "s3cret-s3cret-s3cret-s3cret-s3cret" || hasWarning(r, "tokens stop working") {
		t.Errorf("explicit key: %q %q", r.Settings.JWTSecretKey, r.Warnings)
	}
}

func TestJSONRoundTrip(t *testing.T) {
	for _, environ := range [][]string{nil, {"HTTP_SERVER=granian", "GUNICORN_BIND=127.0.0.1:1,unix:/run/a.sock", "GUNICORN_TIMEOUT=0.25", "KEY_FILE_PASSWORD=pw"}} {
		r := mustLoad(t, in(t, nil, environ...))
		data, err := json.Marshal(r.Settings)
		if err != nil {
			t.Fatal(err)
		}
		var back Settings
		if err := json.Unmarshal(data, &back); err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(back, r.Settings) {
			t.Errorf("round trip changed settings:\n%+v\n%+v", r.Settings, back)
		}
	}
}

func TestPrint(t *testing.T) {
	r := mustLoad(t, in(t, []string{"--backpressure", "auto:64"}, "JWT_SECRET_KEY=topsecret-topsecret-topsecret-12345", "KEY_FILE_PASSWORD=keypass",
		"DATABASE_URL=postgresql+psycopg://app:dbpass@db:5432/mcp", "REDIS_URL=rediss://:redispass@cache:6380/0", "MAX_QUEUE_DELAY=20ms"))
	var b strings.Builder
	r.Print(&b)
	out := b.String()
	for _, secret := range []string{"topsecret", "keypass", "dbpass", "redispass"} {
		if strings.Contains(out, secret) {
			t.Errorf("Print shows %q:\n%s", secret, out)
		}
	}
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if len(lines) != settingsType.NumField() {
		t.Errorf("%d lines for %d settings", len(lines), settingsType.NumField())
	}
	for _, want := range []string{"postgresql+psycopg://app:xxxxx@db:5432/mcp", "env DATABASE_URL", "rediss://:xxxxx@cache:6380/0", "Workers"} {
		if !strings.Contains(out, want) {
			t.Errorf("Print lacks %q:\n%s", want, out)
		}
	}
	for setting, want := range map[string][2]string{
		"Backpressure":     {"auto:64", "flag --backpressure"},
		"BackpressureAuto": {"true", "derived from Backpressure"},
		"MaxQueueDelay":    {"20ms", "env MAX_QUEUE_DELAY"},
	} {
		if value, src := printed(t, r, setting); value != want[0] || src != want[1] {
			t.Errorf("Print shows %s %q %q, want %q %q", setting, value, src, want[0], want[1])
		}
	}
	// Aligned: the value column starts at the same offset on every line.
	col := strings.Index(lines[0], "gunicorn")
	for _, l := range lines {
		if len(l) <= col || l[col-1] != ' ' || l[col] == ' ' {
			t.Errorf("misaligned line %q", l)
		}
	}
}

func TestUsage(t *testing.T) {
	var b strings.Builder
	Usage(&b)
	for i := range settingsType.NumField() {
		f := settingsType.Field(i)
		for _, name := range strings.Split(f.Tag.Get("flag"), ",") {
			if name != "" && !strings.Contains(b.String(), dashed(name)) {
				t.Errorf("usage lacks %s", dashed(name))
			}
		}
	}
}
