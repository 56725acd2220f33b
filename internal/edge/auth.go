package edge

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/x509"
	"errors"
	"sync"

	"github.com/fieldhub/fieldhub/internal/registry"
)

// sensorAuth admits the sensors of the edge configuration, checking their
// argon2id password hashes; a verified password is remembered per sensor
// so that reconnects cost nothing.
type sensorAuth struct {
	hashes map[string]string
	// hashers verifies one argon2id hash at a time: each holds its memory
	// parameter (19 MiB by default) while it runs, and a gateway's sensors
	// reconnecting together would otherwise hold that much each.
	hashers *registry.Hashers
	mu      sync.Mutex
	ok      map[string][32]byte // sensor → SHA-256 of the password last verified
}

func newSensorAuth(sensors []Sensor) *sensorAuth {
	a := &sensorAuth{hashes: map[string]string{}, ok: map[string][32]byte{}, hashers: registry.NewHashers(1)}
	for _, s := range sensors {
		a.hashes[s.ID] = s.PasswordHash
	}
	return a
}

// Authenticate implements broker.Authenticator. The broker admits
// anonymous loopback sensors itself when allow_anonymous is on.
func (a *sensorAuth) Authenticate(ctx context.Context, clientID, username string, password []byte, _ []*x509.Certificate) (string, error) {
	hash, ok := a.hashes[clientID]
	if !ok {
		return "", &registry.AuthError{Reason: registry.ReasonUnknownDevice}
	}
	if username != clientID {
		return "", &registry.AuthError{Reason: registry.ReasonBadClientID}
	}
	sum := sha256.Sum256(password)
	a.mu.Lock()
	prev, seen := a.ok[clientID]
	a.mu.Unlock()
	cached := seen && len(password) > 0 && subtle.ConstantTimeCompare(prev[:], sum[:]) == 1
	if cached {
		return clientID, nil
	}
	good, err := a.hashers.Verify(ctx, hash, password)
	if err != nil && ctx.Err() != nil {
		return "", err // no slot before the connect timed out
	}
	if err != nil {
		return "", &registry.AuthError{Reason: registry.ReasonBadPassword, Err: err}
	}
	if !good {
		return "", &registry.AuthError{Reason: registry.ReasonBadPassword, Err: errors.New("password does not match")}
	}
	a.mu.Lock()
	a.ok[clientID] = sum
	a.mu.Unlock()
	return clientID, nil
}
