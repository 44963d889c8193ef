package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/mcpgateway/mcpgateway/config"
	"github.com/mcpgateway/mcpgateway/rpc"
)

// token mints (or decodes) a JWT with the server's own settings: secret,
// algorithm, audience and issuer come from the same configuration as
// `serve` (gunicorn.conf.go, .env, environment) unless given here.
func token(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("token", flag.ContinueOnError)
	fs.SetOutput(stderr)
	email := fs.String("u", "", "the user's email (the token's sub)")
	fs.StringVar(email, "username", "", "same as -u")
	minutes := fs.Int("e", 10080, "expiry in minutes; 0 = a token without exp")
	fs.IntVar(minutes, "exp", 10080, "same as -e")
	secret := fs.String("s", "", "secret key (default: JWT_SECRET_KEY from the configuration)")
	fs.StringVar(secret, "secret", "", "same as -s")
	admin := fs.Bool("admin", false, "add is_admin: true")
	decode := fs.String("decode", "", "verify this token and print its claims instead")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "Usage: mcpgateway token -u EMAIL [-e MINUTES] [-s SECRET] [--admin] [--decode TOKEN]")
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
	if *secret == "" {
		if res.Sources["JWTSecretKey"].Kind == "generated" {
			fmt.Fprintln(stderr, "mcpgateway token: JWT_SECRET_KEY is not set (environment, .env or gunicorn.conf.go) and no -s given: a server without it makes a random key that no minted token can match")
			return 1
		}
		*secret = s.JWTSecretKey
	}
	if *decode != "" {
		claims, err := rpc.DecodeToken(*decode, *secret, s.JWTAlgorithm)
		if err != nil {
			fmt.Fprintf(stderr, "mcpgateway token: %v\n", err)
			return 1
		}
		out, _ := json.MarshalIndent(claims, "", "  ")
		fmt.Fprintln(stdout, string(out))
		return 0
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
		Secret: *secret, Algorithm: s.JWTAlgorithm, Audience: s.JWTAudience, Issuer: s.JWTIssuer,
	})
	if err != nil {
		fmt.Fprintf(stderr, "mcpgateway token: %v\n", err)
		return 1
	}
	fmt.Fprintln(stdout, tok)
	return 0
}
