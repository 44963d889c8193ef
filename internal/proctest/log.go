package proctest

import (
	"bytes"
	"encoding/json"
	"sync"
)

// Event is one JSON log line.
type Event map[string]any

// LogBuffer is an io.Writer that keeps everything written to it, safe for
// any number of writers (a process's stdout and stderr, its workers'). Its
// zero value is ready to use.
type LogBuffer struct {
	mu     sync.Mutex
	buf    []byte
	parsed int     // buf[:parsed] is split into lines, its JSON ones in events
	events []Event // the JSON object lines, in order
	races  bool
	raceAt int // where the line of the first race report begins, when races
}

var (
	dataRace = []byte("DATA RACE")
	raceRule = []byte("==================\n") // the line before and after a race report
)

func (b *LogBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	from := max(0, len(b.buf)-len(dataRace)+1) // a report split across writes counts too
	b.buf = append(b.buf, p...)
	if !b.races {
		if i := bytes.Index(b.buf[from:], dataRace); i >= 0 {
			b.races = true
			// From the report's first line: "=====...", then "WARNING: DATA RACE".
			b.raceAt = bytes.LastIndexByte(b.buf[:from+i], '\n') + 1
			if bytes.HasSuffix(b.buf[:b.raceAt], raceRule) {
				b.raceAt -= len(raceRule)
			}
		}
	}
	return len(p), nil
}

// String is everything written so far.
func (b *LogBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return string(b.buf)
}

// Contains reports whether s was written (within one line or across).
func (b *LogBuffer) Contains(s string) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return bytes.Contains(b.buf, []byte(s))
}

// Events returns the JSON log lines whose "msg" is msg (every complete JSON
// line when msg is empty), in the order they were written.
func (b *LogBuffer) Events(msg string) []Event {
	b.mu.Lock()
	defer b.mu.Unlock()
	for {
		i := bytes.IndexByte(b.buf[b.parsed:], '\n')
		if i < 0 {
			break
		}
		line := b.buf[b.parsed : b.parsed+i]
		b.parsed += i + 1
		var e Event
		if json.Unmarshal(line, &e) == nil && e != nil {
			b.events = append(b.events, e)
		}
	}
	var out []Event
	for _, e := range b.events {
		if msg == "" || e["msg"] == msg {
			out = append(out, e)
		}
	}
	return out
}

// Races reports whether the race detector reported a data race in what was
// written.
func (b *LogBuffer) Races() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.races
}

// RaceReportMax is how much of the output RaceReport returns at most.
const RaceReportMax = 64 << 10

// RaceReport is the output from the first race detector report on (at most
// RaceReportMax bytes), or "" when no race was reported.
func (b *LogBuffer) RaceReport() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.races {
		return ""
	}
	return string(b.buf[b.raceAt:min(len(b.buf), b.raceAt+RaceReportMax)])
}
