package config

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// Sentinels carried in Error.Err, for errors.Is.
var (
	ErrInvalidValue   = errors.New("invalid value")
	ErrUnknownSetting = errors.New("unknown setting")
	ErrNotSettable    = errors.New("not settable here")
)

// Error is a configuration problem pinned to one setting and where it came from.
type Error struct {
	Setting  string // Go field name, e.g. "Workers"
	Source   string // e.g. "env GUNICORN_WORKERS", "file gunicorn.conf.go:12", "flag --workers"
	Value    string // the text as written (URL passwords masked)
	Accepted string // what would have been accepted
	Err      error  // wraps ErrInvalidValue, ErrUnknownSetting or ErrNotSettable
}

func (e *Error) Error() string {
	if errors.Is(e.Err, ErrInvalidValue) || e.Err == nil {
		return fmt.Sprintf("invalid value %s for %s (%s): accepted: %s", quote(e.Value), e.Setting, e.Source, e.Accepted)
	}
	msg := fmt.Sprintf("%s: %s: %v", e.Source, e.Setting, e.Err)
	if e.Accepted != "" {
		msg += "; accepted: " + e.Accepted
	}
	return msg
}

func (e *Error) Unwrap() error { return e.Err }

// quote shows a value in an error; values that hold quotes themselves (Go
// string literals from gunicorn.conf.go) are shown in backquotes.
func quote(v string) string {
	if strings.Contains(v, `"`) && strconv.CanBackquote(v) {
		return "`" + v + "`"
	}
	return strconv.Quote(v)
}

// valueError builds the Error for a value of field that cannot be used.
// cause, when not nil, says why, and is kept for errors.Unwrap.
func valueError(field string, src Source, value string, cause error) *Error {
	err := ErrInvalidValue
	if cause != nil {
		err = fmt.Errorf("%w: %w", ErrInvalidValue, cause)
	}
	return &Error{
		Setting:  field,
		Source:   src.String(),
		Value:    maskValue(field, value),
		Accepted: rules[field].accepted,
		Err:      err,
	}
}
