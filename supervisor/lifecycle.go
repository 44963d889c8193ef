package supervisor

import (
	"os/exec"
	"syscall"
	"time"

	"github.com/mcpgateway/mcpgateway/supervisor/protocol"
	"go.uber.org/zap"
	"golang.org/x/sys/unix"
)

// phase is where a worker is in its life, as the master sees it.
//
//	booting → ready → replacing → stopping → killing → exited
//
// A worker may skip phases (one that crashes while booting goes straight to
// exited), never go back. transition is the one place that moves a worker:
// it logs, signals, and sets the deadline that murder enforces.
type phase int

const (
	booting   phase = iota // started, not yet ready
	ready                  // serving, wanted
	replacing              // serving until its successor is ready (retire says why)
	stopping               // told to stop: TERM drains within graceful_timeout, INT exits at once
	killing                // sent SIGQUIT (stack dump) or SIGKILL; gone by the deadline
	exited
)

var phaseNames = [...]string{"booting", "ready", "replacing", "stopping", "killing", "exited"}

func (p phase) String() string { return phaseNames[p] }

// proc is one worker process as the master tracks it.
type proc struct {
	slot, gen, row, pid int
	config              int // the configuration generation it was started with
	cmd                 *exec.Cmd
	started             time.Time
	phase               phase
	retire              string    // why it is being replaced or stopped; "" while wanted
	deadline            time.Time // stopping, killing: when murder takes the next step
	everReady           bool
	sigkilled           bool
	lifetime            time.Duration // recycle after this long (0: never)
	rssStrikes          int           // consecutive RSS samples over the limit
}

// wantedFor says whether p is its slot's worker (not being replaced).
func (p *proc) wanted() bool { return p.retire == "" && p.phase <= ready }

// transition moves a worker to a later phase.
func (m *master) transition(p *proc, to phase, reason string, extra ...zap.Field) {
	if to <= p.phase || p.phase == exited {
		return
	}
	if p.retire == "" {
		p.retire = reason
	}
	from := p.phase
	p.phase = to
	now := time.Now()
	switch to {
	case ready:
		p.everReady = true
		m.log.Info("worker ready", m.fields(p, zap.Duration("boot", now.Sub(p.started)))...)
	case replacing:
		m.log.Info("replacing worker", m.fields(p, append(extra, zap.String("reason", reason),
			zap.Uint64("served", m.table.Row(p.row).Load(protocol.CServed)))...)...)
	case stopping:
		sig := syscall.SIGTERM
		p.deadline = now.Add(m.o.GracefulTimeout + killDelay) // this worker's own grace, whatever a reload sets later
		if m.fast {
			sig, p.deadline = syscall.SIGINT, now.Add(killDelay)
		}
		if m.stopping && m.stopAt.Before(p.deadline) {
			p.deadline = m.stopAt
		}
		m.log.Debug("stopping worker", m.fields(p, zap.String("signal", unix.SignalName(sig)), zap.String("reason", p.retire))...)
		_ = p.cmd.Process.Signal(sig)
		if !m.stopping && !m.active(p.slot) && m.slotEmptyBut(p) {
			// Scaled away (reuse-port layout): the slot's socket leaves the
			// kernel's group when the worker closes its copy, at the start
			// of its drain, instead of drawing connections nobody will
			// accept for the whole drain. What is queued at that instant is
			// reset: the layout's price for scaling down.
			m.sockets.closeSlot(p.slot)
		}
	case killing:
		// SIGQUIT first: the Go runtime prints every goroutine's stack,
		// which is what an operator needs to find out why it hung.
		p.deadline = now.Add(killDelay)
		m.log.Error("worker timeout: killing", m.fields(p, zap.String("reason", reason), zap.String("was", from.String()))...)
		_ = p.cmd.Process.Signal(syscall.SIGQUIT)
	}
}

// murder enforces every deadline: workers whose heartbeat is older than the
// timeout, draining workers past their grace, and SIGQUIT followed by
// SIGKILL.
func (m *master) murder() {
	now, mono := time.Now(), protocol.Nanotime()
	for _, p := range m.procs {
		switch p.phase {
		case booting, ready, replacing:
			if m.o.Timeout <= 0 {
				continue // timeout 0: no timeout, as in Gunicorn
			}
			hb := int64(m.table.Row(p.row).Load(protocol.FHeartbeat))
			if age := protocol.HeartbeatAge(mono, hb); age > m.o.Timeout {
				m.log.Error("worker timeout: no heartbeat", m.fields(p, zap.Duration("silent_for", age))...)
				p.retire = protocol.ReasonTimeout
				m.transition(p, killing, protocol.ReasonTimeout)
			}
		case stopping:
			if now.After(p.deadline) {
				m.log.Warn("worker overstayed its stop, killing", m.fields(p)...)
				m.sigkill(p)
			}
		case killing:
			if now.After(p.deadline) {
				m.sigkill(p)
			}
		}
	}
}

func (m *master) sigkill(p *proc) {
	if !p.sigkilled {
		p.sigkilled = true
		p.phase = killing
		_ = p.cmd.Process.Kill()
	}
}
