package rpc

import (
	"encoding/json"
	"strings"
	"testing"
)

func TestValidate(t *testing.T) {
	valid := []string{
		`{}`, `[]`, ` { } `, `[ ]`, `0`, `-0`, `1.5e+10`, `-1E-2`, `"x"`, `true`, `false`, `null`,
		`{"a":[1,{"b":null}],"c":"\u00e9\n\"\\\/"}`, "\t[1 ,\r\n 2]\n", `"😀"`, `"\ud83d\ude00"`, `"\ud800"`,
		strings.Repeat("[", 64) + strings.Repeat("]", 64),
		`{"a":` + strings.Repeat("{\"a\":", 63) + `1` + strings.Repeat("}", 63) + `}`,
	}
	for _, s := range valid {
		if err := validate([]byte(s)); err != nil {
			t.Errorf("validate(%q): %v", s, err)
		}
		if !json.Valid([]byte(s)) {
			t.Errorf("test case %q is not valid JSON", s)
		}
	}
	invalid := map[string]string{
		``:                 "unexpected end",
		`{`:                "unexpected end",
		`{"a"`:             "unexpected end",
		`{"a":}`:           "invalid character",
		`{"a":1,}`:         "expected string object key",
		`{,}`:              "expected string object key",
		`[1,]`:             "invalid character",
		`[1 2]`:            "after value",
		`{"a" 1}`:          "expected ':'",
		`{1:2}`:            "expected string object key",
		`01`:               "after top-level value",
		`1.`:               "no digits after decimal point",
		`1e`:               "no digits in exponent",
		`-`:                "invalid number",
		`+1`:               "invalid character",
		`.5`:               "invalid character",
		`tru`:              "expected true",
		`nul`:              "expected null",
		`"abc`:             "unexpected end",
		`"a\x"`:            "invalid escape",
		`"\u12"`:           `invalid \u escape`,
		"\"a\x01\"":        "control character",
		"\"a\xff\"":        "invalid UTF-8",
		"\"\xed\xa0\x80\"": "invalid UTF-8", // a surrogate encoded in UTF-8
		"\"\xc0\xaf\"":     "invalid UTF-8", // overlong
		`{} {}`:            "after top-level value",
		`[1]]`:             "after top-level value",
		`{"a":1]`:          "after value",
		`[1}`:              "after value",
		"\xef\xbb\xbf{}":   "invalid character", // a byte order mark is not JSON
		strings.Repeat("[", 65) + strings.Repeat("]", 65): "nested deeper than 64",
	}
	for s, want := range invalid {
		err := validate([]byte(s))
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("validate(%q) = %v, want %q", s, err, want)
		}
	}
}

func TestMembersAndElements(t *testing.T) {
	obj := []byte(` { "a" : 1 , "b\"c" : [ 1 , { "x" : "}" } ] , "d":"e" } `)
	obj = trimValue(obj)
	var got []string
	for it := objectMembers(obj); ; {
		k, v, ok := it.next()
		if !ok {
			break
		}
		got = append(got, string(unquote(k))+"="+string(v))
	}
	if want := `a=1|b"c=[ 1 , { "x" : "}" } ]|d="e"`; strings.Join(got, "|") != want {
		t.Errorf("members: %q", strings.Join(got, "|"))
	}
	got = nil
	for it := arrayElements([]byte(`[ 1, "a]" ,[2,[3]], {"b":"]"},null ]`)); ; {
		v, ok := it.next()
		if !ok {
			break
		}
		got = append(got, string(v))
	}
	if want := `1|"a]"|[2,[3]]|{"b":"]"}|null`; strings.Join(got, "|") != want {
		t.Errorf("elements: %q", strings.Join(got, "|"))
	}
	for it := objectMembers([]byte(`{}`)); ; {
		if _, _, ok := it.next(); ok {
			t.Error("member in {}")
		}
		break
	}
}

func TestUnquote(t *testing.T) {
	for raw, want := range map[string]string{
		`"plain"`:                   "plain",
		`""`:                        "",
		`"a\"b\\c\/d"`:              `a"b\c/d`,
		`"\b\f\n\r\t"`:              "\b\f\n\r\t",
		`"\u00e9\u4e2d"`:            "é中",
		`"\ud83d\ude00"`:            "😀",
		`"\ud800"`:                  "\ufffd",
		`"\ud800x"`:                 "\ufffdx",
		`"\ude00\ud83d"`:            "\ufffd\ufffd",
		`"\ud83d\u0041"`:            "\ufffdA",
		`"\u0000"`:                  "\x00",
		`"Europe\/Berlin"`:          "Europe/Berlin",
		`"caf\u00E9 \u00e9t\u00C9"`: "café étÉ",
	} {
		if got := string(unquote([]byte(raw))); got != want {
			t.Errorf("unquote(%s) = %q, want %q", raw, got, want)
		}
		// encoding/json agrees.
		var std string
		if err := json.Unmarshal([]byte(raw), &std); err != nil || std != want {
			t.Errorf("encoding/json reads %s as %q", raw, std)
		}
	}
	// Without escapes: no copy.
	raw := []byte(`"abc"`)
	if u := unquote(raw); &u[0] != &raw[1] {
		t.Error("unquote copied a string without escapes")
	}
}

func TestAppendStringMatchesEncodingJSON(t *testing.T) {
	for _, s := range []string{
		"", "plain", `quote " backslash \ slash /`, "<script>&amp;</script>", "\x00\x01\x1f\x7f",
		"tab\tnl\ncr\r", "é中😀", "\u2028\u2029", "bad \xff utf8 \xc0", "\xed\xa0\x80",
		strings.Repeat(`"`, 1000), strings.Repeat("x", 5000) + "\x01",
	} {
		want, _ := json.Marshal(s)
		if got := appendString(nil, s); string(got) != string(want) {
			t.Errorf("appendString(%q)\n got %s\nwant %s", s, got, want)
		}
		if got := appendString([]byte("prefix"), []byte(s)); string(got) != "prefix"+string(want) {
			t.Errorf("appendString([]byte %q) = %s", s, got)
		}
		// Into a full buffer, so that it must grow on every escape path.
		full := make([]byte, 3, 3)
		if got := appendString(full, s); string(got[3:]) != string(want) {
			t.Errorf("appendString into a full buffer: %s", got)
		}
	}
	if n := testing.AllocsPerRun(100, func() {
		var buf [64]byte
		_ = appendString(buf[:0], "no allocation é")
	}); n != 0 {
		t.Errorf("appendString allocates %v times", n)
	}
}
