package rpc

import (
	"fmt"
	"slices"
	"unicode/utf16"
	"unicode/utf8"
)

// This file is a small JSON reader written for the request path.
//
// Why not encoding/json: a request body is read twice at most (one validation
// pass, then one pass that picks out the few fields the gateway needs), both
// without reflection or allocation, and the validation pass enforces the
// limits that encoding/json does not: nesting at most maxDepth levels (it
// allows 10,000) and strictly valid UTF-8 (it silently replaces bad bytes).
// Both passes are iterative, so hostile nesting cannot grow the stack.
//
// Every helper below other than validate assumes its input already passed
// validate, which keeps them short.

// maxDepth is the deepest nesting of objects and arrays a request may use.
// The nesting state fits one bit per level in a uint64.
const maxDepth = 64

// syntaxError is a JSON parse failure with the byte offset it was found at.
type syntaxError struct {
	msg string
	off int
}

func (e *syntaxError) Error() string { return fmt.Sprintf("%s at offset %d", e.msg, e.off) }

func errAt(msg string, off int) error { return &syntaxError{msg: msg, off: off} }

func isSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' }

func skipWS(b []byte, i int) int {
	for i < len(b) && isSpace(b[i]) {
		i++
	}
	return i
}

// validate reports whether b holds exactly one JSON value (RFC 8259), nested
// no deeper than maxDepth, whose strings are valid UTF-8.
func validate(b []byte) error {
	var objects uint64 // bit d-1 is set when nesting level d is an object
	depth := 0
	i := skipWS(b, 0)
value:
	for {
		if i >= len(b) {
			return errAt("unexpected end of JSON input", i)
		}
		var err error
		switch c := b[i]; {
		case c == '{' || c == '[':
			if depth == maxDepth {
				return errAt(fmt.Sprintf("JSON nested deeper than %d levels", maxDepth), i)
			}
			depth++
			i = skipWS(b, i+1)
			if c == '[' {
				objects &^= 1 << (depth - 1)
				if i < len(b) && b[i] == ']' {
					i++
					depth--
					break // an empty array is a complete value
				}
				continue value
			}
			objects |= 1 << (depth - 1)
			if i < len(b) && b[i] == '}' {
				i++
				depth--
				break // an empty object is a complete value
			}
			if i, err = scanKey(b, i); err != nil {
				return err
			}
			continue value
		case c == '"':
			if i, err = scanString(b, i); err != nil {
				return err
			}
		case c == 't':
			if i, err = scanLiteral(b, i, "true"); err != nil {
				return err
			}
		case c == 'f':
			if i, err = scanLiteral(b, i, "false"); err != nil {
				return err
			}
		case c == 'n':
			if i, err = scanLiteral(b, i, "null"); err != nil {
				return err
			}
		case c == '-' || (c >= '0' && c <= '9'):
			if i, err = scanNumber(b, i); err != nil {
				return err
			}
		default:
			return errAt(fmt.Sprintf("invalid character %q looking for beginning of value", c), i)
		}
		// A value just ended: close containers, or step to the next element.
		for {
			i = skipWS(b, i)
			if depth == 0 {
				if i != len(b) {
					return errAt("invalid character after top-level value", i)
				}
				return nil
			}
			if i >= len(b) {
				return errAt("unexpected end of JSON input", i)
			}
			inObject := objects&(1<<(depth-1)) != 0
			switch c := b[i]; {
			case c == ',':
				i = skipWS(b, i+1)
				if inObject {
					if i, err = scanKey(b, i); err != nil {
						return err
					}
				}
				continue value
			case (c == '}' && inObject) || (c == ']' && !inObject):
				i++
				depth--
			default:
				return errAt(fmt.Sprintf("invalid character %q after value", c), i)
			}
		}
	}
}

// scanKey reads `"key" :` and returns the offset of the member's value.
func scanKey(b []byte, i int) (int, error) {
	if i >= len(b) {
		return i, errAt("unexpected end of JSON input", i)
	}
	if b[i] != '"' {
		return i, errAt("expected string object key", i)
	}
	i, err := scanString(b, i)
	if err != nil {
		return i, err
	}
	i = skipWS(b, i)
	if i >= len(b) {
		return i, errAt("unexpected end of JSON input", i)
	}
	if b[i] != ':' {
		return i, errAt("expected ':' after object key", i)
	}
	return skipWS(b, i+1), nil
}

// scanString checks the string starting at b[i] == '"' and returns the offset
// just past its closing quote.
func scanString(b []byte, i int) (int, error) {
	j := i + 1
	for j < len(b) {
		c := b[j]
		switch {
		case c == '"':
			return j + 1, nil
		case c == '\\':
			if j+1 >= len(b) {
				return j, errAt("unexpected end of JSON input in string escape", j)
			}
			switch b[j+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				j += 2
			case 'u':
				if j+6 > len(b) || !isHex(b[j+2]) || !isHex(b[j+3]) || !isHex(b[j+4]) || !isHex(b[j+5]) {
					return j, errAt(`invalid \u escape in string`, j)
				}
				j += 6
			default:
				return j, errAt(fmt.Sprintf("invalid escape %q in string", b[j+1]), j)
			}
		case c < 0x20:
			return j, errAt("control character in string", j)
		case c < utf8.RuneSelf:
			j++
		default:
			r, size := utf8.DecodeRune(b[j:])
			if r == utf8.RuneError && size == 1 {
				return j, errAt("invalid UTF-8 in string", j)
			}
			j += size
		}
	}
	return j, errAt("unexpected end of JSON input in string", j)
}

func scanLiteral(b []byte, i int, lit string) (int, error) {
	if len(b)-i < len(lit) || string(b[i:i+len(lit)]) != lit {
		return i, errAt("invalid literal, expected "+lit, i)
	}
	return i + len(lit), nil
}

// scanNumber checks -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?
func scanNumber(b []byte, i int) (int, error) {
	j := i
	if b[j] == '-' {
		j++
	}
	switch {
	case j < len(b) && b[j] == '0':
		j++
	case j < len(b) && b[j] >= '1' && b[j] <= '9':
		j = skipDigits(b, j)
	default:
		return j, errAt("invalid number", j)
	}
	if j < len(b) && b[j] == '.' {
		k := skipDigits(b, j+1)
		if k == j+1 {
			return k, errAt("invalid number: no digits after decimal point", k)
		}
		j = k
	}
	if j < len(b) && (b[j] == 'e' || b[j] == 'E') {
		j++
		if j < len(b) && (b[j] == '+' || b[j] == '-') {
			j++
		}
		k := skipDigits(b, j)
		if k == j {
			return k, errAt("invalid number: no digits in exponent", k)
		}
		j = k
	}
	return j, nil
}

func skipDigits(b []byte, j int) int {
	for j < len(b) && b[j] >= '0' && b[j] <= '9' {
		j++
	}
	return j
}

func isHex(c byte) bool {
	return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F')
}

// --- Readers for validated JSON ---------------------------------------------

// skipString returns the offset just past the string starting at b[i] == '"'.
func skipString(b []byte, i int) int {
	for j := i + 1; j < len(b); j++ {
		switch b[j] {
		case '\\':
			j++
		case '"':
			return j + 1
		}
	}
	return len(b)
}

// skipValue returns the offset just past the value starting at b[i].
// Containers are skipped by counting brackets outside strings: no recursion.
func skipValue(b []byte, i int) int {
	switch b[i] {
	case '"':
		return skipString(b, i)
	case '{', '[':
		depth := 0
		for j := i; j < len(b); j++ {
			switch b[j] {
			case '"':
				j = skipString(b, j) - 1
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return j + 1
				}
			}
		}
		return len(b)
	default: // number or literal
		j := i
		for j < len(b) && !isSpace(b[j]) && b[j] != ',' && b[j] != '}' && b[j] != ']' {
			j++
		}
		return j
	}
}

// trimValue returns b without surrounding whitespace.
func trimValue(b []byte) []byte {
	i := skipWS(b, 0)
	j := len(b)
	for j > i && isSpace(b[j-1]) {
		j--
	}
	return b[i:j]
}

// members iterates over the members of a validated JSON object.
type members struct {
	b []byte
	i int
}

// objectMembers starts an iteration over obj, which must begin with '{'.
func objectMembers(obj []byte) members { return members{b: obj, i: 1} }

// next returns the raw key (with its quotes) and the raw value of the next
// member, or ok == false at the end of the object.
func (m *members) next() (key, val []byte, ok bool) {
	i := skipWS(m.b, m.i)
	if i < len(m.b) && m.b[i] == ',' {
		i = skipWS(m.b, i+1)
	}
	if i >= len(m.b) || m.b[i] != '"' {
		return nil, nil, false
	}
	ke := skipString(m.b, i)
	key = m.b[i:ke]
	vs := skipWS(m.b, skipWS(m.b, ke)+1) // past the ':'
	ve := skipValue(m.b, vs)
	m.i = ve
	return key, m.b[vs:ve], true
}

// elements iterates over the elements of a validated JSON array.
type elements struct {
	b []byte
	i int
}

func arrayElements(arr []byte) elements { return elements{b: arr, i: 1} }

func (e *elements) next() (val []byte, ok bool) {
	i := skipWS(e.b, e.i)
	if i < len(e.b) && e.b[i] == ',' {
		i = skipWS(e.b, i+1)
	}
	if i >= len(e.b) || e.b[i] == ']' {
		return nil, false
	}
	ve := skipValue(e.b, i)
	e.i = ve
	return e.b[i:ve], true
}

// keyIs reports whether the raw key (with quotes) names name. Keys are
// compared exactly (JSON-RPC is case-sensitive), after unescaping.
func keyIs(raw []byte, name string) bool {
	inner := raw[1 : len(raw)-1]
	if !hasBackslash(inner) {
		return string(inner) == name
	}
	return string(unquote(raw)) == name
}

func hasBackslash(b []byte) bool {
	for _, c := range b {
		if c == '\\' {
			return true
		}
	}
	return false
}

// unquote returns the contents of the raw JSON string raw. Without escapes it
// returns a sub-slice of raw (no copy: the hot path); with escapes it decodes
// into a new slice. Lone surrogates become U+FFFD, as in encoding/json, so the
// result is always valid UTF-8.
func unquote(raw []byte) []byte {
	inner := raw[1 : len(raw)-1]
	if !hasBackslash(inner) {
		return inner
	}
	out := make([]byte, 0, len(inner))
	for i := 0; i < len(inner); {
		c := inner[i]
		if c != '\\' {
			out = append(out, c)
			i++
			continue
		}
		switch e := inner[i+1]; e {
		case 'b':
			out = append(out, '\b')
		case 'f':
			out = append(out, '\f')
		case 'n':
			out = append(out, '\n')
		case 'r':
			out = append(out, '\r')
		case 't':
			out = append(out, '\t')
		case 'u':
			r := rune(hex4(inner[i+2 : i+6]))
			i += 6
			if utf16.IsSurrogate(r) {
				r2 := utf8.RuneError
				if i+6 <= len(inner) && inner[i] == '\\' && inner[i+1] == 'u' {
					r2 = utf16.DecodeRune(r, rune(hex4(inner[i+2:i+6])))
					if r2 != utf8.RuneError {
						i += 6
					}
				}
				r = r2
			}
			out = utf8.AppendRune(out, r)
			continue
		default: // '"', '\\', '/'
			out = append(out, e)
		}
		i += 2
	}
	return out
}

func hex4(b []byte) int {
	n := 0
	for _, c := range b[:4] {
		n <<= 4
		switch {
		case c >= '0' && c <= '9':
			n |= int(c - '0')
		case c >= 'a' && c <= 'f':
			n |= int(c-'a') + 10
		default:
			n |= int(c-'A') + 10
		}
	}
	return n
}

// --- Writers ------------------------------------------------------------------

const hexDigits = "0123456789abcdef"

// plainASCII[c] is true for the bytes appendString copies as they are: all
// printable ASCII but '"', '\\' and the HTML-sensitive '<', '>' and '&'.
// A table keeps the common case to one load and one branch per byte.
var plainASCII = func() (t [256]bool) {
	for c := 0x20; c < utf8.RuneSelf; c++ {
		t[c] = c != '"' && c != '\\' && c != '<' && c != '>' && c != '&'
	}
	return t
}()

// appendString appends s as a JSON string. It works on string and []byte
// alike without converting (no allocation). Invalid UTF-8 becomes U+FFFD so
// the output is always valid JSON; <, > and & are escaped so that a body
// sniffed as HTML cannot run script.
//
// It writes by index into spare capacity rather than appending piece by
// piece: the tool results it escapes are JSON themselves, a quote every few
// bytes, and this halves the cost of escaping them.
func appendString[T string | []byte](dst []byte, s T) []byte {
	n := len(dst)
	buf := slices.Grow(dst, len(s)+8)
	buf = buf[:cap(buf)]
	buf[n] = '"'
	n++
	for i := 0; i < len(s); {
		if len(buf)-n < 8 { // room for the longest escape, and the closing quote
			buf = slices.Grow(buf[:n], 8+len(s)-i)
			buf = buf[:cap(buf)]
		}
		c := s[i]
		if plainASCII[c] {
			buf[n] = c
			n++
			i++
			continue
		}
		if c < utf8.RuneSelf {
			buf[n] = '\\'
			switch c {
			case '"', '\\':
				buf[n+1] = c
			case '\n':
				buf[n+1] = 'n'
			case '\r':
				buf[n+1] = 'r'
			case '\t':
				buf[n+1] = 't'
			default:
				buf[n+1], buf[n+2], buf[n+3], buf[n+4], buf[n+5] = 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf]
				n += 4
			}
			n += 2
			i++
			continue
		}
		var r rune
		var size int
		switch v := any(s).(type) {
		case string:
			r, size = utf8.DecodeRuneInString(v[i:])
		case []byte:
			r, size = utf8.DecodeRune(v[i:])
		}
		switch {
		case r == utf8.RuneError && size == 1:
			n += copy(buf[n:], `\ufffd`)
		case r == '\u2028' || r == '\u2029': // valid JSON, but breaks JavaScript parsers
			n += copy(buf[n:], `\u202`)
			buf[n] = hexDigits[r&0xf]
			n++
		default:
			n += copy(buf[n:], s[i:i+size])
		}
		i += size
	}
	buf[n] = '"'
	return buf[:n+1]
}
