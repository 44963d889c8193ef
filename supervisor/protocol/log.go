package protocol

import (
	"fmt"
	"os"
	"strings"
	"sync"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// NewLogger builds the JSON logger that the master and every worker use, so
// that all processes write the same one-line events to the same place.
// path "" or "-" is standard error; "stdout" or "/dev/stdout" standard
// output; anything else a file opened for appending, which
// ReopenLogFiles reopens (USR1, for logrotate).
func NewLogger(level, path string) (*zap.Logger, error) {
	lvl, err := ParseLevel(level)
	if err != nil {
		return nil, err
	}
	sink, err := openSink(path)
	if err != nil {
		return nil, err
	}
	enc := zap.NewProductionEncoderConfig()
	enc.TimeKey = "ts"
	enc.EncodeTime = zapcore.ISO8601TimeEncoder
	core := zapcore.NewCore(zapcore.NewJSONEncoder(enc), sink, lvl)
	return zap.New(core, zap.AddCaller(), zap.ErrorOutput(zapcore.Lock(os.Stderr))), nil
}

func openSink(path string) (zapcore.WriteSyncer, error) {
	switch path {
	case "", "-", "stderr", "/dev/stderr":
		return zapcore.Lock(os.Stderr), nil
	case "stdout", "/dev/stdout":
		return zapcore.Lock(os.Stdout), nil
	}
	logFilesMu.Lock()
	defer logFilesMu.Unlock()
	if f, ok := logFiles[path]; ok {
		return f, nil
	}
	f := &logFile{path: path}
	if err := f.reopen(); err != nil {
		return nil, err
	}
	logFiles[path] = f
	return f, nil
}

var (
	logFilesMu sync.Mutex
	logFiles   = map[string]*logFile{}
)

// ReopenLogFiles reopens every log file this process writes, so that a
// rotated file is let go and a new one started.
func ReopenLogFiles() error {
	logFilesMu.Lock()
	defer logFilesMu.Unlock()
	var first error
	for _, f := range logFiles {
		if err := f.reopen(); err != nil && first == nil {
			first = err
		}
	}
	return first
}

// logFile is a log file that can be swapped for a fresh one while loggers
// write to it.
type logFile struct {
	mu   sync.Mutex
	path string
	f    *os.File
}

func (l *logFile) reopen() error {
	f, err := os.OpenFile(l.path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		return fmt.Errorf("open log file %s: %w", l.path, err)
	}
	l.mu.Lock()
	old := l.f
	l.f = f
	l.mu.Unlock()
	if old != nil {
		old.Close()
	}
	return nil
}

func (l *logFile) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.f.Write(p)
}

func (l *logFile) Sync() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.f.Sync()
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
