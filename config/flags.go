package config

import (
	"flag"
	"fmt"
	"io"
	"reflect"
	"strings"
)

// flagLayer collects the command line's assignments in the order given.
type flagLayer struct {
	as       []assignment
	args     []string // positional arguments of a command (Input.Command)
	bind     int      // index of the Bind assignment in as, or -1
	err      error    // the first bad value, as an *Error
	warnings []string
}

// flagValue sets one field; it is registered once per name (--workers, -w)
// so that sources say which spelling was used.
type flagValue struct {
	l      *flagLayer
	field  string
	name   string // "--workers" or "-w"
	isBool bool
}

func (v *flagValue) String() string   { return "" }
func (v *flagValue) IsBoolFlag() bool { return v.isBool }

func (v *flagValue) Set(s string) error {
	src := Source{Kind: "flag", Name: v.name}
	val, err := parseText(v.field, s)
	if err != nil {
		e := valueError(v.field, src, s, err)
		if v.l.err == nil {
			v.l.err = e
		}
		return e
	}
	if v.field == "Bind" { // repeatable: every --bind adds an address
		if v.l.bind >= 0 {
			a := &v.l.as[v.l.bind]
			a.value = append(a.value.([]string), val.([]string)...)
			a.raw += "," + s
			return nil
		}
		v.l.bind = len(v.l.as)
	}
	v.l.as = append(v.l.as, assignment{field: v.field, value: val, src: src, raw: s})
	return nil
}

// noEffectFlag accepts Gunicorn's --worker-class / -k with a warning.
type noEffectFlag struct {
	l    *flagLayer
	name string
}

func (f *noEffectFlag) String() string { return "" }
func (f *noEffectFlag) Set(string) error {
	f.l.warnings = append(f.l.warnings, fmt.Sprintf("flag %s has no effect: %s", f.name, noEffect["GUNICORN_WORKER_CLASS"]))
	return nil
}

// dashed spells a flag name as users type it: --workers, -w.
func dashed(name string) string {
	if len(name) == 1 {
		return "-" + name
	}
	return "--" + name
}

func newFlagSet(l *flagLayer) *flag.FlagSet {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.SetOutput(io.Discard) // Usage prints the help; errors are returned
	fs.Usage = func() {}
	for i := range settingsType.NumField() {
		f := settingsType.Field(i)
		names := f.Tag.Get("flag")
		if names == "" {
			continue
		}
		for _, name := range strings.Split(names, ",") {
			fs.Var(&flagValue{l: l, field: f.Name, name: dashed(name), isBool: f.Type.Kind() == reflect.Bool}, name, rules[f.Name].help)
		}
	}
	for _, name := range []string{"worker-class", "k"} {
		fs.Var(&noEffectFlag{l: l, name: dashed(name)}, name, "no effect")
	}
	return fs
}

// parseFlags reads the command line. -h and --help return flag.ErrHelp.
// command, when not nil, adds a client command's own flags (Input.Command).
func parseFlags(args []string, command *flag.FlagSet) (*flagLayer, error) {
	l := &flagLayer{bind: -1}
	fs := newFlagSet(l)
	if command != nil {
		var clash error
		command.VisitAll(func(f *flag.Flag) {
			if fs.Lookup(f.Name) != nil {
				clash = fmt.Errorf("flag %s of %s is also a flag of serve", dashed(f.Name), command.Name())
				return
			}
			fs.Var(f.Value, f.Name, f.Usage)
		})
		if clash != nil {
			return nil, clash
		}
	}
	if err := fs.Parse(args); err != nil {
		if l.err != nil {
			return nil, l.err
		}
		return nil, err
	}
	if command != nil {
		l.args = fs.Args()
	} else if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q: serve takes flags only", fs.Arg(0))
	}
	return l, nil
}

var placeholders = map[string]string{
	"HTTPServer": "gunicorn|granian", "Bind": "ADDR", "Host": "HOST", "Workers": "N|auto", "Backpressure": "N|auto|auto:N",
	"HTTP": "auto|1|2", "LogLevel": "LEVEL", "LogFormat": "auto|json|console", "Pidfile": "PATH", "ControlSocket": "PATH|off", "HealthBind": "ADDR",
	"ConfigFile": "PATH", "EnvFile": "PATH", "AccessLogFile": "PATH", "ErrorLogFile": "PATH", "CertFile": "PATH", "KeyFile": "PATH",
}

func placeholder(f reflect.StructField) string {
	if p, ok := placeholders[f.Name]; ok {
		return p
	}
	switch f.Type.Kind() {
	case reflect.Bool:
		return ""
	case reflect.Int:
		return "N"
	case reflect.Int64:
		return "DURATION"
	}
	return "VALUE"
}

// Usage prints the flags of `mcpgateway serve`, with their environment names
// and per-profile defaults.
func Usage(w io.Writer) {
	gu, _ := Defaults(ProfileGunicorn)
	gr, _ := Defaults(ProfileGranian)
	fmt.Fprint(w, `Usage: mcpgateway serve [flags]

Precedence, later wins: profile defaults (HTTP_SERVER) < gunicorn.conf.go <
.env file < environment < flags. Durations take seconds (600, 0.5) or Go
durations (10m, 1.5s); booleans take true/false, 1/0, yes/no, on/off.
`+"`mcpgateway config`"+` prints every setting with its value and source.

Flags:
`)
	for i := range settingsType.NumField() {
		f := settingsType.Field(i)
		names := f.Tag.Get("flag")
		if names == "" {
			continue
		}
		var spelled []string
		for _, n := range strings.Split(names, ",") {
			spelled = append(spelled, dashed(n))
		}
		// Short names first, as in most --help output.
		if len(spelled) == 2 {
			spelled[0], spelled[1] = spelled[1], spelled[0]
		}
		if p := placeholder(f); p == "" {
			fmt.Fprintf(w, "  %s[=BOOL]\n", strings.Join(spelled, ", "))
		} else {
			fmt.Fprintf(w, "  %s %s\n", strings.Join(spelled, ", "), p)
		}
		def := settingText(&gu, ProfileGunicorn, i)
		if other := settingText(&gr, ProfileGranian, i); other != def {
			def += ", granian: " + other
		}
		switch f.Name {
		case "HTTPServer":
			def = ProfileGunicorn
		case "Bind":
			def = "Host:Port"
		case "Workers":
			def = "auto = min(2*NumCPU+1, 16), granian: min(NumCPU, 16)"
		case "ControlSocket":
			def = "$XDG_RUNTIME_DIR (else /tmp)/mcpgateway-<bind>.ctl"
		}
		extra := "default " + def
		if envs := envNamesOf(f.Name); len(envs) > 0 {
			extra += "; env " + strings.Join(envs, ", ")
		}
		fmt.Fprintf(w, "        %s (%s)\n", rules[f.Name].help, extra)
	}
	fmt.Fprint(w, "  -k, --worker-class VALUE\n        accepted for Gunicorn compatibility; no effect\n")
	fmt.Fprint(w, "  -h, --help\n        print this help\n")
}
