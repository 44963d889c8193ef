// Package control is the master's control socket, as Gunicorn's gunicorn.ctl:
// a unix socket (mode 0600) on which `mcpgateway status`, `reload`,
// `scale N` and `stop` ask the master to act, instead of sending it signals.
//
// The wire protocol is one exchange per connection:
//
//	client → master   one request line: "status", "reload", "scale 3" or "stop", then "\n"
//	master → client   one JSON line: {"ok":true,"error":"","status":"..."} then "\n"
//
// Text requests keep the socket usable by hand (nc -U, socat); the JSON
// answer keeps the status text, with its newlines, in one line. The master
// imports this package for Listen and Serve, and the commands for Call.
package control

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// Commands, the first word of a request line.
const (
	CmdStatus = "status" // the status text: master and one line per worker
	CmdReload = "reload" // HUP: re-read the configuration, roll every worker
	CmdScale  = "scale"  // "scale N": run N workers (TTIN/TTOU, at once)
	CmdStop   = "stop"   // TERM: graceful stop
)

// MaxScale is the most workers "scale N" may ask for: the Workers limit of
// the configuration.
const MaxScale = 256

// Request is one command.
type Request struct {
	Cmd string
	N   int // workers, for CmdScale only
}

// Reply is the master's answer.
type Reply struct {
	OK     bool   `json:"ok"`
	Error  string `json:"error"`  // why the command was refused or failed, when !OK
	Status string `json:"status"` // the status text, or what the command did
}

// Check reports whether the request is one the master understands.
func (r Request) Check() error {
	switch r.Cmd {
	case CmdStatus, CmdReload, CmdStop:
		if r.N != 0 {
			return fmt.Errorf("%s takes no number", r.Cmd)
		}
	case CmdScale:
		if r.N < 1 || r.N > MaxScale {
			return fmt.Errorf("scale needs a number of workers from 1 to %d, not %d", MaxScale, r.N)
		}
	default:
		return fmt.Errorf("unknown command %q: want %s, %s, %s N or %s", r.Cmd, CmdStatus, CmdReload, CmdScale, CmdStop)
	}
	return nil
}

// EncodeRequest renders a request line, newline included.
func EncodeRequest(r Request) ([]byte, error) {
	if err := r.Check(); err != nil {
		return nil, err
	}
	if r.Cmd == CmdScale {
		return []byte(r.Cmd + " " + strconv.Itoa(r.N) + "\n"), nil
	}
	return []byte(r.Cmd + "\n"), nil
}

// DecodeRequest reads a request line (with or without its newline). Case
// and surrounding blanks are forgiven: people type these.
func DecodeRequest(line []byte) (Request, error) {
	words := strings.Fields(strings.ToLower(string(line)))
	if len(words) == 0 {
		return Request{}, errors.New("empty request")
	}
	r := Request{Cmd: words[0]}
	switch {
	case len(words) > 2:
		return Request{}, fmt.Errorf("%s: too many arguments", r.Cmd)
	case len(words) == 2:
		n, err := strconv.Atoi(words[1])
		if err != nil {
			return Request{}, fmt.Errorf("%s: %q is not a whole number", r.Cmd, words[1])
		}
		r.N = n
	case r.Cmd == CmdScale:
		return Request{}, errors.New("scale needs a number of workers: scale N")
	}
	if err := r.Check(); err != nil {
		return Request{}, err
	}
	return r, nil
}

// EncodeReply renders a reply line, newline included.
func EncodeReply(r Reply) ([]byte, error) {
	b, err := json.Marshal(r)
	if err != nil {
		return nil, fmt.Errorf("encode control reply: %w", err)
	}
	return append(b, '\n'), nil
}

// DecodeReply reads a reply line.
func DecodeReply(line []byte) (Reply, error) {
	var r Reply
	if err := json.Unmarshal(line, &r); err != nil {
		return Reply{}, fmt.Errorf("decode control reply: %w", err)
	}
	return r, nil
}
