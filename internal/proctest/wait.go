package proctest

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// awaitEvery is how often Await checks its condition.
const awaitEvery = 5 * time.Millisecond

// Await checks cond every few milliseconds until it holds (nil), ctx ends
// (ctx's error) or the process's output is closed with cond still false (an
// error wrapping ErrExited): nothing written to the output can change after
// that.
func (p *Proc) Await(ctx context.Context, cond func() bool) error {
	tick := time.NewTicker(awaitEvery)
	defer tick.Stop()
	for {
		if cond() {
			return nil
		}
		select {
		case <-tick.C:
		case <-ctx.Done():
			return ctx.Err()
		case <-p.done:
			if cond() {
				return nil
			}
			return fmt.Errorf("%w (%s)", ErrExited, p.Cmd.ProcessState)
		}
	}
}

func (p *Proc) await(timeout time.Duration, what string, cond func() bool) error {
	if p.Log == nil {
		return fmt.Errorf("%s: its output is not in a LogBuffer", p)
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	err := p.Await(ctx, cond)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, ErrExited):
		return fmt.Errorf("no %s in the output of %s: %w", what, p, err)
	default:
		return fmt.Errorf("no %s in the output of %s after %s", what, p, timeout)
	}
}

// WaitOutput waits at most timeout until text is in the output.
func (p *Proc) WaitOutput(text string, timeout time.Duration) error {
	return p.await(timeout, fmt.Sprintf("%#q", text), func() bool { return p.Log.Contains(text) })
}

// WaitEvent waits at most timeout for a JSON log line whose "msg" is msg,
// and returns the latest such line.
func (p *Proc) WaitEvent(msg string, timeout time.Duration) (Event, error) {
	var e Event
	err := p.await(timeout, fmt.Sprintf("%q event", msg), func() bool {
		l := p.Log.Events(msg)
		if len(l) > 0 {
			e = l[len(l)-1]
		}
		return e != nil
	})
	return e, err
}

// MustWaitOutput is WaitOutput, failing t.
func (p *Proc) MustWaitOutput(t TB, text string, timeout time.Duration) {
	t.Helper()
	if err := p.WaitOutput(text, timeout); err != nil {
		t.Fatalf("%v", err)
	}
}

// MustWaitEvent is WaitEvent, failing t.
func (p *Proc) MustWaitEvent(t TB, msg string, timeout time.Duration) Event {
	t.Helper()
	e, err := p.WaitEvent(msg, timeout)
	if err != nil {
		t.Fatalf("%v", err)
	}
	return e
}

// Poll calls cond every interval until it holds or timeout has passed, and
// returns how long that took and whether it held.
func Poll(timeout, every time.Duration, cond func() bool) (took time.Duration, ok bool) {
	start := time.Now()
	for time.Since(start) < timeout {
		if cond() {
			return time.Since(start), true
		}
		time.Sleep(every)
	}
	return time.Since(start), false
}

// WaitFor polls cond every 2 ms, failing t if it does not hold within
// timeout; it returns how long it took. For a condition that costs more than
// a few microseconds to check, use Poll with a longer interval.
func WaitFor(t TB, what string, timeout time.Duration, cond func() bool) time.Duration {
	t.Helper()
	took, ok := Poll(timeout, 2*time.Millisecond, cond)
	if !ok {
		t.Fatalf("%s: not within %s", what, timeout)
	}
	return took
}
