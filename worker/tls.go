package worker

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/mcpgateway/mcpgateway/supervisor/protocol"
)

// HTTP versions a worker serves (WorkerOptions.HTTP, GRANIAN_HTTP).
const (
	HTTPAuto = "auto" // TLS: h2 and http/1.1 through ALPN; plain: HTTP/1.1
	HTTP1    = "1"    // HTTP/1.1 only
	HTTP2    = "2"    // TLS: h2 only; plain: h2c with prior knowledge
)

// CertError says which setting and which file make the certificate
// unusable. Setting is the configuration's name for it: CertFile, KeyFile or
// KeyFilePassword.
type CertError struct {
	Setting string
	File    string
	Err     error
}

func (e *CertError) Error() string { return fmt.Sprintf("%s %q: %v", e.Setting, e.File, e.Err) }
func (e *CertError) Unwrap() error { return e.Err }

// ErrKeyPassword matches (errors.Is) the CertError of a key that the
// password does not decrypt, or that needs a password when none was given.
var ErrKeyPassword = errors.New("wrong or missing key password")

// keyPasswordError is a message that is also an ErrKeyPassword.
type keyPasswordError string

func (e keyPasswordError) Error() string        { return string(e) }
func (e keyPasswordError) Is(target error) bool { return target == ErrKeyPassword }

const errWrongPassword = keyPasswordError("KEY_FILE_PASSWORD does not decrypt the key")

// LoadCertificate reads a PEM certificate chain and its PEM private key, as
// SSL with CERT_FILE, KEY_FILE and KEY_FILE_PASSWORD describe them, and
// parses them with ParseCertificate. Every failure is a *CertError.
func LoadCertificate(certFile, keyFile, password string) (tls.Certificate, error) {
	certPEM, keyPEM, err := ReadCertificateFiles(certFile, keyFile)
	if err != nil {
		return tls.Certificate{}, err
	}
	return ParseCertificate(certPEM, keyPEM, password, certFile, keyFile)
}

// ReadCertificateFiles reads the certificate and key files as they are, for
// ParseCertificate; a master reads them once and hands the bytes to its
// workers (protocol.TLS). A failure is a *CertError.
func ReadCertificateFiles(certFile, keyFile string) (certPEM, keyPEM []byte, err error) {
	certPEM, err = os.ReadFile(certFile)
	if err != nil {
		return nil, nil, &CertError{"CertFile", certFile, unwrapPathError(err)}
	}
	keyPEM, err = os.ReadFile(keyFile)
	if err != nil {
		return nil, nil, &CertError{"KeyFile", keyFile, unwrapPathError(err)}
	}
	return certPEM, keyPEM, nil
}

// ParseCertificate parses a PEM certificate chain and its PEM private key.
// The key may be PKCS#1, SEC 1 (EC) or PKCS#8; encrypted either the legacy
// way ("Proc-Type: 4,ENCRYPTED", RFC 1423) or as PKCS#8 "ENCRYPTED PRIVATE
// KEY" (PBES2, as OpenSSL 3 writes by default). certFile and keyFile are
// where the bytes came from, for the messages only. Every failure is a
// *CertError.
func ParseCertificate(certPEM, keyPEM []byte, password, certFile, keyFile string) (tls.Certificate, error) {
	var chain [][]byte
	for rest := certPEM; ; {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		if block.Type == "CERTIFICATE" {
			chain = append(chain, block.Bytes)
		}
	}
	if len(chain) == 0 {
		return tls.Certificate{}, &CertError{"CertFile", certFile, errors.New("no PEM CERTIFICATE block in the file")}
	}
	leaf, err := x509.ParseCertificate(chain[0])
	if err != nil {
		return tls.Certificate{}, &CertError{"CertFile", certFile, err}
	}

	key, err := parsePrivateKeyPEM(keyPEM, password)
	if err != nil {
		setting := "KeyFile"
		if errors.Is(err, ErrKeyPassword) && password != "" {
			setting = "KeyFilePassword"
		}
		return tls.Certificate{}, &CertError{setting, keyFile, err}
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return tls.Certificate{}, &CertError{"KeyFile", keyFile, err}
	}
	// X509KeyPair checks that the key belongs to the certificate.
	var certOut bytes.Buffer
	for _, der := range chain {
		pem.Encode(&certOut, &pem.Block{Type: "CERTIFICATE", Bytes: der})
	}
	cert, err := tls.X509KeyPair(certOut.Bytes(), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}))
	if err != nil {
		if strings.Contains(err.Error(), "does not match") {
			err = fmt.Errorf("the key does not belong to the certificate %s (CertFile %q)", leaf.Subject, certFile)
		}
		return tls.Certificate{}, &CertError{"KeyFile", keyFile, err}
	}
	cert.Leaf = leaf
	return cert, nil
}

// CertificateWarning describes a loaded certificate that clients will
// refuse (expired, not yet valid), or "" when it is in its validity period.
func CertificateWarning(cert tls.Certificate, certFile string) string {
	leaf := cert.Leaf
	if leaf == nil {
		return ""
	}
	now := time.Now()
	switch {
	case now.After(leaf.NotAfter):
		return fmt.Sprintf("CertFile %q expired on %s: clients will refuse it", certFile, leaf.NotAfter.UTC().Format(time.DateOnly))
	case now.Before(leaf.NotBefore):
		return fmt.Sprintf("CertFile %q is not valid before %s: clients will refuse it", certFile, leaf.NotBefore.UTC().Format(time.RFC3339))
	}
	return ""
}

// unwrapPathError drops the path of an *os.PathError: CertError names the
// file already.
func unwrapPathError(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return fmt.Errorf("cannot %s it: %w", pe.Op, pe.Err)
	}
	return err
}

// parsePrivateKeyPEM finds the private key in a PEM file and decrypts it.
func parsePrivateKeyPEM(data []byte, password string) (any, error) {
	for rest := data; ; {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			return nil, errors.New("no PEM PRIVATE KEY block in the file")
		}
		if !strings.HasSuffix(block.Type, "PRIVATE KEY") {
			continue // e.g. "EC PARAMETERS" before an EC key
		}
		der := block.Bytes
		switch {
		case block.Type == "ENCRYPTED PRIVATE KEY":
			if password == "" {
				return nil, keyPasswordError("the key is encrypted (PKCS#8) and KEY_FILE_PASSWORD is not set")
			}
			var err error
			if der, err = decryptPKCS8(der, []byte(password)); err != nil {
				return nil, err
			}
			key, err := x509.ParsePKCS8PrivateKey(der)
			if err != nil {
				// A wrong password that happens to leave valid padding.
				return nil, errWrongPassword
			}
			return key, nil
		case x509.IsEncryptedPEMBlock(block): //nolint:staticcheck // legacy keys are what this branch is for
			if password == "" {
				return nil, keyPasswordError(fmt.Sprintf("the key is encrypted (%s) and KEY_FILE_PASSWORD is not set", block.Headers["DEK-Info"]))
			}
			var err error
			der, err = x509.DecryptPEMBlock(block, []byte(password)) //nolint:staticcheck // RFC 1423 is insecure by design, and still what `openssl rsa -aes256` writes
			if errors.Is(err, x509.IncorrectPasswordError) {
				return nil, errWrongPassword
			}
			if err != nil {
				return nil, err
			}
			key, err := parseKeyDER(block.Type, der)
			if err != nil {
				return nil, errWrongPassword
			}
			return key, nil
		}
		return parseKeyDER(block.Type, der)
	}
}

// parseKeyDER parses an unencrypted key of any of the usual encodings.
func parseKeyDER(pemType string, der []byte) (any, error) {
	if key, err := x509.ParsePKCS8PrivateKey(der); err == nil {
		return key, nil
	}
	if key, err := x509.ParsePKCS1PrivateKey(der); err == nil {
		return key, nil
	}
	if key, err := x509.ParseECPrivateKey(der); err == nil {
		return key, nil
	}
	return nil, fmt.Errorf("the %s block is not a PKCS#8, PKCS#1 or EC private key", pemType)
}

// tlsConfig is the worker's TLS configuration: TLS 1.2 at least, Go's
// default cipher suites and curves (forward secret, AEAD only), and the ALPN
// protocols of the HTTP mode.
func tlsConfig(cert tls.Certificate, mode string) *tls.Config {
	var protos []string
	switch mode {
	case HTTP1:
		protos = []string{"http/1.1"}
	case HTTP2:
		protos = []string{"h2"}
	default:
		protos = []string{"h2", "http/1.1"}
	}
	return &tls.Config{
		Certificates: []tls.Certificate{cert},
		MinVersion:   tls.VersionTLS12,
		NextProtos:   protos,
	}
}

// httpMode checks WorkerOptions.HTTP; "" means auto.
func httpMode(opts protocol.WorkerOptions) (string, error) {
	switch m := strings.ToLower(strings.TrimSpace(opts.HTTP)); m {
	case "", HTTPAuto:
		return HTTPAuto, nil
	case HTTP1, HTTP2:
		return m, nil
	default:
		return "", fmt.Errorf("HTTP %q: want auto, 1 or 2", opts.HTTP)
	}
}

// setupTLS builds the certificate from the bytes the master read
// (protocol.TLS CertPEM and KeyPEM), so that a worker's boot depends on
// nothing mutable on disk: a key file renamed or half-rewritten by a
// certificate rotation cannot fail a recycled worker. Only an embedder that
// hands over no bytes has its files read here, once per worker process.
// It also checks the HTTP mode.
func (w *worker) setupTLS() error {
	mode, err := httpMode(w.opts)
	if err != nil {
		return err
	}
	w.httpMode = mode
	t := w.opts.TLS
	if t == nil {
		return nil
	}
	certPEM, keyPEM := t.CertPEM, t.KeyPEM
	if len(certPEM) == 0 {
		if certPEM, err = os.ReadFile(t.CertFile); err != nil {
			return fmt.Errorf("TLS certificate: %w", &CertError{"CertFile", t.CertFile, unwrapPathError(err)})
		}
	}
	if len(keyPEM) == 0 {
		if keyPEM, err = os.ReadFile(t.KeyFile); err != nil {
			return fmt.Errorf("TLS certificate: %w", &CertError{"KeyFile", t.KeyFile, unwrapPathError(err)})
		}
	}
	cert, err := ParseCertificate(certPEM, keyPEM, t.KeyFilePassword, t.CertFile, t.KeyFile)
	if err != nil {
		return fmt.Errorf("TLS certificate: %w", err)
	}
	w.tls = tlsConfig(cert, mode)
	return nil
}
