package config

import (
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestParseDuration(t *testing.T) {
	for in, want := range map[string]time.Duration{
		"600": 600 * time.Second, "2.0": 2 * time.Second, "0.5": 500 * time.Millisecond, "0": 0,
		"10m": 10 * time.Minute, "1.5s": 1500 * time.Millisecond, " 30 ": 30 * time.Second, "-1": -time.Second,
	} {
		if got, err := parseDuration(in); err != nil || got != want {
			t.Errorf("parseDuration(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, in := range []string{"", "ten", "10 minutes", "1e300", "NaN"} {
		if _, err := parseDuration(in); err == nil {
			t.Errorf("parseDuration(%q) accepted", in)
		}
	}
}

func TestParseBool(t *testing.T) {
	for in, want := range map[string]bool{"true": true, "1": true, "yes": true, "ON": true, "false": false, "0": false, "no": false, "Off": false} {
		if got, err := parseBool(in); err != nil || got != want {
			t.Errorf("parseBool(%q) = %v, %v", in, got, err)
		}
	}
	if _, err := parseBool("maybe"); err == nil {
		t.Error("parseBool(maybe) accepted")
	}
}

func TestParseWorkersAndList(t *testing.T) {
	if n, err := parseWorkers("AUTO"); err != nil || n != workersAuto {
		t.Errorf("auto: %d %v", n, err)
	}
	for _, bad := range []string{"0", "257", "-2", "x"} {
		if _, err := parseWorkers(bad); err == nil {
			t.Errorf("parseWorkers(%q) accepted", bad)
		}
	}
	if got := parseList(" a:1, ,unix:/b ,"); !reflect.DeepEqual(got, []string{"a:1", "unix:/b"}) {
		t.Errorf("parseList = %q", got)
	}
}

func TestDotenvSyntax(t *testing.T) {
	d, err := parseDotenv(".env", []byte(strings.Join([]string{
		"# comment",
		"",
		"PLAIN=value # trailing comment",
		"export EXPORTED=1",
		`DOUBLE="a \"quoted\" #value\n"`,
		`SINGLE='lit\n $HOME # not a comment'`,
		"EMPTY=",
		"HASH=abc#def",
		"  SPACED = x y  ",
		"PLAIN=again",
	}, "\n")))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"PLAIN": "again", "EXPORTED": "1", "DOUBLE": "a \"quoted\" #value\n",
		"SINGLE": `lit\n $HOME # not a comment`, "EMPTY": "", "HASH": "abc#def", "SPACED": "x y",
	}
	if !reflect.DeepEqual(d.vars, want) {
		t.Errorf("vars = %q\nwant %q", d.vars, want)
	}
	if d.line["PLAIN"] != 10 || d.line["EXPORTED"] != 4 {
		t.Errorf("lines = %v", d.line)
	}
	for _, bad := range []string{"NOEQUALS", "1BAD=x", `Q="open`, `Q='a' b`, "=x"} {
		if _, err := parseDotenv(".env", []byte("A=1\n"+bad)); err == nil || !strings.Contains(err.Error(), ".env:2") {
			t.Errorf("%q: err = %v", bad, err)
		}
	}
}

func TestMaskURL(t *testing.T) {
	for in, want := range map[string]string{
		"postgresql://u:pw@h:5432/db": "postgresql://u:xxxxx@h:5432/db",
		"redis://:pw@h:6379/0":        "redis://:xxxxx@h:6379/0",
		"redis://h:6379/0":            "redis://h:6379/0",
		"sqlite:///./mcp.db":          "sqlite:///./mcp.db",
		"postgres://u:p%zz@h/db":      "postgres://u:xxxxx@h/db", // url.Parse rejects it: masked by hand
	} {
		if got := maskURL(in); got != want {
			t.Errorf("maskURL(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestDatabaseURLSchemes(t *testing.T) {
	for url, ok := range map[string]bool{
		"sqlite:///./mcp.db": true, "sqlite:////var/mcp.db": true, "postgresql://u@h/db": true, "postgres://h/db": true,
		"postgresql+psycopg://h/db": true, "postgresql+asyncpg://h/db": true,
		"mysql://h/db": false, "sqlite://": false, "postgres+x://h": false, "postgresql+://h": false, "mcp.db": false,
	} {
		if validDatabaseURL(url) != ok {
			t.Errorf("validDatabaseURL(%q) = %v", url, !ok)
		}
	}
}

func TestBindSyntax(t *testing.T) {
	for addr, ok := range map[string]bool{
		"127.0.0.1:4444": true, "[::1]:80": true, ":4444": true, "unix:/run/x.sock": true, "localhost:0": true,
		"localhost": false, "::1:80": false, "unix:": false, "h:99999": false, "h:-1": false, "h:http": false,
	} {
		if checkBind(addr) != ok {
			t.Errorf("checkBind(%q) = %v", addr, !ok)
		}
	}
}

// TestMetadata keeps the tables in step with Settings.
func TestMetadata(t *testing.T) {
	seen := map[string]string{}
	for i := range settingsType.NumField() {
		f := settingsType.Field(i)
		r, ok := rules[f.Name]
		if !ok || r.accepted == "" || r.help == "" {
			t.Errorf("%s has no complete rule", f.Name)
		}
		if _, ok := textParsers[f.Type]; !ok {
			t.Errorf("%s: no text parser for %s", f.Name, f.Type)
		}
		_, derived := derivedOnly[f.Name]
		settable := len(envNamesOf(f.Name)) > 0 || f.Tag.Get("flag") != ""
		if settable == derived {
			t.Errorf("%s: settable by environment or flag %v, derived from another setting %v", f.Name, settable, derived)
		}
		for _, tag := range envTags {
			name := f.Tag.Get(tag)
			if name == "" {
				continue
			}
			if prev, dup := seen[name]; dup {
				t.Errorf("%s is used by %s and %s", name, prev, f.Name)
			}
			seen[name] = f.Name
		}
	}
	if len(rules) != settingsType.NumField() {
		t.Errorf("%d rules for %d settings", len(rules), settingsType.NumField())
	}
	if got := envIndex["GRANIAN_WORKERS"]; got.field != "Workers" {
		t.Errorf("GRANIAN_WORKERS → %v", got)
	}
	if len(envNamesOf("Workers")) != 3 {
		t.Errorf("Workers names = %v", envNamesOf("Workers"))
	}
	if got := envIndex["GRANIAN_BACKPRESSURE"]; got.field != "Backpressure" || len(envNamesOf("Backpressure")) != 2 {
		t.Errorf("GRANIAN_BACKPRESSURE → %v; Backpressure names = %v", got, envNamesOf("Backpressure"))
	}
	// Every default is valid under its own rules.
	for _, p := range []string{ProfileGunicorn, ProfileGranian} {
		s, err := Defaults(p)
		if err != nil {
			t.Fatal(err)
		}
		v := reflect.ValueOf(s)
		for i := range settingsType.NumField() {
			name := settingsType.Field(i).Name
			if ok := rules[name].ok; ok != nil && name != "Workers" && !ok(v.Field(i)) {
				t.Errorf("%s default of %s is invalid", p, name)
			}
		}
	}
	if _, err := Defaults("uvicorn"); err == nil {
		t.Error("Defaults(uvicorn) accepted")
	}
}
