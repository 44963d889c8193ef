package supervisor_test

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"
)

// A stop never hangs a connection. After TERM readiness fails at once, the
// server goes on serving for the shutdown delay, then every process stops
// accepting at the same moment: a new connection is refused at once (never
// accepted and left to wait), in-flight requests finish, and a stalled
// client cannot hold the stop past the graceful timeout.
func TestStopServesTheDelayThenRefusesAtOnce(t *testing.T) {
	eachLayout(t, []string{"--workers", "2", "--graceful-timeout", "3s", "--shutdown-delay", "1500ms"}, func(t *testing.T, s *server) {
		// A client that sends half a request and stalls.
		stalled, err := net.Dial("tcp", s.addr)
		if err != nil {
			t.Fatal(err)
		}
		defer stalled.Close()
		io.WriteString(stalled, "POST /pid HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc")
		inflight := make(chan int, 1)
		go func() {
			code, _, _ := post(client(1), s.url("/slow?ms=2500"))
			inflight <- code
		}()
		time.Sleep(200 * time.Millisecond)
		begin := time.Now()
		s.signal(syscall.SIGTERM)

		// During the delay: not ready, still serving, new connections too.
		waitFor(t, "/ready failing", time.Second, func() bool {
			resp, err := http.Get(s.url("/ready"))
			if err != nil {
				return false
			}
			resp.Body.Close()
			return resp.StatusCode == 503
		})
		fresh := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
		if code, _, err := post(fresh, s.url("/pid")); err != nil || code != 200 {
			t.Fatalf("a new connection during the shutdown delay: %d %v", code, err)
		}

		// After it: refused at once.
		time.Sleep(time.Until(begin.Add(1500*time.Millisecond + 1500*time.Millisecond)))
		t0 := time.Now()
		c, err := net.DialTimeout("tcp", s.addr, 3*time.Second)
		if err == nil {
			c.Close()
			t.Fatal("a new connection was accepted after the shutdown delay")
		}
		if !errors.Is(err, syscall.ECONNREFUSED) {
			t.Fatalf("a new connection after the delay: %v, want connection refused", err)
		}
		if took := time.Since(t0); took > time.Second {
			t.Fatalf("refusing took %s", took)
		}
		if code := <-inflight; code != 200 {
			t.Fatalf("the in-flight request got %d", code)
		}
		if code := s.wait(1500*time.Millisecond + 3*time.Second + 2*time.Second); code != 0 {
			t.Fatalf("exit %d", code)
		}
		t.Logf("stopped %s after TERM (delay 1.5 s, graceful timeout 3 s, one stalled client)", time.Since(begin))
	})
}

// Connections waiting in the accept queue when the stop begins are served,
// not reset: the sockets are shut down once the workers have taken them.
func TestStopServesTheConnectionsAlreadyQueued(t *testing.T) {
	s := start(t, nil, "--workers", "2")
	pids := readyPids(s.table())
	for pid := range pids {
		syscall.Kill(pid, syscall.SIGSTOP) // nobody accepts: connections queue in the kernel
	}
	codes := make(chan string, 5)
	for i := 0; i < 5; i++ {
		go func() {
			c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
			code, _, err := post(c, s.url("/pid"))
			codes <- fmt.Sprint(code, err)
		}()
	}
	time.Sleep(300 * time.Millisecond) // queued
	s.signal(syscall.SIGTERM)
	time.Sleep(100 * time.Millisecond)
	for pid := range pids {
		syscall.Kill(pid, syscall.SIGCONT)
	}
	for i := 0; i < 5; i++ {
		if got := <-codes; got != "200 <nil>" {
			t.Fatalf("a connection queued before the stop: %s", got)
		}
	}
	if code := s.wait(10 * time.Second); code != 0 {
		t.Fatalf("exit %d", code)
	}
	if l := s.waitLog("refusing new connections", time.Second); fmt.Sprint(l["queued_connections_reset"]) != "0" {
		t.Fatalf("queued connections reset: %v", l)
	}
}

// The health port is answered by the master: it answers while every worker
// is frozen, and its readiness fails the moment a stop begins.
func TestHealthPortAnswersWhileWorkersAreFrozen(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hp := ln.Addr().String()
	ln.Close()
	s := start(t, nil, "--workers", "2", "--health-bind", hp, "--shutdown-delay", "2s")
	get := func(path string) (int, string) {
		t.Helper()
		c := &http.Client{Timeout: time.Second}
		resp, err := c.Get("http://" + hp + path)
		if err != nil {
			t.Fatalf("health port %s: %v", path, err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	waitFor(t, "ready on the health port", 5*time.Second, func() bool { code, _ := get("/ready"); return code == 200 })
	if code, body := get("/health"); code != 200 || !strings.Contains(body, "healthy") {
		t.Fatalf("/health: %d %s", code, body)
	}
	pids := readyPids(s.table())
	for pid := range pids {
		syscall.Kill(pid, syscall.SIGSTOP)
	}
	for i := 0; i < 10; i++ { // each within the client's one-second timeout
		if code, _ := get("/health"); code != 200 {
			t.Fatalf("/health with every worker frozen: %d", code)
		}
		if code, _ := get("/ready"); code != 200 {
			t.Fatalf("/ready with every worker frozen: %d", code)
		}
	}
	for pid := range pids {
		syscall.Kill(pid, syscall.SIGCONT)
	}
	s.signal(syscall.SIGTERM)
	waitFor(t, "/ready failing on the health port", time.Second, func() bool { code, _ := get("/ready"); return code == 503 })
	if _, body := get("/ready"); !strings.Contains(body, `"stopping"`) {
		t.Fatalf("/ready while stopping: %s", body)
	}
	if code, _, err := post(client(1), s.url("/pid")); err != nil || code != 200 {
		t.Fatalf("served during the shutdown delay: %d %v", code, err)
	}
	s.wait(10 * time.Second)
}
