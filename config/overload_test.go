package config

import (
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"
)

// source sets one setting from one layer: it returns the Input and the
// Source the value must be credited to.
type source struct {
	name string
	set  func(t *testing.T, profile, envName, flagName, confName, text string) (Input, Source)
}

// confText is how a text is written in gunicorn.conf.go: numbers as Go
// numbers, anything else as a string constant.
func confText(text string) string {
	if _, err := parseInt(text); err == nil {
		return text
	}
	return fmt.Sprintf("%q", text)
}

var sources = []source{
	{"env", func(t *testing.T, profile, envName, _, _, text string) (Input, Source) {
		return in(t, nil, "HTTP_SERVER="+profile, envName+"="+text), Source{"env", envName}
	}},
	{"dotenv", func(t *testing.T, profile, envName, _, _, text string) (Input, Source) {
		input := in(t, nil, "HTTP_SERVER="+profile)
		writeFile(t, input.Dir, ".env", "# overload\n"+envName+"="+text+"\n")
		return input, Source{"dotenv", ".env:2 " + envName}
	}},
	{"flag", func(t *testing.T, profile, _, flagName, _, text string) (Input, Source) {
		return in(t, []string{"--" + flagName, text}, "HTTP_SERVER="+profile), Source{"flag", "--" + flagName}
	}},
	{"conf file", func(t *testing.T, profile, _, _, confName, text string) (Input, Source) {
		input := in(t, nil, "HTTP_SERVER="+profile)
		writeFile(t, input.Dir, "gunicorn.conf.go", "//go:build ignore\n\npackage main\n\nconst "+confName+" = "+text+"\n")
		return input, Source{"file", "gunicorn.conf.go:5"}
	}},
}

// printed returns the value and source columns of a setting in Print's output.
func printed(t *testing.T, r *Resolved, setting string) (value, src string) {
	t.Helper()
	var b strings.Builder
	r.Print(&b)
	for _, line := range strings.Split(b.String(), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == setting {
			return f[1], strings.Join(f[2:], " ")
		}
	}
	t.Fatalf("Print has no line for %s:\n%s", setting, b.String())
	return "", ""
}

// TestBackpressureForms: every source takes a number, "auto" and "auto:N",
// in both profiles and under each environment name; Print writes the form back.
func TestBackpressureForms(t *testing.T) {
	type want struct {
		n     int
		auto  bool
		text  string // as Print shows it
		limit int    // BackpressureLimit: what a worker gets
	}
	forms := []struct {
		text     string
		gunicorn want
		granian  want
	}{
		{"auto", want{0, true, "auto", 1000}, want{512, true, "auto", 512}},
		{"auto:64", want{64, true, "auto:64", 64}, want{64, true, "auto:64", 64}},
		{"16", want{16, false, "16", 16}, want{16, false, "16", 16}},
		{"0", want{0, false, "0", 0}, want{0, false, "0", 0}},
		{" AUTO:8 ", want{8, true, "auto:8", 8}, want{8, true, "auto:8", 8}},
	}
	for _, envName := range envNamesOf("Backpressure") {
		for _, src := range sources {
			for _, f := range forms {
				for _, profile := range []string{ProfileGunicorn, ProfileGranian} {
					w := f.gunicorn
					if profile == ProfileGranian {
						w = f.granian
					}
					text := f.text
					if src.name == "conf file" {
						text = confText(strings.TrimSpace(f.text))
					}
					input, wantSrc := src.set(t, profile, envName, "backpressure", "Backpressure", text)
					name := fmt.Sprintf("%s %s %s %q", profile, src.name, envName, f.text)
					r, err := Load(input)
					if err != nil {
						t.Errorf("%s: %v", name, err)
						continue
					}
					s := r.Settings
					if s.Backpressure != w.n || s.BackpressureAuto != w.auto || s.BackpressureLimit() != w.limit {
						t.Errorf("%s: Backpressure %d auto %v limit %d, want %d %v %d", name,
							s.Backpressure, s.BackpressureAuto, s.BackpressureLimit(), w.n, w.auto, w.limit)
					}
					if r.Sources["Backpressure"] != wantSrc || r.Sources["BackpressureAuto"] != (Source{"derived", "from Backpressure"}) {
						t.Errorf("%s: sources %v / %v, want %v", name, r.Sources["Backpressure"], r.Sources["BackpressureAuto"], wantSrc)
					}
					value, printedSrc := printed(t, r, "Backpressure")
					if value != w.text || printedSrc != wantSrc.String() {
						t.Errorf("%s: Print shows %q %q, want %q %q", name, value, printedSrc, w.text, wantSrc)
					}
					if value, printedSrc := printed(t, r, "BackpressureAuto"); value != fmt.Sprint(w.auto) || printedSrc != "derived from Backpressure" {
						t.Errorf("%s: Print shows BackpressureAuto %q %q", name, value, printedSrc)
					}
				}
			}
		}
	}
}

// TestBackpressureLayers: a later layer's text replaces both the number and
// auto, whichever form either layer used.
func TestBackpressureLayers(t *testing.T) {
	for _, tc := range []struct {
		conf, env string
		args      []string
		n         int
		auto      bool
		kind      string
	}{
		{`"auto"`, "16", nil, 16, false, "env"},
		{"16", "auto:32", nil, 32, true, "env"},
		{`"auto:32"`, "", []string{"--backpressure", "0"}, 0, false, "flag"},
		{"0", "8", []string{"--backpressure=auto"}, 512, true, "flag"},
		{`"auto:5"`, "", nil, 5, true, "file"},
	} {
		input := in(t, tc.args, "HTTP_SERVER=granian")
		if tc.env != "" {
			input.Environ = append(input.Environ, "GRANIAN_BACKPRESSURE="+tc.env)
		}
		writeFile(t, input.Dir, "gunicorn.conf.go", "//go:build ignore\n\npackage main\n\nconst Backpressure = "+tc.conf+"\n")
		r := mustLoad(t, input)
		if s := r.Settings; s.Backpressure != tc.n || s.BackpressureAuto != tc.auto || r.Sources["Backpressure"].Kind != tc.kind {
			t.Errorf("conf %s env %q args %q: %d auto %v from %v, want %d %v from %s", tc.conf, tc.env, tc.args,
				s.Backpressure, s.BackpressureAuto, r.Sources["Backpressure"], tc.n, tc.auto, tc.kind)
		}
	}
}

// TestMaxQueueDelayValues: 0 and 1ms to 10s from every source and name.
func TestMaxQueueDelayValues(t *testing.T) {
	for _, tc := range []struct {
		text, conf string
		want       time.Duration
		shown      string
	}{
		{"0", "0", 0, "0s"},
		{"1ms", "time.Millisecond", time.Millisecond, "1ms"},
		{"0.25", "0.25", 250 * time.Millisecond, "250ms"},
		{"10s", "10 * time.Second", 10 * time.Second, "10s"},
	} {
		for _, envName := range envNamesOf("MaxQueueDelay") {
			for _, src := range sources {
				text := tc.text
				if src.name == "conf file" {
					text = tc.conf
				}
				input, wantSrc := src.set(t, ProfileGranian, envName, "max-queue-delay", "MaxQueueDelay", text)
				name := fmt.Sprintf("%s %s %q", src.name, envName, text)
				r, err := Load(input)
				if err != nil {
					t.Errorf("%s: %v", name, err)
					continue
				}
				if r.Settings.MaxQueueDelay != tc.want || r.Sources["MaxQueueDelay"] != wantSrc {
					t.Errorf("%s: %s from %v, want %s from %v", name, r.Settings.MaxQueueDelay, r.Sources["MaxQueueDelay"], tc.want, wantSrc)
				}
				if value, printedSrc := printed(t, r, "MaxQueueDelay"); value != tc.shown || printedSrc != wantSrc.String() {
					t.Errorf("%s: Print shows %q %q", name, value, printedSrc)
				}
			}
		}
	}
	if got := envNamesOf("MaxQueueDelay"); len(got) != 3 {
		t.Errorf("MaxQueueDelay names %v", got)
	}
}

// TestOverloadBadValues: bad text in any source stops Load with the
// setting, the source, the value and the accepted forms.
func TestOverloadBadValues(t *testing.T) {
	cases := []struct {
		setting, envName, flagName string
		text, conf                 string // conf: as written in gunicorn.conf.go
		accepted                   []string
	}{
		{"Backpressure", "GRANIAN_BACKPRESSURE", "backpressure", "auto:0", `"auto:0"`, []string{`"auto"`, `"auto:N"`, "N of 1 or more"}},
		{"Backpressure", "GUNICORN_BACKPRESSURE", "backpressure", "auto:x", `"auto:x"`, []string{`"auto"`, `"auto:N"`}},
		{"Backpressure", "GRANIAN_BACKPRESSURE", "backpressure", "fast", `"fast"`, []string{"whole number", `"auto"`}},
		{"Backpressure", "GUNICORN_BACKPRESSURE", "backpressure", "-1", "-1", []string{"0 or more", `"auto:N"`}},
		{"Backpressure", "GRANIAN_BACKPRESSURE", "backpressure", "auto:-4", `"auto:-4"`, []string{`"auto:N"`}},
		{"MaxQueueDelay", "MAX_QUEUE_DELAY", "max-queue-delay", "-5ms", "-5 * time.Millisecond", []string{"0 (off)", "1ms to 10s"}},
		{"MaxQueueDelay", "GUNICORN_MAX_QUEUE_DELAY", "max-queue-delay", "20s", "20 * time.Second", []string{"0 (off)", "1ms to 10s"}},
		{"MaxQueueDelay", "GRANIAN_MAX_QUEUE_DELAY", "max-queue-delay", "0.5ms", "500 * time.Microsecond", []string{"1ms to 10s"}},
		{"MaxQueueDelay", "MAX_QUEUE_DELAY", "max-queue-delay", "soon", `"soon"`, []string{"1ms to 10s"}},
	}
	for _, c := range cases {
		for _, src := range sources {
			text := c.text
			if src.name == "conf file" {
				text = c.conf
			}
			for _, profile := range []string{ProfileGunicorn, ProfileGranian} {
				input, wantSrc := src.set(t, profile, c.envName, c.flagName, c.setting, text)
				name := fmt.Sprintf("%s %s %s=%s", profile, src.name, c.setting, text)
				_, err := Load(input)
				var e *Error
				if !errors.As(err, &e) || !errors.Is(err, ErrInvalidValue) {
					t.Errorf("%s: err %v, want an invalid-value *Error", name, err)
					continue
				}
				if e.Setting != c.setting || e.Source != wantSrc.String() || e.Value != text {
					t.Errorf("%s: error {%q %q %q}, want {%q %q %q}", name, e.Setting, e.Source, e.Value, c.setting, wantSrc, text)
				}
				msg := e.Error()
				for _, w := range append([]string{c.setting, wantSrc.String()}, c.accepted...) {
					if !strings.Contains(msg, w) {
						t.Errorf("%s: %q lacks %q", name, msg, w)
					}
				}
			}
		}
	}
}

// TestBackpressureAutoNotSettable: it follows Backpressure; no source sets it alone.
func TestBackpressureAutoNotSettable(t *testing.T) {
	input := in(t, nil)
	writeFile(t, input.Dir, "gunicorn.conf.go", "//go:build ignore\n\npackage main\n\nconst BackpressureAuto = true\n")
	e := mustFail(t, input)
	if e.Setting != "BackpressureAuto" || !errors.Is(e, ErrNotSettable) || !strings.Contains(e.Error(), `Backpressure = "auto"`) {
		t.Errorf("conf file BackpressureAuto: %v", e)
	}
	if _, err := Load(in(t, []string{"--backpressure-auto"})); err == nil {
		t.Error("--backpressure-auto accepted")
	}
	if names := envNamesOf("BackpressureAuto"); len(names) != 0 {
		t.Errorf("BackpressureAuto has environment names %v", names)
	}
	r := mustLoad(t, in(t, nil, "BACKPRESSURE_AUTO=true", "GRANIAN_BACKPRESSURE_AUTO=true"))
	if r.Settings.BackpressureAuto != DefaultBackpressureAuto || !hasWarning(r, "GRANIAN_BACKPRESSURE_AUTO is not a setting") {
		t.Errorf("BackpressureAuto %v, warnings %q", r.Settings.BackpressureAuto, r.Warnings)
	}
}

// TestOverloadDefaults: one constant for each figure, in both profiles.
func TestOverloadDefaults(t *testing.T) {
	for _, tc := range []struct {
		profile string
		n       int
	}{{ProfileGunicorn, 0}, {ProfileGranian, 512}} {
		r := mustLoad(t, in(t, nil, "HTTP_SERVER="+tc.profile))
		s := r.Settings
		if s.MaxQueueDelay != DefaultMaxQueueDelay || s.BackpressureAuto != DefaultBackpressureAuto || s.Backpressure != tc.n {
			t.Errorf("%s: MaxQueueDelay %s BackpressureAuto %v Backpressure %d", tc.profile, s.MaxQueueDelay, s.BackpressureAuto, s.Backpressure)
		}
		def := Source{"default", tc.profile}
		for _, name := range []string{"MaxQueueDelay", "Backpressure", "BackpressureAuto"} {
			if r.Sources[name] != def {
				t.Errorf("%s: %s from %v", tc.profile, name, r.Sources[name])
			}
		}
		if value, src := printed(t, r, "MaxQueueDelay"); value != DefaultMaxQueueDelay.String() || src != def.String() {
			t.Errorf("%s: Print shows MaxQueueDelay %q %q", tc.profile, value, src)
		}
		wantText := backpressureText(tc.n, DefaultBackpressureAuto, tc.profile)
		if value, src := printed(t, r, "Backpressure"); value != wantText || src != def.String() {
			t.Errorf("%s: Print shows Backpressure %q %q, want %q", tc.profile, value, src, wantText)
		}
	}
	if DefaultMaxQueueDelay != 0 && (DefaultMaxQueueDelay < time.Millisecond || DefaultMaxQueueDelay > 10*time.Second) {
		t.Errorf("DefaultMaxQueueDelay %s is outside its own rule", DefaultMaxQueueDelay)
	}
	// The docs give the default; retuning the constant must update them.
	doc := readRepoFile(t, tuningPath)
	row := lineStarting(doc, "| `MaxQueueDelay` | `")
	if !strings.Contains(row, "| `"+DefaultMaxQueueDelay.String()+"` |") {
		t.Errorf("%s: the MaxQueueDelay row does not give the default %s: %q", tuningPath, DefaultMaxQueueDelay, row)
	}
	example := readRepoFile(t, examplePath)
	if !strings.Contains(example, fmt.Sprintf("Default %d ms", DefaultMaxQueueDelay.Milliseconds())) {
		t.Errorf("%s does not give MaxQueueDelay's default as \"Default %d ms\"", examplePath, DefaultMaxQueueDelay.Milliseconds())
	}
}

func lineStarting(text, prefix string) string {
	for _, l := range strings.Split(text, "\n") {
		if strings.HasPrefix(l, prefix) {
			return l
		}
	}
	return ""
}

// TestOverloadUsageAndJSON: --help shows the forms and defaults; workers get
// both fields through the JSON payload.
func TestOverloadUsageAndJSON(t *testing.T) {
	var b strings.Builder
	Usage(&b)
	for _, want := range []string{"--backpressure N|auto|auto:N", "--max-queue-delay DURATION", "default " + DefaultMaxQueueDelay.String() + ";",
		"MAX_QUEUE_DELAY, GUNICORN_MAX_QUEUE_DELAY, GRANIAN_MAX_QUEUE_DELAY", "GUNICORN_BACKPRESSURE, GRANIAN_BACKPRESSURE"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("usage lacks %q", want)
		}
	}
	r := mustLoad(t, in(t, []string{"--backpressure", "auto:64", "--max-queue-delay", "20ms"}))
	data, err := json.Marshal(r.Settings)
	if err != nil {
		t.Fatal(err)
	}
	var back Settings
	if err := json.Unmarshal(data, &back); err != nil || !reflect.DeepEqual(back, r.Settings) {
		t.Errorf("round trip: %v\n%+v\n%+v", err, back, r.Settings)
	}
	if back.Backpressure != 64 || !back.BackpressureAuto || back.MaxQueueDelay != 20*time.Millisecond {
		t.Errorf("after JSON: %d %v %s", back.Backpressure, back.BackpressureAuto, back.MaxQueueDelay)
	}
}
