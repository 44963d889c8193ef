package rpc

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/valyala/fasthttp"

	"github.com/mcpgateway/mcpgateway/store"
)

const ping = `{"jsonrpc":"2.0","id":1,"method":"ping"}`

// expect401 checks a refusal: status, JSON {"detail"} (exactly: the texts are
// fixed, nothing of the JWT library's error is sent), WWW-Authenticate.
func expect401(t *testing.T, r result, detail string) {
	t.Helper()
	if r.status != 401 {
		t.Fatalf("status %d, want 401: %s", r.status, r.body)
	}
	if r.header("WWW-Authenticate") != "Bearer" || r.header("Content-Type") != "application/json" {
		t.Errorf("headers: WWW-Authenticate %q, Content-Type %q", r.header("WWW-Authenticate"), r.header("Content-Type"))
	}
	if got := r.obj(t)["detail"]; fmt.Sprint(got) != detail {
		t.Errorf("detail %q, want %q", got, detail)
	}
}

func bearer(tok string) []string { return []string{"Authorization", "Bearer " + tok} }

func TestAuthFailures(t *testing.T) {
	s, _ := newTestServer(t, func(o *Options) { o.RequireJTI = true; o.RequireTokenExpiration = true; o.RequireUserInDB = true })
	wrongKey := signClaims(t, jwt.SigningMethodHS256, []byte("another-secret"), validClaims())
	none := signClaims(t, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, validClaims())
	hs512 := signClaims(t, jwt.SigningMethodHS512, []byte(testSecret), validClaims())
	spoil := func(k string, v any) string {
		c := validClaims()
		if v == nil {
			delete(c, k)
		} else {
			c[k] = v
		}
		return signClaims(t, jwt.SigningMethodHS256, []byte(testSecret), c)
	}
	for _, tc := range []struct {
		name    string
		headers []string
		detail  string
	}{
		{"missing", nil, "Not authenticated"},
		{"empty bearer", []string{"Authorization", "Bearer "}, "Not authenticated"},
		{"not bearer", []string{"Authorization", "Basic YWRtaW46cGFzcw=="}, "Invalid authorization header: expected a Bearer token"},
		{"malformed", bearer("not.a.jwt"), "Invalid token"},
		{"garbage", bearer("abc"), "Invalid token"},
		{"expired", bearer(spoil("exp", time.Now().Add(-time.Minute).Unix())), "Token has expired"},
		{"wrong key", bearer(wrongKey), "Invalid token"},
		{"alg none", bearer(none), "Invalid token"},
		{"HS512 when HS256 configured", bearer(hs512), "Invalid token"},
		{"wrong audience", bearer(spoil("aud", "someone-else")), "Invalid token"},
		{"no audience", bearer(spoil("aud", nil)), "Invalid token"},
		{"wrong issuer", bearer(spoil("iss", "evil")), "Invalid token"},
		{"missing jti", bearer(spoil("jti", nil)), "Invalid token"},
		{"missing exp", bearer(spoil("exp", nil)), "Invalid token"},
		{"not yet valid", bearer(spoil("nbf", time.Now().Add(time.Hour).Unix())), "Invalid token"},
		{"sub not an email", bearer(spoil("sub", "admin")), "Invalid token"},
		{"no sub", bearer(spoil("sub", nil)), "Invalid token"},
		{"inactive user", bearer(spoil("sub", "inactive@example.com")), "User account is inactive"},
		{"unknown user", bearer(spoil("sub", "nobody@example.com")), "User not found"},
		{"bad cookie", []string{"Cookie", "jwt_token=xyz"}, "Invalid token"},
		{"issued in the future", bearer(spoil("iat", time.Now().Add(time.Hour).Unix())), "Invalid token"},
		{"jti too long", bearer(spoil("jti", strings.Repeat("j", store.MaxRevocationIDLen+1))), "Invalid token"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			expect401(t, call(s, "POST", "/rpc", ping, tc.headers...), tc.detail)
		})
	}
	// A valid token passes all of these checks.
	if r := call(s, "POST", "/rpc", ping, bearer(mint(t, nil))...); r.status != 200 {
		t.Fatalf("valid token: %d %s", r.status, r.body)
	}
	// Only tokens that verified are kept: the valid one, and the two whose
	// users are refused (the user is checked on every use, cached or not).
	if s.auth.cacheLen() != 3 {
		t.Errorf("cache holds %d tokens, want 3", s.auth.cacheLen())
	}
}

func (a *authenticator) cacheLen() int {
	a.mu.RLock()
	defer a.mu.RUnlock()
	return len(a.cache)
}

func TestAuthAccepts(t *testing.T) {
	s, _ := newTestServer(t, nil)
	for _, tc := range []struct {
		name    string
		headers []string
	}{
		{"bearer", bearer(mint(t, nil))},
		{"lower-case scheme", []string{"Authorization", "bearer " + mint(t, nil)}},
		{"admin token", bearer(mint(t, func(r *TokenRequest) { r.Admin = true }))},
		{"no exp when not required", bearer(mint(t, func(r *TokenRequest) { r.Expires = 0 }))},
		{"no jti when not required", bearer(signClaims(t, jwt.SigningMethodHS256, []byte(testSecret), func() jwt.MapClaims {
			c := validClaims()
			delete(c, "jti")
			return c
		}()))},
		{"aud as an array", bearer(signClaims(t, jwt.SigningMethodHS256, []byte(testSecret), func() jwt.MapClaims {
			c := validClaims()
			c["aud"] = []string{"other", DefaultAudience}
			return c
		}()))},
		{"user only in the token", bearer(mint(t, func(r *TokenRequest) { r.Email = "ghost@example.com" }))},
		{"cookie", []string{"Cookie", "jwt_token=" + mint(t, nil)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if r := call(s, "POST", "/rpc", ping, tc.headers...); r.status != 200 {
				t.Fatalf("%d %s", r.status, r.body)
			}
		})
	}
}

func TestAuthAlgorithms(t *testing.T) {
	for _, alg := range []string{"HS256", "HS384", "HS512"} {
		s, _ := newTestServer(t, func(o *Options) { o.JWTAlgorithm = alg })
		for _, other := range []string{"HS256", "HS384", "HS512"} {
			tok := mint(t, func(r *TokenRequest) { r.Algorithm = other })
			r := call(s, "POST", "/rpc", ping, bearer(tok)...)
			if (other == alg) != (r.status == 200) {
				t.Errorf("server %s, token %s: status %d", alg, other, r.status)
			}
		}
	}
}

func TestCookieNeedsJSONContentType(t *testing.T) {
	s, _ := newTestServer(t, nil)
	var req fasthttp.Request
	req.Header.SetMethod("POST")
	req.SetRequestURI("/rpc")
	req.Header.SetContentType("text/plain")
	req.Header.SetCookie("jwt_token", mint(t, nil))
	req.SetBodyString(ping)
	var ctx fasthttp.RequestCtx
	ctx.Init(&req, nil, nil)
	s.Handler(&ctx)
	if ctx.Response.StatusCode() != 415 {
		t.Fatalf("cookie with text/plain: %d %s", ctx.Response.StatusCode(), ctx.Response.Body())
	}
	// The same with application/json; charset=utf-8 passes.
	req.Header.SetContentType("application/json; charset=utf-8")
	ctx.Init(&req, nil, nil)
	s.Handler(&ctx)
	if ctx.Response.StatusCode() != 200 {
		t.Fatalf("cookie with JSON: %d %s", ctx.Response.StatusCode(), ctx.Response.Body())
	}
}

func TestAuthCacheRechecks(t *testing.T) {
	s, b := newTestServer(t, nil)
	tok := mint(t, nil)
	if r := call(s, "POST", "/rpc", ping, bearer(tok)...); r.status != 200 {
		t.Fatal(r.status)
	}
	// The user is deactivated: the cached token is refused at once.
	b.setUser(store.User{Email: testEmail, Active: false})
	expect401(t, call(s, "POST", "/rpc", ping, bearer(tok)...), "User account is inactive")
	b.setUser(store.User{Email: testEmail, Active: true})
	if r := call(s, "POST", "/rpc", ping, bearer(tok)...); r.status != 200 {
		t.Fatal(r.status)
	}
	// The token expires while cached.
	tok = mint(t, func(r *TokenRequest) { r.Expires = time.Minute })
	var ctx fasthttp.RequestCtx
	var req fasthttp.Request
	req.Header.Set("Authorization", "Bearer "+tok)
	ctx.Init(&req, nil, nil)
	if _, aerr := s.auth.authenticate(&ctx, time.Now()); aerr != nil {
		t.Fatal(aerr.detail)
	}
	if _, aerr := s.auth.authenticate(&ctx, time.Now().Add(2*time.Minute)); aerr != errExpired {
		t.Fatalf("expired cached token: %v", aerr)
	}
	s.auth.mu.RLock()
	_, still := s.auth.cache[tok]
	s.auth.mu.RUnlock()
	if still {
		t.Error("expired token left in the cache")
	}
	// The store failing is a 503, not a 401.
	b.set(func(f *fakeBackend) { f.userErr = errBackendDown })
	if r := call(s, "POST", "/rpc", ping, bearer(tok)...); r.status != 503 {
		t.Errorf("store down: %d", r.status)
	}
}

func TestAuthCacheBounded(t *testing.T) {
	s, _ := newTestServer(t, nil)
	for i := 0; i < tokenCacheSize+50; i++ {
		s.auth.remember(fmt.Sprintf("token-%d", i), principal{email: testEmail})
	}
	if n := s.auth.cacheLen(); n != tokenCacheSize {
		t.Errorf("cache holds %d, want %d", n, tokenCacheSize)
	}
	s.auth.remember(strings.Repeat("x", maxCachedTokenLen+1), principal{})
	if n := s.auth.cacheLen(); n != tokenCacheSize {
		t.Errorf("a long token was kept")
	}
	expect401(t, call(s, "POST", "/rpc", ping, bearer(strings.Repeat("a", maxTokenLen+1))...), "Invalid token")
}

func TestAuthOff(t *testing.T) {
	s, _ := newTestServer(t, func(o *Options) { o.AuthRequired = false })
	for _, path := range []string{"/rpc", "/version"} {
		method := "POST"
		if path == "/version" {
			method = "GET"
		}
		if r := call(s, method, path, ping); r.status != 200 {
			t.Errorf("%s without a token: %d", path, r.status)
		}
	}
	// Even without a secret key.
	if _, err := New(Options{AuthRequired: false}, newFakeBackend()); err != nil {
		t.Fatal(err)
	}
}

func TestAuthRoutes(t *testing.T) {
	s, _ := newRevokingServer(t, nil) // DELETE /mcp needs tombstones
	expect401(t, call(s, "POST", "/rpc/", ping), "Not authenticated")
	expect401(t, call(s, "GET", "/version", ""), "Not authenticated")
	expect401(t, call(s, "POST", "/mcp", ping), "Not authenticated")
	expect401(t, call(s, "DELETE", "/mcp", ""), "Not authenticated")
	for _, path := range []string{"/health", "/ready"} {
		if r := call(s, "GET", path, ""); r.status != 200 {
			t.Errorf("%s needs no token: %d", path, r.status)
		}
	}
}

func TestNewOptions(t *testing.T) {
	b := newFakeBackend()
	if _, err := New(Options{AuthRequired: true}, b); err == nil {
		t.Error("auth without a secret accepted")
	}
	if _, err := New(Options{AuthRequired: true, JWTSecretKey: "x", JWTAlgorithm: "RS256"}, b); err == nil {
		t.Error("RS256 without a public key accepted")
	}
	if _, err := New(Options{AuthRequired: true, JWTSecretKey: "x", JWTAlgorithm: "HS256", JWTLeeway: -time.Second}, b); err == nil {
		t.Error("negative leeway accepted")
	}
	if _, err := New(Options{JWTSecretKey: "x", JWTAlgorithm: "none"}, b); err == nil {
		t.Error("none accepted")
	}
	if _, err := New(Options{}, nil); err == nil {
		t.Error("nil backend accepted")
	}
	s, err := New(Options{JWTSecretKey: "x"}, b)
	if err != nil {
		t.Fatal(err)
	}
	if s.opt.JWTAlgorithm != "HS256" || s.opt.MaxBatchSize != 100 || s.opt.MaxRequestBodySize != 1<<20 {
		t.Errorf("defaults: %+v", s.opt)
	}
}

func TestMintAndDecodeToken(t *testing.T) {
	tok, err := MintToken(TokenRequest{Email: testEmail, Expires: time.Hour, Admin: true, Secret: testSecret, Algorithm: "HS384"})
	if err != nil {
		t.Fatal(err)
	}
	claims, err := DecodeToken(tok, TokenKeys{Secret: testSecret, Algorithm: "HS384"})
	if err != nil {
		t.Fatal(err)
	}
	if claims["sub"] != testEmail || claims["aud"] != DefaultAudience || claims["iss"] != DefaultIssuer || claims["is_admin"] != true {
		t.Errorf("claims: %v", claims)
	}
	jti, _ := claims["jti"].(string)
	if len(jti) != 36 || jti[14] != '4' {
		t.Errorf("jti %q is not a UUIDv4", jti)
	}
	iat, exp := claims["iat"].(float64), claims["exp"].(float64)
	if exp-iat != 3600 || time.Since(time.Unix(int64(iat), 0)) > time.Minute {
		t.Errorf("iat %v exp %v", iat, exp)
	}
	// Two tokens never share a jti.
	other, _ := DecodeToken(mint(t, nil), TokenKeys{Secret: testSecret})
	if other["jti"] == jti {
		t.Error("jti repeated")
	}
	// No exp, no is_admin; custom aud/iss.
	tok, _ = MintToken(TokenRequest{Email: testEmail, Secret: testSecret, Audience: "a", Issuer: "i"})
	claims, _ = DecodeToken(tok, TokenKeys{Secret: testSecret, Algorithm: "HS256"})
	if _, ok := claims["exp"]; ok {
		t.Error("exp without Expires")
	}
	if _, ok := claims["is_admin"]; ok || claims["aud"] != "a" || claims["iss"] != "i" {
		t.Errorf("claims: %v", claims)
	}
	// Decoding shows an expired token; it refuses a wrong key or algorithm.
	expired := signClaims(t, jwt.SigningMethodHS256, []byte(testSecret), jwt.MapClaims{"sub": testEmail, "exp": 1})
	if _, err := DecodeToken(expired, TokenKeys{Secret: testSecret, Algorithm: "HS256"}); err != nil {
		t.Errorf("expired token not decoded: %v", err)
	}
	for _, tc := range []struct{ secret, alg string }{{"wrong", "HS256"}, {testSecret, "HS512"}, {testSecret, "RS256"}, {"", "HS256"}} {
		if _, err := DecodeToken(expired, TokenKeys{Secret: tc.secret, Algorithm: tc.alg}); err == nil {
			t.Errorf("decoded with %q %s", tc.secret, tc.alg)
		}
	}
	for _, r := range []TokenRequest{
		{Email: testEmail},
		{Email: "not-an-email", Secret: "x"},
		{Email: testEmail, Secret: "x", Algorithm: "none"},
		{Email: testEmail, Secret: "x", Expires: -time.Second},
	} {
		if _, err := MintToken(r); err == nil {
			t.Errorf("minted %+v", r)
		}
	}
}

func TestIsEmail(t *testing.T) {
	for s, want := range map[string]bool{
		"a@b.c": true, "admin@localhost": true, "first.last+tag@example.co.uk": true,
		"": false, "admin": false, "@b.c": false, "a@": false, "a@b@c": false, "a b@c.d": false, "a@b\n": false,
	} {
		if isEmail(s) != want {
			t.Errorf("isEmail(%q) != %v", s, want)
		}
	}
}
