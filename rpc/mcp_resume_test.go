package rpc

import (
	"bufio"
	"context"
	"fmt"
	"maps"
	"net/http"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mcpgateway/mcpgateway/store"
)

// eventsFake adds a shared event log and cancellations to a gatewaysFake:
// Servers over one of them stand for workers over one store.
type eventsFake struct {
	gatewaysFake
	mu        sync.Mutex
	streams   map[string]map[int]store.StreamEvent
	cancelled map[string]bool
}

func newEventsFake(up *streamUpstream) *eventsFake {
	return &eventsFake{gatewaysFake: streamBackend(up), streams: map[string]map[int]store.StreamEvent{}, cancelled: map[string]bool{}}
}

func (f *eventsFake) AppendStreamEvent(ctx context.Context, stream string, ev store.StreamEvent, until time.Time) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.streams[stream] == nil {
		f.streams[stream] = map[int]store.StreamEvent{}
	}
	if _, dup := f.streams[stream][ev.Seq]; !dup {
		f.streams[stream][ev.Seq] = ev
	}
	return nil
}

func (f *eventsFake) StreamEvents(ctx context.Context, stream string, after, limit int) ([]store.StreamEvent, bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	m, found := f.streams[stream]
	var evs []store.StreamEvent
	for seq, ev := range m {
		if seq > after {
			evs = append(evs, ev)
		}
	}
	sort.Slice(evs, func(i, j int) bool { return evs[i].Seq < evs[j].Seq })
	if len(evs) > limit {
		evs = evs[:limit]
	}
	return evs, found, nil
}

func (f *eventsFake) CancelCall(ctx context.Context, key string, until time.Time) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.cancelled[key] = true
	return nil
}

func (f *eventsFake) CallCancelled(ctx context.Context, key string) (bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.cancelled[key], nil
}

// twoWorkers serves two gateways over one eventsFake.
func twoWorkers(t *testing.T, up *streamUpstream) (s1, s2 *Server, url1, url2 string) {
	t.Helper()
	b := newEventsFake(up)
	o := testOptions()
	o.FederationTimeout = 10 * time.Second
	s1, url1 = serveGateway(t, o, b)
	s2, url2 = serveGateway(t, o, b)
	return
}

// session11 opens a 2025-11-25 session.
func session11(t *testing.T, s *Server) string {
	t.Helper()
	r := mcpCall(t, s, mint(t, nil), "", strings.Replace(mcpInit, "2025-06-18", "2025-11-25", 1))
	if r.status != 200 {
		t.Fatalf("initialize: %d %s", r.status, r.body)
	}
	return r.header("Mcp-Session-Id")
}

// getMCP sends GET /mcp with the session and Last-Event-ID (when not "").
func getMCP(t *testing.T, url, sid, last string, accept string) *http.Response {
	t.Helper()
	req, _ := http.NewRequest("GET", url, nil)
	req.Header.Set("Authorization", "Bearer "+mint(t, nil))
	req.Header.Set("Accept", accept)
	req.Header.Set("Mcp-Session-Id", sid)
	if last != "" {
		req.Header.Set("Last-Event-ID", last)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

// readUntil reads events until one whose data contains stop (or the end),
// and says whether the stream ended with a retry hint.
func readUntil(t *testing.T, br *bufio.Reader, stop string) (events []sseEvent, retry bool) {
	t.Helper()
	var ev sseEvent
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			return events, retry
		}
		line = strings.TrimRight(line, "\n")
		switch {
		case line == "":
			if ev != (sseEvent{}) {
				events = append(events, ev)
				if stop != "" && strings.Contains(ev.data, stop) {
					return events, retry
				}
			}
			ev = sseEvent{}
		case strings.HasPrefix(line, "retry: "):
			retry = ev.id == "" // a hint of its own, not the priming event's
		case strings.HasPrefix(line, "id: "):
			ev.id = strings.TrimPrefix(line, "id: ")
		case strings.HasPrefix(line, "data: "):
			ev.data = strings.TrimPrefix(line, "data: ")
		}
	}
}

// checkSequence checks that events carry ids stream-from, stream-from+1, ...
func checkSequence(t *testing.T, events []sseEvent, stream string, from int) {
	t.Helper()
	for i, ev := range events {
		if want := fmt.Sprintf("%s-%d", stream, from+i); ev.id != want {
			t.Fatalf("event %d has id %q, want %q: %+v", i, ev.id, want, events)
		}
	}
}

// A 2025-11-25 client whose stream breaks resumes it on another worker with
// Last-Event-ID, and gets every later event and the response; the call was
// not cancelled by the disconnection (T8).
func TestMCPStreamResumesOnAnotherWorker(t *testing.T) {
	up := newStreamUpstream(t)
	s1, s2, url1, url2 := twoWorkers(t, up)
	sid := session11(t, s1)

	resp := postMCP(t, url1, fmt.Sprintf(streamCallBody, "7", "up-slow", `"progressToken":"p"`), "Mcp-Session-Id", sid)
	br := bufio.NewReader(resp.Body)
	first, _ := readUntil(t, br, `"progress":1`)
	resp.Body.Close() // the client loses its stream after progress 1
	if len(first) != 2 || first[0].data != "" {
		t.Fatalf("priming event and progress 1 expected: %+v", first)
	}
	stream := strings.TrimSuffix(first[0].id, "-0")
	checkSequence(t, first, stream, 0)

	resp = getMCP(t, url2, sid, first[1].id, "text/event-stream")
	defer resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("GET with Last-Event-ID: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	rest, _ := readUntil(t, bufio.NewReader(resp.Body), `"id":7`)
	checkSequence(t, rest, stream, 2)
	if len(rest) != 5 || !strings.Contains(rest[4].data, `"id":7,"result"`) || !strings.Contains(rest[3].data, `"progress":5`) {
		t.Fatalf("resumed: %+v", rest)
	}
	if up.cancelled.Load() != 0 {
		t.Error("a disconnection cancelled a resumable call")
	}
	s1.Close()
	if s2.OpenStreams() != 0 && waitFor(func() bool { return s2.OpenStreams() == 0 }) != nil {
		t.Errorf("%d streams still open", s2.OpenStreams())
	}

	// Resuming from an earlier id replays from there; an unknown stream,
	// another session's, or a malformed id get 400.
	again := getMCP(t, url1, sid, stream+"-0", "text/event-stream")
	all, _ := readUntil(t, bufio.NewReader(again.Body), `"id":7`)
	again.Body.Close()
	checkSequence(t, all, stream, 1)
	if len(all) != 6 {
		t.Errorf("replay from 0: %d events", len(all))
	}
	// Resuming after the last event (the response): nothing follows, 204.
	if r := getMCP(t, url2, sid, rest[4].id, "text/event-stream"); r.StatusCode != 204 {
		t.Errorf("Last-Event-ID of the stream's last event: %d, want 204", r.StatusCode)
	}
	other := session11(t, s2)
	for _, last := range []string{"0123456789abcdef-1", stream + "-x", "nonsense"} {
		if r := getMCP(t, url2, sid, last, "text/event-stream"); r.StatusCode != 400 {
			t.Errorf("Last-Event-ID %q: %d", last, r.StatusCode)
		}
	}
	if r := getMCP(t, url2, other, first[1].id, "text/event-stream"); r.StatusCode != 400 {
		t.Errorf("another session's stream: %d", r.StatusCode)
	}
}

// waitFor polls cond for up to 3 s.
func waitFor(cond func() bool) error {
	deadline := time.Now().Add(3 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			return fmt.Errorf("timed out")
		}
		time.Sleep(10 * time.Millisecond)
	}
	return nil
}

// A stopping worker hands its resumable streams off at once (a retry hint,
// then the end of the stream), finishes their calls, and the clients resume
// elsewhere; a call that outlives the drain is answered with an error.
func TestMCPDrainHandsStreamsOff(t *testing.T) {
	up := newStreamUpstream(t)
	s1, _, url1, url2 := twoWorkers(t, up)
	sid := session11(t, s1)

	resp := postMCP(t, url1, fmt.Sprintf(streamCallBody, "8", "up-slow", `"progressToken":"p"`), "Mcp-Session-Id", sid)
	defer resp.Body.Close()
	br := bufio.NewReader(resp.Body)
	first, _ := readUntil(t, br, `"progress":1`)
	hang := postMCP(t, url1, fmt.Sprintf(streamCallBody, "9", "up-hang", `"progressToken":"h"`), "Mcp-Session-Id", sid)
	defer hang.Body.Close()
	hbr := bufio.NewReader(hang.Body)
	hfirst, _ := readUntil(t, hbr, `"progress":1`)

	s1.Drain(time.Now().Add(2 * time.Second))
	for name, r := range map[string]*bufio.Reader{"slow": br, "hang": hbr} {
		evs, retry := readUntil(t, r, "")
		if !retry {
			t.Errorf("%s: the handed-off stream ended without a retry hint", name)
		}
		for _, ev := range evs {
			if strings.Contains(ev.data, `"result"`) || strings.Contains(ev.data, `"error"`) {
				t.Errorf("%s: a response on the handed-off stream: %+v", name, ev)
			}
		}
	}
	done := make(chan struct{})
	go func() { s1.Close(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not return after the drain's deadline")
	}
	for _, c := range []struct {
		first []sseEvent
		want  string
	}{{first, `"id":8,"result"`}, {hfirst, `"id":9,"error":{"code":-32603`}} {
		r := getMCP(t, url2, sid, c.first[len(c.first)-1].id, "text/event-stream")
		rest, _ := readUntil(t, bufio.NewReader(r.Body), "")
		r.Body.Close()
		if len(rest) == 0 || !strings.Contains(rest[len(rest)-1].data, c.want) {
			t.Errorf("resumed after the hand-off: %+v, want last %s", rest, c.want)
		}
	}
}

// notifications/cancelled that reaches another worker than the one running
// the call cancels it there (through the store).
func TestMCPCancelAcrossWorkers(t *testing.T) {
	up := newStreamUpstream(t)
	s1, s2, _, _ := twoWorkers(t, up)
	tok := mint(t, nil)
	sid := session11(t, s1)
	done := make(chan result, 1)
	go func() {
		done <- call(s1, "POST", "/mcp", fmt.Sprintf(streamCallBody, `"c1"`, "up-hang", ""), "Authorization", "Bearer "+tok,
			"Accept", "application/json", "Mcp-Session-Id", sid)
	}()
	<-up.tokens
	cancel := `{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":"c1","reason":"user"}}`
	if r := mcpCall(t, s2, tok, sid, cancel); r.status != 202 {
		t.Fatalf("notifications/cancelled: %d %s", r.status, r.body)
	}
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("the call was not cancelled from the other worker")
	}
	if err := waitFor(func() bool { return up.cancelled.Load() == 1 }); err != nil {
		t.Error("the upstream call was not cancelled")
	}
}

// GET /mcp without Last-Event-ID opens the session's standing stream: a
// priming event in 2025-11-25, a retry hint when the worker stops.
func TestMCPStandingStream(t *testing.T) {
	up := newStreamUpstream(t)
	s1, _, url1, _ := twoWorkers(t, up)
	sid := session11(t, s1)
	if r := getMCP(t, url1, sid, "", "application/json"); r.StatusCode != 406 {
		t.Errorf("GET without text/event-stream in Accept: %d", r.StatusCode)
	}
	if r := getMCP(t, url1, "", "", "text/event-stream"); r.StatusCode != 400 {
		t.Errorf("GET without a session: %d", r.StatusCode)
	}
	resp := getMCP(t, url1, sid, "", "text/event-stream")
	defer resp.Body.Close()
	br := bufio.NewReader(resp.Body)
	line, _ := br.ReadString('\n')
	if resp.StatusCode != 200 || !strings.HasPrefix(line, "id: g") {
		t.Fatalf("standing stream: %d, first line %q", resp.StatusCode, line)
	}
	s1.Drain(time.Now().Add(time.Second))
	if _, retry := readUntil(t, br, ""); !retry {
		t.Error("the standing stream ended without a retry hint")
	}
	// Without an event store, GET stays 405.
	s, _ := newStreamGateway(t, up, nil)
	if r := call(s, "GET", "/mcp", "", "Authorization", "Bearer "+mint(t, nil), "Accept", "text/event-stream"); r.status != 405 {
		t.Errorf("GET without an event store: %d", r.status)
	}
}

// A resumable call records its events only from the moment it may need
// them: one answered within persistAfter writes nothing to the store; one
// that runs longer records the opening record and every event, the last
// one final; one whose client goes away records at once.
func TestMCPStreamRecordsWhatMayBeResumed(t *testing.T) {
	up := newStreamUpstream(t)
	b := newEventsFake(up)
	o := testOptions()
	o.FederationTimeout = 10 * time.Second
	s, url := serveGateway(t, o, b)
	sid := session11(t, s)
	recorded := func() map[string]map[int]store.StreamEvent {
		b.mu.Lock()
		defer b.mu.Unlock()
		out := map[string]map[int]store.StreamEvent{}
		for k, v := range b.streams {
			if strings.HasPrefix(k, sid+" ") {
				out[k] = maps.Clone(v)
			}
		}
		return out
	}

	resp := postMCP(t, url, fmt.Sprintf(streamCallBody, "1", "up-notes", `"progressToken":"p"`), "Mcp-Session-Id", sid)
	fast, _ := readUntil(t, bufio.NewReader(resp.Body), `"id":1,`)
	resp.Body.Close()
	if len(fast) < 2 || !strings.Contains(fast[len(fast)-1].data, `"result"`) {
		t.Fatalf("the fast call: %+v", fast)
	}
	time.Sleep(2 * persistAfter)
	if got := recorded(); len(got) != 0 {
		t.Fatalf("a call answered at once recorded %d streams", len(got))
	}

	resp = postMCP(t, url, fmt.Sprintf(streamCallBody, "2", "up-slow", `"progressToken":"p"`), "Mcp-Session-Id", sid)
	slow, _ := readUntil(t, bufio.NewReader(resp.Body), `"id":2,`)
	resp.Body.Close()
	got := recorded()
	if len(got) != 1 {
		t.Fatalf("the slow call recorded %d streams", len(got))
	}
	for _, evs := range got {
		// The opening record, then what the client got after the priming event.
		if len(evs) != len(slow) || evs[0].Seq != 0 || !evs[len(evs)-1].Final || !strings.Contains(string(evs[len(evs)-1].Data), `"id":2,"result"`) {
			t.Errorf("recorded %d events, the client got %d: %+v", len(evs), len(slow), evs)
		}
	}

	resp = postMCP(t, url, fmt.Sprintf(streamCallBody, "3", "up-slow", `"progressToken":"p"`), "Mcp-Session-Id", sid)
	readUntil(t, bufio.NewReader(resp.Body), `"progress":1`)
	resp.Body.Close() // within persistAfter of the call's start, mostly; recorded either way
	if err := waitFor(func() bool { return len(recorded()) == 2 }); err != nil {
		t.Fatalf("a call whose client went away: %d streams recorded", len(recorded()))
	}
}
