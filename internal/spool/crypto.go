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
	s := &sealer{aead: aead}
	block.Encrypt(s.kcv[:], kcvPlain[:])
	return s, nil
}

func (s *sealer) checkKCV(kcv [16]byte) bool {
	return subtle.ConstantTimeCompare(kcv[:], s.kcv[:]) == 1
}

// seal appends nonce || AES-GCM(plain) to dst with the record ID as
// additional data.
func (s *sealer) seal(dst []byte, id uint64, nonce, plain []byte) []byte {
	var ad [8]byte
	binary.LittleEndian.PutUint64(ad[:], id)
	dst = append(dst, nonce...)
	return s.aead.Seal(dst, nonce, plain, ad[:])
}

// open authenticates and decrypts a sealed body, appending the plain body
// to dst.
func (s *sealer) open(dst []byte, id uint64, body []byte) ([]byte, error) {
	if len(body) < encOverhead {
		return dst, errAuth
	}
	var ad [8]byte
	binary.LittleEndian.PutUint64(ad[:], id)
	out, err := s.aead.Open(dst, body[:nonceSize], body[nonceSize:], ad[:])
	if err != nil {
		return dst, errAuth
	}
	return out, nil
}

type authError struct{}

func (authError) Error() string { return "spool: record does not authenticate" }

var errAuth error = authError{}
