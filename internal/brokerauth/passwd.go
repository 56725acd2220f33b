package brokerauth

import (
	"crypto/hmac"
	"crypto/pbkdf2"
	"crypto/rand"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// Mosquitto 2.0's password hash ($7$): PBKDF2-HMAC-SHA512 with a 12-byte
// salt and a 64-byte key, written by mosquitto_passwd as
//
//	$7$<iterations>$<base64 salt>$<base64 key>
//
// (standard base64 with padding). Mosquitto refuses an entry whose salt is
// not 12 bytes or whose key is not 64.
const (
	mosquittoSaltLen = 12
	mosquittoKeyLen  = 64
)

// DefaultIterations is the PBKDF2 iteration count of new Mosquitto hashes:
// mosquitto_passwd's own default (Mosquitto 2.0). The passwords hashed
// are the registry's: 192 random bits, which no iteration count makes
// easier or harder to guess, so stretching buys nothing; while Mosquitto
// computes the hash on every CONNECT, without a cache, on its single
// thread — a reconnect storm of 50,000 devices costs 50,000 × the hash
// (measured here with Go's PBKDF2: 101 iterations about 0.05 ms; 10,000
// about 4.4 ms, nearly four minutes of a stalled broker). Raise it only if
// hub user passwords are chosen by people.
const DefaultIterations = 101

// maxIterations bounds the configured count (a typo must not stall every
// CONNECT for seconds).
const maxIterations = 10_000_000

// ErrBadMosquittoHash is returned by VerifyMosquittoHash for a string that
// is not a $7$ hash Mosquitto would accept.
var ErrBadMosquittoHash = errors.New("not a Mosquitto $7$ password hash")

// MosquittoHash returns the Mosquitto $7$ hash of password with a random
// salt and the given PBKDF2 iteration count (DefaultIterations when < 1).
func MosquittoHash(password string, iterations int) string {
	salt := make([]byte, mosquittoSaltLen)
	rand.Read(salt)
	return mosquittoHash(password, salt, iterations)
}

// hubUserHash is the Mosquitto hash of a hub user's password with a salt
// derived from the name and password, so that every hub instance (and
// every restart) writes the same password file line and Mosquitto is not
// reloaded for nothing. The salt is secret-derived and per user; it is
// only ever used for this configured, high-entropy secret.
func hubUserHash(u HubUser, iterations int) string {
	m := hmac.New(sha256.New, []byte(u.Password))
	m.Write([]byte("fieldhub mosquitto hub user salt\x00" + u.Name))
	return mosquittoHash(u.Password, m.Sum(nil)[:mosquittoSaltLen], iterations)
}

func mosquittoHash(password string, salt []byte, iterations int) string {
	if iterations < 1 {
		iterations = DefaultIterations
	}
	key, err := pbkdf2.Key(sha512.New, password, salt, iterations, mosquittoKeyLen)
	if err != nil {
		// Only FIPS 140-3 mode refuses these parameters (a salt under
		// 16 bytes): Mosquitto's format cannot be made there at all.
		panic(fmt.Sprintf("brokerauth: PBKDF2: %v", err))
	}
	b64 := base64.StdEncoding
	return "$7$" + strconv.Itoa(iterations) + "$" + b64.EncodeToString(salt) + "$" + b64.EncodeToString(key)
}

// VerifyMosquittoHash reports whether password matches a Mosquitto $7$
// hash, comparing in constant time.
func VerifyMosquittoHash(hash, password string) (bool, error) {
	parts := strings.Split(hash, "$")
	if len(parts) != 5 || parts[0] != "" || parts[1] != "7" {
		return false, ErrBadMosquittoHash
	}
	it, err := strconv.Atoi(parts[2])
	if err != nil || it < 1 || it > maxIterations {
		return false, ErrBadMosquittoHash
	}
	b64 := base64.StdEncoding
	salt, err := b64.DecodeString(parts[3])
	if err != nil || len(salt) != mosquittoSaltLen {
		return false, ErrBadMosquittoHash
	}
	want, err := b64.DecodeString(parts[4])
	if err != nil || len(want) != mosquittoKeyLen {
		return false, ErrBadMosquittoHash
	}
	got := mosquittoHash(password, salt, it)
	gotKey, _ := b64.DecodeString(strings.Split(got, "$")[4])
	return subtle.ConstantTimeCompare(gotKey, want) == 1, nil
}
