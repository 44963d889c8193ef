package store

import (
	"crypto/sha256"
	"encoding/hex"
	"os"
	"strconv"
	"strings"
)

// Every PostgreSQL session of the server is named, through application_name,
//
//	<base>/<instance>/<pid>      e.g. mcpgateway/4242@web-1/4250
//
// base is the application_name DATABASE_URL (or PGAPPNAME) gives, else
// "mcpgateway"; instance is the server instance (the master's pid and the
// host, see InstanceOf); pid is the process that opened the session (a
// worker, or the migrate child). CheckReloadCapacity tells this server's
// sessions from other clients' by the "<base>/<instance>/" prefix, and a
// DBA sees in pg_stat_activity which instance and which worker holds what.

// EnvMasterPID is the environment variable the supervisor sets on every
// worker to its master's pid. It is protocol.EnvMasterPID, spelled again
// here so that the store does not depend on the supervisor;
// cmd/mcpgateway's tests check that the two agree.
const EnvMasterPID = "MCPGATEWAY_MASTER_PID"

// DefaultAppName is the first part of application_name when DATABASE_URL
// sets none.
const DefaultAppName = "mcpgateway"

const (
	// maxAppName is PostgreSQL's limit (NAMEDATALEN-1): longer names are
	// cut silently, which would cut the instance and break the matching.
	maxAppName = 63
	// pidWidth is the room kept for the pid: Linux pids have at most 7
	// digits. It is fixed, not the pid's own length, so that every process
	// of an instance (and CheckReloadCapacity) computes the same prefix.
	pidWidth = 7
	// maxBase bounds the base, so an operator's long application_name
	// leaves room for the instance.
	maxBase = 20
)

// InstanceOf is the identity of the server instance whose master has this
// pid: "<pid>@<host>". The pid tells instances on one host apart and the
// host name instances on different hosts (in containers the master is
// often pid 1 everywhere).
func InstanceOf(masterPID int) string {
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "localhost"
	}
	return strconv.Itoa(masterPID) + "@" + host
}

// defaultInstance is Options.Instance when none is given: the master's, in
// a worker (or any child the master started with EnvMasterPID set), else
// this process's own, a server of one process.
func defaultInstance() string {
	if pid, err := strconv.Atoi(os.Getenv(EnvMasterPID)); err == nil && pid > 0 {
		return InstanceOf(pid)
	}
	return InstanceOf(os.Getpid())
}

// sessionPrefix is "<base>/<instance>/", sanitised and bounded so that the
// full name with any pid fits in maxAppName.
func sessionPrefix(base, instance string) string {
	if base == "" {
		base = DefaultAppName
	}
	base = shorten(sanitiseName(base), maxBase)
	room := maxAppName - pidWidth - len(base) - 2 // the two slashes
	return base + "/" + shorten(sanitiseName(instance), room) + "/"
}

// sessionName is the application_name of a session opened by process pid.
func sessionName(base, instance string, pid int) string {
	return sessionPrefix(base, instance) + strconv.Itoa(pid)
}

// sanitiseName keeps printable ASCII except "/", the separator; PostgreSQL
// would turn anything else into "?".
func sanitiseName(s string) string {
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r > 0x7e || r == '/' {
			return '-'
		}
		return r
	}, s)
}

// shorten cuts s to n bytes, ending it with a hash of the whole so that two
// long names that differ only at the end stay different.
func shorten(s string, n int) string {
	if len(s) <= n {
		return s
	}
	sum := sha256.Sum256([]byte(s))
	const tail = 9 // "~" and 8 hex digits
	return s[:n-tail] + "~" + hex.EncodeToString(sum[:])[:tail-1]
}
