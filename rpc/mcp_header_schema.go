package rpc

import (
	"encoding/json"
	"sort"
	"strconv"
	"strings"
)

// validateHeaderAnnotations checks the x-mcp-header annotations of a tool's
// input schema (MCP 2026-07-28, SEP-2243) before it is stored: a client must
// drop a tool whose annotations break the rules, so the admin API refuses it
// rather than publish a tool nobody can call. The rules: the value is a
// non-empty HTTP token (RFC 9110), unique among the schema's annotations
// ignoring case, on a property of a primitive type (string, integer,
// boolean; number too, as the conformance suite and the TypeScript SDK
// accept it), reached from the root through properties keys only. It
// returns "" when the schema is valid, else a message naming the property.
// It runs on the admin path only, so it decodes the schema plainly.
func validateHeaderAnnotations(schema []byte) string {
	var root any
	if err := json.Unmarshal(schema, &root); err != nil {
		return "" // isJSONObject has checked it already
	}
	seen := map[string]string{} // lower-cased header name -> property path
	return walkHeaderAnnotations(root, "", true, false, seen)
}

// walkHeaderAnnotations checks node at path (a JSON pointer). chain is true
// while node is the root or reached from it through properties only;
// isProp is true when node is itself such a property, the only place an
// annotation may stand.
func walkHeaderAnnotations(node any, path string, chain, isProp bool, seen map[string]string) string {
	switch n := node.(type) {
	case []any:
		for i, v := range n {
			if msg := walkHeaderAnnotations(v, path+"/"+strconv.Itoa(i), false, false, seen); msg != "" {
				return msg
			}
		}
	case map[string]any:
		if h, ok := n["x-mcp-header"]; ok {
			if msg := checkHeaderAnnotation(n, h, path, isProp && chain, seen); msg != "" {
				return msg
			}
		}
		for _, k := range sortedKeys(n) {
			v := n[k]
			switch k {
			case "x-mcp-header", "const", "enum", "default", "examples":
				continue // values, not schemas
			case "properties":
				props, ok := v.(map[string]any)
				if !ok {
					continue
				}
				for _, name := range sortedKeys(props) {
					p := path + "/properties/" + escapePointer(name)
					if msg := walkHeaderAnnotations(props[name], p, chain, true, seen); msg != "" {
						return msg
					}
				}
				continue
			}
			if msg := walkHeaderAnnotations(v, path+"/"+escapePointer(k), false, false, seen); msg != "" {
				return msg
			}
		}
	}
	return ""
}

// checkHeaderAnnotation checks one annotation h of the property schema prop.
func checkHeaderAnnotation(prop map[string]any, h any, path string, reachable bool, seen map[string]string) string {
	where := "x-mcp-header of property " + propertyName(path) + " (" + path + ")"
	if !reachable {
		return where + " is not reachable through properties"
	}
	name, ok := h.(string)
	switch {
	case !ok || name == "":
		return where + " is empty or not a string"
	case !isToken([]byte(name)):
		return where + " is not an HTTP token: " + name
	}
	if t, _ := prop["type"].(string); t != "string" && t != "integer" && t != "number" && t != "boolean" {
		return where + " is on a property whose type is not string, integer, number or boolean"
	}
	key := strings.ToLower(name)
	if other, dup := seen[key]; dup {
		return where + " duplicates " + name + " of property " + propertyName(other) + " (" + other + ")"
	}
	seen[key] = path
	return ""
}

// propertyName is the last segment of a JSON pointer ("" for the root).
func propertyName(path string) string {
	if path == "" {
		return "(root)"
	}
	seg := path[strings.LastIndexByte(path, '/')+1:]
	return strings.NewReplacer("~1", "/", "~0", "~").Replace(seg)
}

func escapePointer(s string) string {
	return strings.NewReplacer("~", "~0", "/", "~1").Replace(s)
}

// sortedKeys makes the first error reported the same on every run.
func sortedKeys(m map[string]any) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
