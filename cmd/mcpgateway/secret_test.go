package main

import (
	"bytes"
	"encoding/base64"
	"strings"
	"testing"

	"github.com/mcpgateway/mcpgateway/config"
)

func TestSecret(t *testing.T) {
	seen := map[string]bool{}
	for range 3 {
		var out, errOut bytes.Buffer
		if code := secret(nil, &out, &errOut); code != 0 {
			t.Fatalf("exit %d: %s", code, errOut.String())
		}
		key := strings.TrimSpace(out.String())
		raw, err := base64.RawURLEncoding.DecodeString(key)
		if err != nil || len(raw) != 32 || config.WeakSecret(key) != "" || seen[key] {
			t.Errorf("key %q: %v, %d bytes, weak %q, repeated %v", key, err, len(raw), config.WeakSecret(key), seen[key])
		}
		seen[key] = true
	}
	var out, errOut bytes.Buffer
	if code := secret([]string{"-n", "64"}, &out, &errOut); code != 0 || len(strings.TrimSpace(out.String())) != 86 {
		t.Errorf("-n 64: exit %d, %q", code, out.String())
	}
	if code := secret([]string{"-n", "16"}, &out, &errOut); code != 2 || !strings.Contains(errOut.String(), "32") {
		t.Errorf("-n 16: exit %d, %q", code, errOut.String())
	}
}
