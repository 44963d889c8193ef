package tests

// The container's promises, checked without a container engine: the
// Containerfile is parsed and its ENV, ENTRYPOINT and HEALTHCHECK are run
// with the real binary (as `docker run -e ...` would run them), and
// docker-compose.yml is parsed and its gateway environment is resolved by
// `mcpgateway config`.

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mcpgateway/mcpgateway/internal/proctest"
)

// containerfile is the parsed ../Containerfile.
type containerfile struct {
	stages [][]instruction // split at FROM; the last one is the image
}

type instruction struct {
	line    int
	keyword string // upper case
	args    string
}

func parseContainerfile(t *testing.T) containerfile {
	t.Helper()
	raw, err := os.ReadFile("../Containerfile")
	if err != nil {
		t.Fatal(err)
	}
	var cf containerfile
	var cont string
	contLine := 0
	for i, line := range strings.Split(string(raw), "\n") {
		trimmed := strings.TrimSpace(line)
		if strings.HasPrefix(trimmed, "#") || (trimmed == "" && cont == "") {
			continue
		}
		if cont == "" {
			contLine = i + 1
		}
		if s, ok := strings.CutSuffix(trimmed, `\`); ok {
			cont += s + " "
			continue
		}
		full := strings.TrimSpace(cont + trimmed)
		cont = ""
		keyword, args, _ := strings.Cut(full, " ")
		in := instruction{line: contLine, keyword: strings.ToUpper(keyword), args: strings.TrimSpace(args)}
		if in.keyword == "FROM" {
			cf.stages = append(cf.stages, nil)
		}
		if len(cf.stages) == 0 {
			if in.keyword != "ARG" {
				t.Fatalf("Containerfile:%d: %s before the first FROM", in.line, in.keyword)
			}
			continue
		}
		cf.stages[len(cf.stages)-1] = append(cf.stages[len(cf.stages)-1], in)
	}
	if len(cf.stages) < 2 {
		t.Fatalf("Containerfile: want a build stage and a runtime stage, got %d stage(s)", len(cf.stages))
	}
	return cf
}

func (cf containerfile) final() []instruction { return cf.stages[len(cf.stages)-1] }

// all returns the instructions of one keyword in the image's stage.
func (cf containerfile) all(keyword string) []instruction {
	var out []instruction
	for _, in := range cf.final() {
		if in.keyword == keyword {
			out = append(out, in)
		}
	}
	return out
}

// last is the instruction that takes effect (ENTRYPOINT, USER, ...).
func (cf containerfile) last(t *testing.T, keyword string) instruction {
	t.Helper()
	all := cf.all(keyword)
	if len(all) == 0 {
		t.Fatalf("Containerfile: the image stage has no %s", keyword)
	}
	return all[len(all)-1]
}

// env is the image's environment: ENV key=value ... (or the old ENV key value).
func (cf containerfile) env(t *testing.T) map[string]string {
	t.Helper()
	env := map[string]string{}
	for _, in := range cf.all("ENV") {
		if strings.ContainsAny(in.args, `"'$`) {
			t.Fatalf("Containerfile:%d: keep ENV values plain (no quotes or $): %s", in.line, in.args)
		}
		fields := strings.Fields(in.args)
		if !strings.Contains(fields[0], "=") {
			env[fields[0]] = strings.Join(fields[1:], " ")
			continue
		}
		for _, f := range fields {
			k, v, ok := strings.Cut(f, "=")
			if !ok {
				t.Fatalf("Containerfile:%d: ENV %q is not key=value", in.line, f)
			}
			env[k] = v
		}
	}
	return env
}

// execForm decodes a JSON exec form such as ["/mcpgateway", "serve"].
func execForm(t *testing.T, in instruction, text string) []string {
	t.Helper()
	var argv []string
	if err := json.Unmarshal([]byte(text), &argv); err != nil || len(argv) == 0 {
		t.Fatalf("Containerfile:%d: %s must be the exec form [\"...\"] (no shell in the image): %s", in.line, in.keyword, text)
	}
	return argv
}

func (cf containerfile) entrypoint(t *testing.T) []string {
	in := cf.last(t, "ENTRYPOINT")
	return execForm(t, in, in.args)
}

func (cf containerfile) healthcheck(t *testing.T) []string {
	in := cf.last(t, "HEALTHCHECK")
	_, cmd, ok := strings.Cut(in.args, "CMD ")
	if !ok {
		t.Fatalf("Containerfile:%d: HEALTHCHECK without CMD: %s", in.line, in.args)
	}
	return execForm(t, in, strings.TrimSpace(cmd))
}

func TestContainerfilePromises(t *testing.T) {
	cf := parseContainerfile(t)

	// Build stage: the Go of go.mod, a static binary without cgo, paths trimmed.
	gomod, _ := os.ReadFile("../go.mod")
	goVersion := regexp.MustCompile(`(?m)^go (\d+\.\d+)`).FindSubmatch(gomod)
	if goVersion == nil {
		t.Fatal("go.mod has no go line")
	}
	from := cf.stages[0][0].args
	if !regexp.MustCompile(`(^|/)golang:` + regexp.QuoteMeta(string(goVersion[1])) + `\b`).MatchString(from) {
		t.Errorf("build stage FROM %q: want golang:%s, the Go of go.mod", from, goVersion[1])
	}
	var build string
	for _, stage := range cf.stages[:len(cf.stages)-1] {
		for _, in := range stage {
			if in.keyword == "RUN" && strings.Contains(in.args, "go build") {
				build = in.args
			}
		}
	}
	for _, want := range []string{"CGO_ENABLED=0", "-trimpath", "./cmd/mcpgateway"} {
		if !strings.Contains(build, want) {
			t.Errorf("the go build step lacks %s: %q", want, build)
		}
	}

	// Image stage.
	if base := cf.final()[0].args; !strings.Contains(base, "distroless/static") && !strings.HasPrefix(base, "scratch") {
		t.Errorf("image FROM %q: want distroless static or scratch", base)
	}
	exposed := false
	for _, in := range cf.all("EXPOSE") {
		for _, p := range strings.Fields(in.args) {
			exposed = exposed || p == "4444" || p == "4444/tcp"
		}
	}
	if !exposed {
		t.Error("no EXPOSE 4444")
	}
	env := cf.env(t)
	if env["HTTP_SERVER"] != "gunicorn" {
		t.Errorf("ENV HTTP_SERVER=%q, want gunicorn", env["HTTP_SERVER"])
	}
	if p, ok := env["PORT"]; ok && p != "4444" {
		t.Errorf("ENV PORT=%s, but 4444 is exposed", p)
	}
	dbPath, ok := strings.CutPrefix(env["DATABASE_URL"], "sqlite:///")
	if !ok || !strings.HasPrefix(dbPath, "/") {
		t.Errorf("ENV DATABASE_URL=%q: want sqlite:////absolute/path.db in a writable directory", env["DATABASE_URL"])
	} else {
		dir := filepath.Dir(dbPath)
		copied := false
		for _, in := range cf.all("COPY") {
			copied = copied || (strings.Contains(in.args, "--chown=") && strings.HasSuffix(in.args, " "+dir))
		}
		if !copied {
			t.Errorf("the database directory %s is not made (COPY --chown=... %s) for the image's user", dir, dir)
		}
	}
	user := strings.Split(cf.last(t, "USER").args, ":")[0]
	if user == "" || user == "root" || user == "0" {
		t.Errorf("USER %q: want a non-root user", user)
	}
	entry := cf.entrypoint(t)
	if len(entry) != 2 || entry[1] != "serve" {
		t.Errorf("ENTRYPOINT %q: want [\"/mcpgateway\", \"serve\"], so that arguments are serve's flags", entry)
	}
	binaryCopied := false
	for _, in := range cf.all("COPY") {
		binaryCopied = binaryCopied || (strings.HasPrefix(in.args, "--from=") && strings.HasSuffix(in.args, " "+entry[0]))
	}
	if !binaryCopied {
		t.Errorf("the ENTRYPOINT binary %s is not copied from the build stage", entry[0])
	}
	if hc := cf.healthcheck(t); len(hc) < 2 || hc[0] != entry[0] || hc[1] != "healthcheck" {
		t.Errorf("HEALTHCHECK CMD %q: want the binary itself: [%q, \"healthcheck\"]", hc, entry[0])
	}

	// Nothing secret or local goes into the build context.
	ignore, err := os.ReadFile("../.dockerignore")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{".git", ".env", "certs/", "bin/", "mcp.db"} {
		if !regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(want) + `$`).Match(ignore) {
			t.Errorf(".dockerignore does not exclude %s", want)
		}
	}
}

// containerRun runs the binary the way the image does: the Containerfile's
// ENV, then the -e overrides, then its ENTRYPOINT plus args (the CMD). The
// database directory is a temporary one and the port a free one on
// 127.0.0.1, as `-p 127.0.0.1:PORT:4444` would publish it.
func containerRun(t *testing.T, overrides []string, args ...string) (*gateway, []string) {
	t.Helper()
	cf := parseContainerfile(t)
	dir := t.TempDir()
	port := proctest.MustFreePort(t)
	env := []string{"PATH=" + os.Getenv("PATH"), "HOME=" + dir, "XDG_RUNTIME_DIR=" + dir}
	for k, v := range cf.env(t) {
		if k == "DATABASE_URL" {
			v = "sqlite:///" + filepath.Join(dir, filepath.Base(v))
		}
		env = append(env, k+"="+v)
	}
	env = append(env, "HOST=127.0.0.1", "PORT="+strconv.Itoa(port), "JWT_SECRET_KEY="+testSecret)
	env = append(env, overrides...)
	entry := cf.entrypoint(t)
	g := run(t, dir, env, append(entry[1:], args...)...)
	g.port = port
	return g, env
}

// healthcheck runs the image's HEALTHCHECK command with the container's environment.
func healthcheck(t *testing.T, env []string) (int, string) {
	t.Helper()
	argv := parseContainerfile(t).healthcheck(t)
	cmd := exec.Command(binary, argv[1:]...)
	cmd.Env, cmd.Dir = env, t.TempDir()
	out, err := cmd.CombinedOutput()
	if err != nil {
		if ee, ok := err.(*exec.ExitError); ok {
			return ee.ExitCode(), string(out)
		}
		t.Fatal(err)
	}
	return 0, string(out)
}

func configLines(t *testing.T, env []string) map[string]string {
	t.Helper()
	cmd := exec.Command(binary, "config")
	cmd.Env, cmd.Dir = env, t.TempDir()
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("mcpgateway config: %v\n%s", err, out)
	}
	lines := map[string]string{}
	for _, l := range strings.Split(string(out), "\n") {
		if f := strings.Fields(l); len(f) > 1 {
			lines[f[0]] = strings.Join(f[1:], " ")
		}
	}
	return lines
}

// -e HTTP_SERVER=granian switches the image to the granian profile's defaults.
func TestContainerHTTPServerSelectsTheProfile(t *testing.T) {
	cf := parseContainerfile(t)
	base := []string{"PATH=" + os.Getenv("PATH"), "JWT_SECRET_KEY=" + testSecret}
	for k, v := range cf.env(t) {
		base = append(base, k+"="+v)
	}
	numCPU := runtime.GOMAXPROCS(0)

	granian := configLines(t, append(base, "HTTP_SERVER=granian"))
	for name, want := range map[string]string{
		"HTTPServer":      "granian env HTTP_SERVER",
		"Backpressure":    "512 default granian",
		"MaxRequests":     "0 default granian",
		"HTTP1BufferSize": "524288 default granian",
	} {
		if granian[name] != want {
			t.Errorf("granian: %s is %q, want %q", name, granian[name], want)
		}
	}
	wantWorkers := fmt.Sprintf("%d derived auto (default granian): min(NumCPU, 16) with NumCPU=", min(numCPU, 16))
	if !strings.HasPrefix(granian["Workers"], wantWorkers) {
		t.Errorf("granian: Workers is %q, want %q...", granian["Workers"], wantWorkers)
	}

	// The image's own default is the gunicorn profile.
	gunicorn := configLines(t, base)
	if gunicorn["HTTPServer"] != "gunicorn env HTTP_SERVER" || gunicorn["Backpressure"] != "0 default gunicorn" ||
		!strings.HasPrefix(gunicorn["Workers"], strconv.Itoa(min(2*numCPU+1, 16))+" derived") {
		t.Errorf("the image's default profile: HTTPServer %q, Backpressure %q, Workers %q",
			gunicorn["HTTPServer"], gunicorn["Backpressure"], gunicorn["Workers"])
	}

	// A served granian instance runs with those settings.
	g, env := containerRun(t, []string{"HTTP_SERVER=granian"})
	g.waitReady()
	starting := lineContaining(g.Log.String(), `"msg":"master starting"`)
	for _, want := range []string{`"backpressure":512`, fmt.Sprintf(`"workers":%d`, min(numCPU, 16))} {
		if !strings.Contains(starting, want) {
			t.Errorf("master starting line lacks %s: %s", want, starting)
		}
	}
	if code, out := healthcheck(t, env); code != 0 {
		t.Errorf("HEALTHCHECK against the granian instance: exit %d: %s", code, out)
	}
}

func lineContaining(text, what string) string {
	for _, l := range strings.Split(text, "\n") {
		if strings.Contains(l, what) {
			return l
		}
	}
	return ""
}

// The granian profile's backpressure refuses excess at once with 503,
// Retry-After and a JSON body; /health is never refused. The limit is set to
// 1 here (GRANIAN_BACKPRESSURE=1, as the guide tunes it) so that a short load
// exceeds it.
func TestContainerGranianRefusesExcessWith503(t *testing.T) {
	g, _ := containerRun(t, []string{"HTTP_SERVER=granian", "GRANIAN_WORKERS=1",
		"GRANIAN_RUNTIME_THREADS=2", "GRANIAN_BACKPRESSURE=1"})
	g.waitReady()
	if !strings.Contains(lineContaining(g.Log.String(), `"msg":"master starting"`), `"backpressure":1`) {
		t.Fatalf("GRANIAN_BACKPRESSURE=1 not in effect:\n%s", g.Log)
	}
	tok := g.token()
	c := proctest.KeepAliveClient(64, 10*time.Second)
	defer c.CloseIdleConnections()

	var mu sync.Mutex
	codes := map[int]int{}
	var failed int
	var first error
	for round := 0; round < 5 && codes[503] == 0; round++ {
		load := proctest.StartLoad(context.Background(), 64, 64*20, func(int) error {
			req, _ := http.NewRequest("POST", g.url("/rpc"), strings.NewReader(seedPayload))
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set("Authorization", "Bearer "+tok)
			resp, err := c.Do(req)
			if err != nil {
				return err
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			mu.Lock()
			codes[resp.StatusCode]++
			mu.Unlock()
			switch {
			case resp.StatusCode == 200 && strings.Contains(string(b), `"isError":false`):
			case resp.StatusCode == 503 && resp.Header.Get("Retry-After") != "" && json.Valid(b) &&
				strings.Contains(string(b), `"status":503`):
			default:
				return fmt.Errorf("%d %q %s", resp.StatusCode, resp.Header.Get("Retry-After"), b)
			}
			return nil
		})
		// Liveness is answered before backpressure, even now.
		if code, body := get(t, g.url("/health")); code != 200 {
			t.Errorf("/health under load: %d %s", code, body)
		}
		r := load.Wait()
		if failed += r.Failed; first == nil {
			first = r.First()
		}
	}
	if failed > 0 {
		t.Fatalf("%d unexpected answers; first: %s", failed, first)
	}
	if codes[503] == 0 || codes[200] == 0 {
		t.Fatalf("want both 200s and immediate 503s past the limit, got %v", codes)
	}
	_, metrics := get(t, g.url("/metrics"))
	refused := regexp.MustCompile(`(?m)^mcpgateway_http_requests_refused_total\{reason="in_flight"\} (\d+)`).FindStringSubmatch(metrics)
	if refused == nil || refused[1] != strconv.Itoa(codes[503]) {
		t.Errorf("mcpgateway_http_requests_refused_total %v, want %d", refused, codes[503])
	}
	t.Logf("answers: %v", codes)
}

// Any other HTTP_SERVER stops the container at once, naming what is accepted.
func TestContainerBogusHTTPServerExits1(t *testing.T) {
	g, _ := containerRun(t, []string{"HTTP_SERVER=bogus"})
	if code := g.MustWait(t, 10*time.Second); code != 1 {
		t.Fatalf("exit status %d, want 1:\n%s", code, g.Log)
	}
	out := g.Log.String()
	for _, want := range []string{"HTTP_SERVER", `"bogus"`, `"gunicorn"`, `"granian"`} {
		if !strings.Contains(out, want) {
			t.Errorf("the error does not name %s: %s", want, out)
		}
	}
	if strings.Contains(out, "master starting") || !proctest.PortFree(g.port) {
		t.Errorf("something was started or bound: %s", out)
	}
}

// The image's HEALTHCHECK: 0 against a running server, 1 when none runs.
func TestContainerHealthcheck(t *testing.T) {
	g, env := containerRun(t, nil)
	g.waitReady()
	if code, out := healthcheck(t, env); code != 0 {
		t.Fatalf("HEALTHCHECK with the server running: exit %d: %s", code, out)
	}
	g.Signal(os.Interrupt)
	if code := g.MustWait(t, 10*time.Second); code != 0 {
		t.Fatalf("exit status %d after INT", code)
	}
	code, out := healthcheck(t, env)
	if code != 1 || !strings.Contains(out, "mcpgateway healthcheck") {
		t.Fatalf("HEALTHCHECK with no server: exit %d, want 1 with a message: %s", code, out)
	}
	// --url names another address.
	cmd := exec.Command(binary, "healthcheck", "--url", fmt.Sprintf("http://127.0.0.1:%d/health", proctest.MustFreePort(t)))
	cmd.Env = env
	if err := cmd.Run(); err == nil || cmd.ProcessState.ExitCode() != 1 {
		t.Fatalf("healthcheck --url of a closed port: %v, want exit 1", err)
	}
}

// yamlNode is a value of the small YAML subset docker-compose.yml is kept in:
// block maps, block lists of scalars, scalars, and JSON-style flow lists.
type yamlNode = any

type yamlLine struct {
	n, indent int
	text      string
}

// parseComposeYAML reads that subset; anything else fails the test, so the
// file stays simple enough to check here.
func parseComposeYAML(t *testing.T, raw string) map[string]yamlNode {
	t.Helper()
	var lines []yamlLine
	for i, l := range strings.Split(raw, "\n") {
		if strings.Contains(l, "\t") {
			t.Fatalf("docker-compose.yml:%d: a tab (YAML indents with spaces)", i+1)
		}
		text := stripYAMLComment(l)
		if strings.TrimSpace(text) == "" {
			continue
		}
		lines = append(lines, yamlLine{i + 1, len(text) - len(strings.TrimLeft(text, " ")), strings.TrimSpace(text)})
	}
	node, rest := parseYAMLBlock(t, lines, 0)
	if len(rest) > 0 {
		t.Fatalf("docker-compose.yml:%d: unexpected indentation", rest[0].n)
	}
	m, ok := node.(map[string]yamlNode)
	if !ok {
		t.Fatal("docker-compose.yml: the top level is not a map")
	}
	return m
}

func stripYAMLComment(l string) string {
	inQuote := byte(0)
	for i := 0; i < len(l); i++ {
		switch c := l[i]; {
		case inQuote != 0:
			if c == inQuote {
				inQuote = 0
			}
		case c == '"' || c == '\'':
			inQuote = c
		case c == '#' && (i == 0 || l[i-1] == ' '):
			return strings.TrimRight(l[:i], " ")
		}
	}
	return strings.TrimRight(l, " ")
}

func parseYAMLBlock(t *testing.T, lines []yamlLine, indent int) (yamlNode, []yamlLine) {
	t.Helper()
	if len(lines) == 0 || lines[0].indent < indent {
		return nil, lines
	}
	indent = lines[0].indent
	if strings.HasPrefix(lines[0].text, "- ") {
		var list []yamlNode
		for len(lines) > 0 && lines[0].indent == indent && strings.HasPrefix(lines[0].text, "- ") {
			item := strings.TrimPrefix(lines[0].text, "- ")
			if k, _, ok := strings.Cut(item, ": "); ok && !strings.ContainsAny(k, `"'[`) {
				t.Fatalf("docker-compose.yml:%d: lists of maps are outside the subset this test reads", lines[0].n)
			}
			list = append(list, yamlScalar(t, lines[0].n, item))
			lines = lines[1:]
		}
		return list, lines
	}
	m := map[string]yamlNode{}
	for len(lines) > 0 && lines[0].indent == indent {
		l := lines[0]
		key, value, ok := strings.Cut(l.text, ":")
		if !ok || strings.HasPrefix(l.text, "- ") {
			t.Fatalf("docker-compose.yml:%d: want key: value, got %q", l.n, l.text)
		}
		if _, dup := m[key]; dup {
			t.Fatalf("docker-compose.yml:%d: duplicate key %s", l.n, key)
		}
		lines = lines[1:]
		if value = strings.TrimSpace(value); value != "" {
			m[key] = yamlScalar(t, l.n, value)
			continue
		}
		var child yamlNode
		if len(lines) > 0 && lines[0].indent > indent {
			child, lines = parseYAMLBlock(t, lines, indent+1)
		}
		m[key] = child
	}
	return m, lines
}

func yamlScalar(t *testing.T, n int, v string) yamlNode {
	t.Helper()
	switch {
	case strings.HasPrefix(v, "["):
		var list []string
		if err := json.Unmarshal([]byte(v), &list); err != nil {
			t.Fatalf("docker-compose.yml:%d: flow list %s: %v", n, v, err)
		}
		return list
	case strings.HasPrefix(v, `"`):
		s, err := strconv.Unquote(v)
		if err != nil {
			t.Fatalf("docker-compose.yml:%d: %s: %v", n, v, err)
		}
		return s
	}
	return v
}

// yamlPath walks maps: yamlPath(m, "services", "gateway", "environment").
func yamlPath(t *testing.T, n yamlNode, keys ...string) yamlNode {
	t.Helper()
	for i, k := range keys {
		m, ok := n.(map[string]yamlNode)
		if !ok {
			t.Fatalf("docker-compose.yml: %s is not a map", strings.Join(keys[:i], "."))
		}
		if n, ok = m[k]; !ok {
			t.Fatalf("docker-compose.yml: no %s", strings.Join(keys[:i+1], "."))
		}
	}
	return n
}

// expandCompose applies compose's ${NAME:-default} and ${NAME:?message}
// with the given variables.
func expandCompose(s string, vars map[string]string) string {
	return regexp.MustCompile(`\$\{(\w+)(?::([-?])([^}]*))?\}`).ReplaceAllStringFunc(s, func(m string) string {
		p := regexp.MustCompile(`\$\{(\w+)(?::([-?])([^}]*))?\}`).FindStringSubmatch(m)
		if v, ok := vars[p[1]]; ok && v != "" {
			return v
		}
		if p[2] == "-" {
			return p[3]
		}
		return ""
	})
}

func TestContainerComposeProductionSettings(t *testing.T) {
	raw, err := os.ReadFile("../docker-compose.yml")
	if err != nil {
		t.Fatal(err)
	}
	doc := parseComposeYAML(t, string(raw))
	for _, svc := range []string{"gateway", "postgres", "redis"} {
		if test, ok := yamlPath(t, doc, "services", svc, "healthcheck", "test").([]string); !ok || len(test) < 2 {
			t.Errorf("services.%s.healthcheck.test: want an exec list, got %v", svc, test)
		}
	}
	if test := yamlPath(t, doc, "services", "gateway", "healthcheck", "test").([]string); strings.Join(test, " ") != "CMD /mcpgateway healthcheck" {
		t.Errorf("gateway healthcheck %q: want the binary's own healthcheck", test)
	}
	for _, dep := range []string{"postgres", "redis"} {
		if c := yamlPath(t, doc, "services", "gateway", "depends_on", dep, "condition"); c != "service_healthy" {
			t.Errorf("gateway depends_on %s: condition %v, want service_healthy", dep, c)
		}
	}
	if f := yamlPath(t, doc, "services", "gateway", "build", "dockerfile"); f != "Containerfile" {
		t.Errorf("gateway build.dockerfile %v, want Containerfile", f)
	}

	list, ok := yamlPath(t, doc, "services", "gateway", "environment").([]yamlNode)
	if !ok {
		t.Fatal("services.gateway.environment is not a list of NAME=value")
	}
	vars := map[string]string{"JWT_SECRET_KEY": "compose-secret-0123456789abcdef0123456789"}
	env := map[string]string{}
	var environ []string
	for _, item := range list {
		k, v, ok := strings.Cut(item.(string), "=")
		if !ok {
			t.Fatalf("environment item %q is not NAME=value", item)
		}
		v = expandCompose(v, vars)
		env[k] = v
		environ = append(environ, k+"="+v)
	}
	// The guide's recommended production settings, as written there.
	for k, want := range map[string]string{
		"HTTP_SERVER": "granian", "GRANIAN_WORKERS": "16", "GRANIAN_BACKLOG": "4096", "GRANIAN_BACKPRESSURE": "64",
		"REDIS_MAX_CONNECTIONS": "100", "REDIS_SOCKET_TIMEOUT": "1.0", "REDIS_SOCKET_CONNECT_TIMEOUT": "1.0",
		"REDIS_HEALTH_CHECK_INTERVAL": "15", "CACHE_TYPE": "redis", "JWT_SECRET_KEY": "compose-secret-0123456789abcdef0123456789",
	} {
		if env[k] != want {
			t.Errorf("gateway environment %s=%q, want %q", k, env[k], want)
		}
	}
	if !strings.HasPrefix(env["DATABASE_URL"], "postgresql://") || !strings.Contains(env["DATABASE_URL"], "@postgres:5432/") {
		t.Errorf("DATABASE_URL %q: want postgresql://...@postgres:5432/...", env["DATABASE_URL"])
	}
	if !strings.HasPrefix(env["REDIS_URL"], "redis://redis:6379") {
		t.Errorf("REDIS_URL %q: want redis://redis:6379/...", env["REDIS_URL"])
	}

	// The binary reads them as meant (the image's ENV first, as in the container).
	base := []string{"PATH=" + os.Getenv("PATH")}
	for k, v := range parseContainerfile(t).env(t) {
		base = append(base, k+"="+v)
	}
	cfg := configLines(t, append(base, environ...))
	for name, want := range map[string]string{
		"HTTPServer": "granian", "Workers": "16", "Backlog": "4096", "Backpressure": "64", "CacheType": "redis",
		"RedisMaxConnections": "100", "RedisSocketTimeout": "1s", "RedisSocketConnectTimeout": "1s",
		"RedisHealthCheckInterval": "15s",
	} {
		if f := strings.Fields(cfg[name]); len(f) < 2 || f[0] != want || f[1] != "env" {
			t.Errorf("mcpgateway config: %s is %q, want %s from the environment", name, cfg[name], want)
		}
	}

	// PostgreSQL can hold every worker's pool: the gateway refuses to start otherwise.
	workers, _ := strconv.Atoi(env["GRANIAN_WORKERS"])
	pool, _ := strconv.Atoi(strings.Fields(cfg["DBPoolSize"])[0])
	overflow, _ := strconv.Atoi(strings.Fields(cfg["DBMaxOverflow"])[0])
	command, _ := yamlPath(t, doc, "services", "postgres", "command").([]string)
	maxConns := 100 // PostgreSQL's default
	for _, arg := range command {
		if v, ok := strings.CutPrefix(arg, "max_connections="); ok {
			maxConns, _ = strconv.Atoi(v)
		}
	}
	if need := workers * (pool + overflow); need > maxConns-3 {
		t.Errorf("%d workers × (%d + %d) = %d connections do not fit PostgreSQL's max_connections %d", workers, pool, overflow, need, maxConns)
	}
}
