// Package logging builds the logger that the master and every worker use,
// so that all processes of a server write the same events to the same
// place: JSON lines for machines, or a readable console format for people
// at a terminal.
package logging

import (
	"fmt"
	"os"
	"strings"
	"sync"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"golang.org/x/sys/unix"
)

// Formats accepted by New (LOG_FORMAT).
const (
	FormatAuto    = "auto"    // console on a terminal, JSON otherwise
	FormatJSON    = "json"    // one JSON object per line
	FormatConsole = "console" // tab-separated, for people
)

// New builds a logger at level writing to path in format.
//
// path "" or "-" is standard error; "stdout" or "/dev/stdout" standard
// output; anything else a file opened for appending, which ReopenFiles
// reopens (USR1, for logrotate). Loggers of one process writing to the same
// path share the file.
//
// format is "auto" (or ""), "json" or "console", in any case. Auto looks at the sink
// once, here: a terminal gets the console format, in colour; anything else
// (a pipe to journald or a collector, a file) gets JSON.
func New(level, path, format string) (*zap.Logger, error) {
	lvl, err := ParseLevel(level)
	if err != nil {
		return nil, err
	}
	format, err = checkFormat(format)
	if err != nil {
		return nil, err
	}
	sink, f, err := openSink(path)
	if err != nil {
		return nil, err
	}
	tty := isTerminal(f)
	core := zapcore.NewCore(encoder(format, tty), sink, lvl)
	return zap.New(core, zap.AddCaller(), zap.ErrorOutput(zapcore.Lock(os.Stderr))), nil
}

// checkFormat returns the format in lower case, as the level: LOG_FORMAT=JSON
// is no typo.
func checkFormat(format string) (string, error) {
	switch f := strings.ToLower(format); f {
	case "", FormatAuto, FormatJSON, FormatConsole:
		return f, nil
	}
	return "", fmt.Errorf("invalid LOG_FORMAT %q: accepted: %s, %s, %s", format, FormatAuto, FormatJSON, FormatConsole)
}

// encoder chooses the encoding; format has been checked.
func encoder(format string, tty bool) zapcore.Encoder {
	if format == FormatJSON || (format != FormatConsole && !tty) {
		enc := zap.NewProductionEncoderConfig()
		enc.TimeKey = "ts"
		enc.EncodeTime = zapcore.ISO8601TimeEncoder
		return zapcore.NewJSONEncoder(enc)
	}
	enc := zap.NewDevelopmentEncoderConfig()
	enc.EncodeTime = zapcore.TimeEncoderOfLayout("15:04:05.000")
	enc.EncodeDuration = zapcore.StringDurationEncoder
	enc.EncodeLevel = zapcore.CapitalLevelEncoder
	if tty {
		// Colour only where a person reads it: escape codes in a file
		// are noise to grep and to every viewer but a terminal.
		enc.EncodeLevel = zapcore.CapitalColorLevelEncoder
	}
	enc.StacktraceKey = "" // Error-level events would otherwise print a stack each
	return zapcore.NewConsoleEncoder(enc)
}

// isTerminal is true when f is a terminal: TCGETS succeeds only on one.
// It goes through SyscallConn, as f.Fd() would put a pollable file in
// blocking mode.
func isTerminal(f *os.File) bool {
	rc, err := f.SyscallConn()
	if err != nil {
		return false
	}
	tty := false
	err = rc.Control(func(fd uintptr) {
		_, terr := unix.IoctlGetTermios(int(fd), unix.TCGETS)
		tty = terr == nil
	})
	return err == nil && tty
}

// openSink returns the sink for path and the file to judge it by.
func openSink(path string) (zapcore.WriteSyncer, *os.File, error) {
	switch path {
	case "", "-", "stderr", "/dev/stderr":
		return zapcore.Lock(os.Stderr), os.Stderr, nil
	case "stdout", "/dev/stdout":
		return zapcore.Lock(os.Stdout), os.Stdout, nil
	}
	filesMu.Lock()
	defer filesMu.Unlock()
	f, ok := files[path]
	if !ok {
		f = &file{path: path}
		if err := f.reopen(); err != nil {
			return nil, nil, err
		}
		files[path] = f
	}
	return f, f.file(), nil
}

var (
	filesMu sync.Mutex
	files   = map[string]*file{}
)

// ReopenFiles reopens every log file this process writes, so that a
// rotated file is let go and a new one started. It tries them all and
// returns the first error.
func ReopenFiles() error {
	filesMu.Lock()
	defer filesMu.Unlock()
	var first error
	for _, f := range files {
		if err := f.reopen(); err != nil && first == nil {
			first = err
		}
	}
	return first
}

// file is a log file that can be swapped for a fresh one while loggers
// write to it.
type file struct {
	mu   sync.Mutex
	path string
	f    *os.File
}

func (l *file) reopen() error {
	f, err := os.OpenFile(l.path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		return fmt.Errorf("open log file: %w", err) // err names the path
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

func (l *file) file() *os.File {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.f
}

func (l *file) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.f.Write(p)
}

func (l *file) Sync() error {
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
