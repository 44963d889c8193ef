package config

import (
	"crypto/sha256"
	"encoding/hex"
	"path/filepath"
	"strings"
)

// ControlSocketOff in ControlSocket turns the control socket off.
const ControlSocketOff = "off"

// maxSocketPath is the longest path a unix socket can be bound to on Linux
// (sun_path is 108 bytes with the terminating NUL).
const maxSocketPath = 107

// FallbackRuntimeDir holds default control sockets when XDG_RUNTIME_DIR is
// not set (a system service, a container).
const FallbackRuntimeDir = "/tmp"

// DefaultControlSocket is the control socket of a server bound to binds
// when ControlSocket is empty: <runtimeDir>/mcpgateway-<binds>.ctl, with
// runtimeDir FallbackRuntimeDir when empty. It depends only on what the
// server and a client command both read (the configuration and
// XDG_RUNTIME_DIR), so `mcpgateway status` run with the same configuration
// finds the server; and two servers on one host cannot be bound to the same
// addresses, so their sockets do not collide. Relative unix: binds are taken
// from dir, so that the same relative path in two directories gives two
// sockets.
func DefaultControlSocket(binds []string, dir, runtimeDir string) string {
	if runtimeDir == "" {
		runtimeDir = FallbackRuntimeDir
	}
	parts := make([]string, 0, len(binds))
	for _, b := range binds {
		if path, ok := strings.CutPrefix(b, "unix:"); ok && !filepath.IsAbs(path) {
			if abs, err := filepath.Abs(filepath.Join(dir, path)); err == nil {
				b = "unix:" + abs
			}
		}
		parts = append(parts, b)
	}
	exact := strings.Join(parts, ",")
	const prefix, suffix = "mcpgateway-", ".ctl"
	room := min(64, maxSocketPath-len(runtimeDir)-1-len(prefix)-len(suffix))
	return filepath.Join(runtimeDir, prefix+socketName(exact, room)+suffix)
}

// socketName turns bind addresses into a file name of at most room bytes.
// "127.0.0.1:4444" reads 127.0.0.1_4444. Text that needs more than the
// ':' → '_' rewrite (IPv6 brackets, unix paths, several binds) or is too
// long gets a hash of the exact text, so that two different binds never
// share a name.
func socketName(exact string, room int) string {
	var b strings.Builder
	lossy := false
	for _, r := range exact {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '.', r == '-':
			b.WriteRune(r)
		case r == ':':
			b.WriteByte('_')
		default:
			b.WriteByte('_')
			lossy = true
		}
	}
	name := b.String()
	const hashLen = 8
	if !lossy && len(name) <= room {
		return name
	}
	sum := sha256.Sum256([]byte(exact))
	hash := hex.EncodeToString(sum[:])[:hashLen]
	if keep := room - hashLen - 1; keep > 0 && name != "" {
		return name[:min(len(name), keep)] + "-" + hash
	}
	return hash
}
