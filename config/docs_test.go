package config

import (
	"bytes"
	"go/format"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"
)

const (
	examplePath = "../gunicorn.conf.go.example"
	tuningPath  = "../docs/tuning.md"
)

func readRepoFile(t *testing.T, path string) string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

// mentions reports whether text names word as a whole word.
func mentions(text, word string) bool {
	return regexp.MustCompile(`(^|[^A-Za-z0-9_])` + regexp.QuoteMeta(word) + `($|[^A-Za-z0-9_])`).MatchString(text)
}

func TestExampleMentionsEverySetting(t *testing.T) {
	example := readRepoFile(t, examplePath)
	for i := range settingsType.NumField() {
		if name := settingsType.Field(i).Name; !mentions(example, name) {
			t.Errorf("%s does not mention %s", examplePath, name)
		}
	}
	formatted, err := format.Source([]byte(example))
	if err != nil || !bytes.Equal(formatted, []byte(example)) {
		t.Errorf("%s is not gofmt-clean (err %v)", examplePath, err)
	}
	if !strings.HasPrefix(example, "//go:build ignore\n") {
		t.Errorf("%s lacks //go:build ignore", examplePath)
	}
}

// TestExampleLoads loads the example as gunicorn.conf.go in both profiles:
// no error, no warning from the file, and the defaults unchanged.
func TestExampleLoads(t *testing.T) {
	example := readRepoFile(t, examplePath)
	for _, profile := range []string{ProfileGunicorn, ProfileGranian} {
		plain := mustLoad(t, in(t, nil, "HTTP_SERVER="+profile, "JWT_SECRET_KEY="+testKey))
		input := in(t, nil, "HTTP_SERVER="+profile, "JWT_SECRET_KEY="+testKey)
		writeFile(t, input.Dir, "gunicorn.conf.go", example)
		r := mustLoad(t, input)
		if len(r.Warnings) != 0 {
			t.Errorf("%s: warnings %q", profile, r.Warnings)
		}
		if r.Sources["Timeout"].Kind != "file" {
			t.Errorf("%s: the example sets nothing (Timeout from %v)", profile, r.Sources["Timeout"])
		}
		r.Settings.ConfigFile = ""
		if !reflect.DeepEqual(r.Settings, plain.Settings) {
			t.Errorf("%s: the example changes defaults:\n%+v\n%+v", profile, r.Settings, plain.Settings)
		}
	}
}

// TestExampleCommentedLinesLoad uncomments every `// const X = ...` and
// `// var X = ...` line of the example and checks the result still loads.
func TestExampleCommentedLinesLoad(t *testing.T) {
	example := readRepoFile(t, examplePath)
	re := regexp.MustCompile(`(?m)^// ((const|var) [A-Z]\w* = .*)$`)
	uncommented := re.ReplaceAllString(example, "$1")
	if n := len(re.FindAllString(example, -1)); n < 40 {
		t.Errorf("only %d commented settings in the example", n)
	}
	// Duplicate names (set lines and commented ones) are the only expected error:
	// drop the set lines' duplicates by keeping the first of each name.
	seen := map[string]bool{}
	var out []string
	for _, line := range strings.Split(uncommented, "\n") {
		if m := regexp.MustCompile(`^(const|var) ([A-Z]\w*) =`).FindStringSubmatch(line); m != nil {
			if seen[m[2]] {
				continue
			}
			seen[m[2]] = true
		}
		out = append(out, line)
	}
	input := in(t, nil)
	path := filepath.Join(input.Dir, "gunicorn.conf.go")
	if err := os.WriteFile(path, []byte(strings.Join(out, "\n")), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(input); err != nil {
		t.Errorf("example with every line uncommented: %v", err)
	}
}

func TestTuningDocCoversEverything(t *testing.T) {
	doc := readRepoFile(t, tuningPath)
	for i := range settingsType.NumField() {
		f := settingsType.Field(i)
		if !mentions(doc, f.Name) {
			t.Errorf("%s does not mention setting %s", tuningPath, f.Name)
		}
		for _, name := range strings.Split(f.Tag.Get("flag"), ",") {
			if name != "" && !strings.Contains(doc, "`"+dashed(name)) {
				t.Errorf("%s does not mention flag %s", tuningPath, dashed(name))
			}
		}
	}
	for name := range envIndex {
		if !mentions(doc, name) {
			t.Errorf("%s does not mention %s", tuningPath, name)
		}
	}
	for name := range noEffect {
		if !mentions(doc, name) {
			t.Errorf("%s does not list %s among the no-effect names", tuningPath, name)
		}
	}
}
