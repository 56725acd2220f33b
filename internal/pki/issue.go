package pki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/fieldhub/fieldhub/topic"
)

// DeviceURIPrefix starts the URI SAN of every device certificate:
// urn:fieldhub:device:{id}.
const DeviceURIPrefix = "urn:fieldhub:device:"

// maxCSRSize bounds the PEM accepted by IssueFromCSR.
const maxCSRSize = 64 << 10

// Issued describes a device certificate just issued.
type Issued struct {
	CertPEM     []byte // the device certificate, then the issuing CA certificate
	Serial      string // lowercase hex
	Fingerprint string // lowercase hex SHA-256 of the DER
	NotAfter    time.Time
}

// IssueFromCSR issues a client certificate for deviceID to the key of a
// PEM certificate signing request. The CSR's signature must verify (proof
// that the requester holds the private key) and its key must be ECDSA
// P-256/P-384 or RSA of 2048 to 8192 bits; its subject and extensions are
// ignored: the certificate names the device in its common name and in the
// URI SAN urn:fieldhub:device:{id}, and allows client authentication only.
// ttl 0 means DefaultDeviceTTL; the validity never exceeds the issuing CA's.
func (ca *CA) IssueFromCSR(csrPEM []byte, deviceID string, ttl time.Duration) (Issued, error) {
	if len(csrPEM) > maxCSRSize {
		return Issued{}, fmt.Errorf("%w: larger than %d bytes", ErrBadCSR, maxCSRSize)
	}
	b, _ := pem.Decode(csrPEM)
	if b == nil || (b.Type != "CERTIFICATE REQUEST" && b.Type != "NEW CERTIFICATE REQUEST") {
		return Issued{}, fmt.Errorf("%w: no PEM CERTIFICATE REQUEST block", ErrBadCSR)
	}
	csr, err := x509.ParseCertificateRequest(b.Bytes)
	if err != nil {
		return Issued{}, fmt.Errorf("%w: %w", ErrBadCSR, err)
	}
	if err := csr.CheckSignature(); err != nil {
		return Issued{}, fmt.Errorf("%w: signature does not verify: %w", ErrBadCSR, err)
	}
	if err := checkDeviceKey(csr.PublicKey); err != nil {
		return Issued{}, err
	}
	return ca.issue(csr.PublicKey, deviceID, ttl)
}

// IssueKeyPair generates an ECDSA P-256 key for deviceID and issues its
// certificate as IssueFromCSR does. The key is returned once, as PKCS #8
// PEM, and not kept.
func (ca *CA) IssueKeyPair(deviceID string, ttl time.Duration) (Issued, []byte, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return Issued{}, nil, fmt.Errorf("pki: generating device key: %w", err)
	}
	iss, err := ca.issue(key.Public(), deviceID, ttl)
	if err != nil {
		return Issued{}, nil, err
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return Issued{}, nil, fmt.Errorf("pki: encoding device key: %w", err)
	}
	defer clear(der)
	return iss, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// checkDeviceKey accepts the key types and sizes devices may use.
func checkDeviceKey(pub crypto.PublicKey) error {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		if k.Curve == elliptic.P256() || k.Curve == elliptic.P384() {
			return nil
		}
		return fmt.Errorf("%w: ECDSA curve %s not accepted (P-256 or P-384)", ErrBadCSR, k.Curve.Params().Name)
	case *rsa.PublicKey:
		if n := k.N.BitLen(); n < 2048 || n > 8192 {
			return fmt.Errorf("%w: RSA key of %d bits not accepted (2048 to 8192)", ErrBadCSR, n)
		}
		return nil
	default:
		return fmt.Errorf("%w: key type %T not accepted (ECDSA P-256/P-384 or RSA)", ErrBadCSR, pub)
	}
}

func (ca *CA) issue(pub crypto.PublicKey, deviceID string, ttl time.Duration) (Issued, error) {
	if ttl < 0 {
		return Issued{}, fmt.Errorf("pki: negative certificate lifetime %v", ttl)
	}
	if ttl == 0 {
		ttl = DefaultDeviceTTL
	}
	now := ca.now()
	return ca.issueAt(pub, deviceID, now.Add(-backdate), now.Add(ttl))
}

// issueAt signs a device certificate valid in [notBefore, notAfter],
// clamped to the issuing CA's validity. Tests call it with past dates.
func (ca *CA) issueAt(pub crypto.PublicKey, deviceID string, notBefore, notAfter time.Time) (Issued, error) {
	if !topic.ValidDeviceID(deviceID) {
		return Issued{}, fmt.Errorf("pki: %w: %q", ErrBadDeviceID, deviceID)
	}
	if notAfter.After(ca.issuing.NotAfter) {
		notAfter = ca.issuing.NotAfter
	}
	if notBefore.Before(ca.issuing.NotBefore) {
		notBefore = ca.issuing.NotBefore
	}
	uri, err := url.Parse(DeviceURIPrefix + deviceID)
	if err != nil {
		return Issued{}, fmt.Errorf("pki: %w: %q: %w", ErrBadDeviceID, deviceID, err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          newSerial(),
		Subject:               pkix.Name{CommonName: deviceID},
		NotBefore:             notBefore,
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
		URIs:                  []*url.URL{uri},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.issuing, pub, ca.issuingKey)
	if err != nil {
		return Issued{}, fmt.Errorf("pki: signing device certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return Issued{}, fmt.Errorf("pki: parsing device certificate: %w", err)
	}
	ca.logger.Debug("issued device certificate", "device", deviceID, "serial", serialHex(cert), "not_after", cert.NotAfter)
	return Issued{
		// The chain a client presents: leaf, then the issuing CA, so that
		// clients which pick a certificate by the server's list of
		// acceptable CAs (the root) find it.
		CertPEM:     append(certPEM(der), certPEM(ca.issuing.Raw)...),
		Serial:      serialHex(cert),
		Fingerprint: Fingerprint(cert),
		NotAfter:    cert.NotAfter,
	}, nil
}

// Fingerprint returns the lowercase hex SHA-256 of the certificate's DER.
func Fingerprint(cert *x509.Certificate) string {
	sum := sha256.Sum256(cert.Raw)
	return hex.EncodeToString(sum[:])
}

func serialHex(cert *x509.Certificate) string { return cert.SerialNumber.Text(16) }

// DeviceID returns the device a certificate names: its common name when
// that is a valid device id, else the id in its urn:fieldhub:device: URI
// SAN. It returns "" when there is none, or when both are present and
// disagree.
func DeviceID(cert *x509.Certificate) string {
	if cert == nil {
		return ""
	}
	var fromURI string
	for _, u := range cert.URIs {
		if id, ok := strings.CutPrefix(u.String(), DeviceURIPrefix); ok && topic.ValidDeviceID(id) {
			fromURI = id
			break
		}
	}
	cn := cert.Subject.CommonName
	switch {
	case topic.ValidDeviceID(cn) && (fromURI == "" || fromURI == cn):
		return cn
	case cn == "" || !topic.ValidDeviceID(cn) && fromURI != "":
		return fromURI
	}
	return ""
}
