package upstream

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
)

// Respond sends msg, a JSON-RPC response to a request the upstream sent
// during a call (sampling, elicitation, roots: the gateway relays them to
// its own client), in the current session. The upstream answers 202.
//
// An sse upstream's requests are answered by the client itself (sse.go:
// they name no call to relay them to); a response sent here goes to the
// session's endpoint all the same.
func (c *Client) Respond(ctx context.Context, msg json.RawMessage) error {
	c.mu.Lock()
	session, version, sse := c.session, c.version, c.sse
	c.mu.Unlock()
	if sse != nil {
		if err := sse.post(ctx, msg); err != nil {
			return fmt.Errorf("respond to %s: %w", c.srv.Name, err)
		}
		return nil
	}
	resp, err := c.post(ctx, msg, session, version, nil)
	if err != nil {
		return fmt.Errorf("respond to %s: %w", c.srv.Name, err)
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("respond to %s: %w", c.srv.Name, &StatusError{Status: resp.StatusCode})
	}
	return nil
}
