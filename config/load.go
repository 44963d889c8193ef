package config

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"strconv"
	"strings"

	"github.com/caarlos0/env/v11"
)

// assignment is one value set by one layer.
type assignment struct {
	field string
	value any // of the field's Go type
	src   Source
	raw   string // the text as written, for errors
}

// Load resolves the configuration. It reads gunicorn.conf.go and .env (when
// present or named), never the network, and binds nothing.
func Load(in Input) (*Resolved, error) {
	dir := in.Dir
	if dir == "" {
		dir = "."
	}
	flags, err := parseFlags(in.Args, in.Command)
	if err != nil {
		return nil, err
	}
	environ := env.ToMap(in.Environ)

	// Bootstrap: which .env, which profile, which conf file. These come from
	// the layers above the one they select, so they are looked up first.
	denv, err := loadDotenv(dir, flags, environ)
	if err != nil {
		return nil, err
	}
	profile, err := pickProfile(flags, environ, denv)
	if err != nil {
		return nil, err
	}
	b, err := newBuilder(profile)
	if err != nil {
		return nil, err
	}

	// Layer 2: gunicorn.conf.go.
	if err := b.confFile(dir, flags, environ, denv); err != nil {
		return nil, err
	}

	// Layer 3: .env.
	if denv != nil {
		where := func(name string) string { return fmt.Sprintf("%s:%d %s", denv.path, denv.line[name], name) }
		as, warns, err := readVars(denv.vars, "dotenv", profile, where)
		if err != nil {
			return nil, err
		}
		b.warn(warns...)
		b.warn(varWarnings(denv.vars, where)...)
		for _, a := range as {
			if a.field == "EnvFile" {
				b.warn(a.src.Name + " is ignored: a .env file cannot name another one")
				continue
			}
			b.apply(a)
		}
	}

	// Layer 4: the process environment.
	as, warns, err := readVars(environ, "env", profile, func(name string) string { return name })
	if err != nil {
		return nil, err
	}
	b.warn(warns...)
	b.warn(varWarnings(environ, func(name string) string { return name })...)
	b.applyAll(as)

	// Layer 5: flags.
	b.warn(flags.warnings...)
	b.applyAll(flags.as)

	numCPU := in.NumCPU
	if numCPU <= 0 {
		numCPU = runtime.GOMAXPROCS(0)
	}
	if err := b.resolve(numCPU, dir, environ); err != nil {
		return nil, err
	}
	// The client commands (status, reload, scale, stop: Command set) only
	// find the server; they can stop one whatever its key.
	if in.Command == nil {
		if err := b.loadJWTKeys(dir); err != nil {
			return nil, err
		}
		if err := b.loadGateways(dir); err != nil {
			return nil, err
		}
	}
	if in.Command == nil && !in.NoSecretCheck {
		if err := b.checkSecret(); err != nil {
			return nil, err
		}
	}
	return &Resolved{Settings: b.s, Sources: b.sources, Warnings: b.warnings, Profile: profile, Args: flags.args}, nil
}

// builder merges the layers onto the profile defaults.
type builder struct {
	profile  string
	s        Settings
	sources  map[string]Source
	raw      map[string]string // text of each winning value, for errors
	warnings []string
}

func newBuilder(profile string) (*builder, error) {
	s, err := Defaults(profile)
	if err != nil {
		return nil, err
	}
	b := &builder{profile: profile, s: s, sources: map[string]Source{}, raw: map[string]string{}}
	for i := range settingsType.NumField() {
		name := settingsType.Field(i).Name
		b.sources[name] = Source{Kind: "default", Name: profile}
		b.raw[name] = settingText(&s, profile, i)
	}
	b.raw["Workers"] = "auto"
	return b, nil
}

func (b *builder) warn(w ...string) { b.warnings = append(b.warnings, w...) }

func (b *builder) apply(a assignment) {
	if bp, ok := a.value.(backpressure); ok {
		n := bp.n
		if bp.profileCeiling {
			n = profileBackpressure(b.profile)
		}
		b.s.Backpressure, b.s.BackpressureAuto = n, bp.auto
		b.sources["BackpressureAuto"] = Source{Kind: "derived", Name: "from Backpressure"}
		b.raw["BackpressureAuto"] = strconv.FormatBool(bp.auto)
		b.sources[a.field] = a.src
		b.raw[a.field] = a.raw
		return
	}
	reflect.ValueOf(&b.s).Elem().FieldByName(a.field).Set(reflect.ValueOf(a.value))
	b.sources[a.field] = a.src
	b.raw[a.field] = a.raw
}

func (b *builder) applyAll(as []assignment) {
	for _, a := range as {
		b.apply(a)
	}
}

// bootValue finds a bootstrap setting in the layers above the conf file:
// flags, then the environment, then the .env file. An empty variable is
// unset; an empty flag value is kept (--config "" means no file).
func bootValue(field, envName string, flags *flagLayer, environ map[string]string, denv *dotenv) (string, Source, bool) {
	for i := len(flags.as) - 1; i >= 0; i-- {
		if a := flags.as[i]; a.field == field {
			return a.raw, a.src, true
		}
	}
	if v := environ[envName]; v != "" {
		return v, Source{Kind: "env", Name: envName}, true
	}
	if denv != nil {
		if v := denv.vars[envName]; v != "" {
			return v, Source{Kind: "dotenv", Name: fmt.Sprintf("%s:%d %s", denv.path, denv.line[envName], envName)}, true
		}
	}
	return "", Source{}, false
}

func resolvePath(dir, path string) string {
	if filepath.IsAbs(path) {
		return path
	}
	return filepath.Join(dir, path)
}

// readNamed reads a file that is either named (then it must exist) or looked
// for at its default place (then it may be missing: nil, nil).
func readNamed(dir, path, field string, src Source, named bool) ([]byte, error) {
	data, err := os.ReadFile(resolvePath(dir, path))
	switch {
	case err == nil:
		return data, nil
	case named:
		return nil, &Error{Setting: field, Source: src.String(), Value: path,
			Accepted: "an existing, readable file", Err: fmt.Errorf("%w: %w", ErrInvalidValue, err)}
	case errors.Is(err, fs.ErrNotExist):
		return nil, nil
	}
	return nil, fmt.Errorf("read %s: %w", path, err)
}

func loadDotenv(dir string, flags *flagLayer, environ map[string]string) (*dotenv, error) {
	path, src, named := bootValue("EnvFile", "ENV_FILE", flags, environ, nil)
	if !named {
		path = ".env"
	}
	if named && path == "" { // --env-file "": read no .env at all
		return nil, nil
	}
	data, err := readNamed(dir, path, "EnvFile", src, named)
	if err != nil || data == nil {
		return nil, err
	}
	return parseDotenv(path, data)
}

func pickProfile(flags *flagLayer, environ map[string]string, denv *dotenv) (string, error) {
	value, src, set := bootValue("HTTPServer", "HTTP_SERVER", flags, environ, denv)
	if !set {
		return ProfileGunicorn, nil
	}
	profile := strings.ToLower(strings.TrimSpace(value))
	if profile != ProfileGunicorn && profile != ProfileGranian {
		return "", valueError("HTTPServer", src, value, nil)
	}
	return profile, nil
}

func (b *builder) confFile(dir string, flags *flagLayer, environ map[string]string, denv *dotenv) error {
	const defaultConf = "gunicorn.conf.go"
	path, src, named := bootValue("ConfigFile", "GUNICORN_CONFIG", flags, environ, denv)
	if !named {
		path = defaultConf
	}
	if named && path == "" { // --config "": read no conf file at all
		return nil
	}
	data, err := readNamed(dir, path, "ConfigFile", src, named)
	if err != nil || data == nil {
		return err
	}
	if !named {
		b.apply(assignment{field: "ConfigFile", value: path, src: Source{Kind: "default", Name: "./" + defaultConf + " exists"}, raw: path})
	}
	as, warns, err := readConfFile(path, data)
	if err != nil {
		return err
	}
	b.warn(warns...)
	b.applyAll(as)
	return nil
}

// resolve normalises, derives and validates the merged settings. dir and
// environ are Input's, for the derived control socket.
func (b *builder) resolve(numCPU int, dir string, environ map[string]string) error {
	s := &b.s
	normalise(s)

	if s.Workers == workersAuto {
		n, formula := min(2*numCPU+1, 16), "min(2*NumCPU+1, 16)"
		if b.profile == ProfileGranian {
			n, formula = min(numCPU, 16), "min(NumCPU, 16)"
		}
		s.Workers = max(n, 1)
		b.sources["Workers"] = Source{Kind: "derived", Name: fmt.Sprintf("auto (%s): %s with NumCPU=%d", b.sources["Workers"], formula, numCPU)}
		b.raw["Workers"] = strconv.Itoa(s.Workers)
	}

	v := reflect.ValueOf(s).Elem()
	for i := range settingsType.NumField() {
		name := settingsType.Field(i).Name
		if ok := rules[name].ok; ok != nil && !ok(v.Field(i)) {
			return valueError(name, b.sources[name], b.raw[name], nil)
		}
	}

	for _, addr := range s.Bind {
		if !checkBind(addr) {
			return valueError("Bind", b.sources["Bind"], addr, nil)
		}
	}
	if s.HealthBind != "" && (strings.HasPrefix(s.HealthBind, "unix:") || !checkBind(s.HealthBind)) {
		return valueError("HealthBind", b.sources["HealthBind"], s.HealthBind, errors.New("want host:port"))
	}
	if len(s.Bind) == 0 {
		s.Bind = []string{net.JoinHostPort(s.Host, strconv.Itoa(s.Port))}
		b.sources["Bind"] = Source{Kind: "derived", Name: "Host:Port"}
	}

	if s.ControlSocket == "" {
		runtimeDir, where := environ["XDG_RUNTIME_DIR"], "$XDG_RUNTIME_DIR"
		if runtimeDir == "" {
			where = FallbackRuntimeDir + " ($XDG_RUNTIME_DIR is not set)"
		}
		s.ControlSocket = DefaultControlSocket(s.Bind, dir, runtimeDir)
		b.sources["ControlSocket"] = Source{Kind: "derived", Name: "from Bind, in " + where}
		b.raw["ControlSocket"] = s.ControlSocket
	}
	if len(s.ControlSocket) > maxSocketPath {
		return valueError("ControlSocket", b.sources["ControlSocket"], s.ControlSocket, errors.New("too long for a unix socket"))
	}

	if s.SSL {
		for _, name := range []string{"CertFile", "KeyFile"} {
			if v.FieldByName(name).String() == "" {
				return valueError(name, b.sources[name], "", errors.New("SSL is on"))
			}
		}
	}

	if s.AccessLogFile != "" && s.DisableAccessLog {
		b.warn(fmt.Sprintf("AccessLogFile %q is not written while DisableAccessLog is true (%s)", s.AccessLogFile, b.sources["DisableAccessLog"]))
	}
	if s.PreloadApp {
		b.warn(fmt.Sprintf("PreloadApp is true (%s) but has no effect: each worker builds its own app and the master never loads it; "+
			"the database is checked and migrated once, before any worker starts, either way", b.sources["PreloadApp"]))
	}
	if s.MaxRequestsJitter > 0 && s.MaxRequests == 0 {
		b.warn("MaxRequestsJitter has no effect while MaxRequests is 0 (recycling by request count is off)")
	}

	if len(s.AllowedOrigins) > 0 {
		s.AllowedOrigins = normaliseOrigins(s.AllowedOrigins)
		for _, o := range s.AllowedOrigins {
			if !validOrigin(o) {
				return valueError("AllowedOrigins", b.sources["AllowedOrigins"], o, nil)
			}
		}
	}

	if s.JWTSecretKey == "" {
		key := make([]byte, 32)
		if _, err := rand.Read(key); err != nil {
			return fmt.Errorf("generate JWTSecretKey: %w", err)
		}
		s.JWTSecretKey = hex.EncodeToString(key)
		b.sources["JWTSecretKey"] = Source{Kind: "generated", Name: "random 32-byte key"}
		b.warn("JWT_SECRET_KEY is not set: a random key was generated, so tokens stop working when the server restarts; set JWT_SECRET_KEY to keep them valid")
	}
	return nil
}
