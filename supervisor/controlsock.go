package supervisor

import (
	"bytes"
	"os"
	"strconv"

	"github.com/mcpgateway/mcpgateway/supervisor/control"
	"github.com/mcpgateway/mcpgateway/supervisor/protocol"
	"go.uber.org/zap"
)

// controlReq is a control-socket command for the loop to carry out.
type controlReq struct {
	req   control.Request
	reply chan control.Reply
}

// openControl opens the control socket, or takes the one an old master
// passed (USR2). A socket that cannot be opened is logged and the server
// runs without one: the signals still work, and so does status --pid.
func (m *master) openControl() {
	path := m.o.ControlSocket
	if path == "" {
		return
	}
	var err error
	if os.Getenv(protocol.EnvUpgradeControl) == "1" {
		f := os.NewFile(uintptr(protocol.FDPassedStart+m.sockets.passed), "control")
		m.control, err = control.Adopt(f, path)
		f.Close()
	} else {
		m.control, err = control.Listen(path)
	}
	os.Unsetenv(protocol.EnvUpgradeControl)
	if err != nil {
		m.log.Warn("no control socket: status, reload, scale and stop commands will not reach this server", zap.Error(err))
		m.control = nil
		return
	}
	ln := m.control
	go func() {
		if err := control.Serve(ln, m.answerControl); err != nil {
			m.log.Warn("control socket failed", zap.Error(err))
		}
	}()
}

// answerControl runs on the control socket's goroutines and hands every
// command to the loop, the one owner of the master's state (the table
// included: it is unmapped when the loop ends).
func (m *master) answerControl(req control.Request) control.Reply {
	c := controlReq{req: req, reply: make(chan control.Reply, 1)}
	select {
	case m.controls <- c:
		return <-c.reply
	case <-m.loopDone:
		return control.Reply{Error: "the server has stopped"}
	}
}

// handleControl carries out a command in the loop.
func (m *master) handleControl(c controlReq) {
	if c.req.Cmd == control.CmdStatus {
		var b bytes.Buffer
		control.FormatStatus(&b, m.table.Snapshot(), protocol.Nanotime())
		c.reply <- control.Reply{OK: true, Status: b.String()}
		return
	}
	m.log.Info("control", zap.String("command", c.req.Cmd), zap.Int("n", c.req.N))
	switch {
	case m.stopping || m.halt != nil:
		c.reply <- control.Reply{Error: "the server is stopping"}
	case c.req.Cmd == control.CmdStop:
		m.stop(false, "control: stop")
		c.reply <- control.Reply{OK: true, Status: "stopping"}
	case c.req.Cmd == control.CmdScale:
		m.scale(c.req.N)
		c.reply <- control.Reply{OK: true, Status: m.status()}
	case c.req.Cmd == control.CmdReload:
		if m.o.Reload == nil {
			c.reply <- control.Reply{Error: "nothing to reload"}
			return
		}
		m.reloadWaiters = append(m.reloadWaiters, c.reply) // answered when the new configuration is taken or refused
		m.reload()
	default:
		c.reply <- control.Reply{Error: "unknown command " + strconv.Quote(c.req.Cmd)}
	}
}

// answerReload tells every client that asked for a reload what became of it.
func (m *master) answerReload(err error) {
	r := control.Reply{OK: err == nil, Status: "reloading: rolling every worker"}
	if err != nil {
		r.Error = err.Error()
	}
	for _, w := range m.reloadWaiters {
		w <- r
	}
	m.reloadWaiters = nil
}

// closeControl closes the control socket at exit. Its file stays while a
// new master serves on it, or while the old master that passed it runs (a
// rolled-back upgrade: the old master takes the path again).
func (m *master) closeControl() {
	if m.control == nil {
		return
	}
	if m.child != nil || (m.oldMaster != 0 && os.Getppid() == m.oldMaster) {
		m.control.KeepFile()
	}
	m.control.Close()
	m.control = nil
}
