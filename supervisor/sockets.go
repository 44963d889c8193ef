package supervisor

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/mcpgateway/mcpgateway/supervisor/protocol"
	"golang.org/x/sys/unix"
)

// origin is where a listening socket came from; it decides who may unlink
// its file and who may shut it down.
type origin int

const (
	originBound     origin = iota // this master bound it
	originActivated               // systemd passed it and keeps it
	originInherited               // an old master passed it (USR2)
)

// sockets owns every listening socket of a master: it opens them, knows
// where each came from, hands each worker slot its own, passes them all to a
// new master on USR2, and closes them. Nothing else opens or closes one.
//
// In the shared layout every worker accepts from the sockets in binds. In
// the reuse-port layout each slot has its own SO_REUSEPORT socket per TCP
// address, held here across the slot's generations so that a recycled
// worker's queue waits for its successor; unix sockets are always shared.
type sockets struct {
	binds     []*listener         // one per configured address, as first opened
	slots     map[int][]*listener // reuse-port: each slot's sockets, aligned with binds
	spares    []*listener         // reuse-port sockets an old master passed, not yet given to a slot
	reusePort bool
	backlog   int
	oldMaster int      // the master that passed inherited sockets; 0 when none
	passed    int      // how many listening sockets an old master passed (its control socket follows)
	frozen    bool     // a stop is shutting the sockets down: none may close before the master exits
	warnings  []string // what the master should log once it has a logger
}

// openSockets takes the sockets systemd passed, else those an upgrading
// master passed, else binds the configured addresses.
func openSockets(binds []string, backlog int, reusePort bool) (*sockets, error) {
	s := &sockets{slots: map[int][]*listener{}, reusePort: reusePort, backlog: backlog}
	var err error
	switch {
	case os.Getenv("LISTEN_PID") == strconv.Itoa(os.Getpid()) && os.Getenv("LISTEN_FDS") != "":
		err = s.adoptActivated(binds)
	case os.Getenv(protocol.EnvUpgradeFDs) != "":
		err = s.adoptUpgrade(binds)
	default:
		s.binds, err = listen(binds, backlog, reusePort)
	}
	for _, k := range []string{"LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES", protocol.EnvUpgradeFDs,
		protocol.EnvUpgradePrimary, protocol.EnvUpgradeActivated, protocol.EnvOldMaster} {
		os.Unsetenv(k) // not for workers, nor for a later new master
	}
	if err != nil {
		s.closeAll(false)
		return nil, err
	}
	if reusePort {
		s.slots[0] = s.binds
	}
	return s, nil
}

// adoptActivated takes systemd's sockets as they are: systemd chose the
// addresses, so the configured ones are only compared, with a warning.
func (s *sockets) adoptActivated(binds []string) error {
	n, err := strconv.Atoi(os.Getenv("LISTEN_FDS"))
	if err != nil || n <= 0 {
		return fmt.Errorf("LISTEN_FDS=%q: want a positive number", os.Getenv("LISTEN_FDS"))
	}
	names := strings.Split(os.Getenv("LISTEN_FDNAMES"), ":")
	ls, err := inheritListeners(protocol.FDPassedStart, n, originActivated)
	s.binds = ls
	if err != nil {
		return err
	}
	for i, l := range ls {
		if i < len(names) && names[i] != "" && names[i] != "unknown" {
			l.addr = names[i] + "=" + l.bound
		}
	}
	s.warnIfOtherBinds(binds, "systemd passed")
	return nil
}

// adoptUpgrade takes the sockets an old master passed by USR2. Addresses
// systemd chose are adopted as they are; otherwise each configured address
// takes its passed socket, and one the old master did not have is opened.
// In the reuse-port layout the other slots' sockets come back as spares, so
// that no socket the kernel still routes connections to is closed with
// connections in its queue.
func (s *sockets) adoptUpgrade(binds []string) error {
	n, err := strconv.Atoi(os.Getenv(protocol.EnvUpgradeFDs))
	if err != nil || n <= 0 {
		return fmt.Errorf("%s=%q: want a positive number", protocol.EnvUpgradeFDs, os.Getenv(protocol.EnvUpgradeFDs))
	}
	primary, err := strconv.Atoi(os.Getenv(protocol.EnvUpgradePrimary))
	if err != nil || primary <= 0 || primary > n {
		primary = n // an older master: every socket may be a primary one
	}
	s.oldMaster, _ = strconv.Atoi(os.Getenv(protocol.EnvOldMaster))
	s.passed = n
	activated := os.Getenv(protocol.EnvUpgradeActivated) == "1"
	org := originInherited
	if activated {
		org = originActivated
	}
	passed, err := inheritListeners(protocol.FDPassedStart, n, org)
	if err != nil {
		closeListeners(passed)
		return err
	}
	if activated {
		s.binds = passed[:primary]
		s.warnIfOtherBinds(binds, "systemd passed (through the old master)")
		passed = passed[primary:]
	} else {
		for _, b := range binds {
			var found *listener
			for i, l := range passed {
				if l != nil && sameAddress(b, l.bound) {
					found, passed[i] = l, nil
					break
				}
			}
			if found == nil {
				l, err := listenOne(b, s.backlog, s.reusePort)
				if err != nil {
					closeListeners(nonNil(passed))
					return fmt.Errorf("open listener %s: %w", b, err)
				}
				found = l
			}
			found.addr = b
			s.binds = append(s.binds, found)
		}
	}
	for _, l := range nonNil(passed) {
		if s.reusePort && l.path == "" {
			s.spares = append(s.spares, l)
		} else {
			l.close(false)
		}
	}
	return nil
}

func (s *sockets) warnIfOtherBinds(binds []string, what string) {
	for _, b := range binds {
		found := false
		for _, l := range s.binds {
			found = found || sameAddress(b, l.bound)
		}
		if !found {
			s.warnings = append(s.warnings, fmt.Sprintf("bind %s is not among the sockets %s (%s): serving on those", b, what, strings.Join(s.addrs(), ", ")))
		}
	}
}

func nonNil(ls []*listener) []*listener {
	var out []*listener
	for _, l := range ls {
		if l != nil {
			out = append(out, l)
		}
	}
	return out
}

// addrs are the addresses served, port 0 resolved.
func (s *sockets) addrs() []string {
	var out []string
	for _, l := range s.binds {
		out = append(out, l.bound)
	}
	return out
}

// forSlot is what a worker of this slot inherits, aligned with binds.
func (s *sockets) forSlot(slot int) ([]*listener, error) {
	if !s.reusePort {
		return s.binds, nil
	}
	if ls := s.slots[slot]; ls != nil {
		return ls, nil
	}
	ls := make([]*listener, len(s.binds))
	for i, b := range s.binds {
		if b.path != "" {
			ls[i] = b // unix sockets are shared
			continue
		}
		l := s.spareFor(b.bound)
		if l == nil {
			var err error
			if l, err = listenOne(b.bound, s.backlog, true); err != nil {
				for _, opened := range ls[:i] {
					if opened.path == "" {
						opened.close(false) // only what this call opened: unix ones are shared
					}
				}
				return nil, fmt.Errorf("open listener %s for slot %d: %w", b.bound, slot, err)
			}
		}
		l.addr = b.addr
		ls[i] = l
	}
	s.slots[slot] = ls
	return ls, nil
}

// spareFor takes a socket passed by an old master for this address, if any.
func (s *sockets) spareFor(addr string) *listener {
	for i, l := range s.spares {
		if sameAddress(addr, l.bound) {
			s.spares = append(s.spares[:i], s.spares[i+1:]...)
			return l
		}
	}
	return nil
}

// closeSpares closes the passed sockets no slot took: the old master had
// more slots than this one.
func (s *sockets) closeSpares() {
	closeListeners(s.spares)
	s.spares = nil
}

// closeSlot closes a slot's own sockets (reuse-port layout) when no worker
// will accept from them again: the slot was scaled away or is dead, so the
// kernel must stop routing connections to them. Connections already queued
// on them are reset.
func (s *sockets) closeSlot(slot int) {
	ls, ok := s.slots[slot]
	if !ok || s.frozen {
		return
	}
	for _, l := range ls {
		if l.path == "" {
			l.close(false)
		}
	}
	delete(s.slots, slot)
}

// closeOtherSlots closes the reuse-port sockets of every slot but those
// kept; after WINCH a new master holds copies of the ones its slots use.
func (s *sockets) closeOtherSlots(keep func(slot int) bool) {
	for slot := range s.slots {
		if !keep(slot) {
			s.closeSlot(slot)
		}
	}
}

// forUpgrade lists the sockets a new master inherits: one per configured
// address first (primary), then every other slot's reuse-port sockets.
func (s *sockets) forUpgrade() (files []*os.File, primary int, activated bool) {
	used := map[*listener]bool{}
	for i, b := range s.binds {
		l := b
		if l.closed() { // reuse-port slot 0 is dead: pass another slot's socket
			for _, ls := range s.slots {
				if !ls[i].closed() {
					l = ls[i]
					break
				}
			}
		}
		if l.closed() {
			continue
		}
		used[l] = true
		files = append(files, l.file)
		activated = activated || l.origin == originActivated
	}
	primary = len(files)
	for _, ls := range s.slots {
		for _, l := range ls {
			if !used[l] && l.path == "" && !l.closed() {
				used[l] = true
				files = append(files, l.file)
			}
		}
	}
	return files, primary, activated
}

// closeAll closes every socket at the master's exit. A unix socket file is
// unlinked only by its owner: not while a new master serves on it
// (handedOver), not while the old master that passed it still runs (a
// rolled-back upgrade), never when systemd passed it, and only if the path
// still names the socket this master took.
func (s *sockets) closeAll(handedOver bool) {
	mayUnlink := !handedOver && (s.oldMaster == 0 || os.Getppid() != s.oldMaster)
	done := map[*listener]bool{}
	for _, ls := range append([][]*listener{s.binds, s.spares}, slotLists(s.slots)...) {
		for _, l := range ls {
			if !done[l] {
				done[l] = true
				l.close(mayUnlink)
			}
		}
	}
	s.slots, s.spares = map[int][]*listener{}, nil
}

func slotLists(m map[int][]*listener) [][]*listener {
	var out [][]*listener
	for _, ls := range m {
		out = append(out, ls)
	}
	return out
}

// inheritListeners adopts n listening sockets from fd start on.
func inheritListeners(start, n int, org origin) ([]*listener, error) {
	var out []*listener
	for fd := start; fd < start+n; fd++ {
		unix.CloseOnExec(fd) // passed on to workers explicitly, never by accident
		if v, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ACCEPTCONN); err != nil || v != 1 {
			return out, fmt.Errorf("inherited fd %d is not a listening socket", fd)
		}
		// Workers made the shared file description non-blocking; the master
		// wants it blocking, or os.NewFile puts it in its netpoller and the
		// idle master wakes for every connection.
		_ = unix.SetNonblock(fd, false)
		sa, err := unix.Getsockname(fd)
		if err != nil {
			return out, fmt.Errorf("inherited fd %d: %w", fd, err)
		}
		l := &listener{origin: org}
		l.bound = sockaddrString(sa)
		if u, ok := sa.(*unix.SockaddrUnix); ok {
			l.bound, l.path = "unix:"+u.Name, u.Name
			l.ino = inode(u.Name)
		}
		l.addr = l.bound
		l.file = os.NewFile(uintptr(fd), l.bound)
		out = append(out, l)
	}
	return out, nil
}

// inode is the inode number of a path, 0 if it cannot be read.
func inode(path string) uint64 {
	var st unix.Stat_t
	if unix.Stat(path, &st) != nil {
		return 0
	}
	return st.Ino
}

func (l *listener) closed() bool { return l.file == nil }

// close closes the socket; its unix socket file goes too when unlink is
// allowed and the path still names this socket (a newer server may have
// bound the path since).
func (l *listener) close(unlink bool) {
	if l.file == nil {
		return
	}
	l.file.Close()
	l.file = nil
	if unlink && l.path != "" && l.origin != originActivated && l.ino != 0 && inode(l.path) == l.ino {
		_ = os.Remove(l.path) // if it fails, the next start removes the stale file
	}
}

// shutdownForStop makes every socket this master owns refuse new
// connections at once, for all the processes that hold it: shutdown(2),
// unlike close, acts on the socket, not on one copy. The workers accept
// until then, so a TCP socket is shut down when its accept queue is empty
// (the kernel resets what is queued at that moment), waiting at most
// queueWait; what was still queued is counted. A unix socket keeps its
// queue after shutdown, for the workers to accept. Sockets systemd passed
// are left alone: systemd keeps them, and queues new connections for the
// next start.
func (s *sockets) shutdownForStop(queueWait time.Duration) (reset int) {
	done := map[*listener]bool{}
	for _, ls := range append([][]*listener{s.binds}, slotLists(s.slots)...) {
		for _, l := range ls {
			if done[l] || l.closed() || l.origin == originActivated {
				continue
			}
			done[l] = true
			fd := int(l.file.Fd())
			if l.path == "" {
				deadline := time.Now().Add(queueWait)
				for queued(fd) > 0 && time.Now().Before(deadline) {
					time.Sleep(time.Millisecond)
				}
				reset += queued(fd)
			}
			_ = unix.Shutdown(fd, unix.SHUT_RDWR)
		}
	}
	return reset
}

// queued is a listening TCP socket's accept queue: connections whose
// handshake is done and that no process has accepted yet.
func queued(fd int) int {
	ti, err := unix.GetsockoptTCPInfo(fd, unix.IPPROTO_TCP, unix.TCP_INFO)
	if err != nil {
		return 0
	}
	return int(ti.Unacked)
}
