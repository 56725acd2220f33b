// Package registry is the device registry service: it creates devices with
// their credentials (a high-entropy password stored only as an argon2id
// hash, or a client certificate from the built-in CA), rotates and revokes
// them, and authenticates every MQTT CONNECT (Authenticate).
//
// Credentials are returned once, by Create and Rotate, and never stored in
// the clear. Revocation (Delete, Rotate) takes effect at once: the next
// CONNECT with the old credentials is refused, and the hooks registered
// with OnRevoke are called so that the broker can close live sessions.
package registry

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/fieldhub/fieldhub/internal/pki"
	"github.com/fieldhub/fieldhub/internal/promutil"
	"github.com/fieldhub/fieldhub/internal/store"
)

// Errors from the store, re-exported for callers that import only this
// package. Get, Delete and Rotate wrap ErrNotFound; Create wraps ErrExists.
var (
	ErrNotFound = store.ErrNotFound
	ErrExists   = store.ErrExists
)

// Options configure a Service. The zero value works.
type Options struct {
	// Logger receives the service's logs; nil discards.
	Logger *slog.Logger
	// Password sets the argon2id cost of new password hashes; zero fields
	// mean OWASP's recommendation.
	Password PasswordParams
	// CertTTL is the validity of device certificates; 0 means one year.
	CertTTL time.Duration
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// MaxConcurrentHashes bounds the argon2id computations running at once
	// (each takes Password.Memory KiB); others queue. 0 means GOMAXPROCS.
	MaxConcurrentHashes int
	// Registerer receives the service's metrics; nil registers none.
	Registerer prometheus.Registerer
	// OnPassword, when set, is called by Create and Rotate with a password
	// device (public fields, its new CredentialsVersion, its CreatedAt)
	// and its new password in the clear, after the password is made and
	// before it is stored; an error aborts the Create or Rotate (nothing
	// is stored, old credentials stay valid). It is the one place where a
	// second hash of the password can be kept, e.g. the Mosquitto-format
	// hash of an external broker (internal/brokerauth); leave it nil
	// otherwise. It runs under the service's write lock: keep it short.
	OnPassword func(ctx context.Context, d store.Device, password string) error
}

// CreateRequest describes a device to create.
type CreateRequest struct {
	ID      string
	Name    string
	Labels  map[string]string
	Gateway string         // id of an existing device this one sits behind
	Auth    store.AuthKind // "" means password
	// CSR is an optional PEM certificate signing request for certificate
	// auth; without one, a key pair is generated and returned once.
	CSR []byte
}

// Service is the device registry. It is safe for concurrent use.
type Service struct {
	st      store.Registry
	ca      *pki.CA
	log     *slog.Logger
	params  PasswordParams
	certTTL time.Duration
	now     func() time.Time
	hashers *Hashers // bounds argon2id computations
	macKey  []byte   // per-process key of the verification cache
	metrics *metrics

	writeMu sync.Mutex // serializes Create, Delete and Rotate

	cacheMu sync.Mutex
	cache   map[string]cacheEntry

	gw    gwCache    // gateway relations (gateway.go)
	known knownCache // registered ids (known.go)

	// revocations counts Delete and Rotate calls; Authenticate re-reads
	// a device when it changed during the authentication.
	revocations atomic.Uint64

	onPassword func(ctx context.Context, d store.Device, password string) error

	hooksMu     sync.RWMutex
	hooks       []func(deviceID string)
	createHooks []func(deviceID string)
}

// New returns a registry service over st. ca may be nil, in which case
// certificate auth is refused and Credentials carry no CA certificate.
func New(st store.Registry, ca *pki.CA, opts Options) *Service {
	s := &Service{
		st:      st,
		ca:      ca,
		log:     opts.Logger,
		params:  opts.Password.withDefaults(),
		certTTL: opts.CertTTL,
		now:     opts.Now,
		macKey:  make([]byte, 32),
		cache:   make(map[string]cacheEntry),
		gw:      gwCache{parent: make(map[string]gwEntry), gateway: make(map[string]gwEntry)},
		metrics: newMetrics(opts.Registerer),

		onPassword: opts.OnPassword,
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if s.certTTL <= 0 {
		s.certTTL = pki.DefaultDeviceTTL
	}
	if s.now == nil {
		s.now = time.Now
	}
	s.hashers = NewHashers(opts.MaxConcurrentHashes)
	rand.Read(s.macKey)
	return s
}

// OnRevoke registers fn to be called, synchronously, with the id of a
// device after it is deleted or its credentials are rotated. The hub uses
// it to close the device's live session.
func (s *Service) OnRevoke(fn func(deviceID string)) {
	s.hooksMu.Lock()
	defer s.hooksMu.Unlock()
	s.hooks = append(s.hooks, fn)
}

// OnCreate registers fn to be called, synchronously, with the id of a
// device after it is created (stored). An external-broker syncer uses it
// to publish the new device at once.
func (s *Service) OnCreate(fn func(deviceID string)) {
	s.hooksMu.Lock()
	defer s.hooksMu.Unlock()
	s.createHooks = append(s.createHooks, fn)
}

func (s *Service) revoked(id string) {
	s.forget(id)
	s.revocations.Add(1)
	s.hooksMu.RLock()
	hooks := s.hooks
	s.hooksMu.RUnlock()
	for _, fn := range hooks {
		fn(id)
	}
}

// Create registers a new device and returns it with its credentials,
// which are not kept and cannot be read again. Invalid requests return a
// *ValidationError (errors.Is ErrInvalid) naming the field; a taken id
// returns an error wrapping ErrExists.
func (s *Service) Create(ctx context.Context, req CreateRequest) (store.Device, Credentials, error) {
	kind, err := validate(req)
	if err != nil {
		return store.Device{}, Credentials{}, err
	}
	// Cheap refusals before the costly hashing or signing.
	if _, err := s.st.GetDevice(ctx, req.ID); err == nil {
		return store.Device{}, Credentials{}, fmt.Errorf("registry: device %q: %w", req.ID, store.ErrExists)
	} else if !errors.Is(err, store.ErrNotFound) {
		return store.Device{}, Credentials{}, fmt.Errorf("registry: creating %q: %w", req.ID, err)
	}
	d := store.Device{
		ID:                 req.ID,
		Name:               req.Name,
		Labels:             maps.Clone(req.Labels),
		Gateway:            req.Gateway,
		Auth:               kind,
		CreatedAt:          s.now().UTC(),
		CredentialsVersion: 1,
	}
	creds, err := s.newCredentials(ctx, &d, req.CSR)
	if err != nil {
		return store.Device{}, Credentials{}, err
	}

	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	if d.Gateway != "" {
		g, err := s.st.GetDevice(ctx, d.Gateway)
		switch {
		case errors.Is(err, store.ErrNotFound):
			return store.Device{}, Credentials{}, invalid("gateway", "no device %q", d.Gateway)
		case err != nil:
			return store.Device{}, Credentials{}, fmt.Errorf("registry: creating %q: %w", d.ID, err)
		case g.Gateway != "":
			return store.Device{}, Credentials{}, invalid("gateway", "%q is itself behind gateway %q", d.Gateway, g.Gateway)
		}
	}
	if err := s.passwordHook(ctx, d, creds.Password); err != nil {
		return store.Device{}, Credentials{}, err
	}
	if err := s.st.CreateDevice(ctx, d); err != nil {
		return store.Device{}, Credentials{}, fmt.Errorf("registry: creating %q: %w", d.ID, err)
	}
	s.gw.invalidate()
	s.forgetKnown(d.ID)
	s.log.Info("device created", "device", d.ID, "auth", d.Auth, "gateway", d.Gateway)
	s.hooksMu.RLock()
	created := s.createHooks
	s.hooksMu.RUnlock()
	for _, fn := range created {
		fn(d.ID)
	}
	return public(d), creds, nil
}

// newCredentials makes fresh credentials of d.Auth, records their hash or
// certificate identity in d and returns them.
func (s *Service) newCredentials(ctx context.Context, d *store.Device, csr []byte) (Credentials, error) {
	c := Credentials{DeviceID: d.ID}
	if s.ca != nil {
		c.CAPEM = string(s.ca.CertPEM())
	}
	switch d.Auth {
	case store.AuthPassword:
		pw := newPassword()
		hash, err := s.hash(ctx, []byte(pw))
		if err != nil {
			return Credentials{}, err
		}
		c.Password = pw
		d.PasswordHash = hash
	case store.AuthCertificate:
		if s.ca == nil {
			return Credentials{}, invalid("auth", "certificate auth needs the built-in CA, which is not configured")
		}
		var (
			iss pki.Issued
			key []byte
			err error
		)
		if len(csr) > 0 {
			iss, err = s.ca.IssueFromCSR(csr, d.ID, s.certTTL)
			if errors.Is(err, pki.ErrBadCSR) {
				return Credentials{}, &ValidationError{Field: "csr", Reason: err.Error(), Err: err}
			}
		} else {
			iss, key, err = s.ca.IssueKeyPair(d.ID, s.certTTL)
		}
		if err != nil {
			return Credentials{}, fmt.Errorf("registry: issuing certificate for %q: %w", d.ID, err)
		}
		c.CertificatePEM = string(iss.CertPEM)
		c.PrivateKeyPEM = string(key)
		d.CertSerial = iss.Serial
		d.CertFingerprint = iss.Fingerprint
		d.CertNotAfter = iss.NotAfter.UTC()
	}
	return c, nil
}

// passwordHook calls Options.OnPassword for a password device.
func (s *Service) passwordHook(ctx context.Context, d store.Device, password string) error {
	if s.onPassword == nil || d.Auth != store.AuthPassword || password == "" {
		return nil
	}
	if err := s.onPassword(ctx, public(d), password); err != nil {
		return fmt.Errorf("registry: password hook for %q: %w", d.ID, err)
	}
	return nil
}

// hash computes an argon2id hash within the concurrency bound.
func (s *Service) hash(ctx context.Context, password []byte) (string, error) {
	return s.hashers.Hash(ctx, password, s.params)
}

// Get returns the device id (wrapping ErrNotFound when missing). The
// password hash is never returned.
func (s *Service) Get(ctx context.Context, id string) (store.Device, error) {
	d, err := s.st.GetDevice(ctx, id)
	if err != nil {
		return store.Device{}, fmt.Errorf("registry: %w", err)
	}
	return public(d), nil
}

// List returns devices in id order as store.ListOptions selects them,
// without their password hashes.
func (s *Service) List(ctx context.Context, o store.ListOptions) ([]store.Device, error) {
	ds, err := s.st.ListDevices(ctx, o)
	if err != nil {
		return nil, fmt.Errorf("registry: %w", err)
	}
	for i := range ds {
		ds[i] = public(ds[i])
	}
	return ds, nil
}

// Delete removes the device and revokes its credentials at once. Devices
// registered behind it (when it is a gateway) are detached: their Gateway
// is cleared, so that a future device reusing the id gains no authority
// over them.
func (s *Service) Delete(ctx context.Context, id string) error {
	s.writeMu.Lock()
	if err := s.st.DeleteDevice(ctx, id); err != nil {
		s.writeMu.Unlock()
		return fmt.Errorf("registry: %w", err)
	}
	detached, err := s.detach(ctx, id)
	s.gw.invalidate()
	s.forgetKnown(id)
	s.writeMu.Unlock()
	s.revoked(id) // the device is gone whatever detach did
	if err != nil {
		return fmt.Errorf("registry: detaching devices behind %q: %w", id, err)
	}
	s.log.Info("device deleted", "device", id, "detached", detached)
	return nil
}

// detach clears the gateway of every device behind gw.
func (s *Service) detach(ctx context.Context, gw string) (int, error) {
	const page = 1000
	n := 0
	o := store.ListOptions{Limit: page}
	for {
		ds, err := s.st.ListDevices(ctx, o)
		if err != nil {
			return n, err
		}
		for _, d := range ds {
			if d.Gateway != gw {
				continue
			}
			d.Gateway = ""
			if err := s.st.UpdateDevice(ctx, d); err != nil && !errors.Is(err, store.ErrNotFound) {
				return n, err
			}
			n++
		}
		if len(ds) < page {
			return n, nil
		}
		o.After = ds[len(ds)-1].ID
	}
}

// Rotate replaces the credentials of device id: a new password for a
// password device; for a certificate device a certificate for csrPEM, or a
// new key pair when csrPEM is empty. The old credentials stop working at
// once and CredentialsVersion increases. Concurrent rotations of one
// device are serialized; only the last one's credentials work.
func (s *Service) Rotate(ctx context.Context, id string, csrPEM []byte) (Credentials, error) {
	d, err := s.st.GetDevice(ctx, id)
	if err != nil {
		return Credentials{}, fmt.Errorf("registry: %w", err)
	}
	if len(csrPEM) > 0 && d.Auth != store.AuthCertificate {
		return Credentials{}, invalid("csr", "a CSR is only accepted with certificate auth")
	}
	creds, err := s.newCredentials(ctx, &d, csrPEM)
	if err != nil {
		return Credentials{}, err
	}

	s.writeMu.Lock()
	cur, err := s.st.GetDevice(ctx, id)
	if err == nil && cur.Auth != d.Auth {
		err = fmt.Errorf("auth kind changed during rotation")
	}
	if err == nil {
		cur.PasswordHash = d.PasswordHash
		cur.CertSerial, cur.CertFingerprint, cur.CertNotAfter = d.CertSerial, d.CertFingerprint, d.CertNotAfter
		cur.CredentialsVersion++
		err = s.passwordHook(ctx, cur, creds.Password)
	}
	if err == nil {
		err = s.st.UpdateDevice(ctx, cur)
	}
	s.writeMu.Unlock()
	if err != nil {
		return Credentials{}, fmt.Errorf("registry: rotating %q: %w", id, err)
	}
	s.revoked(id)
	s.log.Info("device credentials rotated", "device", id, "auth", cur.Auth, "credentials_version", cur.CredentialsVersion)
	return creds, nil
}

// public strips what must not leave the service.
func public(d store.Device) store.Device {
	d.PasswordHash = ""
	return d
}

// metrics of the service; the collectors always exist, registered or not.
type metrics struct {
	verifications *prometheus.CounterVec // by result
	hashSeconds   prometheus.Histogram
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		verifications: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "fieldhub_registry_password_verifications_total",
			Help: "Password checks at CONNECT by result: cached (verified from the in-memory cache), ok, mismatch.",
		}, []string{"result"}),
		hashSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "fieldhub_registry_argon2_verify_seconds",
			Help:    "Time of one argon2id password verification, queueing included.",
			Buckets: []float64{.005, .01, .02, .04, .08, .16, .32, .64, 1.28, 2.56, 5.12},
		}),
	}
	if reg != nil {
		m.verifications = promutil.RegisterOrExisting(reg, m.verifications)
		m.hashSeconds = promutil.RegisterOrExisting(reg, m.hashSeconds)
	}
	return m
}
