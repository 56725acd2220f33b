package registry

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"runtime"
	"strconv"
	"strings"

	"golang.org/x/crypto/argon2"
)

// PasswordParams are the argon2id cost parameters of new password hashes.
// The zero value of each field means OWASP's recommendation (m=19456 KiB,
// t=2, p=1) and a 16-byte salt and 32-byte hash. Hashes keep their own
// parameters, so changing these affects only new passwords.
type PasswordParams struct {
	Memory      uint32 // KiB
	Iterations  uint32
	Parallelism uint8
	SaltLength  uint32
	KeyLength   uint32
}

// OWASP's argon2id recommendation (Password Storage Cheat Sheet).
const (
	DefaultMemory      = 19456
	DefaultIterations  = 2
	DefaultParallelism = 1
	defaultSaltLength  = 16
	defaultKeyLength   = 32
)

// Bounds on the parameters of a stored hash, so that a damaged or hostile
// database cannot make one verification cost gigabytes or minutes.
const (
	maxMemory     = 1 << 20 // 1 GiB
	maxIterations = 64
	maxKeyLength  = 128
	maxSaltLength = 64
)

// ErrBadHash is returned for a stored hash that is not a supported argon2id
// PHC string.
var ErrBadHash = errors.New("unsupported password hash")

func (p PasswordParams) withDefaults() PasswordParams {
	if p.Memory == 0 {
		p.Memory = DefaultMemory
	}
	if p.Iterations == 0 {
		p.Iterations = DefaultIterations
	}
	if p.Parallelism == 0 {
		p.Parallelism = DefaultParallelism
	}
	if p.SaltLength == 0 {
		p.SaltLength = defaultSaltLength
	}
	if p.KeyLength == 0 {
		p.KeyLength = defaultKeyLength
	}
	return p
}

// HashPassword returns the argon2id hash of password in PHC string format:
// $argon2id$v=19$m=19456,t=2,p=1$<salt>$<hash> (unpadded standard base64).
func HashPassword(password []byte, p PasswordParams) string {
	p = p.withDefaults()
	salt := make([]byte, p.SaltLength)
	rand.Read(salt)
	key := argon2.IDKey(password, salt, p.Iterations, p.Memory, p.Parallelism, p.KeyLength)
	b64 := base64.RawStdEncoding
	return fmt.Sprintf("$argon2id$v=%d$m=%d,t=%d,p=%d$%s$%s",
		argon2.Version, p.Memory, p.Iterations, p.Parallelism, b64.EncodeToString(salt), b64.EncodeToString(key))
}

// VerifyPassword reports whether password matches the PHC-encoded argon2id
// hash, comparing in constant time. It returns ErrBadHash for a hash it
// cannot read.
func VerifyPassword(encoded string, password []byte) (bool, error) {
	p, salt, want, err := parseHash(encoded)
	if err != nil {
		return false, err
	}
	got := argon2.IDKey(password, salt, p.Iterations, p.Memory, p.Parallelism, uint32(len(want)))
	return subtle.ConstantTimeCompare(got, want) == 1, nil
}

func parseHash(s string) (p PasswordParams, salt, key []byte, err error) {
	bad := func(why string) (PasswordParams, []byte, []byte, error) {
		return PasswordParams{}, nil, nil, fmt.Errorf("%w: %s", ErrBadHash, why)
	}
	parts := strings.Split(s, "$")
	if len(parts) != 6 || parts[0] != "" {
		return bad("not a PHC string")
	}
	if parts[1] != "argon2id" {
		return bad("algorithm " + strconv.Quote(parts[1]))
	}
	if parts[2] != "v="+strconv.Itoa(argon2.Version) {
		return bad("version " + strconv.Quote(parts[2]))
	}
	var m, t, par uint64
	for _, kv := range strings.Split(parts[3], ",") {
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			return bad("parameters")
		}
		n, err := strconv.ParseUint(v, 10, 32)
		if err != nil {
			return bad("parameter " + k)
		}
		switch k {
		case "m":
			m = n
		case "t":
			t = n
		case "p":
			par = n
		default:
			return bad("parameter " + k)
		}
	}
	if m < 8 || m > maxMemory || t < 1 || t > maxIterations || par < 1 || par > 255 || m < 8*par {
		return bad("parameters out of range")
	}
	b64 := base64.RawStdEncoding
	if salt, err = b64.DecodeString(parts[4]); err != nil || len(salt) < 8 || len(salt) > maxSaltLength {
		return bad("salt")
	}
	if key, err = b64.DecodeString(parts[5]); err != nil || len(key) < 16 || len(key) > maxKeyLength {
		return bad("hash")
	}
	return PasswordParams{Memory: uint32(m), Iterations: uint32(t), Parallelism: uint8(par)}, salt, key, nil
}

// newPassword returns 24 random bytes in unpadded base64url (32 characters,
// 192 bits): safe in any MQTT client, shell or JSON without escaping.
func newPassword() string {
	b := make([]byte, 24)
	rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

// Hashers bounds how many argon2id computations run at once: each holds
// its Memory parameter (19 MiB by default) while it runs, so unbounded,
// a burst of logins costs that much per login. The registry service and
// the edge's sensor authentication share it.
type Hashers struct{ sem chan struct{} }

// NewHashers allows n computations at once (GOMAXPROCS when n <= 0).
func NewHashers(n int) *Hashers {
	if n <= 0 {
		n = runtime.GOMAXPROCS(0)
	}
	return &Hashers{sem: make(chan struct{}, n)}
}

// acquire waits for a slot until ctx ends.
func (h *Hashers) acquire(ctx context.Context) error {
	select {
	case h.sem <- struct{}{}:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("registry: waiting to hash: %w", context.Cause(ctx))
	}
}

func (h *Hashers) release() { <-h.sem }

// Verify is VerifyPassword in a slot, waiting for one until ctx ends.
func (h *Hashers) Verify(ctx context.Context, encoded string, password []byte) (bool, error) {
	if err := h.acquire(ctx); err != nil {
		return false, err
	}
	defer h.release()
	return VerifyPassword(encoded, password)
}

// Hash is HashPassword in a slot, waiting for one until ctx ends.
func (h *Hashers) Hash(ctx context.Context, password []byte, p PasswordParams) (string, error) {
	if err := h.acquire(ctx); err != nil {
		return "", err
	}
	defer h.release()
	return HashPassword(password, p), nil
}
