package tests

import (
	"fmt"
	"io"
	"testing"
)

// Issue 13, item 2: a DELETE /mcp ends the session everywhere (docs/mcp.md,
// gap G3). The session's tombstone is a store revocation, like a revoked
// token's jti, so every worker of every instance sharing the store answers
// 404 for it within the coherence bound (1 s).

// mcpDo sends one request of session sid through g, as a 2025-06-18
// client, and returns the status and body. It may run on any goroutine.
func mcpDo(g *gateway, method, tok, sid, body string) (int, string, error) {
	req, err := tokRequest(method, g.url("/mcp"), tok, body)
	if err != nil {
		return 0, "", err
	}
	req.Header.Set("Accept", "application/json, text/event-stream")
	req.Header.Set("Mcp-Session-Id", sid)
	req.Header.Set("MCP-Protocol-Version", "2025-06-18")
	resp, err := freshClient.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

const mcpPingBody = `{"jsonrpc":"2.0","id":2,"method":"ping"}`

// mcpPing pings in session sid through g and returns an error unless the
// status is want.
func mcpPing(g *gateway, tok, sid string, want int) error {
	code, body, err := mcpDo(g, "POST", tok, sid, mcpPingBody)
	if err == nil && code != want {
		err = fmt.Errorf("ping in session: %d %.120s, want %d", code, body, want)
	}
	return err
}

// mcpEnd sends DELETE /mcp for sid through g and returns the status.
func mcpEnd(t *testing.T, g *gateway, tok, sid string) int {
	t.Helper()
	code, _, err := mcpDo(g, "DELETE", tok, sid, "")
	if err != nil {
		t.Fatal(err)
	}
	return code
}

func TestMCPSessionDeleteAcrossInstances(t *testing.T) {
	acrossInstances(t, func(t *testing.T, b storeSetup, a, other *gateway) {
		tok := a.token()
		sid := tokMCPSession(t, a, tok)
		kept := tokMCPSession(t, a, tok)
		// Every worker of the other instance has "not ended" cached.
		warmEveryWorker(t, other, func() error { return mcpPing(other, tok, sid, 200) })
		seen := expectChangeSeen(t, other, "end the session through the other instance",
			func() {
				if code := mcpEnd(t, a, tok, sid); code != 204 {
					t.Fatalf("DELETE /mcp: %d", code)
				}
			},
			func() error { return mcpPing(other, tok, sid, 404) })
		t.Logf("%s: ended session last accepted %v after the DELETE", b.name, seen)
		// The instance that took the DELETE refuses it on every worker,
		// a second DELETE anywhere is 404, and the user's other session
		// lives on.
		if err, n := fanOut(40, 4, func() error { return mcpPing(a, tok, sid, 404) }); err != nil {
			t.Errorf("%d of 40 pings through the writer: %v", n, err)
		}
		if code := mcpEnd(t, other, tok, sid); code != 404 {
			t.Errorf("second DELETE: %d, want 404", code)
		}
		if err, n := fanOut(40, 4, func() error { return mcpPing(other, tok, kept, 200) }); err != nil {
			t.Errorf("%d of 40 pings in another session: %v", n, err)
		}
	})
}

// Within one instance a DELETE is seen at once by every worker (the
// workers share a count of store writes: store.Options.LocalWrites), as
// the conformance suite's server-session-lifecycle expects: the next
// request, on any worker, gets 404, though every worker had the session
// cached as live.
func TestMCPSessionDeleteIsSeenAtOnceByEveryWorker(t *testing.T) {
	g := serve(t, nil, "--workers", "2")
	tok := g.token()
	for round := range 5 {
		sid := tokMCPSession(t, g, tok)
		warmEveryWorker(t, g, func() error { return mcpPing(g, tok, sid, 200) })
		if code := mcpEnd(t, g, tok, sid); code != 204 {
			t.Fatalf("DELETE /mcp: %d", code)
		}
		if err, n := fanOut(20, 1, func() error { return mcpPing(g, tok, sid, 404) }); err != nil {
			t.Fatalf("round %d: %d of 20 requests right after the DELETE: %v", round, n, err)
		}
	}
}
