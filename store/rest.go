package store

import (
	"encoding/json"
	"fmt"
)

// RESTEndpoint is the HTTP request a REST tool's call runs (the Python
// gateway's integration_type "REST"; rpc/rest.go runs it). It is kept as
// JSON in the tools table's rest column, so that it travels with the
// catalogue: every worker and instance has it within the cache's coherence
// bound, with no lookup of its own on a call.
type RESTEndpoint struct {
	Method string `json:"method"` // GET, POST, PUT, PATCH or DELETE
	// URL is a template: {name} is the argument name, path-escaped.
	URL     string            `json:"url"`
	Headers map[string]string `json:"headers,omitempty"` // sent as they are; not secret
	Query   []string          `json:"query,omitempty"`   // arguments sent as query parameters
	Body    []string          `json:"body,omitempty"`    // arguments sent as members of the JSON body

	// AuthHeaderName is sent with the credential. SealedAuth is the
	// credential sealed with SealSecret: the database and the caches hold
	// only that, and the worker opens it to send it.
	AuthHeaderName string `json:"authHeaderName,omitempty"`
	SealedAuth     string `json:"sealedAuth,omitempty"`
}

// restToolsV5 gives tools their REST endpoint (NULL: not a REST tool).
func restToolsV5(string) []string {
	return []string{`ALTER TABLE tools ADD COLUMN rest TEXT`}
}

// restColumn is what PutTool writes to the rest column: NULL keeps what
// the row has, so that a PUT of a description alone leaves the endpoint.
func restColumn(t Tool) (any, error) {
	if t.REST == nil {
		return nil, nil
	}
	b, err := json.Marshal(t.REST)
	if err != nil {
		return nil, fmt.Errorf("put tool %q: encode its REST endpoint: %w", t.Name, err)
	}
	return string(b), nil
}

// scanREST reads the rest column ("" for NULL). The column is only ever
// written from a RESTEndpoint, so a row that does not decode is damaged by
// hand: it is served as a tool without an endpoint (its calls fail with "no
// implementation") rather than failing the whole catalogue.
func scanREST(col string) *RESTEndpoint {
	if col == "" {
		return nil
	}
	var r RESTEndpoint
	if json.Unmarshal([]byte(col), &r) != nil {
		return nil
	}
	return &r
}
