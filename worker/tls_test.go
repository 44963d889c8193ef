package worker

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"errors"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mcpgateway/mcpgateway/supervisor/protocol"
)

const testPassword = "s3cret"

func td(name string) string { return filepath.Join("testdata", name) }

// TestLoadCertificate loads what OpenSSL 3 writes (testdata/README.md).
func TestLoadCertificate(t *testing.T) {
	for _, tc := range []struct {
		name, cert, key, password string
	}{
		{"plain PKCS#8 EC", "ec.crt", "ec.key", ""},
		{"plain PKCS#1 RSA", "rsa.crt", "rsa.key", ""},
		{"legacy encrypted EC (Proc-Type, AES-256)", "ec.crt", "ec-legacy-aes256.key", testPassword},
		{"legacy encrypted RSA (Proc-Type, AES-128)", "rsa.crt", "rsa-legacy-aes128.key", testPassword},
		{"PKCS#8 OpenSSL 3 default (PBES2, PBKDF2-SHA256, AES-256-CBC)", "ec.crt", "ec-pkcs8-default.key", testPassword},
		{"PKCS#8 DES-EDE3-CBC, PBKDF2-SHA1", "ec.crt", "ec-pkcs8-des3-sha1.key", testPassword},
		{"PKCS#8 AES-128-CBC, PBKDF2-SHA512", "ec.crt", "ec-pkcs8-aes128-sha512.key", testPassword},
		{"a password given for a plain key is ignored", "ec.crt", "ec.key", testPassword},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cert, err := LoadCertificate(td(tc.cert), td(tc.key), tc.password)
			if err != nil {
				t.Fatal(err)
			}
			if cert.Leaf == nil || cert.Leaf.Subject.CommonName != "localhost" || cert.PrivateKey == nil {
				t.Fatalf("incomplete certificate: %+v", cert)
			}
		})
	}
}

func TestLoadCertificateErrors(t *testing.T) {
	dir := t.TempDir()
	garbage := filepath.Join(dir, "garbage.pem")
	os.WriteFile(garbage, []byte("not a PEM file\n"), 0o600)
	unreadable := filepath.Join(dir, "unreadable.key")
	os.WriteFile(unreadable, nil, 0o600)
	os.Chmod(unreadable, 0)
	truncated := filepath.Join(dir, "truncated.key")
	writePKCS8WithBadLength(t, truncated)

	for _, tc := range []struct {
		name, cert, key, password string
		setting, file             string
		want                      string // in the message
		password2                 bool   // errors.Is(err, ErrKeyPassword)
	}{
		{"missing cert", td("nope.crt"), td("ec.key"), "", "CertFile", td("nope.crt"), "no such file", false},
		{"missing key", td("ec.crt"), td("nope.key"), "", "KeyFile", td("nope.key"), "no such file", false},
		{"cert is not PEM", garbage, td("ec.key"), "", "CertFile", garbage, "no PEM CERTIFICATE", false},
		{"key is not PEM", td("ec.crt"), garbage, "", "KeyFile", garbage, "no PEM PRIVATE KEY", false},
		{"mismatched pair", td("ec.crt"), td("other.key"), "", "KeyFile", td("other.key"), "does not belong to the certificate", false},
		{"RSA cert, EC key", td("rsa.crt"), td("ec.key"), "", "KeyFile", td("ec.key"), "", false},
		{"PKCS#8 wrong password", td("ec.crt"), td("ec-pkcs8-default.key"), "wrong", "KeyFilePassword", td("ec-pkcs8-default.key"), "does not decrypt", true},
		{"PKCS#8 DES3 wrong password", td("ec.crt"), td("ec-pkcs8-des3-sha1.key"), "wrong", "KeyFilePassword", td("ec-pkcs8-des3-sha1.key"), "does not decrypt", true},
		{"PKCS#8 no password", td("ec.crt"), td("ec-pkcs8-default.key"), "", "KeyFile", td("ec-pkcs8-default.key"), "KEY_FILE_PASSWORD is not set", true},
		{"legacy wrong password", td("ec.crt"), td("ec-legacy-aes256.key"), "wrong", "KeyFilePassword", td("ec-legacy-aes256.key"), "does not decrypt", true},
		{"legacy RSA wrong password", td("rsa.crt"), td("rsa-legacy-aes128.key"), "wrong", "KeyFilePassword", td("rsa-legacy-aes128.key"), "does not decrypt", true},
		{"legacy no password", td("ec.crt"), td("ec-legacy-aes256.key"), "", "KeyFile", td("ec-legacy-aes256.key"), "KEY_FILE_PASSWORD is not set", true},
		{"PKCS#8 scrypt", td("ec.crt"), td("ec-pkcs8-scrypt.key"), testPassword, "KeyFile", td("ec-pkcs8-scrypt.key"), "scrypt", false},
		{"PKCS#8 ciphertext not whole blocks", td("ec.crt"), truncated, testPassword, "KeyFile", truncated, "whole number of cipher blocks", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := LoadCertificate(tc.cert, tc.key, tc.password)
			var ce *CertError
			if !errors.As(err, &ce) {
				t.Fatalf("want a *CertError, got %v", err)
			}
			if ce.Setting != tc.setting || ce.File != tc.file {
				t.Errorf("setting %q file %q, want %q %q (%v)", ce.Setting, ce.File, tc.setting, tc.file, err)
			}
			if !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), tc.file) {
				t.Errorf("message %q should name %q and say %q", err, tc.file, tc.want)
			}
			if errors.Is(err, ErrKeyPassword) != tc.password2 {
				t.Errorf("errors.Is(ErrKeyPassword) = %v: %v", !tc.password2, err)
			}
		})
	}
	if os.Geteuid() != 0 { // root reads anything
		_, err := LoadCertificate(td("ec.crt"), unreadable, "")
		if err == nil || !strings.Contains(err.Error(), "permission denied") {
			t.Errorf("unreadable key: %v", err)
		}
	}
}

// writePKCS8WithBadLength takes OpenSSL's file and cuts its ciphertext to a
// length that is not a multiple of the block: a careless decoder panics.
func writePKCS8WithBadLength(t *testing.T, path string) {
	t.Helper()
	raw, err := os.ReadFile(td("ec-pkcs8-default.key"))
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(raw)
	var info encryptedPrivateKeyInfo
	if _, err := asn1.Unmarshal(block.Bytes, &info); err != nil {
		t.Fatal(err)
	}
	info.EncryptedData = info.EncryptedData[:len(info.EncryptedData)-3]
	der, err := asn1.Marshal(info)
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "ENCRYPTED PRIVATE KEY", Bytes: der}), 0o600)
}

func TestCertificateWarning(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile := writeSelfSigned(t, dir, time.Now().Add(-48*time.Hour), time.Now().Add(-24*time.Hour))
	cert, err := LoadCertificate(certFile, keyFile, "")
	if err != nil {
		t.Fatal(err)
	}
	if w := CertificateWarning(cert, certFile); !strings.Contains(w, "expired") {
		t.Errorf("warning %q", w)
	}
	cert, err = LoadCertificate(td("ec.crt"), td("ec.key"), "")
	if err != nil {
		t.Fatal(err)
	}
	if w := CertificateWarning(cert, td("ec.crt")); w != "" {
		t.Errorf("valid certificate: warning %q", w)
	}
}

func TestHTTPModeAndALPN(t *testing.T) {
	for _, tc := range []struct {
		in, mode string
		alpn     string
	}{
		{"", HTTPAuto, "h2,http/1.1"},
		{"auto", HTTPAuto, "h2,http/1.1"},
		{"1", HTTP1, "http/1.1"},
		{" 2 ", HTTP2, "h2"},
	} {
		mode, err := httpMode(protocol.WorkerOptions{HTTP: tc.in})
		if err != nil || mode != tc.mode {
			t.Errorf("httpMode(%q) = %q, %v", tc.in, mode, err)
		}
		cfg := tlsConfig(tlsCertificate(t), mode)
		if got := strings.Join(cfg.NextProtos, ","); got != tc.alpn {
			t.Errorf("HTTP %q: ALPN %s, want %s", tc.in, got, tc.alpn)
		}
		if cfg.MinVersion != 0x0303 {
			t.Errorf("MinVersion %x, want TLS 1.2", cfg.MinVersion)
		}
	}
	if _, err := httpMode(protocol.WorkerOptions{HTTP: "3"}); err == nil {
		t.Error(`HTTP "3" accepted`)
	}
}

// writeSelfSigned writes an ECDSA certificate and key valid in [from, to).
func writeSelfSigned(t *testing.T, dir string, from, to time.Time) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "localhost"},
		NotBefore: from, NotAfter: to, DNSNames: []string{"localhost"},
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, _ := x509.MarshalPKCS8PrivateKey(key)
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644)
	os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600)
	return certFile, keyFile
}
