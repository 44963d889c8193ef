package rpc

import (
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestConcurrentRequests drives the shared state (token cache with eviction,
// zone cache, sessions, buffer pool) from many goroutines; run with -race.
func TestConcurrentRequests(t *testing.T) {
	s, _ := newRevokingServer(t, nil) // DELETE /mcp needs tombstones
	zones := []string{"UTC", "Europe/Berlin", "Asia/Kolkata", "America/New_York", "Pacific/Kiritimati", "Australia/Lord_Howe"}
	shared := mint(t, nil)
	// New tokens now and then (cache inserts), minted up front: t.Fatal
	// may not be called from the goroutines.
	fresh := make([][]string, 8)
	for g := range fresh {
		for i := 0; i < 30; i++ {
			fresh[g] = append(fresh[g], mint(t, func(r *TokenRequest) { r.Expires = time.Duration(g*1000+i+1) * time.Second }))
		}
	}
	var wg sync.WaitGroup
	errs := make(chan string, 100)
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			for i := 0; i < 150; i++ {
				tok := shared
				if i%5 == 0 {
					tok = fresh[g][i/5]
				}
				zone := zones[(g+i)%len(zones)]
				body := fmt.Sprintf(`[%s,{"jsonrpc":"2.0","id":2,"method":"get_system_time","params":{"timezone":%q}}]`, seedPayload, zone)
				r := call(s, "POST", "/rpc", body, "Authorization", "Bearer "+tok)
				if r.status != 200 || strings.Count(string(r.body), `"isError":false`) != 2 {
					errs <- fmt.Sprintf("rpc: %d %s", r.status, r.body)
					return
				}
				if i%10 == 0 {
					r := call(s, "POST", "/mcp", mcpInit, "Authorization", "Bearer "+tok)
					sid := r.header("Mcp-Session-Id")
					if r := call(s, "POST", "/mcp", ping, "Authorization", "Bearer "+tok, "Mcp-Session-Id", sid); r.status != 200 {
						errs <- fmt.Sprintf("mcp ping: %d", r.status)
						return
					}
					if r := call(s, "DELETE", "/mcp", "", "Authorization", "Bearer "+tok, "Mcp-Session-Id", sid); r.status != 204 {
						errs <- fmt.Sprintf("mcp delete: %d", r.status)
						return
					}
				}
			}
		}(g)
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
	if s.Panics() != 0 {
		t.Errorf("%d panics", s.Panics())
	}
}
