package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/mcpgateway/mcpgateway/config"
	"github.com/mcpgateway/mcpgateway/rpc"
)

// token mints (or decodes) a JWT with the server's own settings: secret (or,
// for RS* and ES*, the private key), algorithm, audience and issuer come
// from the same configuration as `serve` (gunicorn.conf.go, .env,
// environment) unless given here. It always signs with the current key;
// --decode also accepts the previous one of a rotation.
func token(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("token", flag.ContinueOnError)
	fs.SetOutput(stderr)
	email := fs.String("u", "", "the user's email (the token's sub)")
	fs.StringVar(email, "username", "", "same as -u")
	minutes := fs.Int("e", 10080, "expiry in minutes; 0 = a token without exp")
	fs.IntVar(minutes, "exp", 10080, "same as -e")
	secret := fs.String("s", "", "secret key (default: JWT_SECRET_KEY from the configuration)")
	fs.StringVar(secret, "secret", "", "same as -s")
	privateKey := fs.String("private-key", "", "RS*/ES*: PEM private key file to sign with (default: JWT_PRIVATE_KEY_PATH)")
	admin := fs.Bool("admin", false, "add is_admin: true")
	decode := fs.String("decode", "", "verify this token and print its claims instead")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "Usage: mcpgateway token -u EMAIL [-e MINUTES] [-s SECRET | --private-key FILE] [--admin] [--decode TOKEN]")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if err == flag.ErrHelp {
			return 0
		}
		return 2
	}
	res, err := config.Load(config.Input{Environ: os.Environ(), Dir: ".", NoSecretCheck: true})
	if err != nil {
		fmt.Fprintf(stderr, "mcpgateway token: %v\n", err)
		return 1
	}
	s := res.Settings
	hmac := strings.HasPrefix(s.JWTAlgorithm, "HS")
	if *secret != "" && !hmac {
		fmt.Fprintf(stderr, "mcpgateway token: -s is for HS* algorithms; JWT_ALGORITHM=%s signs with a private key (--private-key or JWT_PRIVATE_KEY_PATH)\n", s.JWTAlgorithm)
		return 2
	}
	if *privateKey != "" && hmac {
		fmt.Fprintf(stderr, "mcpgateway token: --private-key is for RS* and ES* algorithms; JWT_ALGORITHM=%s signs with JWT_SECRET_KEY\n", s.JWTAlgorithm)
		return 2
	}
	if *secret == "" && hmac {
		if res.Sources["JWTSecretKey"].Kind == "generated" {
			fmt.Fprintln(stderr, "mcpgateway token: JWT_SECRET_KEY is not set (environment, .env or gunicorn.conf.go) and no -s given: a server without it makes a random key that no minted token can match")
			return 1
		}
		*secret = s.JWTSecretKey
	}
	if *decode != "" {
		keys := rpc.TokenKeys{Algorithm: s.JWTAlgorithm, Secret: *secret, PublicKeyPEM: s.JWTPublicKeyPEM}
		if *secret == s.JWTSecretKey {
			keys.SecretPrevious = s.JWTSecretKeyPrevious
		}
		claims, err := rpc.DecodeToken(*decode, keys)
		if err != nil {
			fmt.Fprintf(stderr, "mcpgateway token: %v\n", err)
			return 1
		}
		out, _ := json.MarshalIndent(claims, "", "  ")
		fmt.Fprintln(stdout, string(out))
		return 0
	}
	var privatePEM []byte
	if !hmac {
		if *privateKey != "" {
			s.JWTPrivateKeyPath = *privateKey
		}
		if privatePEM, err = config.ReadJWTPrivateKey(&s, "."); err != nil {
			fmt.Fprintf(stderr, "mcpgateway token: JWT_PRIVATE_KEY_PATH: %v\n", err)
			return 1
		}
	}
	if *email == "" {
		fmt.Fprintln(stderr, "mcpgateway token: -u EMAIL is required")
		fs.Usage()
		return 2
	}
	if *minutes < 0 {
		fmt.Fprintf(stderr, "mcpgateway token: -e %d: expiry must be 0 (no exp) or a positive number of minutes\n", *minutes)
		return 2
	}
	tok, err := rpc.MintToken(rpc.TokenRequest{
		Email: *email, Expires: time.Duration(*minutes) * time.Minute, Admin: *admin,
		Secret: *secret, PrivateKeyPEM: privatePEM, Algorithm: s.JWTAlgorithm, Audience: s.JWTAudience, Issuer: s.JWTIssuer,
	})
	if err != nil {
		fmt.Fprintf(stderr, "mcpgateway token: %v\n", err)
		return 1
	}
	fmt.Fprintln(stdout, tok)
	return 0
}
