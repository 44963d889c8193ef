package config

import "reflect"

// Request-head limits: the ranges Gunicorn accepts.
const (
	// MaxLimitRequestLine is the largest LimitRequestLine (Gunicorn's 8190).
	MaxLimitRequestLine = 8190
	// MaxLimitRequestFields is the largest LimitRequestFields, and what 0
	// means (Gunicorn's 32768).
	MaxLimitRequestFields = 32768
	// MinMetricsToken is the shortest MetricsToken accepted.
	MinMetricsToken = 16
)

// RequestFieldsLimit is the header-field limit a worker gets: 0 means the
// maximum, as in Gunicorn.
func (s *Settings) RequestFieldsLimit() int {
	if s.LimitRequestFields <= 0 {
		return MaxLimitRequestFields
	}
	return s.LimitRequestFields
}

// validMetricsToken accepts no token, or one of at least MinMetricsToken
// bytes that can stand in an Authorization header as sent (visible ASCII:
// no spaces, no control characters).
func validMetricsToken(v reflect.Value) bool {
	t := v.String()
	if t == "" {
		return true
	}
	if len(t) < MinMetricsToken {
		return false
	}
	for i := 0; i < len(t); i++ {
		if t[i] <= ' ' || t[i] >= 0x7f {
			return false
		}
	}
	return true
}
