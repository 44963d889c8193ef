package supervisor

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"syscall"
	"time"

	"github.com/mcpgateway/mcpgateway/supervisor/protocol"
	"go.uber.org/zap"
)

// reload (HUP) asks the embedding program for a fresh configuration,
// validates it, and rolls every worker make-before-break. A configuration
// that fails is logged and refused: the running workers keep serving.
func (m *master) reload() {
	if m.stopping || m.halt != nil {
		return
	}
	if m.o.Reload == nil {
		m.log.Warn("HUP ignored: nothing to reload")
		return
	}
	m.notify.reloading()
	n, err := m.o.Reload()
	if err == nil {
		err = n.check()
	}
	if err == nil && n.Prepare != nil {
		err = n.Prepare(context.Background())
	}
	keep, wantBinds := m.o, n.Binds
	// What belongs to the master's life stays: its sockets, pidfile, binary.
	n.Binds, n.Backlog, n.ReusePort, n.Pidfile = keep.Binds, keep.Backlog, keep.ReusePort, keep.Pidfile
	n.Executable, n.Args, n.Logger, n.Ready, n.Reload, n.ReopenLogs = keep.Executable, keep.Args, keep.Logger, keep.Ready, keep.Reload, keep.ReopenLogs
	n.Worker.Binds = keep.Worker.Binds
	var cfg = m.config
	if err == nil {
		cfg, err = configFile(n)
	}
	if err != nil {
		m.log.Error("reload refused: the running configuration stays", zap.Error(err))
		m.notify.send("READY=1\nSTATUS=reload refused: " + err.Error())
		return
	}
	if !slices.Equal(wantBinds, keep.Binds) {
		m.log.Warn("reload: bind addresses change only with a restart or an upgrade (USR2)",
			zap.Strings("configured", wantBinds), zap.Strings("serving", keep.Binds))
	}
	m.config.Close()
	m.config = cfg
	m.o = n
	m.target = n.Workers
	m.table.Header().Store(protocol.HWorkersTarget, uint64(n.Workers))
	m.dead = map[int]bool{}
	for _, p := range m.procs {
		if p.retire == "" {
			p.retire = protocol.ReasonReload
		}
	}
	m.reloading = true
	m.log.Info("reloading: rolling every worker", zap.Int("workers", n.Workers))
	m.reloaded()
}

// reloaded finishes a reload once every slot has a ready worker of the new
// configuration.
func (m *master) reloaded() {
	if m.reloading && m.allReady() {
		m.reloading = false
		m.log.Info("reload complete", zap.Int("workers", m.target))
		m.notify.send("READY=1\nSTATUS=" + m.status())
	}
}

// status is systemd's STATUS= line.
func (m *master) status() string {
	ready := 0
	for _, p := range m.procs {
		if p.ready && p.retire == "" {
			ready++
		}
	}
	s := m.table.Snapshot()
	return fmt.Sprintf("%d/%d workers ready, %d requests served, %d refused", ready, m.target, s.Total.Served, s.Total.Refused)
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
		if sample && m.o.MaxWorkerRSS > 0 && p.ready {
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
		if !p.ready || p.retire != "" {
			continue
		}
		switch {
		case p.lifetime > 0 && time.Since(p.started) > p.lifetime:
			m.retire(p, protocol.ReasonLifetime, zap.Duration("lifetime", time.Since(p.started)))
			return
		case p.rssStrikes >= rssStrikes:
			m.retire(p, protocol.ReasonRSS, zap.Uint64("rss", m.table.Row(p.row).Load(protocol.FRSS)),
				zap.Int64("max_rss", m.o.MaxWorkerRSS))
			return
		}
	}
}

func (m *master) retire(p *proc, reason string, fields ...zap.Field) {
	p.retire = reason
	m.log.Info("replacing worker", m.fields(p, append(fields, zap.String("reason", reason))...)...)
}

// lifetimeFor gives each worker its own lifetime, up to 10% longer, so
// workers started together are not all replaced together.
func lifetimeFor(max time.Duration) time.Duration {
	if max <= 0 {
		return 0
	}
	return max + time.Duration(rand.Int64N(int64(max)/10+1))
}
