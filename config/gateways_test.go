package config

import (
	"bytes"
	"errors"
	"strings"
	"testing"
)

// GATEWAYS_FILE is read and checked by the master: a good file reaches the
// workers as GatewaysJSON (never printed: it holds credentials); a bad
// entry stops the master and is named.
func TestGatewaysFile(t *testing.T) {
	good := `{"gateways":[{"name":"everything","url":"http://127.0.0.1:3001/mcp"},
		{"name":"secured","url":"https://mcp.example.com/mcp","auth_type":"bearer","auth_token":"t0ken"}]}`
	input := in(t, nil, "JWT_SECRET_KEY="+testKey, "GATEWAYS_FILE=gw.json", "AUTH_ENCRYPTION_SECRET=s")
	writeFile(t, input.Dir, "gw.json", good)
	r := mustLoad(t, input)
	specs, err := ParseGateways(r.Settings.GatewaysJSON)
	if err != nil || len(specs) != 2 || specs[1].AuthToken != "t0ken" {
		t.Fatalf("GatewaysJSON %q: %v, %v", r.Settings.GatewaysJSON, specs, err)
	}
	var out bytes.Buffer
	r.Print(&out)
	if strings.Contains(out.String(), "t0ken") || !strings.Contains(out.String(), "********") {
		t.Errorf("config output shows a credential:\n%s", out.String())
	}

	for _, c := range []struct{ file, env, want string }{
		{`{"gateways":[{"name":"a","url":"ftp://x"}]}`, "", `gateway "a": url must be`},
		{`{"gateways":[{"name":"a-b","url":"http://x/mcp"}]}`, "", `gateway 1: name "a-b"`},
		{`{"gateways":[{"name":"a","url":"http://x/mcp"},{"name":"a","url":"http://y/mcp"}]}`, "", `"a" is listed twice`},
		{`{"gateways":[{"name":"a","url":"http://x/mcp","auth_type":"bearer","auth_token":"t"}]}`, "", "set AUTH_ENCRYPTION_SECRET"},
		{`{"gateways":[{"name":"a","url":"http://x/mcp","transport":"websocket"}]}`, "", `transport "websocket"`},
		{`{"gateways":[{"name":"a","uri":"http://x/mcp"}]}`, "", `unknown field "uri"`},
		{``, "", "the file is empty"},
		{`{"gateways":[]} x`, "", "not a gateways file"},
	} {
		input := in(t, nil, "JWT_SECRET_KEY="+testKey, "GATEWAYS_FILE=gw.json")
		writeFile(t, input.Dir, "gw.json", c.file)
		e := mustFail(t, input)
		if e.Setting != "GatewaysFile" || !errors.Is(e, ErrGatewaysFile) || !strings.Contains(e.Error(), c.want) {
			t.Errorf("file %q: %v, want GatewaysFile and %q", c.file, e, c.want)
		}
	}
	e := mustFail(t, in(t, nil, "JWT_SECRET_KEY="+testKey, "GATEWAYS_FILE=missing.json"))
	if e.Setting != "GatewaysFile" || !strings.Contains(e.Error(), "missing.json") {
		t.Errorf("a missing file: %v", e)
	}
}
