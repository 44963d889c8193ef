package tests

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// REST tools end to end: an HTTP endpoint of the test registered as tools
// through the admin API of a gateway with two workers, listed with its
// input schema by both, called with arguments mapped to the path, the
// query and the JSON body; a JSON answer comes back as structuredContent,
// an error status as an isError result, a slow endpoint as one within
// FEDERATION_TIMEOUT; the credential header reaches the endpoint and is
// never listed, logged or stored in clear.
func TestRESTTools(t *testing.T) {
	const credential = "rest-api-s3cret"
	var badKey atomic.Int64 // requests without the credential
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("X-Api-Key") != credential {
			badKey.Add(1)
		}
		body, _ := io.ReadAll(r.Body)
		switch {
		case strings.HasPrefix(r.URL.Path, "/users/"):
			w.Header().Set("Content-Type", "application/json")
			json.NewEncoder(w).Encode(map[string]string{"method": r.Method, "path": r.URL.EscapedPath(),
				"query": r.URL.RawQuery, "body": string(body)})
		case r.URL.Path == "/fail":
			http.Error(w, "database on fire", http.StatusInternalServerError)
		case r.URL.Path == "/slow":
			select {
			case <-r.Context().Done():
			case <-time.After(10 * time.Second):
			}
		default:
			http.Error(w, "no such thing", http.StatusNotFound)
		}
	}))
	t.Cleanup(api.Close)

	g := serve(t, []string{"AUTH_ENCRYPTION_SECRET=rest-test-secret", "FEDERATION_TIMEOUT=1s"}, "--workers", "2")
	token := g.token()
	rpc := func(body string) (int, string) { return httpDo(freshClient, "POST", g.url("/rpc"), token, body) }
	auth := `"auth_type":"authheaders","auth_header_key":"X-Api-Key","auth_header_value":"` + credential + `"`
	schema := `{"type":"object","properties":{"id":{"type":"string"},"fields":{"type":"array"},"note":{"type":"string"}},"required":["id"]}`
	for name, integration := range map[string]string{
		"update_user": `{"type":"REST","request_type":"PATCH","url":"` + api.URL + `/users/{id}","query":["fields"],` + auth + `}`,
		"missing":     `{"type":"REST","url":"` + api.URL + `/nothing/{id}",` + auth + `}`,
		"failing":     `{"type":"REST","url":"` + api.URL + `/fail",` + auth + `}`,
		"slow":        `{"type":"REST","url":"` + api.URL + `/slow",` + auth + `}`,
	} {
		code, body := httpDo(freshClient, "PUT", g.url("/admin/tools/"+name), token,
			`{"description":"A REST tool","inputSchema":`+schema+`,"integration":`+integration+`}`)
		if code != 200 || strings.Contains(body, credential) || strings.Contains(body, "sealed") {
			t.Fatalf("register %s: %d %s", name, code, body)
		}
	}
	if code, body := httpDo(freshClient, "PUT", g.url("/admin/tools/bad"), token,
		`{"description":"x","inputSchema":{},"integration":{"type":"REST","url":"http://{host}/x"}}`); code != 400 {
		t.Errorf("a placeholder in the host: %d %s", code, body)
	}
	if code, body := httpDo(freshClient, "GET", g.url("/admin/tools"), token, ""); code != 200 ||
		!strings.Contains(body, `"update_user"`) || strings.Contains(body, credential) || strings.Contains(body, "sealed") {
		t.Errorf("admin list: %d %s", code, body)
	}

	// Listed with its input schema by both workers (fresh connections).
	deadline := time.Now().Add(5 * time.Second)
	for seen := 0; seen < 6; {
		_, list := rpc(`{"jsonrpc":"2.0","id":1,"method":"tools/list"}`)
		if toolSchemas(list)["update_user"] == schema {
			seen++ // in a row, on fresh connections: both workers, most likely
		} else {
			seen = 0
		}
		if time.Now().After(deadline) {
			t.Fatalf("tools/list lacks update_user with its schema: %s", list)
		}
		time.Sleep(50 * time.Millisecond)
	}

	// Path (escaped), query (an array repeated), JSON body (the rest, for a
	// PATCH), on both workers; the same call named as the method.
	before := workerRequests(t, g)
	for i := range 20 {
		code, body := rpc(fmt.Sprintf(`{"jsonrpc":"2.0","id":%d,"method":"tools/call","params":{"name":"update_user","arguments":{"id":"ann/%d","fields":["a","b"],"note":"hi"}}}`, i, i))
		var res struct {
			Result struct {
				Content           []struct{ Text string } `json:"content"`
				StructuredContent map[string]string       `json:"structuredContent"`
				IsError           bool                    `json:"isError"`
			} `json:"result"`
		}
		if code != 200 || json.Unmarshal([]byte(body), &res) != nil || res.Result.IsError || len(res.Result.Content) != 1 {
			t.Fatalf("call %d: %d %s", i, code, body)
		}
		want := map[string]string{"method": "PATCH", "path": fmt.Sprintf("/users/ann%%2F%d", i),
			"query": "fields=a&fields=b", "body": `{"note":"hi"}`}
		if fmt.Sprint(res.Result.StructuredContent) != fmt.Sprint(want) || !strings.Contains(res.Result.Content[0].Text, `"method":"PATCH"`) {
			t.Fatalf("call %d: structuredContent %v, want %v; text %q", i, res.Result.StructuredContent, want, res.Result.Content[0].Text)
		}
	}
	if after := workerRequests(t, g); !eachWorkerServed(before, after, 1) {
		t.Errorf("the calls did not reach both workers: %v -> %v", before, after)
	}
	if _, body := rpc(`{"jsonrpc":"2.0","id":"m","method":"update_user","params":{"id":"bob"}}`); !strings.Contains(body, `"path":"/users/bob"`) {
		t.Errorf("the tool named as the method: %s", body)
	}

	// Error statuses, missing arguments and a slow endpoint are tool errors.
	for _, c := range []struct{ tool, args, text string }{
		{"missing", `{"id":"x"}`, "HTTP 404 Not Found: no such thing"},
		{"failing", `{}`, "HTTP 500 Internal Server Error: database on fire"},
		{"update_user", `{}`, `REST tool update_user: argument \"id\" is required`},
		{"slow", `{}`, "REST tool slow: the endpoint did not answer in time"},
	} {
		start := time.Now()
		code, body := rpc(`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"` + c.tool + `","arguments":` + c.args + `}}`)
		if code != 200 || !strings.Contains(body, `"isError":true`) || !strings.Contains(body, c.text) || time.Since(start) > 3*time.Second {
			t.Errorf("%s: %d %s after %v; want %q", c.tool, code, body, time.Since(start), c.text)
		}
	}

	// The credential reached the endpoint every time, and nowhere else.
	if n := badKey.Load(); n != 0 {
		t.Errorf("%d requests reached the endpoint without the credential", n)
	}
	if g.Log.Contains(credential) {
		t.Error("the credential was logged")
	}
	for _, f := range []string{"mcp.db", "mcp.db-wal"} {
		if b, err := os.ReadFile(filepath.Join(g.dir, f)); err == nil && strings.Contains(string(b), credential) {
			t.Errorf("the credential is in %s in clear", f)
		}
	}
}

// toolSchemas reads a tools/list answer: each tool's input schema by name.
func toolSchemas(list string) map[string]string {
	var res struct {
		Result struct {
			Tools []struct {
				Name        string          `json:"name"`
				InputSchema json.RawMessage `json:"inputSchema"`
			} `json:"tools"`
		} `json:"result"`
	}
	json.Unmarshal([]byte(list), &res)
	schemas := map[string]string{}
	for _, tl := range res.Result.Tools {
		schemas[tl.Name] = string(tl.InputSchema)
	}
	return schemas
}
