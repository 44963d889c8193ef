package rpc

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/google/jsonschema-go/jsonschema"
)

type timeInfo struct {
	Timezone  string `json:"timezone"`
	Datetime  string `json:"datetime"`
	DayOfWeek string `json:"day_of_week"`
	IsDST     bool   `json:"is_dst"`
}

type conversion struct {
	Source         timeInfo `json:"source"`
	Target         timeInfo `json:"target"`
	TimeDifference string   `json:"time_difference"`
}

// convert runs convert_time directly, with a fixed "now".
func convert(t *testing.T, s *Server, now time.Time, src, dst, tm string) (conversion, string, bool) {
	t.Helper()
	args, _ := json.Marshal(map[string]string{"source_timezone": src, "target_timezone": dst, "time": tm})
	text, failed := s.convertTime(args, now, nil)
	var c conversion
	if !failed {
		if err := json.Unmarshal(text, &c); err != nil {
			t.Fatalf("result is not JSON: %s", text)
		}
		// The exact field set and order of the reference server.
		if !strings.HasPrefix(string(text), `{"source":{"timezone":`) || !strings.Contains(string(text), `"day_of_week":`) {
			t.Fatalf("shape: %s", text)
		}
	}
	return c, string(text), failed
}

var anyNow = time.Date(2025, 5, 5, 12, 0, 0, 0, time.UTC)

func TestConvertTime(t *testing.T) {
	s, _ := newTestServer(t, nil)
	for _, tc := range []struct {
		name, src, dst, tm string
		srcDT, dstDT       string
		srcDay, dstDay     string
		srcDST, dstDST     bool
		diff               string
	}{
		{"seed winter", "Europe/Berlin", "Europe/Dublin", "2025-01-15 09:00:00",
			"2025-01-15T09:00:00+01:00", "2025-01-15T08:00:00+00:00", "Wednesday", "Wednesday", false, false, "-1.0h"},
		{"seed summer", "Europe/Berlin", "Europe/Dublin", "2025-07-15 09:00:00",
			"2025-07-15T09:00:00+02:00", "2025-07-15T08:00:00+01:00", "Tuesday", "Tuesday", true, true, "-1.0h"},
		{"half hour", "UTC", "Asia/Kolkata", "2025-01-15 12:00:00",
			"2025-01-15T12:00:00+00:00", "2025-01-15T17:30:00+05:30", "Wednesday", "Wednesday", false, false, "+5.5h"},
		{"three quarters", "UTC", "Asia/Kathmandu", "2025-01-15T12:00:00",
			"2025-01-15T12:00:00+00:00", "2025-01-15T17:45:00+05:45", "Wednesday", "Wednesday", false, false, "+5.75h"},
		{"quarter difference", "Asia/Kolkata", "Asia/Kathmandu", "2025-01-15 12:00:00",
			"2025-01-15T12:00:00+05:30", "2025-01-15T12:15:00+05:45", "Wednesday", "Wednesday", false, false, "+0.25h"},
		{"same zone", "Europe/Paris", "Europe/Paris", "2025-01-15 12:00:00",
			"2025-01-15T12:00:00+01:00", "2025-01-15T12:00:00+01:00", "Wednesday", "Wednesday", false, false, "+0.0h"},
		{"across the date line", "Pacific/Kiritimati", "Pacific/Pago_Pago", "2025-01-15 09:00:00",
			"2025-01-15T09:00:00+14:00", "2025-01-14T08:00:00-11:00", "Wednesday", "Tuesday", false, false, "-25.0h"},
		{"date line back", "Pacific/Pago_Pago", "Pacific/Kiritimati", "2025-01-14 08:00:00",
			"2025-01-14T08:00:00-11:00", "2025-01-15T09:00:00+14:00", "Tuesday", "Wednesday", false, false, "+25.0h"},
		{"southern summer half-hour DST", "UTC", "Australia/Lord_Howe", "2025-01-15 00:00:00",
			"2025-01-15T00:00:00+00:00", "2025-01-15T11:00:00+11:00", "Wednesday", "Wednesday", false, true, "+11.0h"},
		{"southern winter", "UTC", "Australia/Lord_Howe", "2025-07-15 00:00:00",
			"2025-07-15T00:00:00+00:00", "2025-07-15T10:30:00+10:30", "Tuesday", "Tuesday", false, false, "+10.5h"},
		{"new york to london in the weeks they differ", "America/New_York", "Europe/London", "2025-03-20 09:00:00",
			"2025-03-20T09:00:00-04:00", "2025-03-20T13:00:00+00:00", "Thursday", "Thursday", true, false, "+4.0h"},
		{"RFC 3339 instant shown in the source zone", "Asia/Tokyo", "America/Los_Angeles", "2025-06-01T12:00:00Z",
			"2025-06-01T21:00:00+09:00", "2025-06-01T05:00:00-07:00", "Sunday", "Sunday", false, true, "-16.0h"},
		{"RFC 3339 with offset and fraction", "UTC", "UTC", "2025-06-01T12:00:00.123+02:00",
			"2025-06-01T10:00:00+00:00", "2025-06-01T10:00:00+00:00", "Sunday", "Sunday", false, false, "+0.0h"},
		{"DST overlap: first occurrence", "Europe/Berlin", "UTC", "2025-10-26 02:30:00",
			"2025-10-26T02:30:00+02:00", "2025-10-26T00:30:00+00:00", "Sunday", "Sunday", true, false, "-2.0h"},
		{"DST overlap New York", "America/New_York", "UTC", "2025-11-02 01:30:00",
			"2025-11-02T01:30:00-04:00", "2025-11-02T05:30:00+00:00", "Sunday", "Sunday", true, false, "+4.0h"},
		{"just after the gap", "Europe/Berlin", "UTC", "2025-03-30 03:00:00",
			"2025-03-30T03:00:00+02:00", "2025-03-30T01:00:00+00:00", "Sunday", "Sunday", true, false, "-2.0h"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, text, failed := convert(t, s, anyNow, tc.src, tc.dst, tc.tm)
			if failed {
				t.Fatalf("failed: %s", text)
			}
			want := conversion{
				Source:         timeInfo{tc.src, tc.srcDT, tc.srcDay, tc.srcDST},
				Target:         timeInfo{tc.dst, tc.dstDT, tc.dstDay, tc.dstDST},
				TimeDifference: tc.diff,
			}
			if c != want {
				t.Errorf("\n got %+v\nwant %+v", c, want)
			}
		})
	}
}

func TestIsDSTIrishNegativeDST(t *testing.T) {
	// tzdata flags Dublin's winter as DST ("negative DST"); the gateway
	// reports the clocks-forward summer as DST, as people read it.
	dublin, _ := time.LoadLocation("Europe/Dublin")
	for _, tc := range []struct {
		when time.Time
		want bool
	}{
		{time.Date(2025, 1, 15, 12, 0, 0, 0, dublin), false},
		{time.Date(2025, 4, 1, 12, 0, 0, 0, dublin), true},
		{time.Date(2025, 7, 15, 12, 0, 0, 0, dublin), true},
		{time.Date(2025, 10, 20, 12, 0, 0, 0, dublin), true},
		{time.Date(2025, 12, 1, 12, 0, 0, 0, dublin), false},
		{time.Date(2025, 7, 15, 12, 0, 0, 0, time.UTC), false},
	} {
		if got := isDST(tc.when); got != tc.want {
			t.Errorf("%v: is_dst %v, want %v", tc.when, got, tc.want)
		}
	}
}

func TestConvertTimeClockForms(t *testing.T) {
	s, _ := newTestServer(t, nil)
	// HH:MM is today in the source zone: at 23:30 UTC it is already
	// tomorrow in Tokyo.
	now := time.Date(2025, 1, 15, 23, 30, 0, 0, time.UTC)
	c, text, failed := convert(t, s, now, "Asia/Tokyo", "UTC", "09:00")
	if failed || c.Source.Datetime != "2025-01-16T09:00:00+09:00" || c.Target.Datetime != "2025-01-16T00:00:00+00:00" {
		t.Errorf("HH:MM in Tokyo: %s", text)
	}
	c, text, failed = convert(t, s, now, "America/Los_Angeles", "UTC", "09:15:30")
	if failed || c.Source.Datetime != "2025-01-15T09:15:30-08:00" {
		t.Errorf("HH:MM:SS in Los Angeles: %s", text)
	}
	// On the day clocks go forward, 02:30 does not exist in Berlin ...
	dstDay := time.Date(2025, 3, 30, 0, 30, 0, 0, time.UTC)
	if _, text, failed := convert(t, s, dstDay, "Europe/Berlin", "UTC", "02:30"); !failed ||
		text != `invalid time "02:30": does not exist in Europe/Berlin (skipped by a clock change)` {
		t.Errorf("gap: %v %s", failed, text)
	}
	// ... and 09:00 is in summer time.
	if c, text, _ := convert(t, s, dstDay, "Europe/Berlin", "UTC", "09:00"); c.Source.Datetime != "2025-03-30T09:00:00+02:00" || !c.Source.IsDST {
		t.Errorf("after the change: %s", text)
	}
}

func TestConvertTimeErrors(t *testing.T) {
	s, _ := newTestServer(t, nil)
	for _, tc := range []struct{ args, want string }{
		{`{"source_timezone":"Mars/Base","target_timezone":"UTC","time":"09:00"}`, `invalid source_timezone "Mars/Base": unknown time zone`},
		{`{"source_timezone":"UTC","target_timezone":"Mars/Base","time":"09:00"}`, `invalid target_timezone "Mars/Base": unknown time zone`},
		{`{"source_timezone":"Local","target_timezone":"UTC","time":"09:00"}`, `invalid source_timezone "Local": unknown time zone`},
		{`{"source_timezone":"","target_timezone":"UTC","time":"09:00"}`, `invalid source_timezone "": unknown time zone`},
		{`{"source_timezone":"../../etc/passwd","target_timezone":"UTC","time":"09:00"}`, `invalid source_timezone "../../etc/passwd": unknown time zone`},
		{`{"source_timezone":"localtime","target_timezone":"UTC","time":"09:00"}`, `invalid source_timezone "localtime": unknown time zone`},
		{`{"source_timezone":"UTC","target_timezone":"posixrules","time":"09:00"}`, `invalid target_timezone "posixrules": unknown time zone`},
		{`{"source_timezone":"right/Europe/Berlin","target_timezone":"UTC","time":"09:00"}`, `invalid source_timezone "right/Europe/Berlin": unknown time zone`},
		{`{"source_timezone":"posix/Europe/Berlin","target_timezone":"UTC","time":"09:00"}`, `invalid source_timezone "posix/Europe/Berlin": unknown time zone`},
		{`{"source_timezone":"UTC","target_timezone":"UTC","time":"25:00"}`, `invalid time "25:00": time of day out of range`},
		{`{"source_timezone":"UTC","target_timezone":"UTC","time":"12:60"}`, `invalid time "12:60": time of day out of range`},
		{`{"source_timezone":"UTC","target_timezone":"UTC","time":"9:00"}`, `invalid time "9:00": expected HH:MM, HH:MM:SS, YYYY-MM-DD HH:MM:SS or RFC 3339`},
		{`{"source_timezone":"UTC","target_timezone":"UTC","time":"noon"}`, `invalid time "noon": expected HH:MM, HH:MM:SS, YYYY-MM-DD HH:MM:SS or RFC 3339`},
		{`{"source_timezone":"UTC","target_timezone":"UTC","time":"2025-02-30 10:00:00"}`, `invalid time "2025-02-30 10:00:00": date out of range`},
		{`{"source_timezone":"UTC","target_timezone":"UTC","time":"2025-13-01 10:00:00"}`, `invalid time "2025-13-01 10:00:00": date out of range`},
		{`{"source_timezone":"UTC","target_timezone":"UTC","time":"2025-06-01T25:00:00Z"}`, `invalid time "2025-06-01T25:00:00Z": expected HH:MM, HH:MM:SS, YYYY-MM-DD HH:MM:SS or RFC 3339`},
		{`{"source_timezone":"Pacific/Apia","target_timezone":"UTC","time":"2011-12-30 12:00:00"}`, `invalid time "2011-12-30 12:00:00": does not exist in Pacific/Apia (skipped by a clock change)`},
		{`{"source_timezone":"America/New_York","target_timezone":"UTC","time":"2025-03-09 02:30:00"}`, `invalid time "2025-03-09 02:30:00": does not exist in America/New_York (skipped by a clock change)`},
		{`{"target_timezone":"UTC","time":"09:00"}`, `missing required argument: source_timezone`},
		{`{"source_timezone":"UTC","time":"09:00"}`, `missing required argument: target_timezone`},
		{`{"source_timezone":"UTC","target_timezone":"UTC"}`, `missing required argument: time`},
		{`{"source_timezone":"UTC","target_timezone":"UTC","time":null}`, `missing required argument: time`},
		{`{"source_timezone":"UTC","target_timezone":"UTC","time":900}`, `invalid time: must be a string`},
		{`{"source_timezone":["UTC"],"target_timezone":"UTC","time":"09:00"}`, `invalid source_timezone: must be a string`},
		{`{"source_timezone":"UTC","target_timezone":"UTC","time":"09:00","extra":1}`, `unknown argument "extra": the arguments are source_timezone, target_timezone, time`},
		{`{"source_timezone":"UTC","target_timezone":"UTC","Time":"09:00"}`, `unknown argument "Time": the arguments are source_timezone, target_timezone, time`},
		{`{"tz":"UTC","time":5}`, `unknown argument "tz": the arguments are source_timezone, target_timezone, time`},
	} {
		text, failed := s.convertTime([]byte(tc.args), anyNow, nil)
		if !failed || string(text) != tc.want {
			t.Errorf("%s:\n got %v %q\nwant %q", tc.args, failed, text, tc.want)
		}
	}
	if text, failed := s.convertTime(nil, anyNow, nil); !failed || string(text) != "missing required argument: source_timezone" {
		t.Errorf("no arguments: %s", text)
	}
	// Through the handler the failure is a result with isError, not an error.
	res := rpcResult(t, s, `{"jsonrpc":"2.0","id":1,"method":"convert_time","params":{"source_timezone":"UTC","target_timezone":"UTC","time":"nope"}}`)
	if text, isErr := toolText(t, res); !isErr || !strings.HasPrefix(text, `invalid time "nope"`) {
		t.Errorf("isError result: %v %s", isErr, text)
	}
	// So is an unknown argument (a tool execution error, as input
	// validation is in MCP 2025-11-25), in both forms of call.
	for _, body := range []string{
		`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"convert_time","arguments":{"source_timezone":"UTC","target_timezone":"UTC","time":"09:00","when":"now"}}}`,
		`{"jsonrpc":"2.0","id":1,"method":"convert_time","params":{"source_timezone":"UTC","target_timezone":"UTC","time":"09:00","when":"now"}}`,
	} {
		res := rpcResult(t, s, body)
		if text, isErr := toolText(t, res); !isErr || !strings.HasPrefix(text, `unknown argument "when"`) || res["structuredContent"] != nil {
			t.Errorf("unknown argument: %v %s", isErr, text)
		}
	}
	// "_meta" is MCP's, not an argument: the bare form carries it in params.
	res = rpcResult(t, s, `{"jsonrpc":"2.0","id":1,"method":"convert_time","params":{"_meta":{"progressToken":1},"source_timezone":"UTC","target_timezone":"UTC","time":"09:00"}}`)
	if text, isErr := toolText(t, res); isErr {
		t.Errorf("_meta refused: %s", text)
	}
}

func TestGetSystemTime(t *testing.T) {
	s, _ := newTestServer(t, nil)
	now := time.Date(2025, 7, 4, 16, 5, 6, 0, time.UTC)
	for _, tc := range []struct{ args, want string }{
		{``, `{"timezone":"UTC","datetime":"2025-07-04T16:05:06+00:00","day_of_week":"Friday","is_dst":false}`},
		{`{}`, `{"timezone":"UTC","datetime":"2025-07-04T16:05:06+00:00","day_of_week":"Friday","is_dst":false}`},
		{`{"timezone":null}`, `{"timezone":"UTC","datetime":"2025-07-04T16:05:06+00:00","day_of_week":"Friday","is_dst":false}`},
		{`{"timezone":"America/New_York"}`, `{"timezone":"America/New_York","datetime":"2025-07-04T12:05:06-04:00","day_of_week":"Friday","is_dst":true}`},
		{`{"timezone":"Asia/Kolkata"}`, `{"timezone":"Asia/Kolkata","datetime":"2025-07-04T21:35:06+05:30","day_of_week":"Friday","is_dst":false}`},
		{`{"timezone":"Pacific/Kiritimati"}`, `{"timezone":"Pacific/Kiritimati","datetime":"2025-07-05T06:05:06+14:00","day_of_week":"Saturday","is_dst":false}`},
	} {
		var args []byte
		if tc.args != "" {
			args = []byte(tc.args)
		}
		text, failed := s.getSystemTime(args, now, nil)
		if failed || string(text) != tc.want {
			t.Errorf("%s:\n got %s\nwant %s", tc.args, text, tc.want)
		}
	}
	for _, tc := range []struct{ args, want string }{
		{`{"timezone":"Nowhere/Land"}`, `invalid timezone "Nowhere/Land": unknown time zone`},
		{`{"timezone":3}`, `invalid timezone: must be a string`},
		{`{"timezone":"UTC","\u0074z":"UTC"}`, `unknown argument "tz": the arguments are timezone`},
		{`{"zone":"UTC"}`, `unknown argument "zone": the arguments are timezone`},
	} {
		if text, failed := s.getSystemTime([]byte(tc.args), now, nil); !failed || string(text) != tc.want {
			t.Errorf("%s: %q", tc.args, text)
		}
	}
	// The real clock, through the handler.
	res := rpcResult(t, s, `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"get_system_time","arguments":{"timezone":"Europe/Dublin"}}}`)
	text, _ := toolText(t, res)
	var ti timeInfo
	if err := json.Unmarshal([]byte(text), &ti); err != nil {
		t.Fatal(err)
	}
	got, err := time.Parse(time.RFC3339, ti.Datetime)
	if err != nil || time.Since(got) > time.Minute || time.Since(got) < -time.Minute {
		t.Errorf("datetime %q is not now", ti.Datetime)
	}
}

func TestAppendHours(t *testing.T) {
	for secs, want := range map[int]string{
		0: "+0.0", 3600: "+1.0", -3600: "-1.0", 19800: "+5.5", 20700: "+5.75", -20700: "-5.75",
		90000: "+25.0", 900: "+0.25", -1800: "-0.5", 45900: "+12.75", 1: "+0", 2*3600 + 5*60: "+2.08",
	} {
		if got := string(appendHours(nil, secs)); got != want {
			t.Errorf("%d s: %q, want %q", secs, got, want)
		}
	}
}

func TestZoneCache(t *testing.T) {
	var z zoneCache
	a, err := z.load([]byte("Europe/Berlin"))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := z.load([]byte("Europe/Berlin"))
	if a != b {
		t.Error("second load did not come from the cache")
	}
	if _, err := z.load([]byte("No/Such_Zone")); err == nil {
		t.Error("unknown zone loaded")
	}
	if n := len(*z.m.Load()); n != 1 {
		t.Errorf("cache holds %d zones, want 1 (unknown zones are not kept)", n)
	}
	allocs := testing.AllocsPerRun(100, func() { _, _ = z.load([]byte("Europe/Berlin")) })
	if allocs != 0 {
		t.Errorf("cached load allocates %v times", allocs)
	}
}

// listedOutputSchemas returns the outputSchema of each tool tools/list
// shows, resolved for validation (JSON Schema 2020-12, MCP's default).
func listedOutputSchemas(t *testing.T, s *Server) map[string]*jsonschema.Resolved {
	t.Helper()
	r := rpc(t, s, `{"jsonrpc":"2.0","id":1,"method":"tools/list"}`)
	var list struct {
		Result struct {
			Tools []struct {
				Name         string
				OutputSchema json.RawMessage `json:"outputSchema"`
			}
		}
	}
	if err := json.Unmarshal(r.body, &list); err != nil {
		t.Fatalf("tools/list: %v %s", err, r.body)
	}
	schemas := map[string]*jsonschema.Resolved{}
	for _, tool := range list.Result.Tools {
		if tool.OutputSchema == nil {
			continue
		}
		var sch jsonschema.Schema
		if err := json.Unmarshal(tool.OutputSchema, &sch); err != nil {
			t.Fatalf("%s: outputSchema: %v", tool.Name, err)
		}
		if sch.Type != "object" { // the 2025-06-18 and 2025-11-25 schemas require it
			t.Errorf("%s: outputSchema type %q", tool.Name, sch.Type)
		}
		rs, err := sch.Resolve(nil)
		if err != nil {
			t.Fatalf("%s: outputSchema does not resolve: %v", tool.Name, err)
		}
		schemas[tool.Name] = rs
	}
	return schemas
}

// A successful call of a built-in tool returns its JSON twice: as the text
// block, and byte for byte as structuredContent, which conforms to the
// outputSchema tools/list gives.
func TestStructuredContent(t *testing.T) {
	s, _ := newTestServer(t, nil)
	schemas := listedOutputSchemas(t, s)
	if len(schemas) != 2 || schemas[toolConvertTime] == nil || schemas[toolGetSystemTime] == nil {
		t.Fatalf("output schemas for %v, want the two built-in tools only", schemas)
	}
	convert := func(src, dst, tm string) (string, string) {
		args, _ := json.Marshal(map[string]string{"source_timezone": src, "target_timezone": dst, "time": tm})
		return toolConvertTime, string(args)
	}
	calls := [][2]string{
		{toolGetSystemTime, `{}`},
		{toolGetSystemTime, `{"timezone":"Asia/Kathmandu"}`},
		{toolGetSystemTime, `{"timezone":"Europe/Dublin"}`},
	}
	for _, c := range [][3]string{
		{"Europe/Berlin", "Europe/Dublin", "09:00"},
		{"UTC", "Asia/Kathmandu", "2025-01-15T12:00:00Z"},
		{"Australia/Lord_Howe", "America/St_Johns", "2025-01-15 00:00:00"},
		{"Pacific/Kiritimati", "Pacific/Pago_Pago", "2025-01-15 09:00:00"},
		{"UTC", "Pacific/Kiritimati", "9999-12-31T23:00:00Z"}, // a five-digit year
		{"Pacific/Kiritimati", "Etc/GMT+12", "0001-01-01 00:00:00"},
		{"Etc/GMT-14", "Etc/GMT+12", "2025-06-01T00:00:01+00:00"},
	} {
		name, args := convert(c[0], c[1], c[2])
		calls = append(calls, [2]string{name, args})
	}
	for _, c := range calls {
		for _, body := range []string{
			`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"` + c[0] + `","arguments":` + c[1] + `}}`,
			`{"jsonrpc":"2.0","id":1,"method":"` + c[0] + `","params":` + c[1] + `}`,
		} {
			r := rpc(t, s, body)
			var resp struct {
				Result struct {
					Content           []struct{ Text string }
					StructuredContent json.RawMessage `json:"structuredContent"`
					IsError           bool            `json:"isError"`
				}
			}
			if err := json.Unmarshal(r.body, &resp); err != nil || resp.Result.IsError || len(resp.Result.Content) != 1 {
				t.Fatalf("%s: %v %s", body, err, r.body)
			}
			if sc := string(resp.Result.StructuredContent); sc != resp.Result.Content[0].Text {
				t.Errorf("%s:\nstructuredContent %s\n             text %s", body, sc, resp.Result.Content[0].Text)
			}
			var v any
			_ = json.Unmarshal(resp.Result.StructuredContent, &v)
			if err := schemas[c[0]].Validate(v); err != nil {
				t.Errorf("%s: structuredContent does not conform to the outputSchema: %v\n%s", body, err, resp.Result.StructuredContent)
			}
		}
	}
	// The schemas do refuse what the tools must not write.
	for name, bad := range map[string]string{
		toolGetSystemTime: `{"timezone":"UTC","datetime":"x","day_of_week":"Funday","is_dst":false}`,
		toolConvertTime:   `{"source":{},"target":{},"time_difference":"-1h30"}`,
	} {
		var v any
		_ = json.Unmarshal([]byte(bad), &v)
		if schemas[name].Validate(v) == nil {
			t.Errorf("%s: the outputSchema accepts %s", name, bad)
		}
	}
	// Failures carry no structuredContent (it would not conform).
	for _, body := range []string{
		`{"jsonrpc":"2.0","id":1,"method":"get_system_time","params":{"timezone":"Mars/Base"}}`,
		`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"remote_tool"}}`,
	} {
		res := rpcResult(t, s, body)
		if _, isErr := toolText(t, res); !isErr || res["structuredContent"] != nil {
			t.Errorf("%s: %v", body, res)
		}
	}
}

// The guide's request (get_system_time by name as the method, on /rpc)
// answers exactly as before structured content, plus structuredContent.
func TestGuidePayload(t *testing.T) {
	s, _ := newTestServer(t, nil)
	r := rpc(t, s, guidePayload)
	var resp struct {
		Result struct {
			StructuredContent json.RawMessage `json:"structuredContent"`
		}
	}
	if err := json.Unmarshal(r.body, &resp); err != nil || resp.Result.StructuredContent == nil {
		t.Fatalf("%v: %s", err, r.body)
	}
	sc := resp.Result.StructuredContent
	before := `{"jsonrpc":"2.0","id":1,"result":{"content":[{"type":"text","text":` + string(appendString(nil, []byte(sc))) + `}],"isError":false}}`
	if r.status != 200 || r.header("Content-Type") != "application/json" ||
		strings.Replace(string(r.body), `,"structuredContent":`+string(sc), "", 1) != before {
		t.Fatalf("%d %s\n got %s\nwant %s plus structuredContent", r.status, r.header("Content-Type"), r.body, before)
	}
	var ti timeInfo
	if err := json.Unmarshal(sc, &ti); err != nil {
		t.Fatal(err)
	}
	now, err := time.Parse(time.RFC3339, ti.Datetime)
	if err != nil || ti.Timezone != "UTC" || !strings.HasSuffix(ti.Datetime, "+00:00") || ti.IsDST ||
		ti.DayOfWeek != now.Weekday().String() || time.Since(now).Abs() > time.Minute {
		t.Errorf("%+v", ti)
	}
}
