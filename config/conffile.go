package config

import (
	"bytes"
	"errors"
	"fmt"
	"go/ast"
	"go/constant"
	"go/parser"
	"go/token"
	"reflect"
	"strconv"
	"strings"
	"time"
)

// The conf file is Go source that is never compiled: go/parser reads it and
// the constant expressions are evaluated here with go/constant. Only what a
// configuration needs is understood: literals, parentheses, unary and binary
// arithmetic (+ - * / % << >>), true/false, time.Nanosecond..time.Hour,
// time.Duration(x) and []string{...}.

// bootstrapOnly settings choose which files are read and which defaults
// apply, so they cannot come from the file itself.
var bootstrapOnly = map[string]string{
	"HTTPServer": "it selects the profile; use HTTP_SERVER or --http-server",
	"ConfigFile": "it names this file; use GUNICORN_CONFIG or --config",
	"EnvFile":    "the .env file is found before this file is read; use ENV_FILE or --env-file",
}

// derivedOnly settings follow another setting's text and cannot be set on
// their own, in any source (they have no environment name and no flag).
var derivedOnly = map[string]string{
	"BackpressureAuto": `it follows Backpressure: write Backpressure = "auto" or "auto:N"`,
	"JWTPublicKeyPEM":  "the master reads it from JWTPublicKeyPath (and JWTPublicKeyPathPrevious): set those",
	"GatewaysJSON":     "the master reads it from GatewaysFile: set that",
}

// confNoEffect are Gunicorn conf names accepted with a warning.
var confNoEffect = map[string]string{
	"WorkerClass": noEffect["GUNICORN_WORKER_CLASS"],
}

// cval is an evaluated expression: a constant, or a []string list.
type cval struct {
	c      constant.Value
	dur    bool     // has the type time.Duration: c counts nanoseconds
	list   []string // set for []string{...}
	isList bool
}

type confReader struct {
	fset     *token.FileSet
	src      []byte
	display  string // file name as shown in sources and errors
	timePkg  string // local name of the "time" import
	warnings []string
}

// readConfFile parses a gunicorn.conf.go into assignments, in file order.
func readConfFile(display string, src []byte) ([]assignment, []string, error) {
	r := &confReader{fset: token.NewFileSet(), src: src, display: display, timePkg: "time"}
	f, err := parser.ParseFile(r.fset, display, src, parser.SkipObjectResolution)
	if err != nil {
		return nil, nil, fmt.Errorf("read %s: %w", display, err)
	}
	if !hasIgnoreBuildTag(src) {
		r.warnings = append(r.warnings, display+" has no //go:build ignore line: go build ./... would try to compile it")
	}
	for _, imp := range f.Imports {
		if path, _ := strconv.Unquote(imp.Path.Value); path == "time" && imp.Name != nil {
			r.timePkg = imp.Name.Name
		}
	}
	var out []assignment
	seen := map[string]token.Pos{}
	for _, decl := range f.Decls {
		gd, ok := decl.(*ast.GenDecl)
		if !ok || (gd.Tok != token.CONST && gd.Tok != token.VAR && gd.Tok != token.IMPORT) {
			return nil, nil, fmt.Errorf("%s: only const and var declarations are read", r.pos(decl.Pos()))
		}
		if gd.Tok == token.IMPORT {
			continue
		}
		for _, spec := range gd.Specs {
			as, err := r.valueSpec(spec.(*ast.ValueSpec), seen)
			if err != nil {
				return nil, nil, err
			}
			out = append(out, as...)
		}
	}
	return out, r.warnings, nil
}

func hasIgnoreBuildTag(src []byte) bool {
	for _, line := range bytes.Split(src, []byte("\n")) {
		line = bytes.TrimSpace(line)
		if bytes.HasPrefix(line, []byte("package ")) {
			return false
		}
		if bytes.HasPrefix(line, []byte("//go:build")) && bytes.Contains(line, []byte("ignore")) {
			return true
		}
	}
	return false
}

func (r *confReader) pos(p token.Pos) string {
	position := r.fset.Position(p)
	return fmt.Sprintf("%s:%d", r.display, position.Line)
}

func (r *confReader) text(e ast.Expr) string {
	start, end := r.fset.Position(e.Pos()).Offset, r.fset.Position(e.End()).Offset
	return string(r.src[start:end])
}

func (r *confReader) valueSpec(spec *ast.ValueSpec, seen map[string]token.Pos) ([]assignment, error) {
	if len(spec.Values) != len(spec.Names) {
		return nil, fmt.Errorf("%s: each name needs its own value (%d names, %d values)",
			r.pos(spec.Pos()), len(spec.Names), len(spec.Values))
	}
	// `const Timeout time.Duration = 600` is 600ns in Go; honour that.
	typedDur := r.isTimeSel(spec.Type, "Duration")
	var out []assignment
	for i, id := range spec.Names {
		name, expr := id.Name, spec.Values[i]
		src := Source{Kind: "file", Name: r.pos(id.Pos())}
		if name == "_" {
			continue
		}
		if prev, dup := seen[name]; dup {
			return nil, fmt.Errorf("%s: %s is already set at %s", src.Name, name, r.pos(prev))
		}
		seen[name] = id.Pos()
		if reason, ok := confNoEffect[name]; ok {
			r.warnings = append(r.warnings, fmt.Sprintf("%s: %s has no effect: %s", src.Name, name, reason))
			continue
		}
		field, known := settingsType.FieldByName(name)
		if !known || !field.IsExported() {
			return nil, &Error{Setting: name, Source: src.String(), Err: unknownSetting(name),
				Accepted: "a Settings field name, as listed in gunicorn.conf.go.example"}
		}
		if reason, ok := bootstrapOnly[name]; ok {
			return nil, &Error{Setting: name, Source: src.String(), Err: fmt.Errorf("%w: %s", ErrNotSettable, reason)}
		}
		if reason, ok := derivedOnly[name]; ok {
			return nil, &Error{Setting: name, Source: src.String(), Err: fmt.Errorf("%w: %s", ErrNotSettable, reason)}
		}
		v, err := r.eval(expr)
		if err != nil {
			return nil, valueError(name, src, r.text(expr), err)
		}
		if typedDur && !v.isList {
			v.dur = true
		}
		value, err := convert(name, field.Type, v)
		if err != nil {
			return nil, valueError(name, src, r.text(expr), err)
		}
		out = append(out, assignment{field: name, value: value, src: src, raw: r.text(expr)})
	}
	return out, nil
}

// unknownSetting suggests the Go name for a Gunicorn-style one: max_requests → MaxRequests.
func unknownSetting(name string) error {
	fold := func(s string) string { return strings.ToLower(strings.ReplaceAll(s, "_", "")) }
	for i := range settingsType.NumField() {
		if f := settingsType.Field(i).Name; fold(f) == fold(name) {
			return fmt.Errorf("%w (did you mean %s?)", ErrUnknownSetting, f)
		}
	}
	return ErrUnknownSetting
}

// isTimeSel reports whether e is time.<sel>.
func (r *confReader) isTimeSel(e ast.Expr, sel string) bool {
	s, ok := e.(*ast.SelectorExpr)
	if !ok {
		return false
	}
	x, ok := s.X.(*ast.Ident)
	return ok && x.Name == r.timePkg && s.Sel.Name == sel
}

var timeUnits = map[string]time.Duration{
	"Nanosecond": time.Nanosecond, "Microsecond": time.Microsecond, "Millisecond": time.Millisecond,
	"Second": time.Second, "Minute": time.Minute, "Hour": time.Hour,
}

func (r *confReader) eval(e ast.Expr) (cval, error) {
	switch e := e.(type) {
	case *ast.BasicLit:
		c := constant.MakeFromLiteral(e.Value, e.Kind, 0)
		if c.Kind() == constant.Unknown || e.Kind == token.CHAR || e.Kind == token.IMAG {
			return cval{}, fmt.Errorf("unsupported literal %s", e.Value)
		}
		return cval{c: c}, nil
	case *ast.ParenExpr:
		return r.eval(e.X)
	case *ast.Ident:
		switch e.Name {
		case "true", "false":
			return cval{c: constant.MakeBool(e.Name == "true")}, nil
		}
		return cval{}, fmt.Errorf("%s is not a constant this loader knows", e.Name)
	case *ast.SelectorExpr:
		if x, ok := e.X.(*ast.Ident); ok && x.Name == r.timePkg {
			if d, ok := timeUnits[e.Sel.Name]; ok {
				return cval{c: constant.MakeInt64(int64(d)), dur: true}, nil
			}
		}
		return cval{}, errors.New("only time.Nanosecond to time.Hour can be used")
	case *ast.CallExpr:
		if r.isTimeSel(e.Fun, "Duration") && len(e.Args) == 1 {
			v, err := r.eval(e.Args[0])
			v.dur = true
			return v, err
		}
		return cval{}, errors.New("function calls are not evaluated (time.Duration(x) is the exception)")
	case *ast.UnaryExpr:
		v, err := r.eval(e.X)
		if err != nil {
			return cval{}, err
		}
		switch {
		case v.isList:
		case e.Op == token.NOT && v.c.Kind() == constant.Bool,
			(e.Op == token.SUB || e.Op == token.ADD) && isNumber(v.c):
			return cval{c: constant.UnaryOp(e.Op, v.c, 0), dur: v.dur}, nil
		}
		return cval{}, fmt.Errorf("operator %s does not apply to %s", e.Op, r.text(e.X))
	case *ast.BinaryExpr:
		return r.binary(e)
	case *ast.CompositeLit:
		return r.list(e)
	}
	return cval{}, fmt.Errorf("unsupported expression %s", r.text(e))
}

func (r *confReader) binary(e *ast.BinaryExpr) (cval, error) {
	x, err := r.eval(e.X)
	if err != nil {
		return cval{}, err
	}
	y, err := r.eval(e.Y)
	if err != nil {
		return cval{}, err
	}
	if x.isList || y.isList {
		return cval{}, errors.New("lists cannot be combined with operators")
	}
	switch {
	case e.Op == token.ADD && x.c.Kind() == constant.String && y.c.Kind() == constant.String:
		return cval{c: constant.BinaryOp(x.c, token.ADD, y.c)}, nil
	case !isNumber(x.c) || !isNumber(y.c):
		return cval{}, fmt.Errorf("operator %s needs two numbers", e.Op)
	}
	if e.Op == token.SHL || e.Op == token.SHR { // 4 << 20 for sizes
		n, exact := constant.Uint64Val(y.c)
		if x.c.Kind() != constant.Int || y.c.Kind() != constant.Int || !exact || n > 62 {
			return cval{}, fmt.Errorf("operator %s needs a whole number and a shift count from 0 to 62", e.Op)
		}
		return cval{c: constant.Shift(x.c, e.Op, uint(n)), dur: x.dur}, nil
	}
	op := e.Op
	switch op {
	case token.ADD, token.SUB, token.MUL:
	case token.QUO, token.REM:
		if constant.Sign(y.c) == 0 {
			return cval{}, errors.New("division by zero")
		}
		if x.c.Kind() == constant.Int && y.c.Kind() == constant.Int && op == token.QUO {
			op = token.QUO_ASSIGN // Go's integer division of untyped ints
		} else if op == token.REM && (x.c.Kind() != constant.Int || y.c.Kind() != constant.Int) {
			return cval{}, errors.New("% needs two whole numbers")
		}
	default:
		return cval{}, fmt.Errorf("operator %s is not supported here", e.Op)
	}
	// Duration / Duration is a plain number; any other mix with a Duration is one.
	dur := x.dur || y.dur
	if e.Op == token.QUO && x.dur && y.dur {
		dur = false
	}
	return cval{c: constant.BinaryOp(x.c, op, y.c), dur: dur}, nil
}

func isNumber(c constant.Value) bool {
	return c.Kind() == constant.Int || c.Kind() == constant.Float
}

func (r *confReader) list(e *ast.CompositeLit) (cval, error) {
	at, ok := e.Type.(*ast.ArrayType)
	if !ok || at.Len != nil {
		return cval{}, errors.New("only []string{...} lists are supported")
	}
	if elt, ok := at.Elt.(*ast.Ident); !ok || elt.Name != "string" {
		return cval{}, errors.New("only []string{...} lists are supported")
	}
	out := cval{isList: true, list: []string{}}
	for _, el := range e.Elts {
		v, err := r.eval(el)
		if err != nil {
			return cval{}, err
		}
		if v.isList || v.c.Kind() != constant.String {
			return cval{}, fmt.Errorf("list element %s is not a string", r.text(el))
		}
		out.list = append(out.list, constant.StringVal(v.c))
	}
	return out, nil
}

// convert turns an evaluated value into the field's type, or says why not.
func convert(field string, t reflect.Type, v cval) (any, error) {
	if t == reflect.TypeFor[[]string]() {
		if v.isList {
			return v.list, nil
		}
		if v.c.Kind() == constant.String { // Bind = "127.0.0.1:4444", as Gunicorn allows
			return []string{constant.StringVal(v.c)}, nil
		}
		return nil, fmt.Errorf("want []string{...}, got %s", kindOf(v))
	}
	if v.isList {
		return nil, fmt.Errorf("want a %s, got a list", t)
	}
	switch t {
	case reflect.TypeFor[string]():
		if v.c.Kind() == constant.String {
			return constant.StringVal(v.c), nil
		}
	case reflect.TypeFor[bool]():
		if v.c.Kind() == constant.Bool {
			return constant.BoolVal(v.c), nil
		}
	case reflect.TypeFor[int]():
		if v.c.Kind() == constant.String {
			switch field {
			case "Workers":
				return parseWorkers(constant.StringVal(v.c))
			case "Backpressure": // Backpressure = "auto" or "auto:64"
				return parseBackpressure(constant.StringVal(v.c))
			}
		}
		if !v.dur && isNumber(v.c) {
			n, err := wholeNumber(v.c)
			if err != nil {
				return nil, err
			}
			switch field {
			case "Workers":
				return checkWorkers(int(n))
			case "Backpressure":
				return backpressure{n: int(n)}, nil
			}
			return int(n), nil
		}
	case reflect.TypeFor[time.Duration]():
		if !isNumber(v.c) {
			break
		}
		if !v.dur { // a plain number is seconds, as in gunicorn.conf.py
			f, _ := constant.Float64Val(v.c)
			return secondsToDuration(f)
		}
		ns, err := wholeNumber(v.c)
		return time.Duration(ns), err
	}
	return nil, fmt.Errorf("want a %s, got %s", t, kindOf(v))
}

// wholeNumber is c as an int64, if it is one.
func wholeNumber(c constant.Value) (int64, error) {
	i := constant.ToInt(c)
	if i.Kind() != constant.Int {
		return 0, errors.New("not a whole number")
	}
	n, exact := constant.Int64Val(i)
	if !exact {
		return 0, errors.New("number out of range")
	}
	return n, nil
}

func kindOf(v cval) string {
	switch {
	case v.isList:
		return "a list"
	case v.dur:
		return "a time.Duration"
	}
	return map[constant.Kind]string{constant.Bool: "a bool", constant.String: "a string",
		constant.Int: "a whole number", constant.Float: "a fractional number"}[v.c.Kind()]
}
