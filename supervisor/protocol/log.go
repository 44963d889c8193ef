package protocol

import (
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/mcpgateway/mcpgateway/supervisor/logging"
)

// The logger is not protocol: it lives in supervisor/logging. These wrappers
// keep the old callers compiling, with the old behaviour (always JSON), and
// share logging's registry of open files, so that a process that builds its
// logger here and reopens through logging.ReopenFiles, or the reverse, still
// reopens every file on USR1.

// NewLogger builds a JSON logger.
//
// Deprecated: use logging.New(level, path, format).
func NewLogger(level, path string) (*zap.Logger, error) {
	return logging.New(level, path, logging.FormatJSON)
}

// ReopenLogFiles reopens every log file this process writes.
//
// Deprecated: use logging.ReopenFiles.
func ReopenLogFiles() error { return logging.ReopenFiles() }

// ParseLevel accepts Gunicorn's level names.
//
// Deprecated: use logging.ParseLevel.
func ParseLevel(s string) (zapcore.Level, error) { return logging.ParseLevel(s) }

// Exit writes one line on standard error, then exits with code.
//
// Deprecated: use logging.Exit.
func Exit(code int, format string, args ...any) { logging.Exit(code, format, args...) }
