package tests

import (
	"encoding/json"
	"fmt"
	"io"
	"sync/atomic"
	"testing"
)

// Issue 13, item 2: a 2026-07-28 request needs no session and no shared
// state (docs/mcp.md, gap G4). Two instances with their own SQLite files,
// two workers each, serve one client's requests alike; CACHE_TTL reaches
// the caching hint ttlMs (G6).

const modernMeta = `"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{}}`

// modernDo sends one 2026-07-28 request for method (params: members before
// _meta, "" for none; name: Mcp-Name, "" for none) through g, on a fresh
// connection, and checks that it got a complete result and no session id.
// It returns the result.
func modernDo(g *gateway, tok, method, name, params string) (map[string]any, error) {
	if params != "" {
		params += ","
	}
	req, err := tokRequest("POST", g.url("/mcp"), tok, `{"jsonrpc":"2.0","id":1,"method":"`+method+`","params":{`+params+modernMeta+`}}`)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "application/json, text/event-stream")
	req.Header.Set("MCP-Protocol-Version", "2026-07-28")
	req.Header.Set("Mcp-Method", method)
	if name != "" {
		req.Header.Set("Mcp-Name", name)
	}
	resp, err := freshClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	var r struct{ Result map[string]any }
	if err := json.Unmarshal(b, &r); err != nil || resp.StatusCode != 200 || r.Result["resultType"] != "complete" {
		return nil, fmt.Errorf("%s: %d %.200s", method, resp.StatusCode, b)
	}
	if sid := resp.Header.Get("Mcp-Session-Id"); sid != "" {
		return nil, fmt.Errorf("%s: a session id was minted: %s", method, sid)
	}
	return r.Result, nil
}

func TestMCPModernAcrossInstances(t *testing.T) {
	a := serve(t, []string{"CACHE_TTL=7s"}, "--workers", "2")
	b := serve(t, []string{"CACHE_TTL=7s"}, "--workers", "2")
	tok := a.token() // the same secret: valid on both; nothing else is shared
	for _, g := range []*gateway{a, b} {
		res, err := modernDo(g, tok, "server/discover", "", "")
		if err != nil {
			t.Fatal(err)
		}
		if res["ttlMs"] != float64(7000) || res["cacheScope"] != "public" {
			t.Errorf("server/discover: ttlMs %v, cacheScope %v", res["ttlMs"], res["cacheScope"])
		}
	}
	// Every worker of both instances serves the client's calls.
	for _, g := range []*gateway{a, b} {
		warmEveryWorker(t, g, func() error {
			_, err := modernDo(g, tok, "tools/call", "get_system_time", `"name":"get_system_time","arguments":{"timezone":"UTC"}`)
			return err
		})
	}
	var n atomic.Int64
	err, failed := fanOut(40, 4, func() error {
		g := a
		if n.Add(1)%2 == 0 {
			g = b
		}
		res, err := modernDo(g, tok, "tools/list", "", "")
		if err == nil && res["ttlMs"] != float64(7000) {
			err = fmt.Errorf("tools/list: ttlMs %v", res["ttlMs"])
		}
		return err
	})
	if err != nil {
		t.Errorf("%d of 40 tools/list across the instances: %v", failed, err)
	}
}
