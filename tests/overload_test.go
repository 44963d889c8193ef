package tests

import (
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mcpgateway/mcpgateway/internal/proctest"
	"golang.org/x/sys/unix"
)

// The guide's hey command is not shed in the granian profile either (the
// gunicorn profile: TestHeyGuideCommandAllSucceed): the default
// --max-queue-delay tolerates the queue of 200 closed-loop clients.
func TestHeyGuideCommandIsNotShedInTheGranianProfile(t *testing.T) {
	g := serve(t, []string{"HTTP_SERVER=granian"}, "--workers", "2")
	statuses, out := runHey(t, g, g.token(), "-n", "10000", "-c", "200")
	if len(statuses) != 1 || statuses[200] != 10000 || strings.Contains(out, "Error distribution") {
		t.Fatalf("want [200] 10000 responses and no errors:\n%s", out)
	}
}

// With a small --max-queue-delay, hey at 1000 connections makes the
// gateway shed: 503s with Retry-After appear, no request fails or hangs,
// /health answers 200 throughout, and the queue-delay histogram and the
// refusals by reason are in /metrics.
//
// hey spends more CPU per request than the gateway: on two idle cores it,
// not the server, is the bottleneck, and requests hardly queue in the
// server. The gateway is pinned to one core so that they do.
func TestHeyAtAThousandConnectionsIsShed(t *testing.T) {
	g := serve(t, nil, "--workers", "2", "--max-queue-delay", "5ms")
	pinToCPU0(t, g.Cmd.Process.Pid)
	jwt := g.token()

	prober := proctest.StartProbing(g.url("/health"), 100*time.Millisecond, 5*time.Second)
	statuses, out := runHey(t, g, jwt, "-n", "20000", "-c", "1000", "-t", "30")
	probes, bad := prober.Stop()

	if statuses[503] == 0 || statuses[200] == 0 || len(statuses) != 2 || strings.Contains(out, "Error distribution") {
		t.Fatalf("want 200s and 503s and nothing else:\n%s", out)
	}
	if probes < 3 || len(bad) > 0 {
		t.Fatalf("/health during the load: %d probes, failures %v", probes, bad)
	}
	_, metrics := get(t, g.url("/metrics"))
	shed := regexp.MustCompile(`(?m)^mcpgateway_http_requests_refused_total\{reason="queue_delay"\} (\d+)$`).FindStringSubmatch(metrics)
	if shed == nil || shed[1] == "0" {
		t.Errorf("no refusal by queue_delay in /metrics")
	}
	if !regexp.MustCompile(`(?m)^mcpgateway_request_queue_seconds_bucket\{le="0.005"\} \d+$`).MatchString(metrics) {
		t.Errorf("no mcpgateway_request_queue_seconds histogram in /metrics")
	}
	t.Logf("hey -c 1000: %v; /health probes %d", statuses, probes)
}

// pinToCPU0 moves every thread of the process group pgid to CPU 0.
func pinToCPU0(t *testing.T, pgid int) {
	t.Helper()
	var set unix.CPUSet
	set.Set(0)
	procs, _ := filepath.Glob("/proc/[0-9]*")
	pinned := 0
	for _, p := range procs {
		pid, _ := strconv.Atoi(filepath.Base(p))
		if g, err := unix.Getpgid(pid); err != nil || g != pgid {
			continue
		}
		tasks, _ := filepath.Glob(p + "/task/[0-9]*")
		for _, task := range tasks {
			tid, _ := strconv.Atoi(filepath.Base(task))
			if unix.SchedSetaffinity(tid, &set) == nil {
				pinned++
			}
		}
	}
	if pinned == 0 {
		t.Fatalf("no thread of process group %d pinned", pgid)
	}
}
