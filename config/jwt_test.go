package config

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func writePEM(t *testing.T, dir, name, typ string, der []byte) string {
	t.Helper()
	writeFile(t, dir, name, string(pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})))
	return filepath.Join(dir, name)
}

// keyFiles writes an RSA pair, an EC P-256 pair, a second RSA public key and
// a 1024-bit one into dir.
func keyFiles(t *testing.T, dir string) map[string]string {
	t.Helper()
	rk, _ := rsa.GenerateKey(rand.Reader, 2048)
	rk2, _ := rsa.GenerateKey(rand.Reader, 2048)
	small, _ := rsa.GenerateKey(rand.Reader, 1024)
	ek, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	pub := func(k any) []byte { b, _ := x509.MarshalPKIXPublicKey(k); return b }
	rpriv, _ := x509.MarshalPKCS8PrivateKey(rk)
	epriv, _ := x509.MarshalECPrivateKey(ek)
	return map[string]string{
		"rsa.pub":   writePEM(t, dir, "rsa.pub", "PUBLIC KEY", pub(&rk.PublicKey)),
		"rsa.key":   writePEM(t, dir, "rsa.key", "PRIVATE KEY", rpriv),
		"rsa2.pub":  writePEM(t, dir, "rsa2.pub", "PUBLIC KEY", pub(&rk2.PublicKey)),
		"small.pub": writePEM(t, dir, "small.pub", "PUBLIC KEY", pub(&small.PublicKey)),
		"ec.pub":    writePEM(t, dir, "ec.pub", "PUBLIC KEY", pub(&ek.PublicKey)),
		"ec.key":    writePEM(t, dir, "ec.key", "EC PRIVATE KEY", epriv),
	}
}

func TestJWTPublicKeys(t *testing.T) {
	dir := t.TempDir()
	k := keyFiles(t, dir)
	load := func(env ...string) (*Resolved, error) {
		return Load(Input{Environ: append([]string{"JWT_SECRET_KEY=" + testKey}, env...), Dir: dir, NumCPU: 4})
	}
	r, err := load("JWT_ALGORITHM=RS256", "JWT_PUBLIC_KEY_PATH=rsa.pub", "JWT_PUBLIC_KEY_PATH_PREVIOUS="+k["rsa2.pub"],
		"JWT_PRIVATE_KEY_PATH=rsa.key")
	if err != nil {
		t.Fatal(err)
	}
	s := r.Settings
	if n := strings.Count(s.JWTPublicKeyPEM, "-----BEGIN PUBLIC KEY-----"); n != 2 || r.Sources["JWTPublicKeyPEM"].Kind != "derived" {
		t.Errorf("JWTPublicKeyPEM holds %d keys (%v)", n, r.Sources["JWTPublicKeyPEM"])
	}
	// The workers get the bytes through the JSON of the settings.
	var back Settings
	b, _ := json.Marshal(s)
	if json.Unmarshal(b, &back) != nil || back.JWTPublicKeyPEM != s.JWTPublicKeyPEM {
		t.Error("JWTPublicKeyPEM does not round-trip")
	}
	var out bytes.Buffer
	r.Print(&out)
	if strings.Contains(out.String(), "BEGIN") || !strings.Contains(out.String(), "2 PEM key(s)") {
		t.Errorf("Print shows the PEM:\n%s", out.String())
	}
	if pemBytes, err := ReadJWTPrivateKey(&s, dir); err != nil || !bytes.Contains(pemBytes, []byte("PRIVATE KEY")) {
		t.Errorf("ReadJWTPrivateKey: %v", err)
	}
	if r, err := load("JWT_ALGORITHM=ES256", "JWT_PUBLIC_KEY_PATH=ec.pub", "JWT_PRIVATE_KEY_PATH=ec.key"); err != nil ||
		!strings.Contains(r.Settings.JWTPublicKeyPEM, "PUBLIC KEY") {
		t.Errorf("ES256: %v", err)
	}

	// Refusals name the setting and its source.
	for _, tc := range []struct {
		env     []string
		setting string
		says    string
	}{
		{[]string{"JWT_ALGORITHM=RS256"}, "JWTPublicKeyPath", "set JWT_PUBLIC_KEY_PATH"},
		{[]string{"JWT_ALGORITHM=RS256", "JWT_PUBLIC_KEY_PATH=missing.pem"}, "JWTPublicKeyPath", "no such file"},
		{[]string{"JWT_ALGORITHM=RS256", "JWT_PUBLIC_KEY_PATH=ec.pub"}, "JWTPublicKeyPath", "RSA"},
		{[]string{"JWT_ALGORITHM=ES256", "JWT_PUBLIC_KEY_PATH=rsa.pub"}, "JWTPublicKeyPath", "ECDSA"},
		{[]string{"JWT_ALGORITHM=RS256", "JWT_PUBLIC_KEY_PATH=small.pub"}, "JWTPublicKeyPath", "1024 bits"},
		{[]string{"JWT_ALGORITHM=RS256", "JWT_PUBLIC_KEY_PATH=rsa.key"}, "JWTPublicKeyPath", "RSA public key"},
		{[]string{"JWT_ALGORITHM=RS256", "JWT_PUBLIC_KEY_PATH=rsa.pub", "JWT_PUBLIC_KEY_PATH_PREVIOUS=ec.pub"}, "JWTPublicKeyPathPrevious", "RSA"},
		{[]string{"JWT_ALGORITHM=RS256", "JWT_PUBLIC_KEY_PATH=rsa2.pub", "JWT_PRIVATE_KEY_PATH=rsa.key"}, "JWTPrivateKeyPath", "not the private key"},
		{[]string{"JWT_ALGORITHM=ES256", "JWT_PUBLIC_KEY_PATH=ec.pub", "JWT_PRIVATE_KEY_PATH=rsa.key"}, "JWTPrivateKeyPath", "ECDSA"},
	} {
		_, err := load(tc.env...)
		var e *Error
		if !errors.As(err, &e) || e.Setting != tc.setting || !errors.Is(err, ErrJWTKey) || !strings.Contains(err.Error(), tc.says) ||
			!strings.HasPrefix(e.Source, "env JWT_") && e.Source != "default gunicorn" {
			t.Errorf("%v: %v", tc.env, err)
		}
	}
	// HS*: the paths are ignored, with a warning, and nothing is read.
	r, err = load("JWT_PUBLIC_KEY_PATH=missing.pem")
	if err != nil || r.Settings.JWTPublicKeyPEM != "" || !hasWarning(r, "JWTPublicKeyPath") {
		t.Errorf("HS256 with a key path: %v %v", err, r.Warnings)
	}
	// The workers never read: a file written by hand in the conf file is refused.
	input := in(t, nil, "JWT_SECRET_KEY="+testKey)
	writeFile(t, input.Dir, "gunicorn.conf.go", "package conf\n\nconst JWTPublicKeyPEM = \"x\"\n")
	if e := mustFail(t, input); e.Setting != "JWTPublicKeyPEM" || !errors.Is(e, ErrNotSettable) {
		t.Errorf("JWTPublicKeyPEM in the conf file: %v", e)
	}
}

// The weak-secret rule is for HS* keys (and the previous one of a rotation).
func TestWeakSecretRuleAndAlgorithms(t *testing.T) {
	dir := t.TempDir()
	keyFiles(t, dir)
	env := []string{"HOST=0.0.0.0", "JWT_SECRET_KEY=short", "JWT_ALGORITHM=RS256", "JWT_PUBLIC_KEY_PATH=rsa.pub"}
	if _, err := Load(Input{Environ: env, Dir: dir, NumCPU: 4}); err != nil {
		t.Errorf("RS256 with a short secret (it only keys session ids): %v", err)
	}
	e := mustFail(t, in(t, nil, "HOST=0.0.0.0", "JWT_SECRET_KEY="+testKey, "JWT_SECRET_KEY_PREVIOUS=my-test-key"))
	if e.Setting != "JWTSecretKeyPrevious" || !errors.Is(e, ErrWeakSecret) || strings.Contains(e.Error(), "my-test-key") {
		t.Errorf("weak previous key: %v", e)
	}
	mustLoad(t, in(t, nil, "HOST=127.0.0.1", "JWT_SECRET_KEY="+testKey, "JWT_SECRET_KEY_PREVIOUS=my-test-key"))
}

func TestJWTLeeway(t *testing.T) {
	if r := mustLoad(t, in(t, nil, "JWT_SECRET_KEY="+testKey)); r.Settings.JWTLeeway != DefaultJWTLeeway {
		t.Errorf("default %v", r.Settings.JWTLeeway)
	}
	for v, want := range map[string]time.Duration{"0": 0, "45": 45 * time.Second, "2m": 2 * time.Minute, "5m": 5 * time.Minute} {
		if r := mustLoad(t, in(t, nil, "JWT_SECRET_KEY="+testKey, "JWT_LEEWAY="+v)); r.Settings.JWTLeeway != want {
			t.Errorf("JWT_LEEWAY=%s: %v", v, r.Settings.JWTLeeway)
		}
	}
	for _, v := range []string{"-1", "301", "1h", "soon"} {
		e := mustFail(t, in(t, nil, "JWT_SECRET_KEY="+testKey, "JWT_LEEWAY="+v))
		if e.Setting != "JWTLeeway" || e.Source != "env JWT_LEEWAY" {
			t.Errorf("JWT_LEEWAY=%s: %v", v, e)
		}
	}
}
