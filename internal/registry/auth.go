package registry

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/fieldhub/fieldhub/internal/pki"
	"github.com/fieldhub/fieldhub/internal/store"
	"github.com/fieldhub/fieldhub/topic"
)

// Refusal reasons of an *AuthError, stable labels for metrics.
const (
	ReasonAnonymous      = "anonymous"       // neither a certificate nor a password
	ReasonUnknownDevice  = "unknown_device"  // no such device
	ReasonBadClientID    = "bad_client_id"   // client id not a device id, or username ≠ client id
	ReasonBadPassword    = "bad_password"    // password does not match
	ReasonWrongAuthKind  = "wrong_auth_kind" // password for a certificate device or the reverse
	ReasonCertMismatch   = "cert_mismatch"   // certificate names another device than client id / username
	ReasonCertRevoked    = "cert_revoked"    // a valid certificate, but not the device's current one
	ReasonBadCertificate = "bad_certificate" // certificate fails verification (see Err)
)

// AuthError is a refused CONNECT.
type AuthError struct {
	Reason string // one of the Reason constants
	Err    error  // the cause, if any (e.g. wrapping pki.ErrExpired)
}

// Error describes the refusal.
func (e *AuthError) Error() string {
	if e.Err != nil {
		return "authentication refused: " + e.Reason + ": " + e.Err.Error()
	}
	return "authentication refused: " + e.Reason
}

// RefusalReason returns e.Reason; the broker labels its metric with it.
func (e *AuthError) RefusalReason() string { return e.Reason }

// Unwrap returns the cause.
func (e *AuthError) Unwrap() error { return e.Err }

func refuse(reason string, err error) error { return &AuthError{Reason: reason, Err: err} }

// cacheEntry remembers one successful argon2id verification.
type cacheEntry struct {
	version int
	mac     [sha256.Size]byte
}

// Authenticate decides an MQTT CONNECT and returns the device id. Refusals
// are *AuthError; any other error is a failure to decide (e.g. the store
// is down).
//
// The client id must be the device id. With a client certificate
// (peerCerts non-empty, already chain-verified by the TLS layer and checked
// again here), the certificate must name that device (as must the username,
// if one is given), the device must use certificate auth, and the
// certificate must be the one issued at its last rotation; a password is
// then ignored. Otherwise the username must equal the client id (many
// clients cannot send a password without a username, so it is required
// rather than optional) and the password must match the device's argon2id
// hash. Comparisons of secrets run in constant time.
//
// A successful argon2id verification is cached in memory as an HMAC of
// the password under a per-process key, bound to the device's credentials
// version and hash, so that a reconnecting device costs an HMAC rather
// than an argon2id computation; argon2id computations themselves are
// bounded by Options.MaxConcurrentHashes and queue beyond it, giving up
// when ctx ends. An unknown device is refused without hashing, so the
// refusal is faster than a wrong password (device ids are not secret).
func (s *Service) Authenticate(ctx context.Context, clientID, username string, password []byte, peerCerts []*x509.Certificate) (deviceID string, err error) {
	gen := s.revocations.Load()
	var d store.Device
	if len(peerCerts) > 0 {
		d, err = s.authCert(ctx, clientID, username, peerCerts)
	} else {
		d, err = s.authPassword(ctx, clientID, username, password)
	}
	if err != nil {
		return "", err
	}
	if s.revocations.Load() != gen {
		// Credentials were revoked while we checked; make sure not these.
		cur, err := s.st.GetDevice(ctx, d.ID)
		switch {
		case errors.Is(err, store.ErrNotFound):
			return "", refuse(ReasonUnknownDevice, nil)
		case err != nil:
			return "", fmt.Errorf("registry: authenticating %q: %w", d.ID, err)
		case cur.CredentialsVersion != d.CredentialsVersion || cur.PasswordHash != d.PasswordHash ||
			cur.CertFingerprint != d.CertFingerprint || cur.Auth != d.Auth:
			// (Hashes and fingerprints too: a device deleted and created
			// again starts at version 1 again.)
			if d.Auth == store.AuthCertificate {
				return "", refuse(ReasonCertRevoked, nil)
			}
			return "", refuse(ReasonBadPassword, nil)
		}
	}
	return d.ID, nil
}

func (s *Service) lookup(ctx context.Context, id string) (store.Device, error) {
	d, err := s.st.GetDevice(ctx, id)
	if errors.Is(err, store.ErrNotFound) {
		return store.Device{}, refuse(ReasonUnknownDevice, nil)
	}
	if err != nil {
		return store.Device{}, fmt.Errorf("registry: authenticating %q: %w", id, err)
	}
	return d, nil
}

func (s *Service) authCert(ctx context.Context, clientID, username string, certs []*x509.Certificate) (store.Device, error) {
	if s.ca == nil {
		return store.Device{}, refuse(ReasonBadCertificate, errors.New("certificate auth is not configured"))
	}
	leaf, err := s.ca.VerifyClient(certs, s.now())
	if err != nil {
		return store.Device{}, refuse(ReasonBadCertificate, err)
	}
	id := pki.DeviceID(leaf)
	if id != clientID || (username != "" && username != clientID) {
		return store.Device{}, refuse(ReasonCertMismatch, nil)
	}
	d, err := s.lookup(ctx, id)
	if err != nil {
		return store.Device{}, err
	}
	if d.Auth != store.AuthCertificate {
		return store.Device{}, refuse(ReasonWrongAuthKind, nil)
	}
	if subtle.ConstantTimeCompare([]byte(pki.Fingerprint(leaf)), []byte(d.CertFingerprint)) != 1 {
		return store.Device{}, refuse(ReasonCertRevoked, nil)
	}
	return d, nil
}

func (s *Service) authPassword(ctx context.Context, clientID, username string, password []byte) (store.Device, error) {
	if len(password) == 0 {
		return store.Device{}, refuse(ReasonAnonymous, nil)
	}
	if !topic.ValidDeviceID(clientID) || username != clientID {
		return store.Device{}, refuse(ReasonBadClientID, nil)
	}
	d, err := s.lookup(ctx, clientID)
	if err != nil {
		return store.Device{}, err
	}
	if d.Auth != store.AuthPassword {
		return store.Device{}, refuse(ReasonWrongAuthKind, nil)
	}
	mac := s.mac(d, password)
	s.cacheMu.Lock()
	e, ok := s.cache[d.ID]
	s.cacheMu.Unlock()
	if ok && e.version == d.CredentialsVersion && hmac.Equal(e.mac[:], mac[:]) {
		s.metrics.verifications.WithLabelValues("cached").Inc()
		return d, nil
	}

	start := time.Now()
	match, err := s.hashers.Verify(ctx, d.PasswordHash, password)
	s.metrics.hashSeconds.Observe(time.Since(start).Seconds())
	if err != nil && ctx.Err() != nil {
		return store.Device{}, err // no slot before ctx ended
	}
	if err != nil {
		return store.Device{}, fmt.Errorf("registry: stored hash of %q: %w", d.ID, err)
	}
	if !match {
		s.metrics.verifications.WithLabelValues("mismatch").Inc()
		return store.Device{}, refuse(ReasonBadPassword, nil)
	}
	s.metrics.verifications.WithLabelValues("ok").Inc()
	s.cacheMu.Lock()
	s.cache[d.ID] = cacheEntry{version: d.CredentialsVersion, mac: mac}
	s.cacheMu.Unlock()
	return d, nil
}

// mac binds a password to the device and the exact hash it was verified
// against, so that an entry can never outlive a credentials change, even
// one made by another hub instance.
func (s *Service) mac(d store.Device, password []byte) [sha256.Size]byte {
	h := hmac.New(sha256.New, s.macKey)
	fmt.Fprintf(h, "%d\x00%s\x00%s\x00", len(d.ID), d.ID, d.PasswordHash)
	h.Write(password)
	var out [sha256.Size]byte
	h.Sum(out[:0])
	return out
}

// forget drops the cached verification of a device.
func (s *Service) forget(id string) {
	s.cacheMu.Lock()
	delete(s.cache, id)
	s.cacheMu.Unlock()
}

// Credentials are a device's secrets, returned once by Create and Rotate.
// They never reach a log: LogValue, every fmt verb and even MarshalJSON
// (which slog's JSON handler uses for values nested in slices) redact the
// secrets. To hand them to the device, copy the fields explicitly.
type Credentials struct {
	DeviceID string
	Password string // password auth
	// CertificatePEM and, when the hub generated the key, PrivateKeyPEM
	// (PKCS #8), for certificate auth.
	CertificatePEM string
	PrivateKeyPEM  string
	// CAPEM is the bundle the device must trust (the hub's ca.pem).
	CAPEM string
}

const redacted = "REDACTED"

// LogValue implements slog.LogValuer: the device id and which secrets are
// present, never the secrets.
func (c Credentials) LogValue() slog.Value {
	attrs := []slog.Attr{slog.String("device_id", c.DeviceID)}
	if c.Password != "" {
		attrs = append(attrs, slog.String("password", redacted))
	}
	if c.CertificatePEM != "" {
		attrs = append(attrs, slog.Bool("certificate", true))
	}
	if c.PrivateKeyPEM != "" {
		attrs = append(attrs, slog.String("private_key", redacted))
	}
	return slog.GroupValue(attrs...)
}

// MarshalJSON encodes the redacted form of LogValue.
func (c Credentials) MarshalJSON() ([]byte, error) {
	m := map[string]any{"device_id": c.DeviceID}
	for _, a := range c.LogValue().Group() {
		m[a.Key] = a.Value.Any()
	}
	return json.Marshal(m)
}

// String returns a redacted description.
func (c Credentials) String() string {
	return fmt.Sprintf("registry.Credentials{DeviceID: %q, secrets %s}", c.DeviceID, redacted)
}

// Format implements fmt.Formatter so that no verb (%v, %+v, %#v, %s, %x,
// %d...) prints the secrets.
func (c Credentials) Format(f fmt.State, _ rune) { fmt.Fprint(f, c.String()) }
