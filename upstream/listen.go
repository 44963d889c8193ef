package upstream

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
)

// ErrNoStream is an upstream that offers no standing stream (GET answers
// 405, as Streamable HTTP allows), or a transport that has none here (sse:
// its one stream carries calls).
var ErrNoStream = errors.New("the upstream offers no standing stream")

// ListenOnce opens the upstream's standing stream (GET on its URL in the
// session, Streamable HTTP) and passes every message on it to onNote until
// the stream ends or ctx does. It opens the session first when there is
// none; a session the upstream no longer knows (404) is opened again by the
// next call. The caller loops, with a pause, to keep listening.
func (c *Client) ListenOnce(ctx context.Context, onNote func(json.RawMessage)) error {
	if c.srv.Transport == TransportSSE {
		return ErrNoStream
	}
	c.mu.Lock()
	if !c.ready {
		if err := c.initializeLocked(ctx); err != nil {
			c.mu.Unlock()
			return err
		}
	}
	session, version := c.session, c.version
	c.mu.Unlock()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.srv.URL, nil)
	if err != nil {
		return err
	}
	req.Header.Set("Accept", "text/event-stream")
	c.setHeaders(req, session, version)
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("listen to %s: %w", c.srv.Name, err)
	}
	defer resp.Body.Close()
	switch {
	case resp.StatusCode == http.StatusMethodNotAllowed:
		return fmt.Errorf("listen to %s: %w", c.srv.Name, ErrNoStream)
	case resp.StatusCode == http.StatusNotFound && session != "":
		c.mu.Lock()
		if c.session == session {
			c.ready = false
		}
		c.mu.Unlock()
		return fmt.Errorf("listen to %s: the session ended (404)", c.srv.Name)
	case resp.StatusCode/100 != 2 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream"):
		io.Copy(io.Discard, io.LimitReader(resp.Body, 512))
		return fmt.Errorf("listen to %s: %w", c.srv.Name, &StatusError{Status: resp.StatusCode})
	}
	err = scanEvents(resp.Body, nil, func(data []byte) bool {
		onNote(json.RawMessage(bytes.Clone(data)))
		return true
	})
	if err != nil && ctx.Err() == nil {
		return fmt.Errorf("listen to %s: %w", c.srv.Name, err)
	}
	return nil
}
