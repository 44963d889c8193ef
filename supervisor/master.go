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
	"path/filepath"
	"runtime"
	"sync"
	"syscall"
	"time"

	"github.com/mcpgateway/mcpgateway/supervisor/control"
	"github.com/mcpgateway/mcpgateway/supervisor/protocol"
	"go.uber.org/zap"
	"golang.org/x/sys/unix"
)

// event is what the per-process goroutines report to the loop.
type event struct {
	p     *proc
	msg   string
	state *os.ProcessState // set when the process exited
	err   error
}

// prepared is the outcome of work the loop must not wait for: the first
// Prepare, or a reload's new configuration with its Prepare.
type prepared struct {
	reload bool
	o      Options
	config *os.File
	err    error
}

type master struct {
	o       Options
	log     *zap.Logger
	sockets *sockets
	table   *protocol.Table
	config  *os.File
	events  chan event
	work    chan prepared
	ctx     context.Context // cancelled when the master stops: ends Prepare work
	cancel  context.CancelFunc

	procs     map[int]*proc // by pid
	freeRows  []int
	gens      []int // per slot: generations started so far
	dead      map[int]bool
	target    int   // how many workers: len(slots)
	slots     []int // the slots that have a worker, ascending
	prepDone  bool  // Prepare finished: workers may start
	everReady bool  // every slot had a ready worker once

	configGen   int      // bumped by each applied reload
	configReady bool     // a worker of the current configuration became ready
	previous    *Options // the configuration a reload replaced, until it completes
	prevConfig  *os.File
	reloading   bool    // a reload's workers are rolling in
	rollQueue   []*proc // old workers a reload has yet to replace (ReloadSurge at a time)
	preparing   bool    // a reload's configuration is being prepared
	reloadAgain bool    // HUP arrived while preparing

	control       *control.Listener // nil: no control socket
	controls      chan controlReq
	loopDone      chan struct{} // closed when the loop has ended
	reloadWaiters []chan control.Reply

	notify    *notifier
	child     *exec.Cmd  // the new master of a USR2 upgrade
	childDone chan error // its exit
	winched   bool       // WINCH: our workers stopped for the new master's
	oldMaster int        // the master whose USR2 started this one; 0 if none

	stopping   bool
	fast       bool
	refuseAt   time.Time        // a stop: when new connections start to be refused (after ShutdownDelay)
	refusing   bool             // the sockets are being shut down
	refuseDone bool             // they are: the workers were told to stop
	refused    chan int         // the shutdown's result: connections reset in the queues
	delayOver  <-chan time.Time // fires when the shutdown delay ends
	health     *health          // the health port; nil without HealthBind
	stopAt     time.Time
	halt       *HaltError
	ticks      int
	bootFails  int // workers in a row that died before serving
	backoff    time.Time
}

func newMaster(o Options) (*master, error) {
	oldMaster := 0
	if os.Getenv(protocol.EnvUpgradeFDs) != "" {
		fmt.Sscan(os.Getenv(protocol.EnvOldMaster), &oldMaster)
	}
	m := &master{
		o: o, log: o.Logger.With(zap.String("proc", "master"), zap.Int("pid", os.Getpid())),
		events: make(chan event, 64), work: make(chan prepared, 1), controls: make(chan controlReq), loopDone: make(chan struct{}), refused: make(chan int, 1), procs: map[int]*proc{}, dead: map[int]bool{},
		target: o.Workers, childDone: make(chan error, 1), oldMaster: oldMaster,
		notify: newNotifier(oldMaster == 0),
	}
	m.ctx, m.cancel = context.WithCancel(context.Background())
	for slot := 0; slot < o.Workers; slot++ {
		m.slots = append(m.slots, slot)
	}
	var err error
	if m.sockets, err = openSockets(o.Binds, o.Backlog, o.ReusePort); err != nil {
		return nil, err
	}
	for _, w := range m.sockets.warnings {
		m.log.Warn("configuration", zap.String("warning", w))
	}
	if m.table, err = protocol.CreateTable(tableRows); err != nil {
		m.sockets.closeAll(false)
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
	if o.HealthBind != "" {
		if m.health, err = openHealth(o.HealthBind, m.log); err != nil {
			m.close()
			return nil, err
		}
	}
	m.openControl()
	return m, nil
}

// configFile writes what every worker reads at start into a sealed memfd:
// once written, nobody (not even a process that opens it through /proc)
// can change the configuration that later workers boot with.
func configFile(o Options) (*os.File, error) {
	raw, err := json.Marshal(protocol.Envelope{Worker: o.Worker, App: o.Payload})
	if err != nil {
		return nil, fmt.Errorf("encode worker configuration: %w", err)
	}
	fd, err := unix.MemfdCreate("mcpgateway-config", unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING)
	if err != nil {
		return nil, fmt.Errorf("create worker configuration: %w", err)
	}
	f := os.NewFile(uintptr(fd), "memfd:mcpgateway-config")
	if _, err := f.Write(raw); err != nil {
		f.Close()
		return nil, fmt.Errorf("write worker configuration: %w", err)
	}
	seals := unix.F_SEAL_WRITE | unix.F_SEAL_GROW | unix.F_SEAL_SHRINK | unix.F_SEAL_SEAL
	if _, err := unix.FcntlInt(f.Fd(), unix.F_ADD_SEALS, seals); err != nil {
		f.Close()
		return nil, fmt.Errorf("seal worker configuration: %w", err)
	}
	return f, nil
}

func (m *master) close() {
	m.cancel()
	m.closeControl()
	m.health.close()
	m.sockets.closeAll(m.child != nil)
	if m.child != nil && m.o.Pidfile != "" {
		removePidfile(m.o.Pidfile + ".oldbin")
	}
	if m.table != nil {
		m.table.RemoveShared() // the workers' shared files (rate limits)
		m.table.Close()
	}
	for _, f := range []*os.File{m.config, m.prevConfig} {
		if f != nil {
			f.Close()
		}
	}
	removePidfile(m.o.Pidfile)
}

func (m *master) addrs() []string { return m.sockets.addrs() }

func (m *master) run(ctx context.Context) error {
	defer m.close()
	defer close(m.loopDone) // before close: control goroutines stop asking the loop
	sigs := make(chan os.Signal, 16)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGQUIT, syscall.SIGHUP,
		syscall.SIGTTIN, syscall.SIGTTOU, syscall.SIGUSR1, syscall.SIGUSR2, syscall.SIGWINCH)
	defer signal.Stop(sigs)

	m.log.Info("master starting", zap.Strings("listening", m.addrs()), zap.Int("workers", m.target),
		zap.Duration("timeout", m.o.Timeout), zap.Int("max_requests", m.o.MaxRequests),
		zap.Int("backpressure", m.o.Worker.Backpressure), zap.Bool("backpressure_auto", m.o.Worker.BackpressureAuto),
		zap.Duration("max_queue_delay", m.o.Worker.MaxQueueDelay))
	// Prepare (migrations) may take minutes: it runs beside the loop, which
	// goes on answering signals and pinging systemd's watchdog meanwhile.
	if prep := m.o.Prepare; prep != nil {
		go func() { m.work <- prepared{err: prep(m.ctx)} }()
	} else {
		m.prepDone = true
	}
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	done := ctx.Done()
	for {
		m.manage()
		m.publishHealth()
		if m.stopping && len(m.procs) == 0 && !m.refusing {
			m.refuse() // nothing left to serve the rest of the shutdown delay
		}
		if m.stopping && len(m.procs) == 0 && m.refuseDone {
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
		case w := <-m.work:
			if err := m.prepared(w); err != nil {
				return err
			}
		case c := <-m.controls:
			m.handleControl(c)
		case n := <-m.refused:
			m.refusedNew(n)
		case <-m.delayOver:
			m.delayOver = nil
			m.refuse()
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
		m.tellStopping("STATUS=halted: " + m.halt.Reason)
		return m.halt
	}
	m.log.Info("master stopped")
	return nil
}

// prepared takes the result of Prepare or of a reload's preparation.
func (m *master) prepared(w prepared) error {
	if !w.reload {
		if w.err != nil && !m.stopping {
			return w.err
		}
		m.prepDone = true
		return nil
	}
	m.preparing = false
	m.applyReload(w)
	if m.reloadAgain && !m.stopping {
		m.reloadAgain = false
		m.reload()
	}
	return nil
}

func (m *master) signal(sig syscall.Signal) {
	m.log.Info("signal", zap.String("signal", unix.SignalName(sig)))
	switch sig {
	case syscall.SIGTERM:
		m.stop(false, "signal TERM")
	case syscall.SIGQUIT:
		// nginx's upgrade recipe ends with QUIT to the old master: while a
		// new master serves, QUIT lets the old workers finish what they hold.
		m.stop(m.child == nil, "signal QUIT")
	case syscall.SIGINT:
		m.stop(true, "signal INT")
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
	m.stopAll(fast, nil, why)
}

// abort halts the master: every worker is stopped at once.
func (m *master) abort(h *HaltError) {
	m.stopAll(true, h, h.Reason)
}

// stopAll stops the whole server, for a stop or a halt. Readiness fails at
// once (the health port, and /ready of every worker, read the stopping
// flag); a graceful stop goes on serving for ShutdownDelay, then refuses new
// connections and drains (refuse). A second call may only make a stop
// faster.
func (m *master) stopAll(fast bool, halt *HaltError, why string) {
	if m.stopping && (m.fast || !fast) {
		return
	}
	if halt != nil && m.halt == nil {
		m.halt = halt
	}
	first := !m.stopping
	m.stopping, m.fast = true, fast
	m.cancel()                                    // Prepare or a reload in progress is abandoned
	m.table.Header().Store(protocol.HStopping, 1) // workers: /ready fails; drains close quiet connections
	m.publishHealth()
	if first && m.halt == nil && m.child == nil {
		// After an upgrade the service goes on in the new master: telling
		// systemd this one is stopping would stop the service.
		m.tellStopping("")
	}
	now := time.Now()
	switch {
	case fast:
		m.refuseAt, m.stopAt = now, now.Add(killDelay)
	case first:
		m.refuseAt = now.Add(m.o.ShutdownDelay)
		m.stopAt = m.refuseAt.Add(m.o.GracefulTimeout + killDelay)
		if m.o.ShutdownDelay > 0 {
			m.delayOver = time.After(m.o.ShutdownDelay)
		}
	}
	m.log.Info("master stopping", zap.String("why", why), zap.Bool("fast", fast), zap.Int("workers", len(m.procs)),
		zap.Duration("shutdown_delay", m.refuseAt.Sub(now)))
	if m.refusing && fast {
		for _, p := range m.procs { // already draining: now at once
			if p.phase == stopping {
				p.deadline = m.stopAt
				_ = p.cmd.Process.Signal(syscall.SIGINT)
			}
		}
	}
	if !m.refusing && !now.Before(m.refuseAt) {
		m.refuse()
	}
}

// refuseQueueWait bounds how long a stop waits for the workers to empty a
// socket's accept queue before shutting it down.
const refuseQueueWait = time.Second

// refuse ends the serving part of a stop: every socket this master owns is
// shut down, so new connections are refused at once by the kernel,
// whichever process holds the socket, instead of waiting in a queue nobody
// will accept from; then the workers are told to stop. The shutdown waits
// for the accept queues to empty, so it runs beside the loop. Sockets a new
// master serves on (USR2), or that the old master still serves on (a
// rolled-back upgrade), are not shut down.
func (m *master) refuse() {
	if m.refusing {
		return
	}
	m.refusing = true
	if m.child != nil || (m.oldMaster != 0 && os.Getppid() == m.oldMaster) {
		// The sockets are shared with another master that goes on serving:
		// a new one (USR2), or the old one this rolled-back master leaves.
		m.refusedNew(-1)
		return
	}
	wait := refuseQueueWait
	if m.fast {
		wait = 0
	}
	m.sockets.frozen = true // no socket closes while the shutdown runs
	s := m.sockets
	go func() { m.refused <- s.shutdownForStop(wait) }()
}

// refusedNew follows the shutdown: the workers drain. reset is how many
// queued connections the kernel reset (-1: the sockets were handed over).
func (m *master) refusedNew(reset int) {
	m.refuseDone = true
	if reset >= 0 {
		m.table.Header().Add(protocol.HStopResets, uint64(reset))
		m.log.Info("refusing new connections", zap.Int("queued_connections_reset", reset))
	}
	for _, p := range m.procs {
		if p.phase < stopping {
			m.transition(p, stopping, protocol.ReasonShutdown)
		}
	}
}

// tellStopping tells systemd the service is stopping, unless this master is
// a new one whose old master still runs: then the service goes on there.
func (m *master) tellStopping(status string) {
	if m.oldMaster != 0 && os.Getppid() == m.oldMaster {
		m.notify.handBack(m.oldMaster)
		return
	}
	msg := "STOPPING=1"
	if status != "" {
		msg += "\n" + status
	}
	m.notify.send(msg)
}

func (m *master) scale(n int) {
	if m.stopping || n < 1 {
		return
	}
	if n > maxWorkers {
		m.log.Warn("scaling: at the maximum", zap.Int("max_workers", maxWorkers))
		return
	}
	m.log.Info("scaling", zap.Int("from", m.target), zap.Int("to", n))
	m.setTarget(n)
}

// markReplaced marks a worker for replacement; it serves on until its
// successor is ready (or, for a slot scaled away, is stopped at once).
func (m *master) markReplaced(p *proc, reason string, extra ...zap.Field) {
	if p.phase == ready {
		m.transition(p, replacing, reason, extra...)
	} else if p.retire == "" {
		p.retire = reason
	}
}

// manage keeps one wanted worker per slot and stops the ones that were
// replaced once their successor serves (make before break).
func (m *master) manage() {
	if m.stopping || m.halt != nil {
		return
	}
	m.rollOn()
	for _, p := range m.procs {
		if p.retire == "" || p.phase >= stopping {
			continue
		}
		if !m.active(p.slot) || m.slotReady(p.slot) {
			m.transition(p, stopping, p.retire)
		}
	}
	if !m.prepDone || time.Now().Before(m.backoff) || m.winched {
		return
	}
	for _, slot := range m.slots {
		if !m.dead[slot] && m.wanted(slot) == nil {
			if err := m.spawn(slot); err != nil {
				m.log.Error("cannot start worker", zap.Int("slot", slot), zap.Error(err))
				m.backoff = time.Now().Add(time.Second)
				return
			}
		}
	}
}

// wanted is the slot's worker that is not being replaced.
func (m *master) wanted(slot int) *proc {
	for _, p := range m.procs {
		if p.slot == slot && p.wanted() {
			return p
		}
	}
	return nil
}

func (m *master) slotReady(slot int) bool {
	p := m.wanted(slot)
	return p != nil && p.phase == ready
}

func (m *master) spawn(slot int) error {
	if len(m.freeRows) == 0 {
		return errors.New("status table full")
	}
	listeners, err := m.sockets.forSlot(slot)
	if err != nil {
		return err
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
		Listeners: len(listeners), MasterPID: os.Getpid(), MaxRequests: limit}

	pr, pw, err := os.Pipe()
	if err != nil {
		return fmt.Errorf("pipe: %w", err)
	}
	cmd := exec.Command(m.o.Executable, m.o.Args...)
	// ps and top show what the process is, as Gunicorn's workers do.
	cmd.Args[0] = fmt.Sprintf("%s: worker %d", programName(), slot)
	cmd.Env = append(childEnv(true), id.Env()...)
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	cmd.ExtraFiles = []*os.File{m.config, m.table.File(), pw}
	for _, l := range listeners {
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
	if err := startLocked(cmd); err != nil {
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
		config: m.configGen, lifetime: lifetimeFor(m.o.MaxWorkerLifetime)}
	m.procs[p.pid] = p
	m.log.Info("worker started", m.fields(p, zap.Int("max_requests", limit))...)
	go m.readMessages(p, pr)
	go func() {
		err := cmd.Wait()
		m.events <- event{p: p, state: cmd.ProcessState, err: err}
	}()
	return nil
}

// programName is this program's name for process titles.
func programName() string {
	if exe, err := os.Executable(); err == nil {
		return filepath.Base(exe)
	}
	return "mcpgateway"
}

// startLocked starts every worker from one goroutine locked to its OS
// thread for the process's life. Linux sends the parent-death signal when
// the thread that forked the child exits, not the process; Go ends a thread
// when a goroutine exits while locked to it, which an embedder's hook may
// do. A thread that never exits makes the signal mean what it says.
func startLocked(cmd *exec.Cmd) error {
	spawnerOnce.Do(func() {
		spawnReqs = make(chan spawnReq)
		go func() {
			runtime.LockOSThread() // never unlocked: the thread lives as long as the process
			for r := range spawnReqs {
				r.done <- r.cmd.Start()
			}
		}()
	})
	done := make(chan error, 1)
	spawnReqs <- spawnReq{cmd, done}
	return <-done
}

type spawnReq struct {
	cmd  *exec.Cmd
	done chan error
}

var (
	spawnerOnce sync.Once
	spawnReqs   chan spawnReq
)

func (m *master) readMessages(p *proc, r *os.File) {
	defer r.Close()
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		m.events <- event{p: p, msg: sc.Text()}
	}
}

func (m *master) handle(ev event) {
	p := ev.p
	if p.phase == exited {
		return
	}
	if ev.state != nil || ev.err != nil {
		m.reap(p, ev.state)
		return
	}
	msg, err := protocol.ParseMessage(ev.msg)
	if err != nil {
		m.log.Warn("bad message from worker", m.fields(p, zap.Error(err))...)
		return
	}
	switch msg.Kind {
	case protocol.KindReady:
		if p.phase != booting {
			return
		}
		m.transition(p, ready, "")
		if p.retire != "" { // replaced while it booted (a reload, a scale-down)
			m.transition(p, replacing, p.retire)
		}
		m.bootFails = 0
		if p.config == m.configGen {
			m.configReady = true
		}
		if !m.everReady && m.allReady() {
			m.everReady = true
			m.log.Info("server ready", zap.Strings("listening", m.addrs()), zap.Int("workers", m.target))
			if m.oldMaster != 0 {
				m.notify.becomeMain("READY=1\nSTATUS=" + m.status()) // systemd follows the new master
			} else {
				m.notify.send("READY=1\nSTATUS=" + m.status())
			}
			m.sockets.closeSpares()
			if m.o.Ready != nil {
				m.o.Ready(m.addrs())
			}
		}
		m.reloaded()
	case protocol.KindRetire:
		if p.wanted() {
			m.markReplaced(p, msg.Reason)
		}
	}
}

func (m *master) allReady() bool {
	for _, slot := range m.slots {
		if !m.slotReady(slot) {
			return false
		}
	}
	return true
}

// reap records a worker's exit and decides what it means.
func (m *master) reap(p *proc, st *os.ProcessState) {
	wasReady := p.everReady
	p.phase = exited
	delete(m.procs, p.pid)
	served := m.table.Row(p.row).Load(protocol.CServed)
	m.table.Fold(p.row)
	m.freeRows = append(m.freeRows, p.row)

	status, signaled := exitStatus(st)
	bootError := st != nil && st.ExitCode() == protocol.ExitBootError
	reason := p.retire
	switch {
	case bootError || (!wasReady && reason == ""):
		reason = protocol.ReasonBootFail
	case reason != "":
	case m.stopping:
		reason = protocol.ReasonShutdown
	default:
		reason = protocol.ReasonCrashed
	}
	m.table.Header().Add(protocol.ExitField(reason), 1)
	if !m.active(p.slot) && m.slotEmpty(p.slot) && !m.stopping {
		m.sockets.closeSlot(p.slot) // scaled down: the slot is gone
	}
	fields := m.fields(p, zap.String("reason", reason), zap.String("status", status),
		zap.Duration("lifetime", time.Since(p.started)), zap.Uint64("served", served))
	if reason == protocol.ReasonCrashed || reason == protocol.ReasonBootFail || (signaled && reason != protocol.ReasonShutdown && !p.sigkilled) {
		m.log.Error("worker exited", fields...)
	} else {
		m.log.Info("worker exited", fields...)
	}
	if m.stopping {
		return
	}
	switch reason {
	case protocol.ReasonBootFail:
		m.bootFailed(p, bootError, status)
	case protocol.ReasonCrashed:
		if !m.o.RespawnFailed {
			m.dead[p.slot] = true
			m.sockets.closeSlot(p.slot) // nobody will accept from it: the kernel must stop routing to it (reap returned above while stopping)
			if len(m.procs) == 0 {
				m.abort(&HaltError{Reason: "every worker died and respawn_failed is off", Code: 1})
			}
			return
		}
		// A worker that served is replaced at once, however often: the
		// server must be back at full strength. One that crashes before
		// serving anything is a boot that failed late: it backs off.
		if served == 0 {
			m.bootFailed(p, false, status)
		}
	}
}

// bootFailed decides what a worker that died before serving means. While
// the first generation starts, it is the server that cannot run: a boot
// error, or maxBootFailures deaths in a row, halt the master. While a
// reload's workers roll in and none has become ready, the reload is rolled
// back and the old workers go on serving. Otherwise workers are serving and
// the master keeps them, retrying the replacement with backoff.
func (m *master) bootFailed(p *proc, bootError bool, status string) {
	m.bootFails++
	switch {
	case !m.everReady:
		if bootError {
			m.abort(&HaltError{Reason: "worker failed to boot: its error is logged above", Code: protocol.ExitBootError})
			return
		}
		if m.bootFails >= maxBootFailures {
			m.abort(&HaltError{Reason: fmt.Sprintf("workers died %d times in a row before becoming ready (last: %s); not retrying", m.bootFails, status), Code: 1})
			return
		}
	case m.reloading && !m.configReady && p.config == m.configGen && (bootError || m.bootFails >= maxBootFailures):
		m.rollBackReload(fmt.Sprintf("the new configuration's workers fail to boot (last: %s)", status))
		return
	default:
		if m.bootFails == maxBootFailures {
			m.log.Error("workers keep failing to boot; the running ones go on serving, and starting is retried",
				zap.Int("failures", m.bootFails))
		}
	}
	m.backoff = time.Now().Add(backoffDelay(m.bootFails))
}

// maxBootFailures is how many workers in a row may die before ever serving
// before the master gives up on starting (or on a reload) instead of looping.
const maxBootFailures = 5

func backoffDelay(failures int) time.Duration {
	d := 100 * time.Millisecond << min(failures-1, 6)
	return min(d, 5*time.Second)
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

// slotEmptyBut says whether p is the only process of its slot.
func (m *master) slotEmptyBut(p *proc) bool {
	for _, q := range m.procs {
		if q.slot == p.slot && q != p {
			return false
		}
	}
	return true
}

func (m *master) slotEmpty(slot int) bool {
	for _, p := range m.procs {
		if p.slot == slot {
			return false
		}
	}
	return true
}
