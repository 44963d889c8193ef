package upstream

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"
)

// Resumption of an upstream's SSE answer (2025-11-25, SEP-1699): a server
// may end the stream of a POST before its response, after events with
// ids, and expects the client to come back with GET and Last-Event-ID; it
// then replays what followed and goes on. The reference SDKs do it to
// move a long call off a connection, or when one of their instances stops.

const (
	// maxResumes bounds the GETs of one answer: a server that ends every
	// stream at once must not keep a call reconnecting for its whole
	// timeout.
	maxResumes = 32
	// maxRetryWait bounds the wait the server's retry hint asks for.
	maxRetryWait = 5 * time.Second
	// defaultRetryWait is the wait when the server gave no hint.
	defaultRetryWait = 100 * time.Millisecond
)

// resumeStream goes on reading the answer to request id after its stream
// ended at pos, until the response: it waits the retry hint, then GETs the
// endpoint with Last-Event-ID.
func (c *Client) resumeStream(ctx context.Context, id int64, pos *streamPosition, session, version string,
	notes func(json.RawMessage)) (json.RawMessage, error) {
	for range maxResumes {
		wait := pos.retry
		if wait <= 0 {
			wait = defaultRetryWait
		}
		t := time.NewTimer(min(wait, maxRetryWait))
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, ctx.Err()
		case <-t.C:
		}
		body, err := c.resumeGET(ctx, pos.lastID, session, version)
		if err != nil {
			return nil, fmt.Errorf("resume the event stream after %s: %w", pos.lastID, err)
		}
		res, err := readStream(body, id, pos, notes)
		body.Close()
		if !errors.Is(err, errStreamEnded) {
			return res, err
		}
	}
	return nil, fmt.Errorf("%w, after %d resumptions", errStreamEnded, maxResumes)
}

// resumeGET opens the stream that follows event lastID.
func (c *Client) resumeGET(ctx context.Context, lastID, session, version string) (io.ReadCloser, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.srv.URL, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "text/event-stream")
	req.Header.Set("Last-Event-ID", lastID)
	c.setHeaders(req, session, version)
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode/100 != 2 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
		raw, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		resp.Body.Close()
		return nil, &StatusError{Status: resp.StatusCode, Body: start(raw)}
	}
	return resp.Body, nil
}
