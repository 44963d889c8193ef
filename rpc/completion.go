package rpc

import (
	"context"
	"encoding/json"

	"github.com/valyala/fasthttp"

	"github.com/mcpgateway/mcpgateway/upstream"
)

// completion/complete (docs/federation.md, "Completion"): argument values
// for a prompt or a resource template are the upstream's to suggest. A
// prompt reference names the gateway's prompt (<gateway><sep><prompt>) and
// goes to that upstream under the upstream's own name; a resource
// reference goes to the upstream that owns the URI or template, unchanged.
// Neither the built-in tools nor anything else of the gateway takes
// completions.
//
// On a virtual server's endpoint (vs) only the server's prompts, by the
// names it shows, and its templates and URIs are completed.
func (s *Server) complete(ctx *fasthttp.RequestCtx, buf *buffers, params []byte, out []byte) ([]byte, *rpcError) {
	vs := buf.vs
	ref, argument := member(params, "ref"), member(params, "argument")
	if ref == nil || ref[0] != '{' || argument == nil || argument[0] != '{' {
		return out, &rpcError{code: codeInvalidParams, msg: "Invalid params: completion/complete needs ref and argument (objects)"}
	}
	kind := member(ref, "type")
	var gateway string
	switch {
	case kind != nil && string(unquote(kind)) == "ref/prompt":
		name := member(ref, "name")
		if name == nil || name[0] != '"' {
			return out, &rpcError{code: codeInvalidParams, msg: "Invalid params: a ref/prompt needs a name"}
		}
		g, prompt, rerr := s.promptRoute(ctx, vs, string(unquote(name))) // resources.go
		if rerr != nil {
			return out, rerr
		}
		gateway = g
		ref, _ = json.Marshal(map[string]string{"type": "ref/prompt", "name": prompt})
	case kind != nil && string(unquote(kind)) == "ref/resource":
		uri := member(ref, "uri")
		if uri == nil || uri[0] != '"' {
			return out, &rpcError{code: codeInvalidParams, msg: "Invalid params: a ref/resource needs a uri"}
		}
		u := string(unquote(uri))
		owner, rerr := s.resourceOwner(ctx, u, buf.vs.servesAnyFunc(u))
		if rerr != nil {
			return out, rerr
		}
		if owner == "" || vs != nil && !vs.servesTemplate(owner, u) && !vs.servesURI(owner, u) {
			return out, &rpcError{code: codeInvalidParams, msg: "Unknown resource template: " + u}
		}
		gateway = owner
	default:
		return out, &rpcError{code: codeInvalidParams, msg: `Invalid params: ref.type must be "ref/prompt" or "ref/resource"`}
	}
	cctx := member(params, "context")
	return s.forward(ctx, buf, gateway, "completion/complete", out, func(c *upstream.Client, callCtx context.Context) (json.RawMessage, error) {
		return c.Complete(callCtx, json.RawMessage(ref), json.RawMessage(argument), json.RawMessage(cctx))
	})
}
