package proctest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

func sh(script string) *exec.Cmd { return exec.Command("/bin/sh", "-c", script) }

func TestLogBufferEventsAndRaces(t *testing.T) {
	var b LogBuffer
	fmt.Fprint(&b, `{"msg":"a","n":1}`+"\n"+`not json`+"\n"+`{"msg":"b"}`+"\n"+`{"msg":"a","n":`)
	if got := b.Events("a"); len(got) != 1 || got[0]["n"] != 1.0 {
		t.Fatalf("events a before the line is complete: %v", got)
	}
	fmt.Fprint(&b, "2}\nWARNING: DATA ")
	if b.Races() {
		t.Fatal("a race reported before one was written")
	}
	fmt.Fprint(&b, "RACE\n")
	if got := b.Events("a"); len(got) != 2 || got[1]["n"] != 2.0 {
		t.Fatalf("events a: %v", got)
	}
	if n := len(b.Events("")); n != 3 {
		t.Fatalf("%d events, want 3", n)
	}
	if !b.Races() || b.RaceReport() != "WARNING: DATA RACE\n" {
		t.Fatalf("a data race report split across two writes was missed: %q", b.RaceReport())
	}
	if !b.Contains("not json\n{") || !strings.HasSuffix(b.String(), "DATA RACE\n") {
		t.Fatalf("raw text: %q", b.String())
	}

	// A report as the race detector writes it: from its opening rule on.
	var r LogBuffer
	report := "==================\nWARNING: DATA RACE\nWrite at 0x00c000 by goroutine 7:\n==================\n"
	fmt.Fprint(&r, `{"msg":"before"}`+"\n"+report+`{"msg":"after"}`+"\n")
	if got := r.RaceReport(); got != report+`{"msg":"after"}`+"\n" {
		t.Fatalf("race report %q", got)
	}
	if (&LogBuffer{}).RaceReport() != "" {
		t.Fatal("a race report without a race")
	}
}

// The output of a process group's members lands in the log; Exited comes
// when the leader exits, Done when the last process holding the output does,
// and Kill kills the whole group.
func TestProcGroupOutputAndKill(t *testing.T) {
	p := MustStart(t, sh(`echo '{"msg":"leader"}'; (sleep 0.3; echo '{"msg":"child","pid":'$$'}') & exit 3`))
	e := p.MustWaitEvent(t, "child", 5*time.Second)
	if int(e["pid"].(float64)) != p.Pid {
		t.Errorf("child event %v, leader pid %d", e, p.Pid)
	}
	<-p.Exited()
	if code := p.MustWait(t, 5*time.Second); code != 3 {
		t.Fatalf("exit code %d, want 3", code)
	}
	if len(p.Log.Events("leader")) != 1 {
		t.Fatalf("output: %s", p.Log)
	}

	// A child that outlives the leader keeps the output open: Exited, not
	// Done; Kill reaches it through the group.
	p = MustStart(t, sh(`sleep 60 & echo $! ; exit 0`))
	select {
	case <-p.Exited():
	case <-time.After(5 * time.Second):
		t.Fatal("the leader did not exit")
	}
	p.MustWaitOutput(t, "\n", 5*time.Second)
	child, _ := strconv.Atoi(strings.TrimSpace(p.Log.String()))
	if !Alive(child) || !p.GroupAlive() {
		t.Fatalf("the child %d is not running", child)
	}
	if _, ok := p.Wait(100 * time.Millisecond); ok {
		t.Fatal("Done while a child holds the output")
	}
	if err := p.WaitOutput("never", 50*time.Millisecond); err == nil || errors.Is(err, ErrExited) {
		t.Fatalf("a wait that times out: %v", err)
	}
	p.Kill()
	select {
	case <-p.Done():
	default:
		t.Fatal("Kill returned before the output closed")
	}
	// The killed child, an orphan, is reaped by init a moment later.
	WaitFor(t, "the group gone after Kill", 5*time.Second, func() bool { return !p.GroupAlive() })
	if err := p.WaitOutput("never", time.Second); !errors.Is(err, ErrExited) {
		t.Fatalf("a wait after the output closed: %v", err)
	}
}

func TestStopSignalsThenKills(t *testing.T) {
	p := MustStart(t, sh(`trap 'echo term; exit 0' TERM; sleep 60 & wait`))
	time.Sleep(100 * time.Millisecond) // the trap is set
	start := time.Now()
	p.Stop(syscall.SIGTERM, 5*time.Second)
	if d := time.Since(start); d > 3*time.Second || !p.Log.Contains("term") {
		t.Fatalf("Stop took %s; output %q", d, p.Log)
	}
	WaitFor(t, "the sleep gone after Stop", 5*time.Second, func() bool { return !p.GroupAlive() })
}

func TestPorts(t *testing.T) {
	port := MustFreePort(t)
	if !PortFree(port) {
		t.Fatalf("port %d not free", port)
	}
	l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if PortFree(port) {
		t.Fatalf("port %d free while listened on", port)
	}
}

func TestLoad(t *testing.T) {
	var mu sync.Mutex
	seen := map[int]int{}
	r := RunLoad(context.Background(), 4, 1000, func(conn int) error {
		time.Sleep(20 * time.Microsecond)
		mu.Lock()
		seen[conn]++
		n := seen[0] + seen[1] + seen[2] + seen[3]
		mu.Unlock()
		if n%100 == 0 {
			return fmt.Errorf("call %d", n)
		}
		return nil
	})
	if r.Calls != 1000 || r.OK != 990 || r.Failed != 10 || len(r.Errors) != 10 || r.First().Error() != "call 100" {
		t.Fatalf("%+v", r)
	}
	if len(seen) != 4 {
		t.Fatalf("calls by connection: %v", seen)
	}

	l := StartLoad(context.Background(), 3, 0, func(int) error { time.Sleep(time.Millisecond); return errors.New("no") })
	time.Sleep(50 * time.Millisecond)
	r = l.Stop()
	if r.OK != 0 || r.Failed < 3 || len(r.Errors) != min(r.Failed, KeptErrors) || r.Took < 50*time.Millisecond {
		t.Fatalf("%+v", r)
	}
	if again := l.Stop(); again.Calls != r.Calls {
		t.Fatalf("a second Stop: %+v", again)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Millisecond)
	defer cancel()
	if r := RunLoad(ctx, 2, 0, func(int) error { time.Sleep(time.Millisecond); return nil }); r.Calls == 0 || r.Failed != 0 {
		t.Fatalf("until ctx ends: %+v", r)
	}
}

func TestPollAndAlive(t *testing.T) {
	start := time.Now()
	took, ok := Poll(time.Second, time.Millisecond, func() bool { return time.Since(start) > 20*time.Millisecond })
	if !ok || took < 20*time.Millisecond {
		t.Fatalf("Poll: %s %v", took, ok)
	}
	if _, ok := Poll(20*time.Millisecond, time.Millisecond, func() bool { return false }); ok {
		t.Fatal("Poll held a false condition")
	}
	cmd := sh("exit 0")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pid := cmd.Process.Pid
	WaitFor(t, "a zombie", 5*time.Second, func() bool { return !Alive(pid) }) // exited, not reaped yet
	cmd.Wait()
	if Alive(pid) {
		t.Fatal("a reaped process is alive")
	}
}

func TestStartWithCallersLogBuffer(t *testing.T) {
	cmd := sh(`echo '{"msg":"on stderr"}' >&2`)
	var b LogBuffer
	cmd.Stderr = &b
	p := MustStart(t, cmd)
	if p.Log != &b {
		t.Fatal("the caller's LogBuffer is not p.Log")
	}
	p.MustWaitEvent(t, "on stderr", 5*time.Second)
	if code := p.MustWait(t, 5*time.Second); code != 0 {
		t.Fatalf("exit %d", code)
	}
}
