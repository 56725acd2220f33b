package pki

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/fieldhub/fieldhub/internal/store"
)

// serverDoc is the stored server certificate.
type serverDoc struct {
	Names []string `json:"names"` // normalized
	Cert  string   `json:"cert"`  // PEM, leaf only
	Key   []byte   `json:"key"`   // sealed PKCS #8
}

// DefaultServerNames are used by ServerCertificate when names is empty.
var DefaultServerNames = []string{"localhost", "127.0.0.1", "::1"}

// ServerCertificate returns the hub's TLS server certificate for names
// (DNS names and IP addresses, e.g. "localhost", "127.0.0.1" and
// os.Hostname()), chained [server, issuing]. It is stored with its key
// sealed and reused across restarts while the set of names is the same,
// it was signed by the current issuing CA and it is more than
// ServerRenewBefore from expiry; otherwise a new one (valid ServerValidity)
// replaces it.
func (ca *CA) ServerCertificate(ctx context.Context, names []string) (tls.Certificate, error) {
	ca.mu.Lock()
	defer ca.mu.Unlock()
	names = normalizeNames(names)
	raw, err := ca.kv.Get(ctx, kvServer)
	switch {
	case err == nil:
		if c, ok := ca.storedServer(raw, names); ok {
			return c, nil
		}
	case !errors.Is(err, store.ErrNotFound):
		return tls.Certificate{}, fmt.Errorf("pki: loading server certificate: %w", err)
	}
	return ca.newServer(ctx, names)
}

// storedServer returns the stored certificate if it is still usable for names.
func (ca *CA) storedServer(raw []byte, names []string) (tls.Certificate, bool) {
	var doc serverDoc
	if err := json.Unmarshal(raw, &doc); err != nil {
		ca.logger.Warn("replacing unreadable stored server certificate", "err", err)
		return tls.Certificate{}, false
	}
	if !slices.Equal(doc.Names, names) {
		return tls.Certificate{}, false
	}
	certs, err := parseCertPEM(doc.Cert)
	if err != nil || len(certs) != 1 {
		return tls.Certificate{}, false
	}
	leaf := certs[0]
	if ca.now().Add(ServerRenewBefore).After(leaf.NotAfter) || leaf.CheckSignatureFrom(ca.issuing) != nil {
		return tls.Certificate{}, false
	}
	key, err := ca.unsealSigner(doc.Key, aadServer, leaf)
	if err != nil {
		// The CA itself opened with this master key, so this is damage.
		ca.logger.Warn("replacing stored server certificate whose key cannot be opened", "err", err)
		return tls.Certificate{}, false
	}
	return tls.Certificate{Certificate: [][]byte{leaf.Raw, ca.issuing.Raw}, PrivateKey: key, Leaf: leaf}, true
}

func (ca *CA) newServer(ctx context.Context, names []string) (tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("pki: generating server key: %w", err)
	}
	now := ca.now()
	tmpl := &x509.Certificate{
		SerialNumber: newSerial(),
		Subject:      pkix.Name{Organization: []string{"fieldhub"}, CommonName: commonName(names)},
		NotBefore:    now.Add(-backdate),
		NotAfter:     now.Add(ServerValidity),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	if tmpl.NotAfter.After(ca.issuing.NotAfter) {
		tmpl.NotAfter = ca.issuing.NotAfter
	}
	for _, n := range names {
		if ip := net.ParseIP(n); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, n)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.issuing, key.Public(), ca.issuingKey)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("pki: signing server certificate: %w", err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("pki: parsing server certificate: %w", err)
	}
	sealed, err := ca.sealKeyPKCS8(key, aadServer)
	if err != nil {
		return tls.Certificate{}, err
	}
	if err := ca.put(ctx, kvServer, serverDoc{Names: names, Cert: string(certPEM(der)), Key: sealed}); err != nil {
		return tls.Certificate{}, err
	}
	ca.logger.Info("issued server certificate", "names", names, "not_after", leaf.NotAfter)
	return tls.Certificate{Certificate: [][]byte{der, ca.issuing.Raw}, PrivateKey: key, Leaf: leaf}, nil
}

// GetServerCertificate returns a function for tls.Config.GetCertificate
// that serves ServerCertificate(names) and replaces it, without a restart,
// once it comes within ServerRenewBefore of expiry. A failed renewal keeps
// serving the current certificate and is retried at most once a minute.
func (ca *CA) GetServerCertificate(names []string) func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	var (
		mu        sync.Mutex
		cur       *tls.Certificate
		nextRetry time.Time
	)
	names = slices.Clone(names)
	return func(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
		mu.Lock()
		defer mu.Unlock()
		now := ca.now()
		if cur != nil && (now.Add(ServerRenewBefore).Before(cur.Leaf.NotAfter) || now.Before(nextRetry)) {
			return cur, nil
		}
		ctx := context.Background()
		if hello != nil {
			ctx = hello.Context()
		}
		c, err := ca.ServerCertificate(ctx, names)
		if err != nil {
			if cur != nil {
				nextRetry = now.Add(time.Minute)
				ca.logger.Warn("renewing server certificate failed; serving the current one", "err", err)
				return cur, nil
			}
			return nil, err
		}
		cur = &c
		return cur, nil
	}
}

// normalizeNames lower-cases DNS names, canonicalizes IPs, strips IPv6
// brackets, drops empties and duplicates and sorts; first the defaults
// when empty.
func normalizeNames(names []string) []string {
	var out []string
	for _, n := range names {
		n = strings.TrimSpace(n)
		n = strings.TrimSuffix(strings.TrimPrefix(n, "["), "]")
		if n == "" {
			continue
		}
		if ip := net.ParseIP(n); ip != nil {
			n = ip.String()
		} else {
			n = strings.ToLower(strings.TrimSuffix(n, "."))
		}
		out = append(out, n)
	}
	if len(out) == 0 {
		return normalizeNames(DefaultServerNames)
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// commonName picks the first DNS name, else the first address.
func commonName(names []string) string {
	for _, n := range names {
		if net.ParseIP(n) == nil {
			return n
		}
	}
	return names[0]
}
