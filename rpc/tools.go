package rpc

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	_ "time/tzdata" // the IANA database inside the binary: a scratch container has none
)

const (
	toolConvertTime   = "convert_time"
	toolGetSystemTime = "get_system_time"
)

var (
	convertTimeArgs   = [3]string{"source_timezone", "target_timezone", "time"}
	getSystemTimeArgs = [1]string{"timezone"}
)

// The built-in tools' output schemas, listed as outputSchema by tools/list:
// what appendTimeInfo and convertTime write, which a successful call
// returns as structuredContent. They live beside that code, not in the
// store, so that the two cannot drift apart. No "format": "date-time", as a
// conversion past the year 9999 writes a five-digit year.
const (
	timeInfoSchema = `{"type":"object","properties":{` +
		`"timezone":{"type":"string","description":"IANA time zone"},` +
		`"datetime":{"type":"string","description":"RFC 3339 to the second, with a numeric offset"},` +
		`"day_of_week":{"type":"string","enum":["Monday","Tuesday","Wednesday","Thursday","Friday","Saturday","Sunday"]},` +
		`"is_dst":{"type":"boolean","description":"whether the zone's clocks are set forward (summer time)"}},` +
		`"required":["timezone","datetime","day_of_week","is_dst"],"additionalProperties":false}`
	convertTimeOutputSchema = `{"type":"object","properties":{` +
		`"source":` + timeInfoSchema + `,"target":` + timeInfoSchema + `,` +
		`"time_difference":{"type":"string","description":"target offset minus source offset, in hours","pattern":"^[+-][0-9]+(\\.[0-9]{1,2})?h$"}},` +
		`"required":["source","target","time_difference"],"additionalProperties":false}`
)

// outputSchema returns a built-in tool's output schema, "" for other tools.
func outputSchema(name string) string {
	switch name {
	case toolConvertTime:
		return convertTimeOutputSchema
	case toolGetSystemTime:
		return timeInfoSchema
	}
	return ""
}

// convertTime converts a time between two IANA zones. The text it appends is
// the result JSON, or on failure (second result true) a message that names
// the faulty argument.
func (s *Server) convertTime(args []byte, now time.Time, text []byte) ([]byte, bool) {
	var v [3][]byte
	if fault := readStringArgs(args, convertTimeArgs[:], v[:]); fault != "" {
		return append(text, fault...), true
	}
	for i, name := range convertTimeArgs {
		if v[i] == nil {
			return fmt.Appendf(text, "missing required argument: %s", name), true
		}
	}
	src, err := s.zones.load(v[0])
	if err != nil {
		return fmt.Appendf(text, "invalid source_timezone %q: unknown time zone", v[0]), true
	}
	dst, err := s.zones.load(v[1])
	if err != nil {
		return fmt.Appendf(text, "invalid target_timezone %q: unknown time zone", v[1]), true
	}
	t, err := parseTime(v[2], src, now)
	if err != nil {
		return fmt.Appendf(text, "invalid time %q: %v", v[2], err), true
	}
	t = t.In(src)
	target := t.In(dst)
	_, srcOff := t.Zone()
	_, dstOff := target.Zone()

	text = append(text, `{"source":`...)
	text = appendTimeInfo(text, v[0], t)
	text = append(text, `,"target":`...)
	text = appendTimeInfo(text, v[1], target)
	text = append(text, `,"time_difference":"`...)
	text = appendHours(text, dstOff-srcOff)
	return append(text, `h"}`...), false
}

// getSystemTime reports the current time in one zone (default UTC).
func (s *Server) getSystemTime(args []byte, now time.Time, text []byte) ([]byte, bool) {
	var v [1][]byte
	if fault := readStringArgs(args, getSystemTimeArgs[:], v[:]); fault != "" {
		return append(text, fault...), true
	}
	zone := v[0]
	if zone == nil {
		zone = []byte("UTC")
	}
	loc, err := s.zones.load(zone)
	if err != nil {
		return fmt.Appendf(text, "invalid timezone %q: unknown time zone", zone), true
	}
	return appendTimeInfo(text, zone, now.In(loc)), false
}

// readStringArgs stores in vals[i] the unquoted string argument names[i] of
// the args object (nil when absent or null). It returns what is wrong with
// args, "" when nothing: an argument that is not a string, or one the tool
// does not take. The input schemas say additionalProperties:false, and a
// misspelt optional argument ignored would be a wrong answer, not an error.
// "_meta" is not an argument: when a tool is called by name as the method,
// its arguments are the params, where MCP reserves that key.
func readStringArgs(args []byte, names []string, vals [][]byte) (fault string) {
	if args == nil {
		return ""
	}
	for it := objectMembers(args); ; {
		k, v, ok := it.next()
		if !ok {
			return ""
		}
		key := unquote(k)
		i := slices.Index(names, string(key))
		switch {
		case i < 0 && string(key) == "_meta":
		case i < 0:
			return fmt.Sprintf("unknown argument %q: the arguments are %s", key, strings.Join(names, ", "))
		case v[0] == '"':
			vals[i] = unquote(v)
		case v[0] == 'n':
			vals[i] = nil
		default:
			return "invalid " + names[i] + ": must be a string"
		}
	}
}

// appendTimeInfo appends {"timezone","datetime","day_of_week","is_dst"}.
// datetime is RFC 3339 with seconds, always with a numeric offset ("+00:00",
// never "Z"), as Python's isoformat writes it.
func appendTimeInfo(b []byte, zone []byte, t time.Time) []byte {
	b = append(b, `{"timezone":`...)
	b = appendString(b, zone)
	b = append(b, `,"datetime":"`...)
	_, off := t.Zone()
	// The wall clock as a UTC time: one zone lookup (above) instead of one
	// per field, and digits written by hand. Time.AppendFormat with a
	// custom layout costs four times as much, for the same text.
	w := t.Add(time.Duration(off) * time.Second).UTC()
	y, mo, d := w.Date()
	h, mi, sec := w.Clock()
	if y < 0 || y > 9999 {
		b = t.AppendFormat(b, "2006-01-02T15:04:05-07:00")
	} else {
		b = append2(append2(b, y/100), y%100)
		b = append2(append(b, '-'), int(mo))
		b = append2(append(b, '-'), d)
		b = append2(append(b, 'T'), h)
		b = append2(append(b, ':'), mi)
		b = append2(append(b, ':'), sec)
		sign := byte('+')
		if off < 0 {
			sign, off = '-', -off
		}
		b = append2(append(b, sign), off/3600)
		b = append2(append(b, ':'), off%3600/60)
	}
	b = append(b, `","day_of_week":"`...)
	b = append(b, w.Weekday().String()...)
	b = append(b, `","is_dst":`...)
	b = appendBool(b, isDST(t))
	return append(b, '}')
}

// append2 appends n (0 to 99) as two digits.
func append2(b []byte, n int) []byte {
	return append(b, byte('0'+n/10), byte('0'+n%10))
}

// isDST reports whether t falls in the part of the year whose clocks are set
// forward. That is t.IsDST() except in zones that tzdata models with
// "negative DST": Europe/Dublin's winter GMT is flagged DST there (Irish law
// makes summer time the standard), which nobody reading "is_dst" expects.
// So when the neighbouring period of the zone carries the opposite flag,
// the period with the larger offset is the DST one.
func isDST(t time.Time) bool {
	flag := t.IsDST()
	start, end := t.ZoneBounds()
	var other time.Time
	switch {
	case !start.IsZero():
		other = start.Add(-time.Second)
	case !end.IsZero():
		other = end
	default: // a zone without transitions
		return flag
	}
	// ZoneBounds returns times in t's location, so other is in it too.
	if other.IsDST() == flag {
		return flag
	}
	_, off := t.Zone()
	_, otherOff := other.Zone()
	return off > otherOff
}

// appendHours writes an offset difference in hours with its sign, as the
// reference MCP time server does: one decimal for whole hours ("+0.0",
// "-1.0"), else up to two without trailing zeros ("+5.5", "+5.75").
func appendHours(b []byte, secs int) []byte {
	sign := byte('+')
	if secs < 0 {
		sign, secs = '-', -secs
	}
	b = append(b, sign)
	if secs%3600 == 0 {
		b = strconv.AppendInt(b, int64(secs/3600), 10)
		return append(b, ".0"...)
	}
	hundredths := (secs*100 + 1800) / 3600 // rounded to the nearest hundredth
	b = strconv.AppendInt(b, int64(hundredths/100), 10)
	if frac := hundredths % 100; frac != 0 {
		b = append(b, '.', byte('0'+frac/10))
		if frac%10 != 0 {
			b = append(b, byte('0'+frac%10))
		}
	}
	return b
}

// --- Time parsing ---------------------------------------------------------------

var errTimeFormat = errors.New("expected HH:MM, HH:MM:SS, YYYY-MM-DD HH:MM:SS or RFC 3339")

// parseTime reads a time given as
//   - HH:MM or HH:MM:SS: that wall-clock time today (today in loc),
//   - YYYY-MM-DD HH:MM:SS (or with a T): that wall-clock time in loc,
//   - RFC 3339 with an offset: that instant.
//
// A wall-clock time that a clock change skipped in loc is an error; one that
// happened twice resolves to its first occurrence.
func parseTime(s []byte, loc *time.Location, now time.Time) (time.Time, error) {
	switch {
	case len(s) == 5 && s[2] == ':', len(s) == 8 && s[2] == ':' && s[5] == ':':
		h, ok1 := num2(s[0:2])
		mi, ok2 := num2(s[3:5])
		sec, ok3 := 0, true
		if len(s) == 8 {
			sec, ok3 = num2(s[6:8])
		}
		if !ok1 || !ok2 || !ok3 {
			return time.Time{}, errTimeFormat
		}
		y, mo, d := now.In(loc).Date()
		return wallTime(y, mo, d, h, mi, sec, loc)
	case len(s) == 19 && s[4] == '-' && s[7] == '-' && (s[10] == ' ' || s[10] == 'T') && s[13] == ':' && s[16] == ':':
		y, ok0 := num4(s[0:4])
		mo, ok1 := num2(s[5:7])
		d, ok2 := num2(s[8:10])
		h, ok3 := num2(s[11:13])
		mi, ok4 := num2(s[14:16])
		sec, ok5 := num2(s[17:19])
		if !ok0 || !ok1 || !ok2 || !ok3 || !ok4 || !ok5 {
			return time.Time{}, errTimeFormat
		}
		if mo < 1 || mo > 12 || d < 1 || d > daysIn(time.Month(mo), y) {
			return time.Time{}, errors.New("date out of range")
		}
		return wallTime(y, time.Month(mo), d, h, mi, sec, loc)
	case len(s) > 19 && len(s) <= 40:
		t, err := time.Parse(time.RFC3339, string(s))
		if err != nil {
			return time.Time{}, errTimeFormat
		}
		return t, nil
	}
	return time.Time{}, errTimeFormat
}

// wallTime returns the instant at which loc's clocks read the given time.
func wallTime(y int, mo time.Month, d, h, mi, sec int, loc *time.Location) (time.Time, error) {
	if h > 23 || mi > 59 || sec > 59 {
		return time.Time{}, errors.New("time of day out of range")
	}
	t := time.Date(y, mo, d, h, mi, sec, 0, loc)
	// time.Date is exact unless a clock change is near; it then picks one of
	// the two offsets without saying which. Clock changes are months apart
	// and at most a day long, so the same offset 36 hours on both sides
	// means there is none near t.
	_, off := t.Zone()
	_, before := t.Add(-36 * time.Hour).Zone()
	_, after := t.Add(36 * time.Hour).Zone()
	if before == off && after == off {
		return t, nil
	}
	// Near a change: try each offset in force around t and keep the earliest
	// instant whose wall clock matches. None matching means the time was
	// skipped (a gap); two matching means it happened twice (an overlap).
	naive := time.Date(y, mo, d, h, mi, sec, 0, time.UTC).Unix()
	var best time.Time
	found := false
	for _, o := range [3]int{before, off, after} {
		c := time.Unix(naive-int64(o), 0).In(loc)
		cy, cmo, cd := c.Date()
		ch, cmi, cs := c.Clock()
		if cy == y && cmo == mo && cd == d && ch == h && cmi == mi && cs == sec && (!found || c.Before(best)) {
			best, found = c, true
		}
	}
	if !found {
		return time.Time{}, fmt.Errorf("does not exist in %s (skipped by a clock change)", loc)
	}
	return best, nil
}

func daysIn(m time.Month, y int) int {
	return time.Date(y, m+1, 0, 0, 0, 0, 0, time.UTC).Day()
}

func num2(b []byte) (int, bool) {
	if b[0] < '0' || b[0] > '9' || b[1] < '0' || b[1] > '9' {
		return 0, false
	}
	return int(b[0]-'0')*10 + int(b[1]-'0'), true
}

func num4(b []byte) (int, bool) {
	hi, ok1 := num2(b[0:2])
	lo, ok2 := num2(b[2:4])
	return hi*100 + lo, ok1 && ok2
}

// --- Time zones -----------------------------------------------------------------

// zoneCache keeps the *time.Location of every zone asked for: LoadLocation
// reads and parses tzdata on each call, which costs tens of microseconds.
// Readers take no lock: they load an immutable map, and a new zone is added
// by copying it. Only zones that exist are stored, so the map is bounded by
// the time-zone database itself (and by maxZones all the same).
type zoneCache struct {
	m  atomic.Pointer[map[string]*time.Location]
	mu sync.Mutex // serialises writers
}

const maxZones = 4096

var errUnknownZone = errors.New("unknown time zone")

// hostDependentZone reports names that exist only in some hosts' zoneinfo
// directories, or mean different zones on different hosts.
func hostDependentZone(name string) bool {
	switch name {
	case "localtime", "posixrules", "zone.tab", "zone1970.tab", "iso3166.tab", "leapseconds", "tzdata.zi":
		return true
	}
	return strings.HasPrefix(name, "posix/") || strings.HasPrefix(name, "right/")
}

func (z *zoneCache) load(name []byte) (*time.Location, error) {
	if m := z.m.Load(); m != nil {
		if loc, ok := (*m)[string(name)]; ok { // no allocation: map index by string(bytes)
			return loc, nil
		}
	}
	return z.add(string(name))
}

func (z *zoneCache) add(name string) (*time.Location, error) {
	// "" and "Local" are Go's names for UTC and the host's zone, not IANA
	// zones; refuse them rather than answer in the server's own zone. So are
	// the files a host's zoneinfo directory holds beside the zones:
	// localtime (the host's zone), posixrules, and the posix/ and right/
	// trees (copies, and leap-second variants the embedded database lacks),
	// which would make an answer depend on the host.
	if name == "" || name == "Local" || len(name) > 128 || hostDependentZone(name) {
		return nil, errUnknownZone
	}
	loc, err := time.LoadLocation(name)
	if err != nil {
		return nil, errUnknownZone
	}
	z.mu.Lock()
	defer z.mu.Unlock()
	var old map[string]*time.Location
	if p := z.m.Load(); p != nil {
		old = *p
	}
	if len(old) >= maxZones {
		return loc, nil
	}
	m := make(map[string]*time.Location, len(old)+1)
	for k, v := range old {
		m[k] = v
	}
	m[name] = loc
	z.m.Store(&m)
	return loc, nil
}
