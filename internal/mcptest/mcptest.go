// Package mcptest is a minimal MCP server over Streamable HTTP for tests of
// the gateway's outbound side: it answers initialize (with a session id and
// a revision of the test's choice) and the initialized notification itself,
// and every other request with what the test's Handler says, in JSON.
package mcptest

import (
	"encoding/json"
	"fmt"
	"net/http"
)

// Handler answers one request: the result's JSON, or "" for a -32601 error.
// r is the HTTP request, for its headers.
type Handler func(r *http.Request, method string, params json.RawMessage) string

// Server is the fake's settings.
type Server struct {
	Session  string // Mcp-Session-Id given at initialize; "" for none
	Revision string // protocolVersion answered; "" for 2025-11-25
	// Capabilities are declared at initialize (JSON); "" for tools only.
	Capabilities string
	Handle       Handler
}

// ServeHTTP answers one POST.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var m struct {
		ID     json.RawMessage `json:"id"`
		Method string          `json:"method"`
		Params json.RawMessage `json:"params"`
	}
	if err := json.NewDecoder(r.Body).Decode(&m); err != nil {
		http.Error(w, "not JSON-RPC", http.StatusBadRequest)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	switch m.Method {
	case "initialize":
		rev := s.Revision
		if rev == "" {
			rev = "2025-11-25"
		}
		if s.Session != "" {
			w.Header().Set("Mcp-Session-Id", s.Session)
		}
		caps := s.Capabilities
		if caps == "" {
			caps = `{"tools":{}}`
		}
		// The handler sees it too (to record headers), but answers nothing.
		s.Handle(r, m.Method, m.Params)
		fmt.Fprintf(w, `{"jsonrpc":"2.0","id":%s,"result":{"protocolVersion":%q,"capabilities":%s,"serverInfo":{"name":"fake","version":"0"}}}`, m.ID, rev, caps)
	default:
		if m.ID == nil { // a notification (initialized, cancelled): seen, not answered
			s.Handle(r, m.Method, m.Params)
			w.WriteHeader(http.StatusAccepted)
			return
		}
		if res := s.Handle(r, m.Method, m.Params); res != "" {
			fmt.Fprintf(w, `{"jsonrpc":"2.0","id":%s,"result":%s}`, m.ID, res)
			return
		}
		fmt.Fprintf(w, `{"jsonrpc":"2.0","id":%s,"error":{"code":-32601,"message":"Method not found"}}`, m.ID)
	}
}
