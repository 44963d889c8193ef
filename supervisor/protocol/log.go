package protocol

import (
	"fmt"
	"os"
	"strings"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// NewLogger builds the JSON logger that the master and every worker use, so
// that all processes write the same one-line events to the same place.
// path "" or "-" is standard error.
func NewLogger(level, path string) (*zap.Logger, error) {
	lvl, err := ParseLevel(level)
	if err != nil {
		return nil, err
	}
	cfg := zap.NewProductionConfig()
	cfg.Level = zap.NewAtomicLevelAt(lvl)
	cfg.Sampling = nil // every event counts: exits, timeouts, refusals
	cfg.EncoderConfig.TimeKey = "ts"
	cfg.EncoderConfig.EncodeTime = zapcore.ISO8601TimeEncoder
	cfg.DisableStacktrace = true
	out := "stderr"
	if path != "" && path != "-" {
		out = path
	}
	cfg.OutputPaths = []string{out}
	cfg.ErrorOutputPaths = []string{"stderr"}
	l, err := cfg.Build()
	if err != nil {
		return nil, fmt.Errorf("open log %s: %w", out, err)
	}
	return l, nil
}

// ParseLevel accepts Gunicorn's level names.
func ParseLevel(s string) (zapcore.Level, error) {
	switch strings.ToLower(s) {
	case "debug":
		return zapcore.DebugLevel, nil
	case "", "info":
		return zapcore.InfoLevel, nil
	case "warning", "warn":
		return zapcore.WarnLevel, nil
	case "error", "critical":
		return zapcore.ErrorLevel, nil
	}
	return 0, fmt.Errorf("invalid log level %q: accepted: debug, info, warning, error, critical", s)
}

// Exit is the last resort of a process that cannot even log: one line on
// standard error, then the status.
func Exit(code int, format string, args ...any) {
	fmt.Fprintf(os.Stderr, "mcpgateway: "+format+"\n", args...)
	os.Exit(code)
}
