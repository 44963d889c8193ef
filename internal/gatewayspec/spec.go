// Package gatewayspec is an upstream MCP server as an operator describes it,
// with the Python gateway's field names: the body of PUT
// /admin/gateways/{name} and an entry of GATEWAYS_FILE. The master checks
// the file with it before anything starts; the admin API checks a request
// body the same way.
package gatewayspec

import (
	"errors"
	"fmt"
	"strings"
)

// Spec is one upstream.
type Spec struct {
	Name            string `json:"name,omitempty"` // in GATEWAYS_FILE; the path names it in the admin API
	URL             string `json:"url"`
	Transport       string `json:"transport,omitempty"`         // "streamablehttp" (default) or "sse"
	AuthType        string `json:"auth_type,omitempty"`         // "", "bearer" or "authheaders"
	AuthToken       string `json:"auth_token,omitempty"`        // bearer
	AuthHeaderKey   string `json:"auth_header_key,omitempty"`   // authheaders
	AuthHeaderValue string `json:"auth_header_value,omitempty"` // authheaders
	Enabled         *bool  `json:"enabled,omitempty"`           // default true
}

// Checked is a Spec made ready to store: the header to send, if any.
type Checked struct {
	Name, URL, Transport string
	HeaderName           string
	HeaderValue          string
	Enabled              bool
}

// Check validates a spec (canSeal: a secret to seal credentials with is
// set) and returns what to store, or an error that says what is wrong.
func (s Spec) Check(canSeal bool) (Checked, error) {
	c := Checked{Name: s.Name, URL: s.URL, Transport: strings.ToLower(s.Transport), Enabled: s.Enabled == nil || *s.Enabled}
	if c.Transport == "" {
		c.Transport = "streamablehttp"
	}
	switch {
	case !strings.HasPrefix(s.URL, "http://") && !strings.HasPrefix(s.URL, "https://"):
		return Checked{}, errors.New("url must be an http:// or https:// URL of the upstream's MCP endpoint")
	case c.Transport != "streamablehttp" && c.Transport != "sse":
		return Checked{}, fmt.Errorf(`transport %q: must be "streamablehttp" (the default) or "sse" (HTTP+SSE of 2024-11-05: url is the server's event stream, e.g. http://host:3001/sse)`, s.Transport)
	}
	switch s.AuthType {
	case "":
	case "bearer":
		if s.AuthToken == "" {
			return Checked{}, errors.New("auth_type bearer needs auth_token")
		}
		c.HeaderName, c.HeaderValue = "Authorization", "Bearer "+s.AuthToken
	case "authheaders":
		if s.AuthHeaderKey == "" || s.AuthHeaderValue == "" {
			return Checked{}, errors.New("auth_type authheaders needs auth_header_key and auth_header_value")
		}
		c.HeaderName, c.HeaderValue = s.AuthHeaderKey, s.AuthHeaderValue
	default:
		return Checked{}, fmt.Errorf(`auth_type %q: must be "", "bearer" or "authheaders"`, s.AuthType)
	}
	if c.HeaderValue != "" && !canSeal {
		return Checked{}, errors.New("credentials of upstreams are stored encrypted: set AUTH_ENCRYPTION_SECRET")
	}
	return c, nil
}

// ValidName says whether name can name an upstream: a valid tool name
// without the separator of namespaced tool names.
func ValidName(name, separator string) bool {
	return ValidToolName(name) && !strings.Contains(name, separator)
}

// ValidToolName says whether name is a valid MCP tool name: 1 to 128 of
// A-Z a-z 0-9 _ - . (the 2025-11-25 specification's characters).
func ValidToolName(name string) bool {
	if len(name) == 0 || len(name) > 128 {
		return false
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-' || c == '.') {
			return false
		}
	}
	return true
}

// File is the content of GATEWAYS_FILE.
type File struct {
	Gateways []Spec `json:"gateways"`
}
