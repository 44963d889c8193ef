package protocol

import (
	"errors"
	"fmt"
	"strings"
)

// Message kinds: the first word of a line a worker writes to the master
// (FDMaster).
const (
	KindReady  = "ready"  // serving: the master may stop the worker this one replaces
	KindRetire = "retire" // replace me, then stop me gracefully; a reason follows
)

// retireReasons are the reasons a worker may give for asking to be
// replaced. The others (crashed, reload, scale, shutdown, boot, upgrade) are
// the master's own decisions, and a worker claiming one is refused.
var retireReasons = map[string]bool{
	ReasonRecycled: true, // max_requests reached
	ReasonLifetime: true,
	ReasonRSS:      true,
	ReasonTimeout:  true, // a request overran the timeout
	ReasonListener: true, // a listener failed while serving
}

// Message is one line from a worker to the master.
type Message struct {
	Kind   string // KindReady or KindRetire
	Reason string // KindRetire only: one of the Reason constants a worker may give
}

// EncodeReady is the line a worker writes once it serves.
func EncodeReady() []byte { return []byte(KindReady + "\n") }

// EncodeRetire is the line a worker writes to ask for its replacement.
// reason must be one a worker may give (recycled, lifetime, rss, timeout,
// listener):
// the master refuses any other, so a wrong one shows in its log, not here.
func EncodeRetire(reason string) []byte { return []byte(KindRetire + " " + reason + "\n") }

// maxMessage bounds a line: the longest valid one is a few words, and a
// longer one is quoted, cut, in the error, so a flood cannot bloat the log.
const maxMessage = 64

// ParseMessage reads one line, with or without its newline. It accepts
// exactly what EncodeReady and EncodeRetire write: anything else, an
// unknown kind or reason included, is an error, since the pipe is also
// reachable by whatever a worker runs.
func ParseMessage(line string) (Message, error) {
	line = strings.TrimSuffix(line, "\n")
	kind, reason, hasReason := strings.Cut(line, " ")
	switch kind {
	case KindReady:
		if hasReason {
			return Message{}, fmt.Errorf("worker message %s: %q takes no argument", quoteCut(line), KindReady)
		}
		return Message{Kind: KindReady}, nil
	case KindRetire:
		if !hasReason || reason == "" {
			return Message{}, fmt.Errorf("worker message %s: %q needs a reason", quoteCut(line), KindRetire)
		}
		if !retireReasons[reason] {
			return Message{}, fmt.Errorf("worker message %s: unknown retire reason %s", quoteCut(line), quoteCut(reason))
		}
		return Message{Kind: KindRetire, Reason: reason}, nil
	}
	if line == "" {
		return Message{}, errors.New("worker message: empty line")
	}
	return Message{}, fmt.Errorf("worker message %s: unknown kind", quoteCut(line))
}

func quoteCut(s string) string {
	if len(s) > maxMessage {
		return fmt.Sprintf("%q...", s[:maxMessage])
	}
	return fmt.Sprintf("%q", s)
}
