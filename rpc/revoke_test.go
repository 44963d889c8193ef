package rpc

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/valyala/fasthttp"

	"github.com/mcpgateway/mcpgateway/store"
)

// revokingFake is a fakeBackend that keeps revocations, as *store.Store does.
type revokingFake struct {
	*fakeBackend
	rmu  sync.Mutex
	revs map[string]store.Revocation // kind + " " + id
	err  error
}

func newRevokingFake() *revokingFake {
	return &revokingFake{fakeBackend: newFakeBackend(), revs: map[string]store.Revocation{}}
}

func (f *revokingFake) IsRevoked(ctx context.Context, kind, id string) (bool, error) {
	f.rmu.Lock()
	defer f.rmu.Unlock()
	if f.err != nil {
		return false, f.err
	}
	r, ok := f.revs[kind+" "+id]
	return ok && (r.Until.IsZero() || time.Now().Before(r.Until)), nil
}

func (f *revokingFake) Revoke(ctx context.Context, r store.Revocation) error {
	f.rmu.Lock()
	defer f.rmu.Unlock()
	if f.err != nil {
		return f.err
	}
	r.RevokedAt = time.Now().UTC().Truncate(time.Second)
	f.revs[r.Kind+" "+r.ID] = r
	return nil
}

func (f *revokingFake) Revocation(ctx context.Context, kind, id string) (store.Revocation, error) {
	f.rmu.Lock()
	defer f.rmu.Unlock()
	if f.err != nil {
		return store.Revocation{}, f.err
	}
	r, ok := f.revs[kind+" "+id]
	if !ok {
		return store.Revocation{}, store.ErrNotFound
	}
	return r, nil
}

func newRevokingServer(t *testing.T, mod func(o *Options)) (*Server, *revokingFake) {
	t.Helper()
	o := testOptions()
	o.JWTLeeway = 30 * time.Second
	if mod != nil {
		mod(&o)
	}
	b := newRevokingFake()
	s, err := New(o, b)
	if err != nil {
		t.Fatal(err)
	}
	return s, b
}

func jtiOf(t *testing.T, tok string) string {
	t.Helper()
	c, err := DecodeToken(tok, TokenKeys{Secret: testSecret})
	if err != nil {
		t.Fatal(err)
	}
	return c["jti"].(string)
}

func TestRevokeByJTI(t *testing.T) {
	s, b := newRevokingServer(t, nil)
	admin := mint(t, nil)
	victim := mint(t, func(r *TokenRequest) { r.Email = "victim@example.com" })
	b.setUser(store.User{Email: "victim@example.com", Active: true})
	if r := call(s, "POST", "/rpc", ping, bearer(victim)...); r.status != 200 {
		t.Fatalf("before: %d %s", r.status, r.body)
	}
	jti := jtiOf(t, victim)
	if r := call(s, "GET", "/admin/tokens/revoked/"+jti, "", bearer(admin)...); r.status != 404 {
		t.Fatalf("GET before: %d %s", r.status, r.body)
	}
	r := call(s, "POST", "/admin/tokens/revoke", `{"jti":"`+jti+`","exp":4102444800,"reason":"laptop stolen"}`,
		append(bearer(admin), "Content-Type", "application/json")...)
	if r.status != 200 {
		t.Fatalf("revoke: %d %s", r.status, r.body)
	}
	o := r.obj(t)
	if o["kind"] != "jti" || o["id"] != jti || o["revoked_by"] != testEmail || o["reason"] != "laptop stolen" ||
		o["until"] != "2100-01-01T00:00:31Z" {
		t.Errorf("revoke answer: %s", r.body)
	}
	// The token was cached as verified: it is refused all the same.
	expect401(t, call(s, "POST", "/rpc", ping, bearer(victim)...), "Token has been revoked")
	expect401(t, call(s, "POST", "/mcp", mcpInit, bearer(victim)...), "Token has been revoked")
	if r := call(s, "GET", "/admin/tokens/revoked/"+jti, "", bearer(admin)...); r.status != 200 || r.obj(t)["id"] != jti {
		t.Errorf("GET after: %d %s", r.status, r.body)
	}
	// Other tokens of the same user still work.
	if r := call(s, "POST", "/rpc", ping, bearer(mint(t, func(r *TokenRequest) { r.Email = "victim@example.com" }))...); r.status != 200 {
		t.Errorf("another token of the user: %d", r.status)
	}
	// The store failing is a 503, not a pass.
	b.rmu.Lock()
	b.err = errBackendDown
	b.rmu.Unlock()
	if r := call(s, "POST", "/rpc", ping, bearer(admin)...); r.status != 503 {
		t.Errorf("revocations unreadable: %d %s", r.status, r.body)
	}
}

func TestRevokeByToken(t *testing.T) {
	s, b := newRevokingServer(t, nil)
	admin := mint(t, nil)
	victim := mint(t, func(r *TokenRequest) { r.Expires = time.Hour })
	exp := time.Now().Add(time.Hour).Unix()
	r := call(s, "POST", "/admin/tokens/revoke", `{"token":"`+victim+`"}`, append(bearer(admin), "Content-Type", "application/json")...)
	if r.status != 200 {
		t.Fatalf("revoke: %d %s", r.status, r.body)
	}
	rec, _ := b.Revocation(context.Background(), store.RevokedJTI, jtiOf(t, victim))
	if d := rec.Until.Unix() - exp; d < 30 || d > 32 {
		t.Errorf("until %v: want exp + leeway + 1 s (exp %d)", rec.Until, exp)
	}
	expect401(t, call(s, "POST", "/rpc", ping, bearer(victim)...), "Token has been revoked")
	// An expired token can be revoked too (it verifies; its claims are not checked).
	old := signClaims(t, jwt.SigningMethodHS256, []byte(testSecret), func() jwt.MapClaims {
		c := validClaims()
		c["exp"], c["jti"] = time.Now().Add(-time.Hour).Unix(), "old-one"
		return c
	}())
	if r := call(s, "POST", "/admin/tokens/revoke", `{"token":"`+old+`"}`, append(bearer(admin), "Content-Type", "application/json")...); r.status != 200 {
		t.Errorf("revoke an expired token: %d %s", r.status, r.body)
	}
}

func TestRevokeBadRequests(t *testing.T) {
	s, b := newRevokingServer(t, nil)
	admin := mint(t, nil)
	json := func(tok string) []string { return append(bearer(tok), "Content-Type", "application/json") }
	wrongKey := signClaims(t, jwt.SigningMethodHS256, []byte("another-secret"), validClaims())
	noJTI := signClaims(t, jwt.SigningMethodHS256, []byte(testSecret), func() jwt.MapClaims { c := validClaims(); delete(c, "jti"); return c }())
	b.setUser(store.User{Email: "user@example.com", Active: true})
	for _, tc := range []struct {
		name, method, path, body string
		headers                  []string
		status                   int
	}{
		{"neither", "POST", "/admin/tokens/revoke", `{}`, json(admin), 400},
		{"both", "POST", "/admin/tokens/revoke", `{"jti":"a","token":"b"}`, json(admin), 400},
		{"unknown member", "POST", "/admin/tokens/revoke", `{"jit":"a"}`, json(admin), 400},
		{"token with exp", "POST", "/admin/tokens/revoke", `{"token":"` + admin + `","exp":1}`, json(admin), 400},
		{"token of another key", "POST", "/admin/tokens/revoke", `{"token":"` + wrongKey + `"}`, json(admin), 400},
		{"token without jti", "POST", "/admin/tokens/revoke", `{"token":"` + noJTI + `"}`, json(admin), 400},
		{"jti too long", "POST", "/admin/tokens/revoke", `{"jti":"` + strings.Repeat("j", store.MaxRevocationIDLen+1) + `"}`, json(admin), 400},
		{"not JSON", "POST", "/admin/tokens/revoke", `{"jti":"a"}`, append(bearer(admin), "Content-Type", "text/plain"), 415},
		{"GET revoke", "GET", "/admin/tokens/revoke", "", bearer(admin), 405},
		{"POST revoked", "POST", "/admin/tokens/revoked/x", "", bearer(admin), 405},
		{"unknown route", "GET", "/admin/tokens/other", "", bearer(admin), 404},
		{"no token", "POST", "/admin/tokens/revoke", `{"jti":"a"}`, nil, 401},
		{"not an admin", "POST", "/admin/tokens/revoke", `{"jti":"a"}`, json(mint(t, func(r *TokenRequest) { r.Email = "user@example.com" })), 403},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if r := call(s, tc.method, tc.path, tc.body, tc.headers...); r.status != tc.status {
				t.Errorf("%d %s, want %d", r.status, r.body, tc.status)
			}
		})
	}
	if len(b.revs) != 0 {
		t.Errorf("something was revoked: %v", b.revs)
	}
	// A Backend without revocations: 501.
	plain, _ := newTestServer(t, nil)
	if r := call(plain, "POST", "/admin/tokens/revoke", `{"jti":"a"}`, json(admin)...); r.status != 501 {
		t.Errorf("backend without revocations: %d %s", r.status, r.body)
	}
}

func TestLeeway(t *testing.T) {
	s, _ := newRevokingServer(t, nil) // 30 s
	now := time.Now()
	with := func(k string, v time.Time) string {
		c := validClaims()
		c[k] = v.Unix()
		return signClaims(t, jwt.SigningMethodHS256, []byte(testSecret), c)
	}
	for _, tc := range []struct {
		name   string
		tok    string
		detail string
	}{
		{"expired 10 s ago", with("exp", now.Add(-10*time.Second)), ""},
		{"expired 60 s ago", with("exp", now.Add(-60*time.Second)), "Token has expired"},
		{"nbf in 10 s", with("nbf", now.Add(10*time.Second)), ""},
		{"nbf in 60 s", with("nbf", now.Add(60*time.Second)), "Invalid token"},
		{"iat in 10 s", with("iat", now.Add(10*time.Second)), ""},
		{"iat in 60 s", with("iat", now.Add(60*time.Second)), "Invalid token"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := call(s, "POST", "/rpc", ping, bearer(tc.tok)...)
			if tc.detail == "" {
				if r.status != 200 {
					t.Errorf("%d %s", r.status, r.body)
				}
				return
			}
			expect401(t, r, tc.detail)
		})
	}
	// A cached token: refused once exp + leeway has passed, not before.
	tok := with("exp", now.Add(time.Minute))
	var ctx fasthttp.RequestCtx
	var req fasthttp.Request
	req.Header.Set("Authorization", "Bearer "+tok)
	ctx.Init(&req, nil, nil)
	if _, aerr := s.auth.authenticate(&ctx, now); aerr != nil {
		t.Fatal(aerr.detail)
	}
	if _, aerr := s.auth.authenticate(&ctx, now.Add(time.Minute+20*time.Second)); aerr != nil {
		t.Errorf("cached token within the leeway: %v", aerr.detail)
	}
	if _, aerr := s.auth.authenticate(&ctx, now.Add(time.Minute+40*time.Second)); aerr != errExpired {
		t.Errorf("cached token past the leeway: %v", aerr)
	}
	// Without leeway, 10 s late is late.
	strict, _ := newRevokingServer(t, func(o *Options) { o.JWTLeeway = 0 })
	expect401(t, call(strict, "POST", "/rpc", ping, bearer(with("exp", now.Add(-10*time.Second)))...), "Token has expired")
}

// Rotation: tokens and MCP session ids made under the previous key keep
// working while it is listed, and only then; new tokens use the current key.
func TestKeyRotation(t *testing.T) {
	const oldKey, newKey = "old-secret-key-that-is-long-enough-0", "new-secret-key-that-is-long-enough-1"
	before, _ := newRevokingServer(t, func(o *Options) { o.JWTSecretKey = oldKey })
	during, _ := newRevokingServer(t, func(o *Options) { o.JWTSecretKey, o.JWTSecretKeyPrevious = newKey, oldKey })
	after, _ := newRevokingServer(t, func(o *Options) { o.JWTSecretKey = newKey })
	oldTok := mint(t, func(r *TokenRequest) { r.Secret = oldKey })
	newTok := mint(t, func(r *TokenRequest) { r.Secret = newKey })
	otherTok := mint(t, func(r *TokenRequest) { r.Secret = "some-other-key-that-is-long-enough-2" })
	oldSession := mcpInitialize(t, before, oldTok)
	newSession := mcpInitialize(t, during, newTok)
	for _, tc := range []struct {
		name string
		s    *Server
		tok  string
		sid  string
		want int
	}{
		{"during: old token, old session", during, oldTok, oldSession, 200},
		{"during: new token, new session", during, newTok, newSession, 200},
		{"during: other key", during, otherTok, newSession, 401},
		{"after: old token", after, oldTok, "", 401},
		{"after: new token, new session", after, newTok, newSession, 200},
		{"before: new token", before, newTok, "", 401},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if r := call(tc.s, "POST", "/rpc", ping, bearer(tc.tok)...); r.status != tc.want {
				t.Errorf("/rpc: %d %s", r.status, r.body)
			}
			if tc.sid != "" {
				if r := mcpCall(t, tc.s, tc.tok, tc.sid, ping); r.status != tc.want {
					t.Errorf("/mcp session: %d %s", r.status, r.body)
				}
			}
		})
	}
	// After the rotation, a session of the old key is gone (404: start anew).
	if r := mcpCall(t, after, newTok, oldSession, ping); r.status != 404 {
		t.Errorf("old session after the rotation: %d", r.status)
	}
	// New session ids are made under the current key: valid after the rotation.
	if r := mcpCall(t, after, newTok, mcpInitialize(t, during, newTok), ping); r.status != 200 {
		t.Errorf("session issued during the rotation, used after: %d", r.status)
	}
}

// --- Public-key algorithms -----------------------------------------------------

func pemKey(t *testing.T, typ string, der []byte) []byte {
	t.Helper()
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
}

type keyPair struct{ pub, priv []byte }

func rsaPair(t *testing.T) keyPair {
	t.Helper()
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := x509.MarshalPKIXPublicKey(&k.PublicKey)
	priv, _ := x509.MarshalPKCS8PrivateKey(k)
	return keyPair{pemKey(t, "PUBLIC KEY", pub), pemKey(t, "PRIVATE KEY", priv)}
}

func ecPair(t *testing.T, c elliptic.Curve) keyPair {
	t.Helper()
	k, err := ecdsa.GenerateKey(c, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := x509.MarshalPKIXPublicKey(&k.PublicKey)
	priv, _ := x509.MarshalECPrivateKey(k)
	return keyPair{pemKey(t, "PUBLIC KEY", pub), pemKey(t, "EC PRIVATE KEY", priv)}
}

func TestPublicKeyAlgorithms(t *testing.T) {
	rsa1, rsa2 := rsaPair(t), rsaPair(t)
	ec1, ec2 := ecPair(t, elliptic.P256()), ecPair(t, elliptic.P256())
	for _, tc := range []struct {
		alg            string
		current, other keyPair
	}{{"RS256", rsa1, rsa2}, {"ES256", ec1, ec2}} {
		t.Run(tc.alg, func(t *testing.T) {
			s, _ := newRevokingServer(t, func(o *Options) {
				o.JWTAlgorithm, o.JWTPublicKeyPEM = tc.alg, string(tc.current.pub)
			})
			signed := func(k keyPair) string {
				return mint(t, func(r *TokenRequest) { r.Algorithm, r.Secret, r.PrivateKeyPEM = tc.alg, "", k.priv })
			}
			if r := call(s, "POST", "/rpc", ping, bearer(signed(tc.current))...); r.status != 200 {
				t.Fatalf("own key: %d %s", r.status, r.body)
			}
			expect401(t, call(s, "POST", "/rpc", ping, bearer(signed(tc.other))...), "Invalid token")
			// Algorithm confusion: an HMAC token keyed with the public key's
			// PEM, or any HS token, is refused.
			confused := signClaims(t, jwt.SigningMethodHS256, tc.current.pub, validClaims())
			expect401(t, call(s, "POST", "/rpc", ping, bearer(confused)...), "Invalid token")
			expect401(t, call(s, "POST", "/rpc", ping, bearer(mint(t, nil))...), "Invalid token")
			// Rotation: the previous public key is accepted while listed.
			both, _ := newRevokingServer(t, func(o *Options) {
				o.JWTAlgorithm, o.JWTPublicKeyPEM = tc.alg, string(tc.other.pub)+string(tc.current.pub)
			})
			for _, k := range []keyPair{tc.current, tc.other} {
				if r := call(both, "POST", "/rpc", ping, bearer(signed(k))...); r.status != 200 {
					t.Errorf("rotation: %d %s", r.status, r.body)
				}
			}
			// DecodeToken with the public key.
			c, err := DecodeToken(signed(tc.current), TokenKeys{Algorithm: tc.alg, PublicKeyPEM: string(tc.current.pub)})
			if err != nil || c["sub"] != testEmail {
				t.Errorf("DecodeToken: %v %v", c, err)
			}
			if _, err := DecodeToken(signed(tc.other), TokenKeys{Algorithm: tc.alg, PublicKeyPEM: string(tc.current.pub)}); err == nil {
				t.Error("DecodeToken accepted another key")
			}
		})
	}
	// A key of the wrong type or size is refused when the server is built.
	small, _ := rsa.GenerateKey(rand.Reader, 1024)
	smallDER, _ := x509.MarshalPKIXPublicKey(&small.PublicKey)
	p384 := ecPair(t, elliptic.P384())
	for _, tc := range []struct{ alg, pem string }{
		{"RS256", string(ec1.pub)}, {"ES256", string(rsa1.pub)}, {"ES256", string(p384.pub)},
		{"RS256", string(pemKey(t, "PUBLIC KEY", smallDER))}, {"RS256", "not a key"}, {"RS256", ""},
	} {
		if _, err := New(Options{AuthRequired: true, JWTAlgorithm: tc.alg, JWTPublicKeyPEM: tc.pem}, newFakeBackend()); err == nil {
			t.Errorf("%s with %.30q accepted", tc.alg, tc.pem)
		}
	}
	// MintToken refuses a private key of the wrong type.
	if _, err := MintToken(TokenRequest{Email: testEmail, Algorithm: "RS256", PrivateKeyPEM: ec1.priv}); err == nil {
		t.Error("RS256 signed with an EC key")
	}
	if _, err := MintToken(TokenRequest{Email: testEmail, Algorithm: "ES256"}); err == nil {
		t.Error("ES256 without a private key")
	}
}

// 401 bodies never carry the JWT library's words, whatever is wrong.
func TestUnauthorizedBodiesFixed(t *testing.T) {
	s, _ := newRevokingServer(t, func(o *Options) { o.RequireJTI = true; o.RequireTokenExpiration = true })
	allowed := map[string]bool{
		"Not authenticated": true, "Invalid token": true, "Token has expired": true, "Token has been revoked": true,
		"User not found": true, "User account is inactive": true,
		"Invalid authorization header: expected a Bearer token": true,
	}
	c := validClaims()
	var toks []string
	for _, k := range []string{"aud", "iss", "exp", "nbf", "iat", "sub", "jti"} {
		for _, v := range []any{nil, "x", 1, -1, 1e12, []string{"a"}, map[string]any{}, true} {
			cc := jwt.MapClaims{}
			for kk, vv := range c {
				cc[kk] = vv
			}
			if v == nil {
				delete(cc, k)
			} else {
				cc[k] = v
			}
			toks = append(toks, signClaims(t, jwt.SigningMethodHS256, []byte(testSecret), cc))
		}
	}
	toks = append(toks, "a.b.c", "...", "eyJhbGciOiJub25lIn0.e30.", strings.Repeat("x", 9000))
	for i, tok := range toks {
		r := call(s, "POST", "/rpc", ping, bearer(tok)...)
		if r.status == 200 {
			continue
		}
		if d := fmt.Sprint(r.obj(t)["detail"]); r.status != 401 || !allowed[d] {
			t.Errorf("token %d: %d %s", i, r.status, r.body)
		}
	}
}
