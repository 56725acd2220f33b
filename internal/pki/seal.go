package pki

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// SealKeySize is the length of the key-encryption key in bytes (AES-256).
const SealKeySize = 32

// sealVersion1 is the first byte of a sealed blob:
// version(1) || nonce(12) || AES-256-GCM(plaintext, aad) with its 16-byte tag.
const sealVersion1 = 1

// ErrSealKey is returned when a sealed key cannot be opened: the master key
// is not the one it was sealed with, or the blob is damaged.
var ErrSealKey = errors.New("sealed CA key cannot be opened: wrong master key?")

// ErrBadSealKey is returned by LoadSealKey for a key that is not 32 bytes
// of base64.
var ErrBadSealKey = errors.New("invalid master key")

// LoadSealKey returns the 32-byte key that seals the CA's private keys. It
// comes from envValue (base64, e.g. FIELDHUB_MASTER_KEY) when that is set,
// else from the file at path, which holds the key in base64 and is created
// with a random key (mode 0600, parent directory 0700) when missing.
//
// The key must be kept outside the data folder: whoever holds both can
// open the CA. Losing it makes the CA unusable (devices must be
// re-enrolled), so back it up apart from the data.
func LoadSealKey(path string, envValue string) ([]byte, error) {
	if v := strings.TrimSpace(envValue); v != "" {
		k, err := decodeSealKey(v)
		if err != nil {
			return nil, fmt.Errorf("pki: master key from the environment: %w", err)
		}
		return k, nil
	}
	if path == "" {
		return nil, fmt.Errorf("pki: %w: no key file and no key in the environment", ErrBadSealKey)
	}
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return createSealKey(path)
	}
	if err != nil {
		return nil, fmt.Errorf("pki: reading master key: %w", err)
	}
	k, err := decodeSealKey(strings.TrimSpace(string(b)))
	if err != nil {
		return nil, fmt.Errorf("pki: master key file %s: %w", path, err)
	}
	return k, nil
}

// createSealKey writes a new random key to path without ever replacing an
// existing file; when another process wins the race, its key is read back.
func createSealKey(path string) ([]byte, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("pki: creating master key directory: %w", err)
	}
	k := make([]byte, SealKeySize)
	rand.Read(k)
	tmp, err := os.CreateTemp(filepath.Dir(path), ".master-key-*")
	if err != nil {
		return nil, fmt.Errorf("pki: creating master key: %w", err)
	}
	defer os.Remove(tmp.Name())
	// CreateTemp already uses mode 0600.
	_, err = tmp.WriteString(base64.StdEncoding.EncodeToString(k) + "\n")
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return nil, fmt.Errorf("pki: writing master key: %w", err)
	}
	// A hard link fails when path exists, unlike a rename.
	if err := os.Link(tmp.Name(), path); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return LoadSealKey(path, "")
		}
		return nil, fmt.Errorf("pki: writing master key: %w", err)
	}
	if d, err := os.Open(filepath.Dir(path)); err == nil {
		d.Sync()
		d.Close()
	}
	return k, nil
}

// decodeSealKey accepts standard or URL base64, padded or not.
func decodeSealKey(s string) ([]byte, error) {
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
		if k, err := enc.DecodeString(s); err == nil {
			if len(k) != SealKeySize {
				return nil, fmt.Errorf("%w: %d bytes, want %d", ErrBadSealKey, len(k), SealKeySize)
			}
			return k, nil
		}
	}
	return nil, fmt.Errorf("%w: not base64", ErrBadSealKey)
}

// seal encrypts plaintext under key. aad names what is sealed, so that a
// blob moved to another slot does not open.
func seal(key, plaintext []byte, aad string) ([]byte, error) {
	aead, err := newAEAD(key)
	if err != nil {
		return nil, err
	}
	out := make([]byte, 1+aead.NonceSize(), 1+aead.NonceSize()+len(plaintext)+aead.Overhead())
	out[0] = sealVersion1
	rand.Read(out[1:])
	return aead.Seal(out, out[1:], plaintext, []byte(aad)), nil
}

// unseal reverses seal; ErrSealKey when key or aad is wrong or blob damaged.
func unseal(key, blob []byte, aad string) ([]byte, error) {
	aead, err := newAEAD(key)
	if err != nil {
		return nil, err
	}
	if len(blob) == 0 {
		return nil, fmt.Errorf("%w (empty blob)", ErrSealKey)
	}
	if blob[0] != sealVersion1 {
		return nil, fmt.Errorf("pki: sealed blob version %d not supported", blob[0])
	}
	n := aead.NonceSize()
	if len(blob) < 1+n+aead.Overhead() {
		return nil, fmt.Errorf("%w (blob truncated)", ErrSealKey)
	}
	pt, err := aead.Open(nil, blob[1:1+n], blob[1+n:], []byte(aad))
	if err != nil {
		return nil, ErrSealKey
	}
	return pt, nil
}

func newAEAD(key []byte) (cipher.AEAD, error) {
	if len(key) != SealKeySize {
		return nil, fmt.Errorf("pki: %w: %d bytes, want %d", ErrBadSealKey, len(key), SealKeySize)
	}
	b, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("pki: %w", err)
	}
	return cipher.NewGCM(b)
}
