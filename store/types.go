// Package store is the gateway's persistence: the database (SQLite by default,
// PostgreSQL through pgx), the cache in front of it, and the migrations.
package store

import (
	"encoding/json"
	"errors"
)

// ErrNotFound is returned when a user or tool does not exist.
var ErrNotFound = errors.New("not found")

// Tool is a tool definition as the gateway lists it in tools/list.
type Tool struct {
	Name        string          `json:"name"`
	Description string          `json:"description"`
	InputSchema json.RawMessage `json:"inputSchema"`
	Enabled     bool            `json:"enabled"`

	// A tool of an upstream MCP server (gateways.go): the gateway that
	// serves it, its name there, and its output schema as it lists it.
	Gateway      string          `json:"gateway,omitempty"`
	UpstreamName string          `json:"upstreamName,omitempty"`
	OutputSchema json.RawMessage `json:"outputSchema,omitempty"`

	// A REST tool (rest.go): the HTTP request its calls run.
	REST *RESTEndpoint `json:"rest,omitempty"`
}

// User is an account that may hold tokens.
type User struct {
	Email  string `json:"email"`
	Active bool   `json:"active"`
	Admin  bool   `json:"admin"`
}

// Check is one item of a readiness report (/ready).
type Check struct {
	Name   string `json:"name"`   // "Database" or "Cache"
	OK     bool   `json:"ok"`     // reachable
	Detail string `json:"detail"` // dialect or cache type, and the error when not OK
}
