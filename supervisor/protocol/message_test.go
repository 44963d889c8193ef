package protocol

import (
	"strings"
	"testing"
)

func TestMessagesRoundTrip(t *testing.T) {
	if m, err := ParseMessage(string(EncodeReady())); err != nil || m != (Message{Kind: KindReady}) {
		t.Errorf("ready: %+v, %v", m, err)
	}
	for _, reason := range []string{ReasonRecycled, ReasonLifetime, ReasonRSS, ReasonTimeout, ReasonListener} {
		line := string(EncodeRetire(reason))
		if !strings.HasSuffix(line, "\n") || strings.Count(line, "\n") != 1 {
			t.Errorf("retire %s: line %q is not one line", reason, line)
		}
		m, err := ParseMessage(strings.TrimSuffix(line, "\n")) // as bufio.Scanner hands it over
		if err != nil || m != (Message{Kind: KindRetire, Reason: reason}) {
			t.Errorf("retire %s: %+v, %v", reason, m, err)
		}
	}
}

func TestParseMessageRefusesWhatNoWorkerSends(t *testing.T) {
	for _, line := range []string{
		"", "\n", "hello", "ready ", "ready now", "READY", " ready",
		"retire", "retire ", "retire bogus", "retire shutdown", "retire crashed",
		"retire recycled extra", "retire  recycled", "retire recycled\r",
		strings.Repeat("x", 10000),
	} {
		if m, err := ParseMessage(line); err == nil {
			t.Errorf("%q parsed as %+v", line, m)
		} else if len(err.Error()) > 200 {
			t.Errorf("%q: error of %d bytes", line[:10], len(err.Error()))
		}
	}
}
