package config

import (
	"errors"
	"fmt"
	"reflect"
	"sort"
	"strings"

	"github.com/caarlos0/env/v11"
)

// envTarget is what caarlos0/env fills from one set of variables. It embeds
// Settings for every typed field; Workers and Backpressure shadow the fields
// of Settings because their text may be "auto" (Backpressure also "auto:N"),
// which no int parser should accept.
type envTarget struct {
	Settings
	Workers      string `env:"WEB_CONCURRENCY" gunicorn:"GUNICORN_WORKERS" granian:"GRANIAN_WORKERS"`
	Backpressure string `gunicorn:"GUNICORN_BACKPRESSURE" granian:"GRANIAN_BACKPRESSURE"`
}

// envTags are the struct tags holding environment names (see Settings).
var envTags = []string{"env", ProfileGunicorn, ProfileGranian}

// envVar is where one environment name lands.
type envVar struct{ field, tag string }

// envIndex maps every environment name Load reads to its field and tag.
var envIndex = func() map[string]envVar {
	idx := map[string]envVar{}
	for _, f := range reflect.VisibleFields(reflect.TypeFor[envTarget]()) {
		if f.Anonymous {
			continue
		}
		for _, tag := range envTags {
			if name := f.Tag.Get(tag); name != "" {
				idx[name] = envVar{f.Name, tag}
			}
		}
	}
	return idx
}()

// envNamesOf lists a field's environment names, in the order the tags are read.
func envNamesOf(field string) []string {
	var names []string
	for _, tag := range envTags {
		for name, v := range envIndex {
			if v.field == field && v.tag == tag {
				names = append(names, name)
			}
		}
	}
	return names
}

// noEffect lists names from the tuning guide that mean nothing in a Go server,
// with the reason given in the warning. Also see docs/tuning.md.
var noEffect = map[string]string{
	"GRANIAN_RUNTIME_MODE":         "Go schedules goroutines over OS threads itself; use Threads (GRANIAN_RUNTIME_THREADS)",
	"GRANIAN_BLOCKING_THREADS":     "Go's runtime grows blocking threads on demand",
	"GRANIAN_LOOP":                 "it selects a Python event loop; workers here are Go processes",
	"GRANIAN_TASK_IMPL":            "it selects a Python task implementation; workers here are Go processes",
	"GRANIAN_HTTP1_PIPELINE_FLUSH": "fasthttp always aggregates pipelined responses into one flush",
	"GRANIAN_DEV_MODE":             "Go code is not hot-reloaded; send HUP to reload workers or USR2 to upgrade the binary",
	"GUNICORN_WORKER_CLASS":        "every worker is an event-driven fasthttp server; gevent and eventlet are Python",
	"GUNICORN_CMD_ARGS":            "pass the flags to mcpgateway serve instead",
}

// tagOrder is the order one layer's names are applied in: names read in every
// profile, then the other server's names, then the active profile's, so the
// active profile's name wins when two names of one setting are set.
func tagOrder(profile string) []string {
	if profile == ProfileGranian {
		return []string{"env", ProfileGunicorn, ProfileGranian}
	}
	return []string{"env", ProfileGranian, ProfileGunicorn}
}

// envParsers hands textParsers to caarlos0/env (which copies, never changes, it).
var envParsers = func() map[reflect.Type]env.ParserFunc {
	m := map[reflect.Type]env.ParserFunc{}
	for t, p := range textParsers {
		m[t] = env.ParserFunc(p)
	}
	return m
}()

// readVars turns one set of variables (the environment, or a .env file's) into
// assignments, using caarlos0/env once per tag. srcName names a variable for
// Source.Name (the .env layer adds the file and line). An empty value counts
// as unset, as caarlos0/env treats it.
func readVars(vars map[string]string, kind, profile string, srcName func(string) string) ([]assignment, []string, error) {
	if vars == nil {
		vars = map[string]string{} // caarlos0/env reads os.Environ() when given a nil map
	}
	var out []assignment
	var warnings []string
	setBy := map[string]string{} // field → name that set it in this layer
	for _, tag := range tagOrder(profile) {
		var target envTarget
		var set []string
		opts := env.Options{
			Environment: vars,
			TagName:     tag,
			FuncMap:     envParsers,
			OnSet: func(name string, value any, isDefault bool) {
				if s, _ := value.(string); s != "" && !isDefault {
					set = append(set, name)
				}
			},
		}
		if err := env.ParseWithOptions(&target, opts); err != nil {
			return nil, nil, envError(err, tag, vars, kind, srcName)
		}
		for _, name := range set {
			field := envIndex[name].field
			src := Source{Kind: kind, Name: srcName(name)}
			value := reflect.ValueOf(target.Settings).FieldByName(field).Interface()
			switch field {
			case "Workers":
				n, err := parseWorkers(target.Workers)
				if err != nil {
					return nil, nil, valueError(field, src, vars[name], err)
				}
				value = n
			case "Backpressure":
				bp, err := parseBackpressure(target.Backpressure)
				if err != nil {
					return nil, nil, valueError(field, src, vars[name], err)
				}
				value = bp
			}
			if prev, ok := setBy[field]; ok {
				warnings = append(warnings, fmt.Sprintf("%s and %s are both set (%s); %s is used for %s (profile %s)",
					prev, name, kind, name, field, profile))
			}
			setBy[field] = name
			out = append(out, assignment{field: field, value: value, src: src, raw: vars[name]})
		}
	}
	return out, warnings, nil
}

// envError turns caarlos0/env's first parse error into an *Error naming the variable.
func envError(err error, tag string, vars map[string]string, kind string, srcName func(string) string) error {
	var pe env.ParseError
	if !errors.As(err, &pe) {
		return fmt.Errorf("read %s variables: %w", kind, err)
	}
	for name, v := range envIndex {
		if v.field == pe.Name && v.tag == tag {
			return valueError(pe.Name, Source{Kind: kind, Name: srcName(name)}, vars[name], pe.Err)
		}
	}
	return fmt.Errorf("read %s variables: %w", kind, err)
}

// varWarnings reports GUNICORN_*/GRANIAN_* names that are not read, and the
// guide's names that have no effect here. Other names are none of our business.
func varWarnings(vars map[string]string, where func(string) string) []string {
	names := make([]string, 0, len(vars))
	for name := range vars {
		names = append(names, name)
	}
	sort.Strings(names)
	var warnings []string
	for _, name := range names {
		if reason, ok := noEffect[name]; ok {
			warnings = append(warnings, fmt.Sprintf("%s has no effect: %s", where(name), reason))
			continue
		}
		_, known := envIndex[name]
		if !known && (strings.HasPrefix(name, "GUNICORN_") || strings.HasPrefix(name, "GRANIAN_")) {
			warnings = append(warnings, fmt.Sprintf("%s is not a setting of this server and is ignored", where(name)))
		}
	}
	return warnings
}
