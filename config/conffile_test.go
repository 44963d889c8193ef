package config

import (
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"
)

func readConf(t *testing.T, body string) (map[string]any, []string, error) {
	t.Helper()
	as, warns, err := readConfFile("gunicorn.conf.go", []byte("//go:build ignore\n\npackage main\n\n"+body))
	got := map[string]any{}
	for _, a := range as {
		got[a.field] = a.value
	}
	return got, warns, err
}

func TestConfFileExpressions(t *testing.T) {
	for _, tc := range []struct {
		body  string
		field string
		want  any
	}{
		{"const Timeout = 600", "Timeout", 600 * time.Second},
		{"const Timeout = 0.5", "Timeout", 500 * time.Millisecond},
		{"const Timeout = 600 * time.Second", "Timeout", 600 * time.Second},
		{"const Timeout = 10 * time.Minute + 30*time.Second", "Timeout", 630 * time.Second},
		{"const Timeout = 1.5 * time.Second", "Timeout", 1500 * time.Millisecond},
		{"const Timeout = time.Hour / 2", "Timeout", 30 * time.Minute},
		{"const Timeout = time.Duration(5) * time.Second", "Timeout", 5 * time.Second},
		{"const Timeout time.Duration = 600", "Timeout", 600 * time.Nanosecond}, // Go's own meaning
		{"const Timeout = (60 * 10)", "Timeout", 600 * time.Second},
		{"const Timeout = 2 * time.Hour / time.Hour", "Timeout", 2 * time.Second}, // a plain number again
		{"import t \"time\"\n\nconst Timeout = 3 * t.Second", "Timeout", 3 * time.Second},
		{"const Workers = 8", "Workers", 8},
		{"const Workers = 2*4 + 1", "Workers", 9},
		{"const Workers = 7 / 2", "Workers", 3},
		{`const Workers = "auto"`, "Workers", workersAuto},
		{"const MaxRequests = 100_000", "MaxRequests", 100000},
		{"const MaxRequestBodySize = 4 << 20", "MaxRequestBodySize", 4 << 20},
		{"const MaxRequestsJitter = -1", "MaxRequestsJitter", -1}, // range is checked after merging
		{"var PreloadApp = true", "PreloadApp", true},
		{"var PreloadApp = !true", "PreloadApp", false},
		{`const LogLevel = "debug"`, "LogLevel", "debug"},
		{`const CachePrefix = "mcp" + "gw:"`, "CachePrefix", "mcpgw:"},
		{`var Bind = []string{"127.0.0.1:4444", "unix:/run/x.sock"}`, "Bind", []string{"127.0.0.1:4444", "unix:/run/x.sock"}},
		{`var Bind = []string{}`, "Bind", []string{}},
		{`const Bind = "[::1]:4444"`, "Bind", []string{"[::1]:4444"}},
		{"var Threads, Backlog = 2, 4096", "Backlog", 4096},
	} {
		got, _, err := readConf(t, tc.body)
		if err != nil {
			t.Errorf("%s: %v", tc.body, err)
			continue
		}
		if !reflect.DeepEqual(got[tc.field], tc.want) {
			t.Errorf("%s: %s = %#v, want %#v", tc.body, tc.field, got[tc.field], tc.want)
		}
	}
}

func TestConfFileErrors(t *testing.T) {
	for _, tc := range []struct {
		body    string
		setting string // "" when the error is not an *Error
		source  string
		is      error
		msg     string
	}{
		{"const Wokers = 8", "Wokers", "file gunicorn.conf.go:5", ErrUnknownSetting, "unknown setting"},
		{"const max_requests = 8", "max_requests", "file gunicorn.conf.go:5", ErrUnknownSetting, "did you mean MaxRequests?"},
		{"const HTTPServer = \"granian\"", "HTTPServer", "file gunicorn.conf.go:5", ErrNotSettable, "HTTP_SERVER"},
		{"const ConfigFile = \"x.go\"", "ConfigFile", "file gunicorn.conf.go:5", ErrNotSettable, "names this file"},
		{"const Workers = 8.5", "Workers", "file gunicorn.conf.go:5", ErrInvalidValue, `"8.5"`},
		{"const Workers = 1000", "Workers", "file gunicorn.conf.go:5", ErrInvalidValue, "1 to 256"},
		{"const Port = \"80\"", "Port", "file gunicorn.conf.go:5", ErrInvalidValue, "invalid value `\"80\"` for Port"},
		{"const Port = 8 * time.Second", "Port", "file gunicorn.conf.go:5", ErrInvalidValue, "Port"},
		{"const Timeout = \"10m\"", "Timeout", "file gunicorn.conf.go:5", ErrInvalidValue, "Timeout"},
		{"const Timeout = 1 / 0", "Timeout", "file gunicorn.conf.go:5", ErrInvalidValue, "Timeout"},
		{"const Timeout = time.Week", "Timeout", "file gunicorn.conf.go:5", ErrInvalidValue, "Timeout"},
		{"const Timeout = os.Getenv(\"X\")", "Timeout", "file gunicorn.conf.go:5", ErrInvalidValue, "Timeout"},
		{"const Port = 1 << 70", "Port", "file gunicorn.conf.go:5", ErrInvalidValue, "Port"},
		{"const Port = 1 << -1", "Port", "file gunicorn.conf.go:5", ErrInvalidValue, "Port"},
		{"const Timeout = -\"x\"", "Timeout", "file gunicorn.conf.go:5", ErrInvalidValue, "Timeout"},
		{"var Bind = []int{1}", "Bind", "file gunicorn.conf.go:5", ErrInvalidValue, "Bind"},
		{"var Bind = []string{\"a\", 1}", "Bind", "file gunicorn.conf.go:5", ErrInvalidValue, "Bind"},
		{"var PreloadApp = \"yes\"", "PreloadApp", "file gunicorn.conf.go:5", ErrInvalidValue, "PreloadApp"},
		{"\n\nconst (\n\tWorkers = 2\n\tLogLevel = 3\n)", "LogLevel", "file gunicorn.conf.go:9", ErrInvalidValue, "LogLevel"},
		{"const Workers = 2\nconst Workers = 3", "", "", nil, "gunicorn.conf.go:6: Workers is already set at gunicorn.conf.go:5"},
		{"func main() {}", "", "", nil, "gunicorn.conf.go:5: only const and var"},
		{"const Workers = ", "", "", nil, "gunicorn.conf.go:5"},
		{"const Workers, Threads = 2", "", "", nil, "each name needs its own value"},
	} {
		_, _, err := readConf(t, tc.body)
		if err == nil {
			t.Errorf("%q: no error", tc.body)
			continue
		}
		if !strings.Contains(err.Error(), tc.msg) {
			t.Errorf("%q: %v does not mention %q", tc.body, err, tc.msg)
		}
		var e *Error
		if tc.setting == "" {
			if errors.As(err, &e) {
				t.Errorf("%q: unexpected *Error %v", tc.body, err)
			}
			continue
		}
		if !errors.As(err, &e) || e.Setting != tc.setting || e.Source != tc.source || !errors.Is(err, tc.is) {
			t.Errorf("%q: error %#v, want setting %s at %s, is %v", tc.body, err, tc.setting, tc.source, tc.is)
		}
	}
}

func TestConfFileWarnings(t *testing.T) {
	got, warns, err := readConf(t, "const WorkerClass = \"gevent\"\nconst Workers = 2")
	if err != nil || got["Workers"] != 2 || len(warns) != 1 || !strings.Contains(warns[0], "gunicorn.conf.go:5: WorkerClass has no effect") {
		t.Errorf("got %v, warnings %q, err %v", got, warns, err)
	}
	_, warns, _ = readConfFile("c.go", []byte("package main\n\nconst Workers = 2\n"))
	if len(warns) != 1 || !strings.Contains(warns[0], "go:build ignore") {
		t.Errorf("warnings = %q", warns)
	}
}
