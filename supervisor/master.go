package supervisor

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/mcpgateway/mcpgateway/supervisor/protocol"
	"go.uber.org/zap"
	"golang.org/x/sys/unix"
)

// proc is one worker process as the master tracks it.
type proc struct {
	slot, gen, row, pid int
	cmd                 *exec.Cmd
	started             time.Time
	ready               bool
	retire              string    // why the master is replacing it; "" while it is wanted
	termAt              time.Time // when it was told to stop
	quitAt              time.Time // when it was sent SIGQUIT for not heartbeating
	killed              bool
	exited              bool
	lifetime            time.Duration // recycle after this long (0: never)
	rssStrikes          int           // consecutive RSS samples over the limit
}

// event is what the per-process goroutines report to the loop.
type event struct {
	p     *proc
	msg   string
	state *os.ProcessState // set when the process exited
	err   error
}

type master struct {
	o         Options
	log       *zap.Logger
	listeners []*listener   // the sockets of slot 0, and of every slot in the shared layout
	perSlot   [][]*listener // reuse-port layout: each slot's own sockets (slot 0: listeners)
	spares    []*listener   // reuse-port sockets an old master passed, for our slots
	table     *protocol.Table
	config    *os.File
	events    chan event

	procs     map[int]*proc // by pid
	freeRows  []int
	gens      []int // per slot: generations started so far
	dead      map[int]bool
	target    int
	everReady bool

	notify    *notifier
	child     *exec.Cmd  // the new master of a USR2 upgrade
	childDone chan error // its exit
	winched   bool       // WINCH: our workers stopped for the new master's
	upgraded  bool       // this master was started by an old one's USR2
	reloading bool       // HUP: tell systemd READY=1 when the roll is done

	stopping  bool
	fast      bool
	stopAt    time.Time
	halt      *HaltError
	ticks     int
	bootFails int
	crashes   []time.Time // recent crashes of ready workers
	backoff   time.Time
}

func newMaster(o Options) (*master, error) {
	m := &master{
		o: o, log: o.Logger.With(zap.String("proc", "master"), zap.Int("pid", os.Getpid())),
		events: make(chan event, 64), procs: map[int]*proc{}, dead: map[int]bool{}, target: o.Workers,
		childDone: make(chan error, 1), notify: newNotifier(),
	}
	var err error
	if m.listeners, m.spares, m.upgraded, err = openListeners(o); err != nil {
		return nil, err
	}
	if m.table, err = protocol.CreateTable(tableRows); err != nil {
		closeListeners(m.listeners)
		return nil, err
	}
	if m.config, err = configFile(o); err != nil {
		m.close()
		return nil, err
	}
	if err := writePidfile(o.Pidfile); err != nil {
		m.close()
		return nil, err
	}
	for i := tableRows; i >= 1; i-- {
		m.freeRows = append(m.freeRows, i)
	}
	h := m.table.Header()
	h.Store(protocol.HMasterStarted, uint64(protocol.Nanotime()))
	h.Store(protocol.HWorkersTarget, uint64(m.target))
	return m, nil
}

// openListeners takes the sockets systemd passed, else those an upgrading
// master passed, else binds the configured addresses.
func openListeners(o Options) (primary, spares []*listener, upgraded bool, err error) {
	if ls, err := activatedListeners(); err != nil || ls != nil {
		return ls, nil, false, err
	}
	if ls, spares, upgraded, err := upgradeListeners(o.Binds, o.Backlog, o.ReusePort); upgraded {
		return ls, spares, true, err
	}
	ls, err := listen(o.Binds, o.Backlog, o.ReusePort)
	return ls, nil, false, err
}

// configFile writes what every worker reads at start into a memfd.
func configFile(o Options) (*os.File, error) {
	raw, err := json.Marshal(protocol.Envelope{Worker: o.Worker, App: o.Payload})
	if err != nil {
		return nil, fmt.Errorf("encode worker configuration: %w", err)
	}
	fd, err := unix.MemfdCreate("mcpgateway-config", unix.MFD_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("create worker configuration: %w", err)
	}
	f := os.NewFile(uintptr(fd), "memfd:mcpgateway-config")
	if _, err := f.Write(raw); err != nil {
		f.Close()
		return nil, fmt.Errorf("write worker configuration: %w", err)
	}
	return f, nil
}

func (m *master) close() {
	m.closeSpares()
	for slot := range m.perSlot {
		m.closeSlotSockets(slot)
	}
	if m.child != nil {
		for _, l := range m.listeners {
			l.path = "" // the new master serves on these socket files now
		}
		if m.o.Pidfile != "" {
			removePidfile(m.o.Pidfile + ".oldbin")
		}
	}
	closeListeners(m.listeners)
	if m.table != nil {
		m.table.Close()
	}
	if m.config != nil {
		m.config.Close()
	}
	removePidfile(m.o.Pidfile)
}

func (m *master) addrs() []string {
	var out []string
	for _, l := range m.listeners {
		out = append(out, l.bound)
	}
	return out
}

func (m *master) run(ctx context.Context) error {
	defer m.close()
	sigs := make(chan os.Signal, 16)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGQUIT, syscall.SIGHUP,
		syscall.SIGTTIN, syscall.SIGTTOU, syscall.SIGUSR1, syscall.SIGUSR2, syscall.SIGWINCH)
	defer signal.Stop(sigs)

	m.log.Info("master starting", zap.Strings("listening", m.addrs()), zap.Int("workers", m.target),
		zap.Duration("timeout", m.o.Timeout), zap.Int("max_requests", m.o.MaxRequests),
		zap.Int("backpressure", m.o.Worker.Backpressure))
	if m.o.Prepare != nil {
		if err := m.o.Prepare(ctx); err != nil {
			return err
		}
	}
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	done := ctx.Done()
	for {
		m.manage()
		if (m.stopping || m.halt != nil) && len(m.procs) == 0 {
			break
		}
		select {
		case <-done:
			done = nil
			m.stop(false, "context cancelled")
		case sig := <-sigs:
			m.signal(sig.(syscall.Signal))
		case ev := <-m.events:
			m.handle(ev)
		case err := <-m.childDone:
			m.upgradeFailed(err)
		case <-tick.C:
			m.murder()
			m.recyclePolicies()
			m.notify.ping()
		}
	}
	if m.halt != nil {
		m.log.Error("master halted", zap.String("reason", m.halt.Reason))
		m.notify.send("STOPPING=1\nSTATUS=halted: " + m.halt.Reason)
		return m.halt
	}
	m.log.Info("master stopped")
	return nil
}

func (m *master) signal(sig syscall.Signal) {
	m.log.Info("signal", zap.String("signal", unix.SignalName(sig)))
	switch sig {
	case syscall.SIGTERM:
		m.stop(false, "signal TERM")
	case syscall.SIGINT, syscall.SIGQUIT:
		m.stop(true, "signal "+unix.SignalName(sig))
	case syscall.SIGTTIN:
		m.scale(m.target + 1)
	case syscall.SIGTTOU:
		m.scale(m.target - 1)
	case syscall.SIGHUP:
		m.reload()
	case syscall.SIGUSR1:
		m.reopenLogs()
	case syscall.SIGUSR2:
		m.upgrade()
	case syscall.SIGWINCH:
		m.winch()
	}
}

// stop begins a graceful stop (workers drain within graceful_timeout) or a
// fast one (workers exit at once).
func (m *master) stop(fast bool, why string) {
	if m.stopping && (m.fast || !fast) {
		return
	}
	m.stopping, m.fast = true, fast
	m.table.Header().Store(protocol.HStopping, 1) // workers: nobody serves after you, close quiet connections
	if m.child == nil {
		// After an upgrade the service goes on in the new master: telling
		// systemd this one is stopping would stop the service.
		m.notify.send("STOPPING=1")
	}
	if fast {
		m.stopAt = time.Now().Add(killDelay)
	} else {
		m.stopAt = time.Now().Add(m.o.GracefulTimeout + killDelay)
	}
	m.log.Info("master stopping", zap.String("why", why), zap.Bool("fast", fast), zap.Int("workers", len(m.procs)))
	for _, p := range m.procs {
		p.termAt = time.Time{} // (re)send the right signal below
		m.terminate(p, protocol.ReasonShutdown)
	}
}

func (m *master) scale(n int) {
	if m.stopping || n < 1 {
		return
	}
	m.log.Info("scaling", zap.Int("from", m.target), zap.Int("to", n))
	m.target = n
	m.table.Header().Store(protocol.HWorkersTarget, uint64(n))
	for _, p := range m.procs {
		if p.slot >= n && p.retire == "" {
			p.retire = protocol.ReasonScale
		}
	}
}

// terminate tells a worker to stop: TERM drains, INT (fast stop) exits now.
func (m *master) terminate(p *proc, reason string) {
	if !p.termAt.IsZero() || p.exited {
		return
	}
	if p.retire == "" {
		p.retire = reason
	}
	p.termAt = time.Now()
	sig := syscall.SIGTERM
	if m.fast {
		sig = syscall.SIGINT
	}
	m.log.Debug("stopping worker", m.fields(p, zap.String("signal", unix.SignalName(sig)))...)
	_ = p.cmd.Process.Signal(sig)
}

// manage keeps one wanted worker per slot, stops the ones that were
// replaced (make before break), and kills what overstays.
func (m *master) manage() {
	now := time.Now()
	for _, p := range m.procs {
		if !p.termAt.IsZero() && !p.killed {
			limit := p.termAt.Add(m.o.GracefulTimeout + killDelay)
			if m.stopping || m.halt != nil {
				limit = m.stopAt // the whole server's deadline
			}
			if now.After(limit) {
				m.log.Warn("worker overstayed its stop, killing", m.fields(p)...)
				p.killed = true
				_ = p.cmd.Process.Kill()
			}
		}
	}
	if m.stopping || m.halt != nil {
		return
	}
	// A replaced worker stops only once its successor serves.
	for _, p := range m.procs {
		if p.retire == "" || !p.termAt.IsZero() || !p.quitAt.IsZero() {
			continue
		}
		if p.slot >= m.target || m.slotReady(p.slot) {
			m.terminate(p, p.retire)
		}
	}
	if now.Before(m.backoff) || m.winched {
		return
	}
	for slot := 0; slot < m.target; slot++ {
		if !m.dead[slot] && m.wanted(slot) == nil {
			if err := m.spawn(slot); err != nil {
				m.log.Error("cannot start worker", zap.Int("slot", slot), zap.Error(err))
				m.backoff = now.Add(time.Second)
				return
			}
		}
	}
}

// wanted is the slot's worker that is not being replaced.
func (m *master) wanted(slot int) *proc {
	for _, p := range m.procs {
		if p.slot == slot && p.retire == "" {
			return p
		}
	}
	return nil
}

func (m *master) slotReady(slot int) bool {
	p := m.wanted(slot)
	return p != nil && p.ready
}

func (m *master) spawn(slot int) error {
	if len(m.freeRows) == 0 {
		return errors.New("status table full")
	}
	for len(m.gens) <= slot {
		m.gens = append(m.gens, 0)
	}
	m.gens[slot]++
	row := m.freeRows[len(m.freeRows)-1]
	limit := 0
	if m.o.MaxRequests > 0 {
		limit = m.o.MaxRequests
		if m.o.MaxRequestsJitter > 0 {
			limit += rand.IntN(m.o.MaxRequestsJitter + 1)
		}
	}
	id := protocol.Identity{Slot: slot, Generation: m.gens[slot], Row: row,
		Listeners: len(m.listeners), MasterPID: os.Getpid(), MaxRequests: limit}

	pr, pw, err := os.Pipe()
	if err != nil {
		return fmt.Errorf("pipe: %w", err)
	}
	cmd := exec.Command(m.o.Executable, m.o.Args...)
	cmd.Env = append(childEnv(true), id.Env()...)
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	sockets, err := m.socketsFor(slot)
	if err != nil {
		pr.Close()
		pw.Close()
		return err
	}
	cmd.ExtraFiles = []*os.File{m.config, m.table.File(), pw}
	for _, l := range sockets {
		cmd.ExtraFiles = append(cmd.ExtraFiles, l.file)
	}
	// The kernel tells the worker when the master dies, however it dies.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}

	r := m.table.Row(row)
	r.Store(protocol.FSlot, uint64(slot))
	r.Store(protocol.FGeneration, uint64(id.Generation))
	r.Store(protocol.FState, protocol.StateBooting)
	r.Store(protocol.FStarted, uint64(protocol.Nanotime()))
	r.Store(protocol.FHeartbeat, uint64(protocol.Nanotime()))
	if err := cmd.Start(); err != nil {
		pr.Close()
		pw.Close()
		m.table.Fold(row)
		return fmt.Errorf("start %s: %w", m.o.Executable, err)
	}
	pw.Close()
	m.freeRows = m.freeRows[:len(m.freeRows)-1]
	if h := m.table.Header(); uint64(row) > h.Load(protocol.HMaxRow) {
		h.Store(protocol.HMaxRow, uint64(row))
	}
	m.table.Header().Add(protocol.HStarts, 1)
	r.Store(protocol.FPid, uint64(cmd.Process.Pid))

	p := &proc{slot: slot, gen: id.Generation, row: row, pid: cmd.Process.Pid, cmd: cmd, started: time.Now(),
		lifetime: lifetimeFor(m.o.MaxWorkerLifetime)}
	m.procs[p.pid] = p
	m.log.Info("worker started", m.fields(p, zap.Int("max_requests", limit))...)
	go m.readMessages(p, pr)
	go func() {
		err := cmd.Wait()
		m.events <- event{p: p, state: cmd.ProcessState, err: err}
	}()
	return nil
}

func (m *master) readMessages(p *proc, r *os.File) {
	defer r.Close()
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		m.events <- event{p: p, msg: sc.Text()}
	}
}

func (m *master) handle(ev event) {
	p := ev.p
	if p.exited {
		return
	}
	if ev.state != nil || ev.err != nil {
		m.reap(p, ev.state)
		return
	}
	switch {
	case ev.msg == protocol.MsgReady:
		p.ready = true
		m.bootFails = 0
		m.log.Info("worker ready", m.fields(p, zap.Duration("boot", time.Since(p.started)))...)
		if !m.everReady && m.allReady() {
			m.everReady = true
			m.log.Info("server ready", zap.Strings("listening", m.addrs()), zap.Int("workers", m.target))
			ready := "READY=1"
			if m.upgraded {
				ready = fmt.Sprintf("MAINPID=%d\nREADY=1", os.Getpid()) // systemd follows the new master
			}
			m.notify.send(ready + "\nSTATUS=" + m.status())
			m.closeSpares()
			if m.o.Ready != nil {
				m.o.Ready(m.addrs())
			}
		}
		m.reloaded()
	case strings.HasPrefix(ev.msg, protocol.MsgRetire):
		if p.retire == "" {
			p.retire = strings.TrimPrefix(ev.msg, protocol.MsgRetire)
			m.log.Info("replacing worker", m.fields(p, zap.String("reason", p.retire),
				zap.Uint64("served", m.table.Row(p.row).Load(protocol.CServed)))...)
		}
	default:
		m.log.Warn("unknown message from worker", m.fields(p, zap.String("message", ev.msg))...)
	}
}

func (m *master) allReady() bool {
	for slot := 0; slot < m.target; slot++ {
		if !m.slotReady(slot) {
			return false
		}
	}
	return true
}

// reap records a worker's exit and decides what it means.
func (m *master) reap(p *proc, st *os.ProcessState) {
	p.exited = true
	delete(m.procs, p.pid)
	served := m.table.Row(p.row).Load(protocol.CServed)
	m.table.Fold(p.row)
	m.freeRows = append(m.freeRows, p.row)

	status, signaled := exitStatus(st)
	reason := p.retire
	switch {
	case m.stopping && reason == "":
		reason = protocol.ReasonShutdown
	case reason != "":
	case !p.ready:
		reason = protocol.ReasonBootFail
	default:
		reason = protocol.ReasonCrashed
	}
	m.table.Header().Add(protocol.ExitField(reason), 1)
	if p.slot >= m.target && m.slotEmpty(p.slot) {
		m.closeSlotSockets(p.slot) // scaled down: the slot is gone
	}
	fields := m.fields(p, zap.String("reason", reason), zap.String("status", status),
		zap.Duration("lifetime", time.Since(p.started)), zap.Uint64("served", served))
	if reason == protocol.ReasonCrashed || reason == protocol.ReasonBootFail || (signaled && reason != protocol.ReasonShutdown && !p.killed) {
		m.log.Error("worker exited", fields...)
	} else {
		m.log.Info("worker exited", fields...)
	}
	if m.stopping {
		return
	}
	switch reason {
	case protocol.ReasonBootFail:
		if st != nil && st.ExitCode() == protocol.ExitBootError {
			m.abort(&HaltError{Reason: "worker failed to boot: its error is logged above", Code: protocol.ExitBootError})
			return
		}
		m.bootFails++
		if m.bootFails >= maxBootFailures {
			m.abort(&HaltError{Reason: fmt.Sprintf("workers died %d times in a row before becoming ready (last: %s); not retrying", m.bootFails, status), Code: 1})
			return
		}
		m.backoff = time.Now().Add(backoffDelay(m.bootFails))
	case protocol.ReasonCrashed:
		if !m.o.RespawnFailed {
			m.dead[p.slot] = true
			if len(m.procs) == 0 {
				m.abort(&HaltError{Reason: "every worker died and respawn_failed is off", Code: 1})
			}
			return
		}
		// One crash is replaced at once; a worker crashing again and again
		// is replaced ever more slowly, so a crash loop does not eat the CPU.
		now := time.Now()
		m.crashes = append(m.crashes, now)
		for len(m.crashes) > 0 && now.Sub(m.crashes[0]) > crashWindow {
			m.crashes = m.crashes[1:]
		}
		if n := len(m.crashes); n > crashesBeforeBackoff {
			m.backoff = now.Add(backoffDelay(n - crashesBeforeBackoff))
		}
	}
}

// A few crashes within the window are respawned at once; more back off.
const (
	crashWindow          = 10 * time.Second
	crashesBeforeBackoff = 3
)

// maxBootFailures is how many workers in a row may die before ever serving
// before the master gives up instead of looping.
const maxBootFailures = 5

func backoffDelay(failures int) time.Duration {
	d := 100 * time.Millisecond << min(failures-1, 6)
	return min(d, 5*time.Second)
}

// abort halts the master: every worker is stopped at once.
func (m *master) abort(h *HaltError) {
	if m.halt != nil {
		return
	}
	m.halt = h
	m.fast = true
	m.table.Header().Store(protocol.HStopping, 1)
	m.stopAt = time.Now().Add(killDelay)
	for _, p := range m.procs {
		m.terminate(p, protocol.ReasonShutdown)
	}
}

// murder kills workers whose heartbeat is older than the timeout: first
// SIGQUIT, for the Go runtime's stack dump, then SIGKILL.
func (m *master) murder() {
	now := protocol.Nanotime()
	for _, p := range m.procs {
		if p.killed {
			continue
		}
		if !p.quitAt.IsZero() {
			if time.Since(p.quitAt) > killDelay {
				p.killed = true
				_ = p.cmd.Process.Kill()
			}
			continue
		}
		if !p.termAt.IsZero() {
			continue // draining: bounded by graceful_timeout in manage
		}
		hb := int64(m.table.Row(p.row).Load(protocol.FHeartbeat))
		if age := time.Duration(now - hb); age > m.o.Timeout {
			m.log.Error("worker timeout: no heartbeat, killing", m.fields(p, zap.Duration("silent_for", age))...)
			p.retire = protocol.ReasonTimeout
			p.quitAt = time.Now()
			_ = p.cmd.Process.Signal(syscall.SIGQUIT)
		}
	}
}

func (m *master) fields(p *proc, extra ...zap.Field) []zap.Field {
	return append([]zap.Field{zap.Int("slot", p.slot), zap.Int("worker_pid", p.pid), zap.Int("generation", p.gen)}, extra...)
}

func exitStatus(st *os.ProcessState) (string, bool) {
	if st == nil {
		return "unknown", false
	}
	if ws, ok := st.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return "signal " + unix.SignalName(ws.Signal()), true
	}
	return fmt.Sprintf("exit %d", st.ExitCode()), false
}

// socketsFor is what a worker of this slot inherits. In the shared layout
// every worker accepts from the same sockets. In the reuse-port layout each
// slot has its own SO_REUSEPORT socket per TCP address, opened by the master
// on first use and handed to every generation of the slot, so the kernel
// spreads connections evenly and a recycled worker's queue waits for its
// successor. Unix sockets are always shared.
func (m *master) socketsFor(slot int) ([]*listener, error) {
	if !m.o.ReusePort || slot == 0 {
		return m.listeners, nil
	}
	for len(m.perSlot) <= slot {
		m.perSlot = append(m.perSlot, nil)
	}
	if m.perSlot[slot] == nil {
		var ls []*listener
		for _, l := range m.listeners {
			if l.path != "" {
				ls = append(ls, l)
				continue
			}
			nl, err := m.spareFor(l.bound)
			if nl == nil && err == nil {
				nl, err = listenOne(l.bound, m.o.Backlog, true)
			}
			if err != nil {
				closeListeners(ls[:0])
				return nil, fmt.Errorf("open listener %s for slot %d: %w", l.bound, slot, err)
			}
			ls = append(ls, nl)
		}
		m.perSlot[slot] = ls
	}
	return m.perSlot[slot], nil
}

// closeSlotSockets closes a slot's own sockets. Connections still queued on
// them are reset: the reuse-port layout's price for scaling down.
func (m *master) closeSlotSockets(slot int) {
	if slot == 0 || slot >= len(m.perSlot) {
		return
	}
	for _, l := range m.perSlot[slot] {
		if l.path == "" {
			l.file.Close()
		}
	}
	m.perSlot[slot] = nil
}

func (m *master) slotEmpty(slot int) bool {
	for _, p := range m.procs {
		if p.slot == slot {
			return false
		}
	}
	return true
}

// spareFor takes a socket passed by an old master for this address, if any.
func (m *master) spareFor(addr string) (*listener, error) {
	for i, l := range m.spares {
		if sameAddress(addr, l.bound) {
			m.spares = append(m.spares[:i], m.spares[i+1:]...)
			return l, nil
		}
	}
	return nil, nil
}

// closeSpares closes the passed sockets no slot took: the old master had
// more slots than this one.
func (m *master) closeSpares() {
	closeListeners(m.spares)
	m.spares = nil
}
