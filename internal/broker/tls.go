package broker

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
)

// TLS refusal reasons (fieldhub_mqtt_connect_refusals_total{reason}).
const (
	ReasonTLSUnknownCA      = "tls_unknown_ca"
	ReasonTLSExpired        = "tls_expired"
	ReasonTLSBadCertificate = "tls_bad_certificate"
	ReasonTLSRejected       = "tls_rejected" // VerifyClient refused without a RefusalReason
)

// serverTLSConfig derives the listeners' TLS config from cfg.TLS: it
// requests a client certificate without requiring one (password clients
// connect over TLS without one) and verifies a presented certificate itself
// in VerifyConnection, so that each refusal is counted by reason. ClientCAs
// is kept so that the handshake names the acceptable CAs to the client.
func (b *Broker) serverTLSConfig() *tls.Config {
	base := b.cfg.TLS.Clone()
	base.ClientAuth = tls.RequestClientCert
	base.ClientCAs = b.cfg.ClientCAs
	if base.MinVersion < tls.VersionTLS12 {
		base.MinVersion = tls.VersionTLS12
	}
	userVerify := base.VerifyConnection
	userGetConfig := base.GetConfigForClient
	base.GetConfigForClient = func(hello *tls.ClientHelloInfo) (*tls.Config, error) {
		tmpl := base
		if userGetConfig != nil {
			c, err := userGetConfig(hello)
			if err != nil {
				return nil, err
			}
			if c != nil {
				tmpl = c
			}
		}
		c := tmpl.Clone()
		c.GetConfigForClient = nil
		c.ClientAuth = tls.RequestClientCert
		c.ClientCAs = b.cfg.ClientCAs
		remote := ""
		if hello.Conn != nil {
			remote = hello.Conn.RemoteAddr().String()
		}
		c.VerifyConnection = func(cs tls.ConnectionState) error {
			if err := b.verifyClientCert(cs, remote); err != nil {
				return err
			}
			if userVerify != nil {
				return userVerify(cs)
			}
			return nil
		}
		return c, nil
	}
	return base
}

// verifyClientCert verifies a presented client certificate against
// ClientCAs for client authentication, then runs VerifyClient. It counts
// and logs (rate-limited per remote address and reason) every refusal.
func (b *Broker) verifyClientCert(cs tls.ConnectionState, remote string) error {
	if len(cs.PeerCertificates) == 0 {
		return nil
	}
	reason, err := b.checkClientChain(cs.PeerCertificates)
	if err == nil {
		return nil
	}
	b.metrics.refusal(reason)
	if b.limiter.allow("tls|" + reason + "|" + remoteHost(remote)) {
		leaf := cs.PeerCertificates[0]
		b.log.Warn("client certificate refused", "reason", reason, "remote", remote,
			"subject", leaf.Subject.CommonName, "serial", leaf.SerialNumber.String(), "error", err)
	}
	return err
}

func (b *Broker) checkClientChain(certs []*x509.Certificate) (reason string, err error) {
	if b.cfg.ClientCAs == nil {
		return ReasonTLSUnknownCA, errors.New("client certificates are not accepted: no client CA configured")
	}
	inter := x509.NewCertPool()
	if b.cfg.ClientIntermediates != nil {
		inter = b.cfg.ClientIntermediates.Clone()
	}
	for _, c := range certs[1:] {
		inter.AddCert(c)
	}
	chains, err := certs[0].Verify(x509.VerifyOptions{
		Roots:         b.cfg.ClientCAs,
		Intermediates: inter,
		CurrentTime:   b.now(),
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	})
	if err != nil {
		var ua x509.UnknownAuthorityError
		var ci x509.CertificateInvalidError
		switch {
		case errors.As(err, &ua):
			return ReasonTLSUnknownCA, fmt.Errorf("client certificate: %w", err)
		case errors.As(err, &ci) && ci.Reason == x509.Expired:
			return ReasonTLSExpired, fmt.Errorf("client certificate: %w", err)
		default:
			return ReasonTLSBadCertificate, fmt.Errorf("client certificate: %w", err)
		}
	}
	if b.cfg.VerifyClient != nil {
		if err := b.cfg.VerifyClient(chains[0]); err != nil {
			reason := ReasonTLSRejected
			if r := refusalReason(err); r != "" {
				reason = r
			}
			return reason, fmt.Errorf("client certificate: %w", err)
		}
	}
	return "", nil
}

// peerCertificates returns the client certificate chain of a TLS (or wss)
// connection, leaf first; the handshake verified it (verifyClientCert).
func peerCertificates(c net.Conn) []*x509.Certificate {
	if s, ok := c.(interface{ ConnectionState() tls.ConnectionState }); ok {
		return s.ConnectionState().PeerCertificates
	}
	return nil
}
