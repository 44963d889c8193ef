package worker

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/des"
	"crypto/pbkdf2"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/subtle"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"fmt"
	"hash"
)

// Encrypted PKCS#8 (RFC 5958 EncryptedPrivateKeyInfo) with PBES2 and PBKDF2
// (RFC 8018): what `openssl genpkey -aes-256-cbc`, `openssl pkcs8 -topk8`
// and OpenSSL 3's `openssl req -newkey` write. The standard library has
// crypto/pbkdf2 since Go 1.24 but no PKCS#8 decryption; the one focused
// library (github.com/youmark/pkcs8) has had no code change since 2020, does
// not check CBC padding and panics on a ciphertext that is not a whole number
// of blocks, so this small, strict decoder is used instead.

var (
	oidPBES2      = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 5, 13}
	oidPBKDF2     = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 5, 12}
	oidScrypt     = asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 11591, 4, 11}
	oidHMACSHA1   = asn1.ObjectIdentifier{1, 2, 840, 113549, 2, 7}
	oidHMACSHA224 = asn1.ObjectIdentifier{1, 2, 840, 113549, 2, 8}
	oidHMACSHA256 = asn1.ObjectIdentifier{1, 2, 840, 113549, 2, 9}
	oidHMACSHA384 = asn1.ObjectIdentifier{1, 2, 840, 113549, 2, 10}
	oidHMACSHA512 = asn1.ObjectIdentifier{1, 2, 840, 113549, 2, 11}
	oidAES128CBC  = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 1, 2}
	oidAES192CBC  = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 1, 22}
	oidAES256CBC  = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 1, 42}
	oidDESEDE3CBC = asn1.ObjectIdentifier{1, 2, 840, 113549, 3, 7}
)

type encryptedPrivateKeyInfo struct {
	Algorithm     pkix.AlgorithmIdentifier
	EncryptedData []byte
}

type pbes2Params struct {
	KeyDerivationFunc pkix.AlgorithmIdentifier
	EncryptionScheme  pkix.AlgorithmIdentifier
}

type pbkdf2Params struct {
	Salt           []byte // the "specified" choice; "otherSource" fails to decode
	IterationCount int
	KeyLength      int                      `asn1:"optional"`
	PRF            pkix.AlgorithmIdentifier `asn1:"optional"`
}

// maxPBKDF2Iterations bounds the work a hostile key file can ask for.
// OpenSSL writes 2048; a million is already seconds of CPU.
const maxPBKDF2Iterations = 10_000_000

// errReencrypt ends the message of a scheme this decoder does not know.
const errReencrypt = "; re-encrypt the key with: openssl pkcs8 -topk8 -v2 aes-256-cbc -in KEY -out NEWKEY"

// decryptPKCS8 decrypts the DER of an "ENCRYPTED PRIVATE KEY" block and
// returns the DER of the PKCS#8 PrivateKeyInfo inside.
func decryptPKCS8(der, password []byte) ([]byte, error) {
	var info encryptedPrivateKeyInfo
	if rest, err := asn1.Unmarshal(der, &info); err != nil || len(rest) != 0 {
		return nil, errors.New("the ENCRYPTED PRIVATE KEY block is not valid PKCS#8")
	}
	if !info.Algorithm.Algorithm.Equal(oidPBES2) {
		return nil, fmt.Errorf("unsupported key encryption %s (only PBES2 is supported)%s", info.Algorithm.Algorithm, errReencrypt)
	}
	var params pbes2Params
	if rest, err := asn1.Unmarshal(info.Algorithm.Parameters.FullBytes, &params); err != nil || len(rest) != 0 {
		return nil, errors.New("invalid PBES2 parameters in the key")
	}

	// The cipher first: it fixes the key length.
	var (
		newBlock func([]byte) (cipher.Block, error)
		keyLen   int
	)
	switch alg := params.EncryptionScheme.Algorithm; {
	case alg.Equal(oidAES128CBC):
		newBlock, keyLen = aes.NewCipher, 16
	case alg.Equal(oidAES192CBC):
		newBlock, keyLen = aes.NewCipher, 24
	case alg.Equal(oidAES256CBC):
		newBlock, keyLen = aes.NewCipher, 32
	case alg.Equal(oidDESEDE3CBC):
		newBlock, keyLen = des.NewTripleDESCipher, 24
	default:
		return nil, fmt.Errorf("unsupported key cipher %s (AES-CBC and DES-EDE3-CBC are supported)%s", alg, errReencrypt)
	}
	var iv []byte
	if rest, err := asn1.Unmarshal(params.EncryptionScheme.Parameters.FullBytes, &iv); err != nil || len(rest) != 0 {
		return nil, errors.New("invalid cipher parameters (IV) in the key")
	}

	kdf := params.KeyDerivationFunc
	if kdf.Algorithm.Equal(oidScrypt) {
		return nil, errors.New("unsupported key derivation scrypt (PBKDF2 is supported)" + errReencrypt)
	}
	if !kdf.Algorithm.Equal(oidPBKDF2) {
		return nil, fmt.Errorf("unsupported key derivation %s (PBKDF2 is supported)%s", kdf.Algorithm, errReencrypt)
	}
	var kp pbkdf2Params
	if rest, err := asn1.Unmarshal(kdf.Parameters.FullBytes, &kp); err != nil || len(rest) != 0 {
		return nil, errors.New("invalid PBKDF2 parameters in the key")
	}
	if kp.IterationCount < 1 || kp.IterationCount > maxPBKDF2Iterations {
		return nil, fmt.Errorf("PBKDF2 iteration count %d out of range 1..%d", kp.IterationCount, maxPBKDF2Iterations)
	}
	if kp.KeyLength != 0 && kp.KeyLength != keyLen {
		return nil, fmt.Errorf("PBKDF2 key length %d does not fit the cipher (%d bytes)", kp.KeyLength, keyLen)
	}
	var newHash func() hash.Hash
	switch prf := kp.PRF.Algorithm; {
	case len(prf) == 0 || prf.Equal(oidHMACSHA1): // the DEFAULT of RFC 8018
		newHash = sha1.New
	case prf.Equal(oidHMACSHA224):
		newHash = sha256.New224
	case prf.Equal(oidHMACSHA256):
		newHash = sha256.New
	case prf.Equal(oidHMACSHA384):
		newHash = sha512.New384
	case prf.Equal(oidHMACSHA512):
		newHash = sha512.New
	default:
		return nil, fmt.Errorf("unsupported PBKDF2 hash %s%s", prf, errReencrypt)
	}

	key, err := pbkdf2.Key(newHash, string(password), kp.Salt, kp.IterationCount, keyLen)
	if err != nil {
		return nil, fmt.Errorf("derive the key's encryption key: %w", err)
	}
	block, err := newBlock(key)
	if err != nil {
		return nil, err
	}
	bs := block.BlockSize()
	data := info.EncryptedData
	if len(iv) != bs {
		return nil, fmt.Errorf("the key's IV is %d bytes, want %d", len(iv), bs)
	}
	if len(data) == 0 || len(data)%bs != 0 {
		return nil, errors.New("the key's encrypted data is not a whole number of cipher blocks")
	}
	plain := make([]byte, len(data))
	cipher.NewCBCDecrypter(block, iv).CryptBlocks(plain, data)
	return unpad(plain, bs)
}

// unpad removes and checks PKCS#7 padding; bad padding is by far the most
// likely outcome of a wrong password.
func unpad(b []byte, bs int) ([]byte, error) {
	n := int(b[len(b)-1])
	if n == 0 || n > bs || n > len(b) {
		return nil, errWrongPassword
	}
	pad := b[len(b)-n:]
	want := make([]byte, n)
	for i := range want {
		want[i] = byte(n)
	}
	if subtle.ConstantTimeCompare(pad, want) != 1 {
		return nil, errWrongPassword
	}
	return b[:len(b)-n], nil
}
