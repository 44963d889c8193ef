package proctest

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// GoBuild runs `go build args... -o out pkg` in the working directory; its
// error carries go's output.
func GoBuild(out, pkg string, args ...string) error {
	cmd := exec.Command("go", append(append([]string{"build"}, args...), "-o", out, pkg)...)
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build %s: %v\n%s", pkg, err, strings.TrimRight(string(b), "\n"))
	}
	return nil
}

// Runner is a *testing.M.
type Runner interface{ Run() int }

// BuildAndRun is a TestMain whose tests drive a binary: it builds pkg (with
// the extra go build args) once into a new temporary directory, sets *bin to
// its path, runs the tests and removes the directory. It returns the exit
// code for os.Exit: 1 without running any test when the build fails.
//
//	func TestMain(m *testing.M) { os.Exit(proctest.BuildAndRun(m, &binary, "../cmd/mcpgateway")) }
func BuildAndRun(m Runner, bin *string, pkg string, args ...string) int {
	name := filepath.Base(pkg)
	dir, err := os.MkdirTemp("", "proctest-"+name+"-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	*bin = filepath.Join(dir, name)
	if err := GoBuild(*bin, pkg, args...); err != nil {
		fmt.Fprintf(os.Stderr, "build %s: %v\n", name, err)
		return 1
	}
	return m.Run()
}
