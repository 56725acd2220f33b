// Package pki is fieldhub's built-in certificate authority (DESIGN §2,
// principle 3). On first start it creates a root CA (ECDSA P-256, 10 years)
// and an issuing CA (ECDSA P-256, 5 years) signed by the root; the issuing CA
// signs the hub's TLS server certificate and the devices' client
// certificates. Private keys are stored in a store.KV sealed with AES-256-GCM
// under a key-encryption key that lives outside the data folder
// (LoadSealKey); certificates are stored as PEM.
//
// Devices trust the root (CertPEM, the hub's DIR/ca.pem). The hub presents
// [server, issuing] so that a device holding only the root can build the
// chain; device certificates are checked by VerifyClient against the root
// with the issuing certificates as intermediates.
//
// When the issuing CA comes within IssuingRenewBefore of its expiry, Open
// replaces it with a new one signed by the root; certificates issued by the
// old one keep verifying until they expire.
package pki

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"strings"
	"sync"
	"time"

	"github.com/fieldhub/fieldhub/internal/store"
)

// Validity periods and renewal margins.
const (
	RootValidity    = 10 * 365 * 24 * time.Hour
	IssuingValidity = 5 * 365 * 24 * time.Hour
	ServerValidity  = 365 * 24 * time.Hour
	// DefaultDeviceTTL is the validity of a device certificate when the
	// caller passes 0.
	DefaultDeviceTTL = 365 * 24 * time.Hour
	// IssuingRenewBefore: Open replaces an issuing CA this close to expiry,
	// so that a full-length device certificate never outlives its issuer.
	IssuingRenewBefore = DefaultDeviceTTL + 30*24*time.Hour
	// ServerRenewBefore: a server certificate this close to expiry is replaced.
	ServerRenewBefore = 30 * 24 * time.Hour
	// backdate absorbs clock skew between the hub and its devices.
	backdate = 5 * time.Minute
)

// KV keys. Each is written with a single Put, so a CA is never half-stored.
const (
	kvCA     = "pki/ca.json"
	kvServer = "pki/server.json"
)

// Additional data bound to each sealed key, naming its slot.
const (
	aadRoot    = "fieldhub/pki/root-key"
	aadIssuing = "fieldhub/pki/issuing-key"
	aadServer  = "fieldhub/pki/server-key"
)

// Errors returned by VerifyClient, distinguishable with errors.Is.
var (
	// ErrUnknownCA: the certificate does not chain to this CA's root.
	ErrUnknownCA = errors.New("certificate signed by an unknown authority")
	// ErrExpired: the certificate, or one in its chain, is expired or not
	// yet valid.
	ErrExpired = errors.New("certificate expired or not yet valid")
	// ErrBadCertificate: any other reason (no certificate, wrong key usage,
	// no device identity, malformed).
	ErrBadCertificate = errors.New("bad certificate")
)

// Errors returned when issuing.
var (
	// ErrBadCSR: the CSR is not PEM, does not parse, its signature (the
	// proof that the requester holds the private key) does not verify, or
	// its key is not ECDSA P-256/P-384 or RSA of at least 2048 bits.
	ErrBadCSR = errors.New("bad certificate signing request")
	// ErrBadDeviceID: the device id is not a valid topic level.
	ErrBadDeviceID = errors.New("invalid device id")
)

// CA is the built-in certificate authority. It is safe for concurrent use.
type CA struct {
	kv      store.KV
	sealKey []byte
	logger  *slog.Logger
	now     func() time.Time

	root       *x509.Certificate
	issuing    *x509.Certificate
	issuingKey crypto.Signer
	// intermediates holds the current and the still-valid previous issuing
	// certificates.
	intermediates []*x509.Certificate
	bundlePEM     []byte

	mu sync.Mutex // serializes ServerCertificate
}

// caDoc is the stored form of the CA, one JSON document.
type caDoc struct {
	Version     int    `json:"version"`
	RootCert    string `json:"root_cert"`    // PEM
	RootKey     []byte `json:"root_key"`     // sealed PKCS #8
	IssuingCert string `json:"issuing_cert"` // PEM
	IssuingKey  []byte `json:"issuing_key"`  // sealed PKCS #8
	// Previous holds retired issuing certificates (PEM) whose device
	// certificates may still be in use. Their keys are not kept.
	Previous string `json:"previous_issuing_certs,omitempty"`
}

// Open loads the CA from kv, creating it on first use. sealKey is the
// 32-byte key from LoadSealKey. A key other than the one the CA was sealed
// with yields an error wrapping ErrSealKey. A nil logger discards.
func Open(ctx context.Context, kv store.KV, sealKey []byte, logger *slog.Logger) (*CA, error) {
	return openAt(ctx, kv, sealKey, logger, time.Now)
}

func openAt(ctx context.Context, kv store.KV, sealKey []byte, logger *slog.Logger, now func() time.Time) (*CA, error) {
	if len(sealKey) != SealKeySize {
		return nil, fmt.Errorf("pki: %w: %d bytes, want %d", ErrBadSealKey, len(sealKey), SealKeySize)
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	ca := &CA{kv: kv, sealKey: bytes.Clone(sealKey), logger: logger, now: now}
	raw, err := kv.Get(ctx, kvCA)
	switch {
	case errors.Is(err, store.ErrNotFound):
		doc, err := ca.create()
		if err != nil {
			return nil, err
		}
		if err := ca.put(ctx, kvCA, doc); err != nil {
			return nil, err
		}
		if err := ca.load(doc); err != nil {
			return nil, err
		}
		logger.Info("created certificate authority",
			"root", ca.root.Subject.CommonName, "root_fingerprint", Fingerprint(ca.root),
			"root_not_after", ca.root.NotAfter, "issuing_not_after", ca.issuing.NotAfter)
		return ca, nil
	case err != nil:
		return nil, fmt.Errorf("pki: loading CA: %w", err)
	}
	var doc caDoc
	if err := json.Unmarshal(raw, &doc); err != nil {
		return nil, fmt.Errorf("pki: decoding stored CA: %w", err)
	}
	if doc.Version != 1 {
		return nil, fmt.Errorf("pki: stored CA has version %d, this binary knows 1", doc.Version)
	}
	if err := ca.load(&doc); err != nil {
		return nil, err
	}
	if ca.now().Add(IssuingRenewBefore).After(ca.issuing.NotAfter) {
		if err := ca.renewIssuing(ctx, &doc); err != nil {
			return nil, err
		}
	}
	if left := ca.root.NotAfter.Sub(ca.now()); left < IssuingRenewBefore {
		logger.Warn("root CA expires soon; devices must be given a new ca.pem", "not_after", ca.root.NotAfter, "left", left.Round(time.Hour))
	}
	return ca, nil
}

// create makes a new root and issuing CA.
func (ca *CA) create() (*caDoc, error) {
	now := ca.now()
	rootKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("pki: generating root key: %w", err)
	}
	tag := make([]byte, 4)
	rand.Read(tag)
	rootTmpl := &x509.Certificate{
		SerialNumber:          newSerial(),
		Subject:               pkix.Name{Organization: []string{"fieldhub"}, CommonName: "fieldhub root CA " + hex.EncodeToString(tag)},
		NotBefore:             now.Add(-backdate),
		NotAfter:              now.Add(RootValidity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLen:            1,
	}
	der, err := x509.CreateCertificate(rand.Reader, rootTmpl, rootTmpl, rootKey.Public(), rootKey)
	if err != nil {
		return nil, fmt.Errorf("pki: creating root certificate: %w", err)
	}
	root, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("pki: parsing root certificate: %w", err)
	}
	sealedRoot, err := ca.sealKeyPKCS8(rootKey, aadRoot)
	if err != nil {
		return nil, err
	}
	doc := &caDoc{Version: 1, RootCert: string(certPEM(der)), RootKey: sealedRoot}
	if err := ca.newIssuing(doc, root, rootKey); err != nil {
		return nil, err
	}
	return doc, nil
}

// newIssuing creates an issuing CA signed by root into doc.
func (ca *CA) newIssuing(doc *caDoc, root *x509.Certificate, rootKey crypto.Signer) error {
	now := ca.now()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return fmt.Errorf("pki: generating issuing key: %w", err)
	}
	notAfter := now.Add(IssuingValidity)
	if notAfter.After(root.NotAfter) {
		notAfter = root.NotAfter
	}
	cn := "fieldhub issuing CA " + now.UTC().Format("2006-01-02")
	if suffix, ok := strings.CutPrefix(root.Subject.CommonName, "fieldhub root CA "); ok {
		cn += " " + suffix
	}
	tmpl := &x509.Certificate{
		SerialNumber:          newSerial(),
		Subject:               pkix.Name{Organization: []string{"fieldhub"}, CommonName: cn},
		NotBefore:             now.Add(-backdate),
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, root, key.Public(), rootKey)
	if err != nil {
		return fmt.Errorf("pki: creating issuing certificate: %w", err)
	}
	sealed, err := ca.sealKeyPKCS8(key, aadIssuing)
	if err != nil {
		return err
	}
	doc.IssuingCert = string(certPEM(der))
	doc.IssuingKey = sealed
	return nil
}

// renewIssuing replaces the issuing CA, keeping the old certificate as an
// intermediate while it is valid.
func (ca *CA) renewIssuing(ctx context.Context, doc *caDoc) error {
	rootKey, err := ca.unsealSigner(doc.RootKey, aadRoot, ca.root)
	if err != nil {
		return err
	}
	old := ca.issuing
	var keep bytes.Buffer
	for _, c := range ca.intermediates {
		if c.NotAfter.After(ca.now()) {
			keep.Write(certPEM(c.Raw))
		}
	}
	doc.Previous = keep.String()
	if err := ca.newIssuing(doc, ca.root, rootKey); err != nil {
		return err
	}
	if err := ca.put(ctx, kvCA, doc); err != nil {
		return err
	}
	if err := ca.load(doc); err != nil {
		return err
	}
	ca.logger.Info("renewed issuing CA", "old_not_after", old.NotAfter, "new_not_after", ca.issuing.NotAfter)
	return nil
}

// load parses doc into ca and opens the issuing key.
func (ca *CA) load(doc *caDoc) error {
	root, err := parseCertPEM(doc.RootCert)
	if err != nil || len(root) != 1 {
		return fmt.Errorf("pki: stored root certificate: %w", errors.Join(err, ErrBadCertificate))
	}
	issuing, err := parseCertPEM(doc.IssuingCert)
	if err != nil || len(issuing) != 1 {
		return fmt.Errorf("pki: stored issuing certificate: %w", errors.Join(err, ErrBadCertificate))
	}
	prev, err := parseCertPEM(doc.Previous)
	if err != nil {
		return fmt.Errorf("pki: stored previous issuing certificates: %w", err)
	}
	key, err := ca.unsealSigner(doc.IssuingKey, aadIssuing, issuing[0])
	if err != nil {
		return err
	}
	if err := issuing[0].CheckSignatureFrom(root[0]); err != nil {
		return fmt.Errorf("pki: stored issuing certificate is not signed by the stored root: %w", err)
	}
	ca.root, ca.issuing, ca.issuingKey = root[0], issuing[0], key
	ca.intermediates = append([]*x509.Certificate{issuing[0]}, prev...)
	ca.bundlePEM = append(certPEM(root[0].Raw), certPEM(issuing[0].Raw)...)
	return nil
}

func (ca *CA) put(ctx context.Context, key string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("pki: encoding %s: %w", key, err)
	}
	if err := ca.kv.Put(ctx, key, b); err != nil {
		return fmt.Errorf("pki: storing %s: %w", key, err)
	}
	return nil
}

func (ca *CA) sealKeyPKCS8(key crypto.Signer, aad string) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("pki: encoding private key: %w", err)
	}
	defer clear(der)
	return seal(ca.sealKey, der, aad)
}

// unsealSigner opens a sealed PKCS #8 key and checks it belongs to cert.
func (ca *CA) unsealSigner(blob []byte, aad string, cert *x509.Certificate) (crypto.Signer, error) {
	der, err := unseal(ca.sealKey, blob, aad)
	if err != nil {
		return nil, fmt.Errorf("pki: %w", err)
	}
	defer clear(der)
	k, err := x509.ParsePKCS8PrivateKey(der)
	if err != nil {
		return nil, fmt.Errorf("pki: parsing unsealed key: %w", err)
	}
	s, ok := k.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("pki: unsealed key of type %T cannot sign", k)
	}
	type equaler interface{ Equal(crypto.PublicKey) bool }
	if pub, ok := s.Public().(equaler); !ok || !pub.Equal(cert.PublicKey) {
		return nil, fmt.Errorf("pki: unsealed key does not match certificate %q", cert.Subject.CommonName)
	}
	return s, nil
}

// CertPEM returns the PEM bundle devices must trust: the root, then the
// current issuing certificate. It is what the hub writes to DIR/ca.pem.
func (ca *CA) CertPEM() []byte { return bytes.Clone(ca.bundlePEM) }

// Root returns the root certificate.
func (ca *CA) Root() *x509.Certificate { return ca.root }

// Pool returns a new pool holding the root certificate only, the trust
// anchor for clients of the hub (tls.Config.RootCAs).
func (ca *CA) Pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.root)
	return p
}

// Intermediates returns a new pool holding the current and the still-valid
// previous issuing certificates, to complete the chains of devices that
// present only their own certificate (e.g. a broker's client-chain check).
func (ca *CA) Intermediates() *x509.CertPool {
	p := x509.NewCertPool()
	for _, c := range ca.intermediates {
		p.AddCert(c)
	}
	return p
}

// VerifyClient verifies a client certificate chain as presented in a TLS
// handshake (leaf first; further certificates are optional intermediates)
// against the root, with the issuing certificates as intermediates, for
// client authentication at time now. The leaf must not be a CA and must
// carry a device identity (DeviceID). Errors wrap ErrUnknownCA, ErrExpired
// or ErrBadCertificate.
func (ca *CA) VerifyClient(certs []*x509.Certificate, now time.Time) (*x509.Certificate, error) {
	if len(certs) == 0 || certs[0] == nil {
		return nil, fmt.Errorf("%w: no client certificate", ErrBadCertificate)
	}
	leaf := certs[0]
	inter := ca.Intermediates()
	for _, c := range certs[1:] {
		if c != nil {
			inter.AddCert(c)
		}
	}
	roots := x509.NewCertPool()
	roots.AddCert(ca.root)
	_, err := leaf.Verify(x509.VerifyOptions{
		Roots:         roots,
		Intermediates: inter,
		CurrentTime:   now,
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	})
	if err != nil {
		var unknown x509.UnknownAuthorityError
		var invalid x509.CertificateInvalidError
		switch {
		case errors.As(err, &unknown):
			return nil, fmt.Errorf("%w: %w", ErrUnknownCA, err)
		case errors.As(err, &invalid) && invalid.Reason == x509.Expired:
			return nil, fmt.Errorf("%w: %w", ErrExpired, err)
		default:
			return nil, fmt.Errorf("%w: %w", ErrBadCertificate, err)
		}
	}
	if leaf.IsCA {
		return nil, fmt.Errorf("%w: a CA certificate is not a device certificate", ErrBadCertificate)
	}
	if DeviceID(leaf) == "" {
		return nil, fmt.Errorf("%w: no device identity (or common name and URI disagree)", ErrBadCertificate)
	}
	return leaf, nil
}

// VerifyConnection suits tls.Config.VerifyConnection on the hub's
// listeners, used with ClientAuth tls.RequestClientCert: a connection
// without a client certificate passes (the device then authenticates with
// a password at CONNECT), one with a certificate must pass VerifyClient.
func (ca *CA) VerifyConnection(cs tls.ConnectionState) error {
	if len(cs.PeerCertificates) == 0 {
		return nil
	}
	_, err := ca.VerifyClient(cs.PeerCertificates, ca.now())
	return err
}

// certPEM encodes one DER certificate as PEM.
func certPEM(der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

// parseCertPEM parses every CERTIFICATE block of s.
func parseCertPEM(s string) ([]*x509.Certificate, error) {
	var out []*x509.Certificate
	rest := []byte(s)
	for {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			return out, nil
		}
		if b.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, err
		}
		out = append(out, c)
	}
}

// newSerial returns a random positive 128-bit serial number.
func newSerial() *big.Int {
	b := make([]byte, 16)
	for {
		rand.Read(b)
		if n := new(big.Int).SetBytes(b); n.Sign() > 0 {
			return n
		}
	}
}
