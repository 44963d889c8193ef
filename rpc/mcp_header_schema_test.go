package rpc

import (
	"strings"
	"testing"
)

// TestAdminToolHeaderAnnotations: PUT /admin/tools refuses an input schema
// whose x-mcp-header annotations a 2026-07-28 client would reject, with 400
// naming the property, and stores a valid one.
func TestAdminToolHeaderAnnotations(t *testing.T) {
	s, _ := newTestServer(t, nil)
	put := func(schema string) result {
		return adminCall(t, s, "PUT", "/admin/tools/annotated", `{"description":"d","inputSchema":`+schema+`}`)
	}
	valid := `{"type":"object","properties":{
		"region":{"type":"string","x-mcp-header":"Region"},
		"count":{"type":"integer","x-mcp-header":"Count"},
		"ratio":{"type":"number","x-mcp-header":"Ratio"},
		"opts":{"type":"object","properties":{"deep":{"type":"boolean","x-mcp-header":"X-Deep_1.~"}}},
		"plain":{"type":"string","default":{"x-mcp-header":"not a schema"}}}}`
	if r := put(valid); r.status != 200 {
		t.Fatalf("valid schema: %d %s", r.status, r.body)
	}
	for _, c := range []struct{ name, schema, detail string }{
		{"empty", `{"properties":{"region":{"type":"string","x-mcp-header":""}}}`,
			"x-mcp-header of property region (/properties/region) is empty"},
		{"not a string", `{"properties":{"region":{"type":"string","x-mcp-header":7}}}`,
			"x-mcp-header of property region (/properties/region) is empty or not a string"},
		{"space", `{"properties":{"region":{"type":"string","x-mcp-header":"My Region"}}}`,
			"x-mcp-header of property region (/properties/region) is not an HTTP token: My Region"},
		{"colon", `{"properties":{"region":{"type":"string","x-mcp-header":"Region:"}}}`,
			"x-mcp-header of property region (/properties/region) is not an HTTP token"},
		{"non-ASCII", `{"properties":{"region":{"type":"string","x-mcp-header":"Régión"}}}`,
			"x-mcp-header of property region (/properties/region) is not an HTTP token"},
		{"duplicate ignoring case", `{"properties":{"a":{"type":"string","x-mcp-header":"Region"},"b":{"type":"string","x-mcp-header":"REGION"}}}`,
			"x-mcp-header of property b (/properties/b) duplicates REGION of property a (/properties/a)"},
		{"nested duplicate", `{"properties":{"a":{"type":"string","x-mcp-header":"Region"},"o":{"type":"object","properties":{"r":{"type":"string","x-mcp-header":"region"}}}}}`,
			"x-mcp-header of property r (/properties/o/properties/r) duplicates"},
		{"object", `{"properties":{"opts":{"type":"object","x-mcp-header":"Opts"}}}`,
			"x-mcp-header of property opts (/properties/opts) is on a property whose type is not"},
		{"array", `{"properties":{"tags":{"type":"array","x-mcp-header":"Tags"}}}`,
			"x-mcp-header of property tags (/properties/tags) is on a property whose type is not"},
		{"no type", `{"properties":{"any":{"x-mcp-header":"Any"}}}`,
			"x-mcp-header of property any (/properties/any) is on a property whose type is not"},
		{"type list", `{"properties":{"n":{"type":["string","null"],"x-mcp-header":"N"}}}`,
			"x-mcp-header of property n (/properties/n) is on a property whose type is not"},
		{"root", `{"type":"string","x-mcp-header":"Root"}`,
			"x-mcp-header of property (root) () is not reachable through properties"},
		{"items", `{"properties":{"items":{"type":"array","items":{"type":"string","x-mcp-header":"Item"}}}}`,
			"x-mcp-header of property items (/properties/items/items) is not reachable through properties"},
		{"anyOf", `{"anyOf":[{"properties":{"r":{"type":"string","x-mcp-header":"R"}}}]}`,
			"x-mcp-header of property r (/anyOf/0/properties/r) is not reachable through properties"},
		{"$defs", `{"$defs":{"d":{"type":"string","x-mcp-header":"D"}}}`,
			"x-mcp-header of property d (/$defs/d) is not reachable through properties"},
		{"additionalProperties", `{"additionalProperties":{"type":"string","x-mcp-header":"A"}}`,
			"x-mcp-header of property additionalProperties (/additionalProperties) is not reachable"},
	} {
		t.Run(c.name, func(t *testing.T) {
			expectDetail(t, put(c.schema), 400, "Invalid inputSchema: "+c.detail)
		})
	}
	// A refused schema is not stored: the valid one stays.
	r := adminCall(t, s, "GET", "/admin/tools/annotated", "")
	if r.status != 200 || !strings.Contains(string(r.body), `"Ratio"`) {
		t.Fatalf("stored tool: %d %s", r.status, r.body)
	}
}
