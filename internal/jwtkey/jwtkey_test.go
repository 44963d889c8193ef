package jwtkey

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"strings"
	"testing"
)

// `openssl ecparam -genkey` writes an "EC PARAMETERS" block first; the key
// after it is found. An encrypted key is refused with a reason that says so.
func TestKeyBlocks(t *testing.T) {
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	der, _ := x509.MarshalECPrivateKey(k)
	params := pem.EncodeToMemory(&pem.Block{Type: "EC PARAMETERS", Bytes: []byte{6, 8, 42, 134, 72, 206, 61, 3, 1, 7}})
	priv := append(params, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der})...)
	s, err := ParsePrivate("ES256", priv)
	if err != nil {
		t.Fatal(err)
	}
	pubDER, _ := x509.MarshalPKIXPublicKey(&k.PublicKey)
	pub, err := ParsePublic("ES256", pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER}))
	if err != nil || !Matches(s, pub) {
		t.Fatalf("public key: %v", err)
	}
	if _, err := ParsePublic("ES384", pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER})); err == nil ||
		!strings.Contains(err.Error(), "P-384") {
		t.Errorf("P-256 key for ES384: %v", err)
	}
	enc := pem.EncodeToMemory(&pem.Block{Type: "ENCRYPTED PRIVATE KEY", Bytes: []byte{1}})
	if _, err := ParsePrivate("ES256", enc); err == nil || !strings.Contains(err.Error(), "encrypted") {
		t.Errorf("encrypted key: %v", err)
	}
	if got := Blocks(append(params, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER})...)); len(got) != 1 {
		t.Errorf("Blocks: %d", len(got))
	}
	for _, alg := range Algorithms {
		if _, err := Method(alg); err != nil {
			t.Error(err)
		}
	}
	if _, err := Method("none"); err == nil {
		t.Error("none accepted")
	}
}
