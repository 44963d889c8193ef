package config

import (
	"bytes"
	"strings"
	"testing"
)

// The request-head limits: Gunicorn's defaults in the gunicorn profile,
// Granian's (buffer only, 100 fields) in the granian profile, and the
// Gunicorn names read in both.
func TestRequestLimits(t *testing.T) {
	for profile, want := range map[string][3]int{ProfileGunicorn: {4094, 100, 8190}, ProfileGranian: {0, 100, 0}} {
		s := mustLoad(t, in(t, nil, "HTTP_SERVER="+profile)).Settings
		if got := [3]int{s.LimitRequestLine, s.LimitRequestFields, s.LimitRequestFieldSize}; got != want {
			t.Errorf("%s defaults %v, want %v", profile, got, want)
		}
		r := mustLoad(t, in(t, nil, "HTTP_SERVER="+profile, "GUNICORN_LIMIT_REQUEST_LINE=8190",
			"GUNICORN_LIMIT_REQUEST_FIELDS=0", "GUNICORN_LIMIT_REQUEST_FIELD_SIZE=16384"))
		s = r.Settings
		if s.LimitRequestLine != 8190 || s.LimitRequestFields != 0 || s.LimitRequestFieldSize != 16384 ||
			r.Sources["LimitRequestLine"] != (Source{"env", "GUNICORN_LIMIT_REQUEST_LINE"}) {
			t.Errorf("%s from the environment: %d %d %d (%v)", profile, s.LimitRequestLine, s.LimitRequestFields,
				s.LimitRequestFieldSize, r.Sources["LimitRequestLine"])
		}
		if n := s.RequestFieldsLimit(); n != MaxLimitRequestFields {
			t.Errorf("LimitRequestFields 0 means %d to workers, want %d", n, MaxLimitRequestFields)
		}
	}
	s := mustLoad(t, in(t, []string{"--limit-request-line", "0", "--limit-request-fields", "10", "--limit-request-field-size", "100"})).Settings
	if s.LimitRequestLine != 0 || s.LimitRequestFields != 10 || s.LimitRequestFieldSize != 100 || s.RequestFieldsLimit() != 10 {
		t.Errorf("flags: %d %d %d", s.LimitRequestLine, s.LimitRequestFields, s.LimitRequestFieldSize)
	}
	input := in(t, nil)
	writeFile(t, input.Dir, "gunicorn.conf.go", "//go:build ignore\n\npackage main\n\nconst LimitRequestLine = 2048\nconst LimitRequestFieldSize = 0\n")
	if r := mustLoad(t, input); r.Settings.LimitRequestLine != 2048 || r.Settings.LimitRequestFieldSize != 0 || r.Sources["LimitRequestLine"].Kind != "file" {
		t.Errorf("conf file: %d %d from %v", r.Settings.LimitRequestLine, r.Settings.LimitRequestFieldSize, r.Sources["LimitRequestLine"])
	}
	checkError(t, mustFail(t, in(t, []string{"--limit-request-line", "8191"})), "LimitRequestLine", "flag --limit-request-line", "8191")
	checkError(t, mustFail(t, in(t, nil, "GUNICORN_LIMIT_REQUEST_FIELDS=32769")), "LimitRequestFields", "env GUNICORN_LIMIT_REQUEST_FIELDS", "32769")
	checkError(t, mustFail(t, in(t, nil, "GUNICORN_LIMIT_REQUEST_FIELD_SIZE=-1")), "LimitRequestFieldSize", "env GUNICORN_LIMIT_REQUEST_FIELD_SIZE", "-1")
}

// /metrics: no token and local-only by default; a token is checked and
// masked; METRICS_PUBLIC and --metrics-public.
func TestMetricsSettings(t *testing.T) {
	s := mustLoad(t, in(t, nil)).Settings
	if s.MetricsToken != "" || s.MetricsPublic {
		t.Errorf("defaults: token %q, public %v", s.MetricsToken, s.MetricsPublic)
	}
	const token = "scrape-0123456789abcdef"
	r := mustLoad(t, in(t, nil, "METRICS_TOKEN="+token, "METRICS_PUBLIC=true"))
	if r.Settings.MetricsToken != token || !r.Settings.MetricsPublic {
		t.Errorf("env: token %q, public %v", r.Settings.MetricsToken, r.Settings.MetricsPublic)
	}
	var out bytes.Buffer
	r.Print(&out)
	if strings.Contains(out.String(), token) || !strings.Contains(lineOf(out.String(), "MetricsToken"), "********") {
		t.Errorf("mcpgateway config shows the token:\n%s", lineOf(out.String(), "MetricsToken"))
	}
	if s := mustLoad(t, in(t, []string{"--metrics-public"})).Settings; !s.MetricsPublic {
		t.Error("--metrics-public did not set MetricsPublic")
	}
	for _, bad := range []string{"short", "has a space in it ok", "tab\tinside-0123456789"} {
		e := mustFail(t, in(t, nil, "METRICS_TOKEN="+bad))
		if e.Setting != "MetricsToken" || strings.Contains(e.Error(), bad) {
			t.Errorf("METRICS_TOKEN=%q: %v (the value must be masked)", bad, e)
		}
	}
}

func lineOf(text, prefix string) string {
	for _, l := range strings.Split(text, "\n") {
		if strings.HasPrefix(l, prefix+" ") {
			return l
		}
	}
	return ""
}
