package main

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"syscall"
	"time"
)

// 7. Stop: TERM under a stream of new connections. Every attempt is a new
// connection asking GET /health, and ends one of four ways: served, refused
// at connect (what a load balancer retries elsewhere at once), reset after
// it was accepted, or hung (no answer within a second). The bar: none hangs;
// new connections are served during the shutdown delay and refused at once
// after it.
func (h *harness) stopScenario() error {
	be := h.sqliteBackend("database")
	for _, delay := range []time.Duration{0, time.Second} {
		gw, err := h.startGateway(be, "--shutdown-delay", delay.String(), "--graceful-timeout", "5s")
		if err != nil {
			return err
		}
		p := startStopProbe(gw.addr, 4)
		if err := h.pause(300 * time.Millisecond); err != nil {
			return err
		}
		t0 := time.Now()
		if err := syscall.Kill(gw.pid(), syscall.SIGTERM); err != nil {
			return err
		}
		select {
		case <-gw.proc.Done():
		case <-time.After(delay + 10*time.Second):
			return fmt.Errorf("stop with delay %s: the master was still running 10 s after the delay", delay)
		}
		took := time.Since(t0)
		time.Sleep(100 * time.Millisecond) // attempts after the exit: refused too
		r := p.finish()

		sc := fmt.Sprintf("7 stop · TERM, shutdown delay %s, new connections every ms", delay)
		end := t0.Add(delay)
		servedAfterTerm, firstRefused := 0, time.Duration(-1)
		for _, a := range r {
			if a.start.After(t0) && a.outcome == "served" && a.start.Before(end) {
				servedAfterTerm++
			}
			if a.outcome == "refused" && a.start.After(t0) && (firstRefused < 0 || a.start.Sub(end) < firstRefused) {
				firstRefused = a.start.Sub(end)
			}
		}
		count := map[string]int{}
		for _, a := range r {
			count[a.outcome]++
		}
		refuseMs := ms(firstRefused)
		if firstRefused < 0 {
			refuseMs = -1
		}
		h.add(row{Scenario: sc, Measure: "hung connections (no answer within 1 s)", Value: float64(count["hung"]),
			Text: fmt.Sprintf("%d of %d attempts (served %d, refused %d, reset %d)", count["hung"], len(r), count["served"], count["refused"], count["reset"]),
			Bar:  "0", Result: passIf(count["hung"] == 0)})
		h.add(row{Scenario: sc, Measure: "first refusal after the delay's end", Value: refuseMs,
			Text: fmt.Sprintf("%.1f ms", refuseMs), Bar: "≤ 100 ms", Result: passIf(firstRefused >= 0 && firstRefused <= 100*time.Millisecond)})
		h.add(row{Scenario: sc, Measure: "reset after being accepted", Value: float64(count["reset"]),
			Text: fmt.Sprintf("%d (the few queued at the shutdown)", count["reset"]), Result: "info"})
		if delay > 0 {
			h.add(row{Scenario: sc, Measure: "new connections served during the delay", Value: float64(servedAfterTerm),
				Text: fmt.Sprint(servedAfterTerm), Bar: "> 0", Result: passIf(servedAfterTerm > 0)})
		}
		h.add(row{Scenario: sc, Measure: "TERM to the master's exit", Value: ms(took),
			Text: fmt.Sprintf("%.0f ms", ms(took)), Bar: fmt.Sprintf("≤ delay + graceful timeout (%s)", delay+5*time.Second),
			Result: passIf(took <= delay+5*time.Second+time.Second)})
	}
	return nil
}

// stopAttempt is one new connection of the stop probe.
type stopAttempt struct {
	start   time.Time
	outcome string // served, refused, reset, hung
}

type stopProbe struct {
	mu       sync.Mutex
	attempts []stopAttempt
	done     chan struct{}
	wg       sync.WaitGroup
}

// startStopProbe opens a new connection every millisecond from each of n
// goroutines, each sending GET /health.
func startStopProbe(addr string, n int) *stopProbe {
	p := &stopProbe{done: make(chan struct{})}
	for i := 0; i < n; i++ {
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			for {
				select {
				case <-p.done:
					return
				default:
				}
				a := stopAttempt{start: time.Now(), outcome: probeOnce(addr)}
				p.mu.Lock()
				p.attempts = append(p.attempts, a)
				p.mu.Unlock()
				time.Sleep(time.Millisecond)
			}
		}()
	}
	return p
}

func (p *stopProbe) finish() []stopAttempt {
	close(p.done)
	p.wg.Wait()
	return p.attempts
}

func probeOnce(addr string) string {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		if errors.Is(err, syscall.ECONNREFUSED) {
			return "refused"
		}
		return "hung"
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(time.Second))
	if _, err := c.Write([]byte("GET /health HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")); err != nil {
		return "reset"
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	var ne net.Error
	switch {
	case errors.As(err, &ne) && ne.Timeout():
		return "hung"
	case err != nil:
		return "reset"
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		return "reset"
	}
	return "served"
}
