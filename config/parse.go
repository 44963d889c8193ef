package config

import (
	"errors"
	"fmt"
	"math"
	"reflect"
	"strconv"
	"strings"
	"time"
)

// textParsers turn one text value (environment, .env, flag) into a field of
// that type. caarlos0/env uses them through Options.FuncMap and the flags call
// them directly, so every text source accepts exactly the same spellings.
var textParsers = map[reflect.Type]func(string) (any, error){
	reflect.TypeFor[string]():        func(s string) (any, error) { return s, nil },
	reflect.TypeFor[int]():           func(s string) (any, error) { return parseInt(s) },
	reflect.TypeFor[bool]():          func(s string) (any, error) { return parseBool(s) },
	reflect.TypeFor[time.Duration](): func(s string) (any, error) { return parseDuration(s) },
	reflect.TypeFor[[]string]():      func(s string) (any, error) { return parseList(s), nil },
}

// parseText parses s for the named field of Settings.
func parseText(field string, s string) (any, error) {
	switch field {
	case "Workers":
		return parseWorkers(s)
	case "Backpressure":
		return parseBackpressure(s)
	}
	f, ok := settingsType.FieldByName(field)
	if !ok {
		return nil, fmt.Errorf("no setting %s", field)
	}
	return textParsers[f.Type](s)
}

func parseInt(s string) (int, error) {
	n, err := strconv.Atoi(strings.TrimSpace(s))
	if err != nil {
		return 0, errors.New("not a whole number")
	}
	return n, nil
}

// parseBool accepts what strconv.ParseBool does plus yes/no/on/off, the
// spellings found in .env files and systemd units.
func parseBool(s string) (bool, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "1", "t", "true", "y", "yes", "on":
		return true, nil
	case "0", "f", "false", "n", "no", "off":
		return false, nil
	}
	return false, errors.New("not a boolean")
}

// parseDuration reads a number of seconds ("600", "0.5"), Gunicorn's and
// Granian's habit, or a Go duration ("10m", "1.5s").
func parseDuration(s string) (time.Duration, error) {
	s = strings.TrimSpace(s)
	if f, err := strconv.ParseFloat(s, 64); err == nil {
		return secondsToDuration(f)
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, errors.New("neither a number of seconds nor a Go duration")
	}
	return d, nil
}

func secondsToDuration(sec float64) (time.Duration, error) {
	ns := math.Round(sec * float64(time.Second))
	if math.IsNaN(ns) || ns > math.MaxInt64 || ns < math.MinInt64 {
		return 0, errors.New("duration out of range")
	}
	return time.Duration(ns), nil
}

// parseList splits a comma-separated list, dropping blanks: "a, b," is [a b].
func parseList(s string) []string {
	var out []string
	for _, part := range strings.Split(s, ",") {
		if part = strings.TrimSpace(part); part != "" {
			out = append(out, part)
		}
	}
	return out
}

// parseWorkers reads "auto" or a count from 1 to 256. The range is checked
// here rather than after merging because 0 is how "auto" is held.
func parseWorkers(s string) (int, error) {
	if strings.EqualFold(strings.TrimSpace(s), "auto") {
		return workersAuto, nil
	}
	n, err := parseInt(s)
	if err != nil {
		return 0, err
	}
	return checkWorkers(n)
}

func checkWorkers(n int) (int, error) {
	if n < 1 || n > maxWorkers {
		return 0, fmt.Errorf("%d is out of range", n)
	}
	return n, nil
}

const maxWorkers = 256

// backpressure is a Backpressure text as read from any source: a fixed
// in-flight limit (0: off), or "auto" with a ceiling. builder.apply sets
// Settings.Backpressure and Settings.BackpressureAuto from it, together, so
// that a later layer's "16" also turns an earlier layer's "auto" off.
type backpressure struct {
	n              int  // the limit, or with auto the ceiling
	auto           bool // adapt the limit to measured latency, up to n
	profileCeiling bool // plain "auto": the ceiling is the profile's default number
}

// parseBackpressure reads a whole number of 0 or more, "auto" or "auto:N"
// with N of 1 or more (any case, spaces around the parts allowed).
func parseBackpressure(s string) (backpressure, error) {
	t := strings.ToLower(strings.TrimSpace(s))
	if t == "auto" {
		return backpressure{auto: true, profileCeiling: true}, nil
	}
	if rest, ok := strings.CutPrefix(t, "auto:"); ok {
		n, err := parseInt(rest)
		switch {
		case err != nil:
			return backpressure{}, errors.New("the ceiling of auto:N is not a whole number")
		case n < 1:
			return backpressure{}, fmt.Errorf("the ceiling of auto:N must be 1 or more, not %d", n)
		}
		return backpressure{n: n, auto: true}, nil
	}
	n, err := parseInt(t)
	if err != nil {
		return backpressure{}, errors.New(`neither a whole number nor "auto" or "auto:N"`)
	}
	return backpressure{n: n}, nil // a negative n fails the range check after merging
}

// profileBackpressure is a profile's default Backpressure number: the
// ceiling of a plain "auto".
func profileBackpressure(profile string) int {
	s, err := Defaults(profile)
	if err != nil {
		return 0
	}
	return s.Backpressure
}

// backpressureText writes Backpressure back the way the text sources take
// it: "16" (fixed), "auto" (the profile's ceiling) or "auto:64".
func backpressureText(n int, auto bool, profile string) string {
	switch {
	case !auto:
		return strconv.Itoa(n)
	case n == 0 || n == profileBackpressure(profile):
		return "auto"
	}
	return "auto:" + strconv.Itoa(n)
}
