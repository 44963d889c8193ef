package config

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/mcpgateway/mcpgateway/internal/gatewayspec"
)

// ErrGatewaysFile is a GatewaysFile that cannot be used.
var ErrGatewaysFile = errors.New("invalid gateways file")

// loadGateways reads GatewaysFile once, in the process that runs Load (the
// master at start and on HUP), checks every entry as the admin API checks a
// registration, and keeps the result in GatewaysJSON for the workers, which
// never read files. A bad file stops the master, naming the entry.
func (b *builder) loadGateways(dir string) error {
	s := &b.s
	s.GatewaysJSON = ""
	b.sources["GatewaysJSON"] = Source{Kind: "derived", Name: "from GatewaysFile"}
	b.raw["GatewaysJSON"] = ""
	if s.GatewaysFile == "" {
		return nil
	}
	fail := func(err error) error {
		return &Error{Setting: "GatewaysFile", Source: b.sources["GatewaysFile"].String(), Value: s.GatewaysFile,
			Err: fmt.Errorf("%w: %w", ErrGatewaysFile, err), Accepted: rules["GatewaysFile"].accepted}
	}
	data, err := os.ReadFile(resolvePath(dir, s.GatewaysFile))
	if err != nil {
		return fail(err)
	}
	if len(bytes.TrimSpace(data)) == 0 {
		return fail(errors.New("the file is empty"))
	}
	f, err := ParseGateways(string(data))
	if err != nil {
		return fail(err)
	}
	seen := map[string]bool{}
	for i, g := range f {
		if !gatewayspec.ValidName(g.Name, s.GatewayToolNameSeparator) {
			return fail(fmt.Errorf("gateway %d: name %q: use 1 to 128 of A-Z a-z 0-9 _ - . without the separator %q", i+1, g.Name, s.GatewayToolNameSeparator))
		}
		if seen[g.Name] {
			return fail(fmt.Errorf("gateway %q is listed twice", g.Name))
		}
		seen[g.Name] = true
		if _, err := g.Check(s.AuthEncryptionSecret != ""); err != nil {
			return fail(fmt.Errorf("gateway %q: %w", g.Name, err))
		}
	}
	out, _ := json.Marshal(gatewayspec.File{Gateways: f})
	s.GatewaysJSON = string(out)
	return nil
}

// ParseGateways reads a gateways file (or GatewaysJSON): one object with a
// "gateways" list; unknown fields are refused, so that a misspelt one is
// not silently ignored.
func ParseGateways(text string) ([]gatewayspec.Spec, error) {
	if text == "" {
		return nil, nil
	}
	dec := json.NewDecoder(bytes.NewReader([]byte(text)))
	dec.DisallowUnknownFields()
	var f gatewayspec.File
	if err := dec.Decode(&f); err != nil {
		return nil, fmt.Errorf("not a gateways file: %w", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, errors.New("not a gateways file: data after the object")
	}
	return f.Gateways, nil
}
