package tests

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mcpgateway/mcpgateway/internal/proctest"
)

// A bad value from any source stops the master before it binds anything,
// with the setting, the value and what is accepted.
func TestBadConfigurationRefusedBeforeBinding(t *testing.T) {
	cases := []struct {
		name  string
		env   []string
		files map[string]string
		args  []string
		want  []string
	}{
		{name: "environment", env: []string{"GUNICORN_WORKERS=lots"}, want: []string{"Workers", "GUNICORN_WORKERS", `"lots"`, "accepted"}},
		{name: "flag", args: []string{"--timeout", "soon"}, want: []string{"Timeout", "--timeout", `"soon"`, "accepted"}},
		{name: "dotenv", files: map[string]string{".env": "# settings\nCACHE_TYPE=memcached\n"}, want: []string{"CacheType", ".env:2", `"memcached"`, "redis"}},
		{name: "conf file", files: map[string]string{"gunicorn.conf.go": "//go:build ignore\n\npackage main\n\nconst Workers = \"many\"\n"}, want: []string{"Workers", "gunicorn.conf.go:5"}},
		{name: "unknown conf setting", files: map[string]string{"gunicorn.conf.go": "//go:build ignore\n\npackage main\n\nconst MaxRequest = 5\n"}, want: []string{"MaxRequest", "gunicorn.conf.go:5"}},
		{name: "profile", env: []string{"HTTP_SERVER=uvicorn"}, want: []string{"HTTP_SERVER", `"uvicorn"`, "gunicorn", "granian"}},
		{name: "range", env: []string{"GRANIAN_BACKPRESSURE=-3"}, want: []string{"Backpressure", "GRANIAN_BACKPRESSURE", `"-3"`}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			for name, text := range c.files {
				if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			port := proctest.MustFreePort(t)
			args := append([]string{"serve", "--bind", fmt.Sprintf("127.0.0.1:%d", port)}, c.args...)
			g := run(t, dir, baseEnv(dir, c.env...), args...)
			if code := g.MustWait(t, 10*time.Second); code == 0 {
				t.Fatal("exit status 0 for a bad configuration")
			}
			refusedBeforeBinding(t, g, port, c.want)
		})
	}
}

func TestConfigPrintsValuesAndSources(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "gunicorn.conf.go"), []byte("//go:build ignore\n\npackage main\n\nimport \"time\"\n\nconst (\n\tWorkers = 3\n\tTimeout = 90 * time.Second\n)\n"), 0o644)
	os.WriteFile(filepath.Join(dir, ".env"), []byte("CACHE_TYPE=memory\nGUNICORN_WORKERS=5\n"), 0o644)
	g := run(t, dir, baseEnv(dir, "GUNICORN_MAX_REQUESTS=777"), "config", "--workers", "4")
	if code := g.MustWait(t, 10*time.Second); code != 0 {
		t.Fatalf("exit %d", code)
	}
	out := g.Log.String()
	for _, want := range [][]string{
		{"Workers", "4", "flag"},
		{"Timeout", "1m30s", "gunicorn.conf.go:9"},
		{"CacheType", "memory", ".env:1"},
		{"MaxRequests", "777", "GUNICORN_MAX_REQUESTS"},
		{"JWTSecretKey"},
	} {
		line := lineWith(out, want[0])
		for _, w := range want {
			if !strings.Contains(line, w) {
				t.Errorf("line for %s lacks %q: %q", want[0], w, line)
			}
		}
	}
	if strings.Contains(out, "test-secret") {
		t.Error("config printed the JWT secret")
	}
}

func lineWith(text, first string) string {
	for _, l := range strings.Split(text, "\n") {
		if f := strings.Fields(l); len(f) > 0 && f[0] == first {
			return l
		}
	}
	return ""
}
