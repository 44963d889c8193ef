package supervisor

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"syscall"
	"time"

	"github.com/mcpgateway/mcpgateway/supervisor/protocol"
	"go.uber.org/zap"
)

// reload (HUP) asks the embedding program for a fresh configuration and
// prepares it (migrations) beside the loop, which goes on reaping, killing
// hung workers, answering signals and pinging systemd meanwhile. Then every
// worker rolls make-before-break (applyReload). A configuration that fails
// is logged and refused: the running workers keep serving.
func (m *master) reload() {
	if m.stopping || m.halt != nil {
		return
	}
	if m.o.Reload == nil {
		m.log.Warn("HUP ignored: nothing to reload")
		return
	}
	if m.preparing {
		m.reloadAgain = true // the files may have changed again: read them once more after this one
		m.log.Info("reload already being prepared; another follows it")
		return
	}
	m.preparing = true
	m.notify.reloading()
	reload, ctx := m.o.Reload, m.ctx
	go func() {
		w := prepared{reload: true}
		w.o, w.err = reload(ctx)
		if w.err == nil {
			w.err = w.o.check()
		}
		if w.err == nil {
			w.config, w.err = configFile(w.o)
		}
		m.work <- w
	}()
}

// applyReload switches to a prepared configuration and marks every worker
// for replacement.
func (m *master) applyReload(w prepared) {
	if m.stopping || m.halt != nil {
		if w.config != nil {
			w.config.Close()
		}
		m.answerReload(errors.New("the server is stopping"))
		return
	}
	m.answerReload(w.err)
	if w.err != nil {
		m.log.Error("reload refused: the running configuration stays", zap.Error(w.err))
		m.notify.send("READY=1\nSTATUS=reload refused: " + w.err.Error())
		return
	}
	n, keep := w.o, m.o
	// What belongs to the master's life stays: its sockets, pidfile, binary.
	if !slices.Equal(n.Binds, keep.Binds) {
		m.log.Warn("reload: bind addresses change only with a restart or an upgrade (USR2)",
			zap.Strings("configured", n.Binds), zap.Strings("serving", keep.Binds))
	}
	n.Binds, n.Backlog, n.ReusePort, n.Pidfile = keep.Binds, keep.Backlog, keep.ReusePort, keep.Pidfile
	n.Executable, n.Args, n.Logger, n.Ready, n.Reload, n.ReopenLogs = keep.Executable, keep.Args, keep.Logger, keep.Ready, keep.Reload, keep.ReopenLogs
	n.Prepare, n.ControlSocket, n.HealthBind = keep.Prepare, keep.ControlSocket, keep.HealthBind
	n.Worker.Binds, n.Worker.ReusePort = keep.Worker.Binds, keep.Worker.ReusePort

	if m.prevConfig != nil { // a reload on top of one still rolling: the first is forgotten
		m.prevConfig.Close()
	}
	prev := m.o
	m.previous, m.prevConfig = &prev, m.config
	m.config, m.o = w.config, n
	m.configGen++
	m.configReady = false
	m.bootFails = 0
	m.setTarget(n.Workers)
	m.dead = map[int]bool{}
	m.rollQueue = m.rollQueue[:0]
	for _, slot := range m.slots {
		if p := m.wanted(slot); p != nil {
			m.rollQueue = append(m.rollQueue, p)
		}
	}
	m.reloading = true
	m.log.Info("reloading: rolling every worker", zap.Int("workers", n.Workers), zap.Int("at_once", m.surge()))
	m.rollOn()
	m.reloaded()
}

// surge is how many slots a reload replaces at once.
func (m *master) surge() int {
	if m.o.ReloadSurge <= 0 {
		return len(m.slots)
	}
	return m.o.ReloadSurge
}

// rollOn marks the next old workers of a reload for replacement, while
// fewer than surge of them are still alive.
func (m *master) rollOn() {
	if !m.reloading || len(m.rollQueue) == 0 {
		return
	}
	alive := 0
	for _, p := range m.procs {
		if p.retire == protocol.ReasonReload && p.config != m.configGen {
			alive++
		}
	}
	for alive < m.surge() && len(m.rollQueue) > 0 {
		p := m.rollQueue[0]
		m.rollQueue = m.rollQueue[1:]
		if p.phase != exited && p.wanted() {
			m.markReplaced(p, protocol.ReasonReload)
			alive++
		}
	}
}

// rollBackReload gives up a reload whose workers cannot boot: the previous
// configuration comes back, and the workers it started, still serving, are
// wanted again.
func (m *master) rollBackReload(why string) {
	m.log.Error("reload rolled back: the previous configuration stays", zap.String("why", why))
	m.notify.send("READY=1\nSTATUS=reload rolled back: " + why)
	gen := m.configGen
	m.config.Close()
	m.o, m.config = *m.previous, m.prevConfig
	m.previous, m.prevConfig = nil, nil
	m.configGen++ // workers of the failed configuration are never current again
	m.configReady = true
	m.reloading = false
	m.rollQueue = nil
	m.bootFails = 0
	m.setTarget(m.o.Workers)
	for _, p := range m.procs {
		switch {
		case p.config == gen:
			m.transition(p, stopping, protocol.ReasonReload)
		case p.retire == protocol.ReasonReload && p.phase <= replacing:
			p.retire = ""
			if p.phase == replacing {
				p.phase = ready
			}
			p.config = m.configGen
		}
	}
}

// setTarget grows or shrinks the set of worker slots to n. A new slot takes
// the lowest free number; scaling down removes the slot of the oldest
// worker, as Gunicorn's TTOU stops its oldest worker (a slot with no worker
// goes first). Workers of removed slots are stopped without a successor.
func (m *master) setTarget(n int) {
	for len(m.slots) < n {
		free := 0
		for m.active(free) {
			free++
		}
		m.slots = append(m.slots, free)
		slices.Sort(m.slots)
	}
	for len(m.slots) > n {
		victim, oldest := m.slots[len(m.slots)-1], time.Time{}
		for _, slot := range m.slots {
			p := m.wanted(slot)
			if p == nil {
				victim = slot
				break
			}
			if oldest.IsZero() || p.started.Before(oldest) {
				victim, oldest = slot, p.started
			}
		}
		m.slots = slices.DeleteFunc(m.slots, func(s int) bool { return s == victim })
		if p := m.wanted(victim); p != nil {
			m.markReplaced(p, protocol.ReasonScale)
		}
	}
	m.target = n
	m.table.Header().Store(protocol.HWorkersTarget, uint64(n))
}

// allCurrent says whether every wanted worker runs the current configuration.
func (m *master) allCurrent() bool {
	for _, p := range m.procs {
		if p.wanted() && p.config != m.configGen {
			return false
		}
	}
	return true
}

// active says whether a slot is one the server wants a worker in.
func (m *master) active(slot int) bool { return slices.Contains(m.slots, slot) }

// reloaded finishes a reload once every slot has a ready worker of the new
// configuration.
func (m *master) reloaded() {
	if m.reloading && len(m.rollQueue) == 0 && m.allReady() && m.allCurrent() {
		m.reloading = false
		if m.prevConfig != nil {
			m.prevConfig.Close()
		}
		m.previous, m.prevConfig = nil, nil
		m.log.Info("reload complete", zap.Int("workers", m.target))
		m.notify.send("READY=1\nSTATUS=" + m.status())
	}
}

// status is systemd's STATUS= line.
func (m *master) status() string {
	serving := 0
	for _, p := range m.procs {
		if p.phase == ready {
			serving++
		}
	}
	s := m.table.Snapshot()
	return fmt.Sprintf("%d/%d workers ready, %d requests served, %d refused", serving, m.target, s.Total.Served, s.Total.Refused)
}

// reopenLogs (USR1) reopens the master's log files and tells every worker
// to do the same, for logrotate.
func (m *master) reopenLogs() {
	if m.o.ReopenLogs != nil {
		m.o.ReopenLogs()
	}
	for _, p := range m.procs {
		_ = p.cmd.Process.Signal(syscall.SIGUSR1)
	}
}

// rssStrikes is how many one-second samples in a row must exceed the RSS
// limit: a spike is not a leak.
const rssStrikes = 3

// recyclePolicies retires workers past their lifetime or memory limit, one
// at a time, make-before-break.
func (m *master) recyclePolicies() {
	if m.stopping || m.halt != nil || m.winched || (m.o.MaxWorkerLifetime <= 0 && m.o.MaxWorkerRSS <= 0) {
		return
	}
	m.ticks++
	sample := m.ticks%10 == 0 // the master ticks every 100 ms
	busy := false
	for _, p := range m.procs {
		if p.retire == protocol.ReasonLifetime || p.retire == protocol.ReasonRSS {
			busy = true
		}
		if sample && m.o.MaxWorkerRSS > 0 && p.phase == ready {
			if rss := m.table.Row(p.row).Load(protocol.FRSS); rss > uint64(m.o.MaxWorkerRSS) {
				p.rssStrikes++
			} else {
				p.rssStrikes = 0
			}
		}
	}
	if busy {
		return // one recycling at a time
	}
	for _, p := range m.procs {
		if p.phase != ready {
			continue
		}
		switch {
		case p.lifetime > 0 && time.Since(p.started) > p.lifetime:
			m.markReplaced(p, protocol.ReasonLifetime, zap.Duration("lifetime", time.Since(p.started)))
			return
		case p.rssStrikes >= rssStrikes:
			m.markReplaced(p, protocol.ReasonRSS, zap.Uint64("rss", m.table.Row(p.row).Load(protocol.FRSS)),
				zap.Int64("max_rss", m.o.MaxWorkerRSS))
			return
		}
	}
}

// lifetimeFor gives each worker its own lifetime, up to 10% longer, so
// workers started together are not all replaced together.
func lifetimeFor(max time.Duration) time.Duration {
	if max <= 0 {
		return 0
	}
	return max + time.Duration(rand.Int64N(int64(max)/10+1))
}
