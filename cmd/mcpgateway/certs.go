package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// certs writes a self-signed certificate and its key for SSL=true, with Go's
// crypto only: `make certs` needs no openssl.
func certs(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("certs", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dir := fs.String("dir", "certs", "directory for cert.pem and key.pem")
	hosts := fs.String("hosts", "localhost,127.0.0.1,::1", "comma-separated host names and IP addresses the certificate is for")
	days := fs.Int("days", 365, "days the certificate is valid")
	force := fs.Bool("force", false, "replace existing files (without it, existing files are kept)")
	fs.Usage = func() {
		fmt.Fprint(stderr, "Usage: mcpgateway certs [--dir certs] [--hosts localhost,127.0.0.1,::1] [--days 365] [--force]\n\n"+
			"Writes a self-signed ECDSA P-256 certificate (DIR/cert.pem) and its private key\n"+
			"(DIR/key.pem, mode 0600) for SSL=true. For development and tests: clients must be\n"+
			"told to trust cert.pem (curl --cacert, or -k).\n\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "mcpgateway certs: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	if *days < 1 {
		fmt.Fprintf(stderr, "mcpgateway certs: --days %d: want 1 or more\n", *days)
		return 2
	}
	certFile, keyFile := filepath.Join(*dir, "cert.pem"), filepath.Join(*dir, "key.pem")
	if !*force {
		_, errC := os.Stat(certFile)
		_, errK := os.Stat(keyFile)
		switch {
		case errC == nil && errK == nil:
			fmt.Fprintf(stdout, "%s and %s exist; kept (--force replaces them)\n", certFile, keyFile)
			return 0
		case errC == nil || errK == nil:
			// One without the other: replacing it would silently throw away
			// a private key, or a certificate that matched it.
			fmt.Fprintf(stderr, "mcpgateway certs: only one of %s and %s exists; kept, nothing written (--force replaces both)\n", certFile, keyFile)
			return 1
		}
	}
	certPEM, keyPEM, err := selfSigned(splitHosts(*hosts), time.Duration(*days)*24*time.Hour)
	if err != nil {
		fmt.Fprintf(stderr, "mcpgateway certs: %v\n", err)
		return 1
	}
	if err := os.MkdirAll(*dir, 0o755); err != nil {
		fmt.Fprintf(stderr, "mcpgateway certs: %v\n", err)
		return 1
	}
	if err := writeFileAtomic(keyFile, keyPEM, 0o600); err != nil {
		fmt.Fprintf(stderr, "mcpgateway certs: %v\n", err)
		return 1
	}
	if err := writeFileAtomic(certFile, certPEM, 0o644); err != nil {
		fmt.Fprintf(stderr, "mcpgateway certs: %v\n", err)
		return 1
	}
	fmt.Fprintf(stdout, "wrote %s and %s (ECDSA P-256, self-signed, for %s, valid %d days)\n",
		certFile, keyFile, strings.Join(splitHosts(*hosts), ", "), *days)
	return 0
}

func splitHosts(s string) []string {
	var out []string
	for _, h := range strings.Split(s, ",") {
		if h = strings.TrimSpace(h); h != "" {
			out = append(out, h)
		}
	}
	return out
}

// selfSigned makes a certificate for hosts (names or IP addresses) and its
// key, both PEM; the key is unencrypted PKCS#8.
func selfSigned(hosts []string, validFor time.Duration) (certPEM, keyPEM []byte, err error) {
	if len(hosts) == 0 {
		return nil, nil, errors.New("--hosts: at least one host name or IP address")
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	if err != nil {
		return nil, nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{Organization: []string{"mcpgateway self-signed"}, CommonName: hosts[0]},
		NotBefore:             now.Add(-time.Hour), // clock skew
		NotAfter:              now.Add(validFor),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
	}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, err
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), nil
}

// writeFileAtomic writes through a temporary file in the same directory, so
// a reader (a worker starting) never sees half a key.
func writeFileAtomic(path string, data []byte, mode os.FileMode) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	if err := f.Chmod(mode); err != nil {
		f.Close()
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil { // on disk before the rename makes it the file
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(f.Name(), path)
}
