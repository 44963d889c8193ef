package tests

import (
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// TOOL_RATE_LIMIT is exact across the workers of an instance: with 60 calls
// a minute and a burst of 10, 30 quick tools/call requests over fresh
// connections (spread over both workers) give exactly 10 results and 20
// answers 429 with Retry-After and JSON-RPC error -32000. The master removes
// the shared bucket file when it exits.
func TestToolRateLimitAcrossWorkers(t *testing.T) {
	g := serve(t, []string{"TOOL_RATE_LIMIT=60", "RATE_LIMIT_BURST=10"}, "--workers", "2")
	jwt := g.token()
	shared, _ := filepath.Glob(fmt.Sprintf("/dev/shm/mcpgateway-%d-*", g.Cmd.Process.Pid))

	before := workerRequests(t, g)
	const n = 30
	body := `{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"get_system_time","arguments":{"timezone":"UTC"}}}`
	var mu sync.Mutex
	statuses := map[int]int{}
	var wg sync.WaitGroup
	sem := make(chan struct{}, 6)
	for i := 0; i < n; i++ {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			req, _ := http.NewRequest("POST", g.url("/rpc"), strings.NewReader(body))
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set("Authorization", "Bearer "+jwt)
			resp, err := freshClient.Do(req)
			if err != nil {
				t.Error(err)
				return
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			switch resp.StatusCode {
			case 200:
				if !strings.Contains(string(b), `"result":{"content"`) || !strings.Contains(string(b), `"isError":false`) {
					t.Errorf("200 without a result: %s", b)
				}
			case 429:
				ra, err := strconv.Atoi(resp.Header.Get("Retry-After"))
				if err != nil || ra < 1 || ra > 60 {
					t.Errorf("429 with Retry-After %q", resp.Header.Get("Retry-After"))
				}
				if c := rpcErrorCode(string(b)); c != -32000 || !strings.Contains(string(b), `"id":7`) {
					t.Errorf("429 body: %s", b)
				}
			default:
				t.Errorf("status %d: %s", resp.StatusCode, b)
			}
			mu.Lock()
			statuses[resp.StatusCode]++
			mu.Unlock()
		}()
	}
	wg.Wait()
	if statuses[200] != 10 || statuses[429] != n-10 {
		t.Fatalf("statuses %v; want exactly 10 × 200 and %d × 429", statuses, n-10)
	}
	after := workerRequests(t, g)
	if !eachWorkerServed(before, after, 1) {
		t.Errorf("the calls did not reach both workers: %v -> %v", before, after)
	}
	t.Logf("statuses %v; served per worker %v -> %v", statuses, before, after)

	if len(shared) != 1 {
		t.Fatalf("shared bucket files of the master: %v, want one", shared)
	}
	g.Stop(syscall.SIGTERM, 20*time.Second)
	if left, _ := filepath.Glob(fmt.Sprintf("/dev/shm/mcpgateway-%d-*", g.Cmd.Process.Pid)); len(left) != 0 {
		t.Errorf("left behind after the master exited: %v", left)
	}
}
