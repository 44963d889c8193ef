package main

import (
	"crypto/rand"
	"encoding/base64"
	"flag"
	"fmt"
	"io"

	"github.com/mcpgateway/mcpgateway/config"
)

// secret prints a new random JWT_SECRET_KEY: 32 random bytes (or -n), in
// unpadded base64url, so it fits a .env line or a shell variable as is.
// `make .env` writes its output into a new .env.
func secret(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("secret", flag.ContinueOnError)
	fs.SetOutput(stderr)
	n := fs.Int("n", config.MinSecretBytes, fmt.Sprintf("random bytes (at least %d)", config.MinSecretBytes))
	fs.Usage = func() {
		fmt.Fprintln(stderr, "Usage: mcpgateway secret [-n BYTES]   print a new random JWT_SECRET_KEY")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if err == flag.ErrHelp {
			return 0
		}
		return 2
	}
	if *n < config.MinSecretBytes || *n > 1024 || fs.NArg() > 0 {
		fmt.Fprintf(stderr, "mcpgateway secret: -n %d: want %d to 1024 bytes and no arguments\n", *n, config.MinSecretBytes)
		return 2
	}
	key := make([]byte, *n)
	if _, err := rand.Read(key); err != nil {
		fmt.Fprintf(stderr, "mcpgateway secret: %v\n", err)
		return 1
	}
	fmt.Fprintln(stdout, base64.RawURLEncoding.EncodeToString(key))
	return 0
}
