package gatewayspec

import (
	"strings"
	"testing"
)

// Both transports are accepted (any case, streamablehttp by default); any
// other is refused with a message that names both.
func TestCheckTransport(t *testing.T) {
	for in, want := range map[string]string{"": "streamablehttp", "streamablehttp": "streamablehttp",
		"StreamableHTTP": "streamablehttp", "sse": "sse", "SSE": "sse"} {
		c, err := Spec{Name: "up", URL: "http://127.0.0.1:3001/sse", Transport: in}.Check(false)
		if err != nil || c.Transport != want {
			t.Errorf("transport %q: %q, %v; want %q", in, c.Transport, err, want)
		}
	}
	for _, in := range []string{"websocket", "stdio", "http"} {
		_, err := Spec{Name: "up", URL: "http://127.0.0.1:3001/mcp", Transport: in}.Check(false)
		if err == nil || !strings.Contains(err.Error(), `transport "`+in+`"`) ||
			!strings.Contains(err.Error(), `"streamablehttp"`) || !strings.Contains(err.Error(), `"sse"`) {
			t.Errorf("transport %q: %v; want a refusal naming both transports", in, err)
		}
	}
	// The URL is checked first, whatever the transport.
	if _, err := (Spec{URL: "ftp://x", Transport: "sse"}).Check(false); err == nil || !strings.Contains(err.Error(), "url must be") {
		t.Errorf("ftp url with sse: %v", err)
	}
}

func TestCheckAuth(t *testing.T) {
	c, err := Spec{URL: "http://x/sse", Transport: "sse", AuthType: "bearer", AuthToken: "t"}.Check(true)
	if err != nil || c.HeaderName != "Authorization" || c.HeaderValue != "Bearer t" {
		t.Errorf("bearer: %+v, %v", c, err)
	}
	if _, err := (Spec{URL: "http://x/sse", AuthType: "bearer", AuthToken: "t"}).Check(false); err == nil ||
		!strings.Contains(err.Error(), "AUTH_ENCRYPTION_SECRET") {
		t.Errorf("a credential without a secret: %v", err)
	}
}
