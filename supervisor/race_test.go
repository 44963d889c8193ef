//go:build race

package supervisor_test

// Under `go test -race` the testserver is built with the race detector too,
// so the master and worker processes themselves are checked.
const raceEnabled = true
