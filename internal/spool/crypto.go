package spool

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/subtle"
	"encoding/binary"
	"fmt"
)

// sealer encrypts and authenticates record bodies.
type sealer struct {
	aead cipher.AEAD
	kcv  [16]byte
	// Additional-data buffers (a local array would escape through the
	// interface call): sealAD for the committer, openAD for the reader
	// (readMu) and Open.
	sealAD, openAD []byte
}

// kcvPlain is encrypted with the key to give the key check value kept in
// every encrypted segment's header: it tells a wrong key from damage.
var kcvPlain = [16]byte{'f', 'i', 'e', 'l', 'd', 'h', 'u', 'b', ' ', 's', 'p', 'o', 'o', 'l', ' ', '1'}

func newSealer(key []byte) (*sealer, error) {
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("spool: key: %w", err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, fmt.Errorf("spool: key: %w", err)
	}
	s := &sealer{aead: aead, sealAD: make([]byte, 8), openAD: make([]byte, 8)}
	block.Encrypt(s.kcv[:], kcvPlain[:])
	return s, nil
}

func (s *sealer) checkKCV(kcv [16]byte) bool {
	return subtle.ConstantTimeCompare(kcv[:], s.kcv[:]) == 1
}

// seal appends nonce || AES-GCM(plain) to dst with the record ID as
// additional data.
// The committer is its only caller.
func (s *sealer) seal(dst []byte, id uint64, nonce, plain []byte) []byte {
	binary.LittleEndian.PutUint64(s.sealAD, id)
	dst = append(dst, nonce...)
	return s.aead.Seal(dst, nonce, plain, s.sealAD)
}

// open authenticates and decrypts a sealed body, appending the plain body
// to dst. Its callers hold readMu (or run in Open).
func (s *sealer) open(dst []byte, id uint64, body []byte) ([]byte, error) {
	if len(body) < encOverhead {
		return dst, errAuth
	}
	binary.LittleEndian.PutUint64(s.openAD, id)
	out, err := s.aead.Open(dst, body[:nonceSize], body[nonceSize:], s.openAD)
	if err != nil {
		return dst, errAuth
	}
	return out, nil
}

type authError struct{}

func (authError) Error() string { return "spool: record does not authenticate" }

var errAuth error = authError{}
