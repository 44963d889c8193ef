package config

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// in builds a hermetic Input: an empty directory, no environment, 4 CPUs.
func in(t *testing.T, args []string, environ ...string) Input {
	t.Helper()
	return Input{Args: args, Environ: environ, Dir: t.TempDir(), NumCPU: 4}
}

func mustLoad(t *testing.T, input Input) *Resolved {
	t.Helper()
	r, err := Load(input)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	return r
}

// mustFail loads and returns the *Error it must fail with.
func mustFail(t *testing.T, input Input) *Error {
	t.Helper()
	_, err := Load(input)
	var e *Error
	if !errors.As(err, &e) {
		t.Fatalf("Load error = %v (%T), want *config.Error", err, err)
	}
	return e
}

func writeFile(t *testing.T, dir, name, content string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// checkError compares the fields of an *Error that tests care about.
func checkError(t *testing.T, e *Error, setting, source, value string) {
	t.Helper()
	if e.Setting != setting || e.Source != source || e.Value != value {
		t.Errorf("error = {Setting:%q Source:%q Value:%q}, want {%q %q %q}\n%v",
			e.Setting, e.Source, e.Value, setting, source, value, e)
	}
	if e.Accepted == "" && errors.Is(e, ErrInvalidValue) {
		t.Errorf("error %v has no Accepted text", e)
	}
}

func hasWarning(r *Resolved, substr string) bool {
	for _, w := range r.Warnings {
		if strings.Contains(w, substr) {
			return true
		}
	}
	return false
}

// testKey is a JWT_SECRET_KEY that passes the weak-secret rule on any Bind.
const testKey = "0123456789abcdef0123456789abcdef"
