package config

import (
	"fmt"
	"io"
	"reflect"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
)

// Print writes one aligned line per setting: name, value, source. Secrets
// (JWTSecretKey, KeyFilePassword, passwords inside DatabaseURL and RedisURL)
// are masked.
func (r *Resolved) Print(w io.Writer) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for i := range settingsType.NumField() {
		name := settingsType.Field(i).Name
		fmt.Fprintf(tw, "%s\t%s\t%s\n", name, settingText(&r.Settings, r.Profile, i), r.Sources[name])
	}
	tw.Flush()
}

// settingText shows field i of s the way the text sources accept it;
// Backpressure, whose text also holds BackpressureAuto, needs the profile.
func settingText(s *Settings, profile string, i int) string {
	name := settingsType.Field(i).Name
	if name == "Backpressure" {
		return backpressureText(s.Backpressure, s.BackpressureAuto, profile)
	}
	return formatValue(name, reflect.ValueOf(s).Elem().Field(i))
}

// formatValue shows a setting's value the way the text sources accept it.
func formatValue(field string, v reflect.Value) string {
	switch x := v.Interface().(type) {
	case string:
		if x = maskValue(field, x); x == "" {
			return `""`
		}
		return x
	case []string:
		if len(x) == 0 {
			return `""`
		}
		return strings.Join(x, ",")
	case time.Duration:
		return x.String()
	case int:
		if field == "Workers" && x == workersAuto {
			return "auto"
		}
		return strconv.Itoa(x)
	}
	return fmt.Sprint(v.Interface())
}
