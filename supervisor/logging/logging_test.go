package logging

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"
)

// newLogger is New, and the file is forgotten when the test ends: the
// registry is the process's, and ReopenFiles would trip over the files of
// tests whose directories are gone.
func newLogger(t *testing.T, level, path, format string) (*zap.Logger, error) {
	t.Helper()
	log, err := New(level, path, format)
	t.Cleanup(func() {
		filesMu.Lock()
		defer filesMu.Unlock()
		if f, ok := files[path]; ok {
			f.f.Close()
			delete(files, path)
		}
	})
	return log, err
}

// logTo writes one event through a logger built for path and format.
func logTo(t *testing.T, path, format, msg string) {
	t.Helper()
	log, err := newLogger(t, "info", path, format)
	if err != nil {
		t.Fatal(err)
	}
	log.Info(msg)
	_ = log.Sync()
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestFormatOfAFile(t *testing.T) {
	dir := t.TempDir()
	for _, format := range []string{"", FormatAuto, FormatJSON} {
		path := filepath.Join(dir, "json"+format+".log")
		logTo(t, path, format, "hello")
		var ev map[string]any
		if err := json.Unmarshal([]byte(readFile(t, path)), &ev); err != nil {
			t.Errorf("format %q to a file: not a JSON line: %v", format, err)
		} else if ev["msg"] != "hello" || ev["level"] != "info" || ev["ts"] == nil {
			t.Errorf("format %q to a file: %v", format, ev)
		}
	}

	path := filepath.Join(dir, "console.log")
	logTo(t, path, FormatConsole, "hello")
	got := readFile(t, path)
	if strings.HasPrefix(got, "{") || !strings.Contains(got, "INFO") || !strings.Contains(got, "hello") {
		t.Errorf("console to a file: %q", got)
	}
	if strings.Contains(got, "\x1b[") {
		t.Errorf("console to a file has colour codes: %q", got)
	}
}

// openPty returns both ends of a new pseudo-terminal, or skips.
func openPty(t *testing.T) (ptmx *os.File, pts string) {
	t.Helper()
	ptmx, err := os.OpenFile("/dev/ptmx", os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Skipf("no pseudo-terminal: %v", err)
	}
	t.Cleanup(func() { ptmx.Close() })
	rc, err := ptmx.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var n int
	var ioErr error
	if err := rc.Control(func(fd uintptr) {
		if ioErr = unix.IoctlSetPointerInt(int(fd), unix.TIOCSPTLCK, 0); ioErr == nil {
			n, ioErr = unix.IoctlGetInt(int(fd), unix.TIOCGPTN)
		}
	}); err != nil || ioErr != nil {
		t.Skipf("no pseudo-terminal: %v %v", err, ioErr)
	}
	return ptmx, "/dev/pts/" + strconv.Itoa(n)
}

func TestAutoIsConsoleOnATerminal(t *testing.T) {
	ptmx, pts := openPty(t)
	logTo(t, pts, FormatAuto, "hello terminal")

	var got bytes.Buffer
	buf := make([]byte, 4096)
	_ = ptmx.SetReadDeadline(time.Now().Add(5 * time.Second))
	for !strings.Contains(got.String(), "hello terminal") {
		n, err := ptmx.Read(buf)
		got.Write(buf[:n])
		if err != nil {
			t.Fatalf("read the terminal: %v (got %q)", err, got.String())
		}
	}
	if strings.Contains(got.String(), "{") || !strings.Contains(got.String(), "\x1b[") {
		t.Errorf("auto on a terminal: %q, want the console format in colour", got.String())
	}

	// A terminal is a terminal because it is one, not because of its name:
	// json stays json there.
	logTo(t, pts, FormatJSON, "hello json")
	got.Reset()
	for !strings.Contains(got.String(), "hello json") {
		n, err := ptmx.Read(buf)
		got.Write(buf[:n])
		if err != nil {
			t.Fatalf("read the terminal: %v (got %q)", err, got.String())
		}
	}
	if !strings.Contains(got.String(), `"msg":"hello json"`) {
		t.Errorf("json on a terminal: %q", got.String())
	}
}

func TestBadFormatNamesTheSetting(t *testing.T) {
	for _, format := range []string{"text", "JSON ", "pretty"} {
		_, err := newLogger(t, "info", filepath.Join(t.TempDir(), "x.log"), format)
		if err == nil {
			t.Errorf("format %q accepted", format)
			continue
		}
		for _, want := range []string{"LOG_FORMAT", strconv.Quote(format), "auto", "json", "console"} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("format %q: error %q does not say %s", format, err, want)
			}
		}
	}
	if _, err := New("loud", "", FormatJSON); err == nil || !strings.Contains(err.Error(), "log level") {
		t.Errorf("bad level: %v", err)
	}
}

func TestReopenFilesFollowsARotation(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "app.log")
	log, err := newLogger(t, "info", path, FormatJSON)
	if err != nil {
		t.Fatal(err)
	}
	other, err := newLogger(t, "info", path, FormatConsole) // the access log, say, to the same file
	if err != nil {
		t.Fatal(err)
	}
	log.Info("before")
	if err := os.Rename(path, path+".1"); err != nil { // logrotate
		t.Fatal(err)
	}
	log.Info("between") // still the old file, until USR1
	if err := ReopenFiles(); err != nil {
		t.Fatal(err)
	}
	log.Info("after")
	other.Info("after too")

	old, cur := readFile(t, path+".1"), readFile(t, path)
	if !strings.Contains(old, "before") || !strings.Contains(old, "between") || strings.Contains(old, "after") {
		t.Errorf("rotated file: %q", old)
	}
	if !strings.Contains(cur, `"msg":"after"`) || !strings.Contains(cur, "after too") || strings.Contains(cur, "before") {
		t.Errorf("new file: %q", cur)
	}

	// A file that cannot be reopened is reported, and the others are still
	// reopened.
	bad := filepath.Join(dir, "sub", "bad.log")
	if err := os.Mkdir(filepath.Dir(bad), 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := newLogger(t, "info", bad, FormatJSON); err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(filepath.Dir(bad)); err != nil {
		t.Fatal(err)
	}
	if err := ReopenFiles(); err == nil || !strings.Contains(err.Error(), bad) {
		t.Errorf("reopen of a file in a removed directory: %v", err)
	}
}

func TestParseLevel(t *testing.T) {
	for in, want := range map[string]string{"": "info", "DEBUG": "debug", "warning": "warn", "critical": "error"} {
		if lvl, err := ParseLevel(in); err != nil || lvl.String() != want {
			t.Errorf("ParseLevel(%q) = %v, %v; want %s", in, lvl, err, want)
		}
	}
}
