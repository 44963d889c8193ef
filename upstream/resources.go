package upstream

import (
	"context"
	"encoding/json"
	"fmt"
)

// Resources and prompts of an upstream (MCP server features beside tools).
// The gateway passes their entries on as the upstream wrote them, so they
// are kept raw beside the field that identifies them. Every method here is
// a read: like discovery, a failure is retried once after a fresh
// initialize, and the breaker counts the outcome as for calls.

// Entry is one entry of a resources, resource templates or prompts list.
type Entry struct {
	Key string          // a resource's uri, a template's uriTemplate, a prompt's name
	Raw json.RawMessage // the entry as the upstream listed it
}

// ListResources lists every resource of the upstream, page after page.
func (c *Client) ListResources(ctx context.Context) ([]Entry, error) {
	return c.listEntries(ctx, "resources/list", "resources", "uri")
}

// ListResourceTemplates lists every resource template, page after page.
func (c *Client) ListResourceTemplates(ctx context.Context) ([]Entry, error) {
	return c.listEntries(ctx, "resources/templates/list", "resourceTemplates", "uriTemplate")
}

// ListPrompts lists every prompt, page after page.
func (c *Client) ListPrompts(ctx context.Context) ([]Entry, error) {
	return c.listEntries(ctx, "prompts/list", "prompts", "name")
}

// ReadResource reads one resource; the upstream's result is returned as it is.
func (c *Client) ReadResource(ctx context.Context, uri string) (json.RawMessage, error) {
	return c.call(ctx, "resources/read", map[string]any{"uri": uri}, nil, nil, true)
}

// GetPrompt gets a prompt with the caller's arguments (a JSON object of
// strings, or empty); the upstream's result is returned as it is.
func (c *Client) GetPrompt(ctx context.Context, name string, args json.RawMessage) (json.RawMessage, error) {
	params := map[string]any{"name": name}
	if len(args) > 0 {
		params["arguments"] = args
	}
	return c.call(ctx, "prompts/get", params, nil, nil, true)
}

// Offers reports whether the upstream declared capability ("resources",
// "prompts", ...) at initialize; known is false before the first
// initialize, when nothing is known yet.
func (c *Client) Offers(capability string) (offers, known bool) {
	info := c.Info()
	if info.Protocol == "" {
		return false, false
	}
	var caps map[string]json.RawMessage
	json.Unmarshal(info.Capabilities, &caps)
	v, ok := caps[capability]
	return ok && string(v) != "null", true
}

// listEntries reads every page of a list method and keeps the entries
// whose key field is a non-empty string (others cannot be served).
func (c *Client) listEntries(ctx context.Context, method, member, key string) ([]Entry, error) {
	items, err := c.listAll(ctx, method, member)
	if err != nil {
		return nil, err
	}
	entries := make([]Entry, 0, len(items))
	for _, raw := range items {
		var fields map[string]json.RawMessage
		var k string
		if json.Unmarshal(raw, &fields) != nil || json.Unmarshal(fields[key], &k) != nil || k == "" {
			continue
		}
		entries = append(entries, Entry{Key: k, Raw: raw})
	}
	return entries, nil
}

// listAll reads every page of a list method (following nextCursor) and
// returns the items of each page's member array, as the upstream sent them.
// Discovery is safe to repeat: a failure is retried once after a fresh
// initialize. An upstream that speaks 2026-07-28 is asked in that form,
// with no session, so that one that speaks nothing older can be listed.
func (c *Client) listAll(ctx context.Context, method, member string) ([]json.RawMessage, error) {
	if modernOf(ctx) == nil {
		ctx = WithModern(ctx, &Modern{})
	}
	var all []json.RawMessage
	cursor := ""
	for page := 0; ; page++ {
		if page == 1000 {
			return nil, fmt.Errorf("%s %s: more than 1000 pages", method, c.srv.Name)
		}
		params := map[string]any{}
		if cursor != "" {
			params["cursor"] = cursor
		}
		raw, err := c.call(ctx, method, params, nil, nil, true)
		if err != nil {
			return nil, err
		}
		var res map[string]json.RawMessage
		var items []json.RawMessage
		cursor = ""
		if err := json.Unmarshal(raw, &res); err != nil {
			return nil, fmt.Errorf("%s %s: result: %w", method, c.srv.Name, err)
		}
		if err := json.Unmarshal(res[member], &items); res[member] != nil && err != nil {
			return nil, fmt.Errorf("%s %s: result: %s: %w", method, c.srv.Name, member, err)
		}
		if next := res["nextCursor"]; next != nil && string(next) != "null" {
			if err := json.Unmarshal(next, &cursor); err != nil {
				return nil, fmt.Errorf("%s %s: result: nextCursor: %w", method, c.srv.Name, err)
			}
		}
		all = append(all, items...)
		if cursor == "" {
			return all, nil
		}
	}
}

// Complete asks for completion values of a prompt's or a resource
// template's argument (completion/complete): ref is the upstream's own
// reference, argument and context as the client sent them. It changes
// nothing, so it is retried like discovery.
func (c *Client) Complete(ctx context.Context, ref, argument, context json.RawMessage) (json.RawMessage, error) {
	params := map[string]any{"ref": ref, "argument": argument}
	if len(context) > 0 {
		params["context"] = context
	}
	return c.call(ctx, "completion/complete", params, nil, nil, true)
}

// Subscribe asks the upstream for notifications/resources/updated of uri
// on this client's session (they come on its standing stream: ListenOnce).
func (c *Client) Subscribe(ctx context.Context, uri string) error {
	_, err := c.call(ctx, "resources/subscribe", map[string]any{"uri": uri}, nil, nil, true)
	return err
}

// Unsubscribe ends a Subscribe.
func (c *Client) Unsubscribe(ctx context.Context, uri string) error {
	_, err := c.call(ctx, "resources/unsubscribe", map[string]any{"uri": uri}, nil, nil, true)
	return err
}
