package config

import (
	"bufio"
	"bytes"
	"fmt"
	"strings"
)

// dotenv is a parsed .env file. Its values are never put into the process
// environment: they are one layer of the configuration, below the environment.
type dotenv struct {
	path string            // as shown to the user
	vars map[string]string // KEY → value
	line map[string]int    // KEY → line of its last assignment
}

// parseDotenv reads KEY=VALUE lines: blank lines and # comments are skipped,
// "export " is allowed, values may be single-quoted (literal) or double-quoted
// (\" \\ \n \t \r \$ escapes). An unquoted value ends at " #".
func parseDotenv(path string, data []byte) (*dotenv, error) {
	d := &dotenv{path: path, vars: map[string]string{}, line: map[string]int{}}
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for n := 1; sc.Scan(); n++ {
		text := strings.TrimSpace(strings.TrimPrefix(sc.Text(), "\ufeff"))
		if text == "" || strings.HasPrefix(text, "#") {
			continue
		}
		if rest, ok := strings.CutPrefix(text, "export"); ok && rest != "" && (rest[0] == ' ' || rest[0] == '\t') {
			text = strings.TrimSpace(rest)
		}
		key, raw, ok := strings.Cut(text, "=")
		key = strings.TrimSpace(key)
		if !ok || !validEnvName(key) {
			return nil, fmt.Errorf("%s:%d: expected KEY=VALUE", path, n)
		}
		value, err := dotenvValue(strings.TrimSpace(raw))
		if err != nil {
			return nil, fmt.Errorf("%s:%d: %s: %w", path, n, key, err)
		}
		d.vars[key] = value
		d.line[key] = n
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	return d, nil
}

func dotenvValue(raw string) (string, error) {
	if raw == "" {
		return "", nil
	}
	switch quote := raw[0]; quote {
	case '\'', '"':
		var b strings.Builder
		for i := 1; i < len(raw); i++ {
			c := raw[i]
			switch {
			case c == quote:
				if rest := strings.TrimSpace(raw[i+1:]); rest != "" && !strings.HasPrefix(rest, "#") {
					return "", fmt.Errorf("unexpected text after closing quote: %q", rest)
				}
				return b.String(), nil
			case c == '\\' && quote == '"' && i+1 < len(raw):
				i++
				b.WriteString(unescape(raw[i]))
			default:
				b.WriteByte(c)
			}
		}
		return "", fmt.Errorf("missing closing %c", quote)
	}
	// Unquoted: a comment starts at a # preceded by white space.
	for i := 1; i < len(raw); i++ {
		if raw[i] == '#' && (raw[i-1] == ' ' || raw[i-1] == '\t') {
			raw = raw[:i]
			break
		}
	}
	return strings.TrimSpace(raw), nil
}

func unescape(c byte) string {
	switch c {
	case 'n':
		return "\n"
	case 't':
		return "\t"
	case 'r':
		return "\r"
	case '"', '\\', '$':
		return string(c)
	}
	return "\\" + string(c) // unknown escapes are kept as written
}

func validEnvName(s string) bool {
	if s == "" {
		return false
	}
	for i, c := range s {
		letter := c == '_' || (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z')
		if !letter && (i == 0 || c < '0' || c > '9') {
			return false
		}
	}
	return true
}
