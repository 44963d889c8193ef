package rpc

import (
	"bufio"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
)

// An upstream's sampling request during a call reaches the client on the
// call's stream under a gateway id; the client's response, posted to any
// worker, reaches the upstream under the upstream's id, and the call ends
// with the upstream's result. Methods a client does not serve get -32601
// from the gateway itself.
func TestMCPRelaysUpstreamRequests(t *testing.T) {
	up := newStreamUpstream(t)
	s1, s2, url1, _ := twoWorkers(t, up)
	tok := mint(t, nil)
	sid := session11(t, s1)
	for i, answerOn := range []*Server{s2, s1} { // another worker (the store), then the same one (memory)
		body := fmt.Sprintf(`{"jsonrpc":"2.0","id":%d,"method":"tools/call","params":{"name":"up-ask","arguments":{"ask":"sampling/createMessage"}}}`, 40+i)
		resp := postMCP(t, url1, body, "Mcp-Session-Id", sid)
		br := bufio.NewReader(resp.Body)
		evs, _ := readUntil(t, br, `"method":"sampling/createMessage"`)
		ask := evs[len(evs)-1].data
		var req struct {
			ID     string          `json:"id"`
			Params json.RawMessage `json:"params"`
		}
		if err := json.Unmarshal([]byte(ask), &req); err != nil || !strings.HasPrefix(req.ID, "gw-") || !strings.Contains(string(req.Params), `"maxTokens":5`) {
			t.Fatalf("the relayed request: %s (%v)", ask, err)
		}
		reply := `{"jsonrpc":"2.0","id":"` + req.ID + `","result":{"role":"assistant","content":{"type":"text","text":"hi from the model"},"model":"m"}}`
		if r := mcpCall(t, answerOn, tok, sid, reply); r.status != 202 {
			t.Fatalf("the client's response: %d %s", r.status, r.body)
		}
		rest, _ := readUntil(t, br, fmt.Sprintf(`"id":%d,`, 40+i))
		resp.Body.Close()
		last := rest[len(rest)-1].data
		// The upstream got the client's result under its own id, 99.
		if !strings.Contains(last, `"result"`) || !strings.Contains(last, `\"id\":99`) || !strings.Contains(last, "hi from the model") {
			t.Errorf("answer %d: %s", i, last)
		}
	}
	// A request a client does not serve is answered by the gateway.
	resp := postMCP(t, url1, `{"jsonrpc":"2.0","id":50,"method":"tools/call","params":{"name":"up-ask","arguments":{"ask":"tools/list"}}}`, "Mcp-Session-Id", sid)
	rest, _ := readUntil(t, bufio.NewReader(resp.Body), `"id":50,`)
	resp.Body.Close()
	last := rest[len(rest)-1].data
	if !strings.Contains(last, `-32601`) || strings.Contains(last, `"method":"tools/list"`) {
		t.Errorf("tools/list asked of the client: %+v", rest)
	}
}
