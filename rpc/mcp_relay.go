package rpc

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/mcpgateway/mcpgateway/store"
	"github.com/mcpgateway/mcpgateway/upstream"
)

// Requests from upstreams to their client (issue 14 item 2; docs/federation.md,
// "Requests from upstreams"). During a tools/call an upstream may ask its
// client, the gateway, for sampling, elicitation or roots, on the call's
// SSE answer. The gateway passes the request on to its own client on that
// call's stream, under an id of its own ("gw-<hex>": the session's ids for
// server requests are the gateway's to choose, and the upstream's ids of
// several upstreams would collide), waits for the client's response, and
// answers the upstream with it under the upstream's id.
//
// The response is a POST to /mcp, which lands on any worker of any
// instance. Where it meets the waiting call: a response that lands on the
// worker running the call is handed over in memory (relays); one that lands
// elsewhere is recorded in the store ("reply <session> <id>", the resumable
// events' log), which the waiting call reads every relayPoll. Chosen over
// pinning a session to one worker with the others forwarding to it: the
// workers share one listening socket and have no addresses of their own to
// forward to, the store already carries the stream the request travels on,
// and a relay waits for a person or a model, for whom 100 ms is nothing.

// clientRequests are the methods an upstream may send its client.
var clientRequests = map[string]bool{"sampling/createMessage": true, "elicitation/create": true, "roots/list": true}

const (
	relayIDPrefix = "gw-"
	relayPoll     = 100 * time.Millisecond
	replyPrefix   = "reply "
)

// relays are the relayed requests waiting in this worker, by "<session> <id>".
type relays struct {
	mu sync.Mutex
	m  map[string]chan []byte
}

func (r *relays) add(key string) chan []byte {
	ch := make(chan []byte, 1)
	r.mu.Lock()
	if r.m == nil {
		r.m = map[string]chan []byte{}
	}
	r.m[key] = ch
	r.mu.Unlock()
	return ch
}

func (r *relays) remove(key string) {
	r.mu.Lock()
	delete(r.m, key)
	r.mu.Unlock()
}

// deliver hands msg to the request waiting here under key, if one is.
func (r *relays) deliver(key string, msg []byte) bool {
	r.mu.Lock()
	ch := r.m[key]
	r.mu.Unlock()
	if ch == nil {
		return false
	}
	select {
	case ch <- msg:
	default: // answered already
	}
	return true
}

// upstreamRequest returns the method, id and params of note when it is a
// request (a method and an id), not a notification.
func upstreamRequest(note []byte) (method, id, params []byte, ok bool) {
	if validate(note) != nil {
		return nil, nil, nil, false
	}
	v := trimValue(note)
	method, id = member(v, "method"), member(v, "id")
	if method == nil || method[0] != '"' || id == nil {
		return nil, nil, nil, false
	}
	return unquote(method), id, member(v, "params"), true
}

// relayRequest passes the upstream's request of run's call to the client
// and its response back; answer sends a response to the upstream.
func (s *Server) relayRequest(run *callRun, method, id, params []byte, answer func(ctx context.Context, msg []byte) error) {
	ctx := run.ctx
	respond := func(member string, value []byte) {
		out := append([]byte(`{"jsonrpc":"2.0","id":`), id...)
		out = append(append(append(out, `,"`+member+`":`...), value...), '}')
		if err := answer(ctx, out); err != nil && ctx.Err() == nil {
			s.log.Warn("answering an upstream's request failed", zap.ByteString("method", method), zap.Error(err))
		}
	}
	if !clientRequests[string(method)] || run.sc.sid == "" {
		answer(ctx, appendError(nil, id, codeMethodNotFound,
			"Method not found: the gateway cannot pass "+string(method)+" on to its client"))
		return
	}
	rid := relayIDPrefix + newStreamID()
	key := run.sc.sid + " " + rid
	ch := s.relays.add(key)
	defer s.relays.remove(key)
	msg := append([]byte(`{"jsonrpc":"2.0","id":"`+rid+`","method":`), appendString(nil, method)...)
	if params != nil {
		msg = append(append(msg, `,"params":`...), params...)
	}
	run.emit(append(msg, '}'), false)
	reply := s.awaitReply(ctx, key, ch)
	if reply == nil { // the call ended first: the upstream's request dies with it
		return
	}
	v := trimValue(reply)
	if e := member(v, "error"); e != nil {
		respond("error", e)
		return
	}
	result := member(v, "result")
	if result == nil {
		result = []byte("{}")
	}
	respond("result", result)
}

// awaitReply waits for the client's response to the relayed request key:
// from this worker (ch) or, through the store, from another.
func (s *Server) awaitReply(ctx context.Context, key string, ch chan []byte) []byte {
	tick := time.NewTicker(relayPoll)
	defer tick.Stop()
	for {
		select {
		case msg := <-ch:
			return msg
		case <-ctx.Done():
			return nil
		case <-tick.C:
			if s.events == nil {
				continue
			}
			sctx, cancel := context.WithTimeout(ctx, storeOpTimeout)
			evs, _, err := s.events.StreamEvents(sctx, replyPrefix+key, 0, 1)
			cancel()
			if err == nil && len(evs) > 0 {
				return evs[0].Data
			}
		}
	}
}

// takeReply takes a client's JSON-RPC response (POST /mcp): one to a
// request the gateway relayed goes to the call waiting for it, here or
// through the store; others are dropped (the gateway sent no such request).
func (s *Server) takeReply(raw, id []byte, buf *buffers) {
	if buf.sid == nil || len(id) == 0 || id[0] != '"' || !bytes.HasPrefix(unquote(id), []byte(relayIDPrefix)) {
		return
	}
	key := string(buf.sid) + " " + string(unquote(id))
	var compact bytes.Buffer
	if json.Compact(&compact, raw) != nil {
		return
	}
	if s.relays.deliver(key, compact.Bytes()) || s.events == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), storeOpTimeout)
	defer cancel()
	err := s.events.AppendStreamEvent(ctx, replyPrefix+key, store.StreamEvent{Seq: 1, Data: compact.Bytes(), Final: true},
		time.Now().Add(streamRetention))
	if err != nil {
		s.log.Warn("a client's response to a relayed request was not recorded", zap.Error(err))
	}
}

// --- Multi-round-trip results for session clients ---------------------------------

// maxInputRounds bounds the rounds of one call: an upstream that asks
// again and again must not hold its client for ever.
const maxInputRounds = 10

// inputRequired reports whether an upstream's result is a 2026-07-28
// multi-round-trip one, asking its client for input.
func inputRequired(res []byte) bool {
	v := trimValue(res)
	if validate(v) != nil {
		return false
	}
	t := member(v, "resultType")
	return t != nil && string(unquote(t)) == "input_required"
}

// fulfilInputs answers for a session client the input_required result res
// of an upstream that speaks only 2026-07-28: each input request (sampling,
// elicitation, roots) goes to the client on the call's stream, as the
// requests of session upstreams do, and the call is sent again with the
// client's results and the upstream's requestState, until it completes. A
// session client knows nothing of such results; one answered in JSON
// cannot be asked anything, and gets an error saying so. A failure of the
// client's side is an *rpcError, the upstream's any other error.
func (s *Server) fulfilInputs(ctx context.Context, c *upstream.Client, tool store.Tool, args []byte, buf *buffers,
	res json.RawMessage) (json.RawMessage, error) {
	for round := 1; inputRequired(res); round++ {
		if buf.ask == nil {
			return nil, &rpcError{code: codeInvalidRequest, msg: "Tool " + tool.UpstreamName +
				" needs input from the client, which the gateway can ask for only in a streamed answer (Accept: text/event-stream)"}
		}
		if round > maxInputRounds {
			return nil, &rpcError{code: codeInternalError, msg: fmt.Sprintf(
				"Tool %s asked for input more than %d times", tool.UpstreamName, maxInputRounds)}
		}
		v := trimValue(res)
		requests := member(v, "inputRequests")
		responses := []byte{'{'}
		n := 0
		for it := objectMembers(requests); ; n++ {
			k, req, ok := it.next()
			if !ok {
				break
			}
			method := member(req, "method")
			if method == nil || method[0] != '"' {
				return nil, &rpcError{code: codeInternalError, msg: "Tool " + tool.UpstreamName + " asked for input without a method"}
			}
			result, rerr := buf.ask(ctx, unquote(method), member(req, "params"))
			if rerr != nil {
				return nil, rerr
			}
			if n > 0 {
				responses = append(responses, ',')
			}
			responses = append(append(append(responses, k...), ':'), result...)
		}
		retry := upstream.SessionRetry(append(responses, '}'), bytes.Clone(member(v, "requestState")))
		var err error
		if res, err = c.CallTool(upstream.WithModern(ctx, retry), tool.UpstreamName, json.RawMessage(args), buf.progressToken, buf.onNote); err != nil {
			return nil, err
		}
	}
	return res, nil
}

// askClient passes a request of run's upstream (an input request of a
// multi-round-trip result) on to the client, and returns the client's
// result, or its error as the call's.
func (s *Server) askClient(run *callRun) func(ctx context.Context, method, params []byte) ([]byte, *rpcError) {
	return func(ctx context.Context, method, params []byte) ([]byte, *rpcError) {
		var answer []byte
		s.relayRequest(run, method, []byte("0"), params, func(_ context.Context, msg []byte) error {
			answer = msg
			return nil
		})
		v := trimValue(answer)
		switch e := member(v, "error"); {
		case answer == nil:
			return nil, &rpcError{code: codeInternalError, msg: "Request cancelled"}
		case e != nil:
			msg := member(e, "message")
			return nil, &rpcError{code: codeInternalError, msg: "The client did not answer the upstream's " + string(method) + ": " + string(unquote(msg))}
		}
		return bytes.Clone(member(v, "result")), nil
	}
}
