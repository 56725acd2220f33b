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

// serverTLSConfig derives the TLS listener's config from cfg.TLS: it
// requests a client certificate without requiring one (password clients
// connect over TLS without one) and verifies a presented certificate itself
// in VerifyConnection, so that each refusal is counted by reason. ClientCAs
// is kept so that the handshake names the acceptable CAs to the client.
// VerifyConnection does not know the remote address, so the listener logs a
// refusal when the handshake fails (logRefusal); that way one config serves
// every connection rather than a clone each (about 0.5 KiB a connection).
func (b *Broker) serverTLSConfig() *tls.Config {
	base := b.cfg.TLS.Clone()
	b.verifyClients(base)
	if get := base.GetConfigForClient; get != nil {
		base.GetConfigForClient = func(hello *tls.ClientHelloInfo) (*tls.Config, error) {
			c, err := get(hello)
			if err != nil || c == nil {
				return c, err
			}
			c = c.Clone()
			c.GetConfigForClient = nil
			b.verifyClients(c)
			return c, nil
		}
	}
	return base
}

// verifyClients makes c request client certificates and verify them with
// verifyClientCert ahead of c's own VerifyConnection.
func (b *Broker) verifyClients(c *tls.Config) {
	c.ClientAuth = tls.RequestClientCert
	c.ClientCAs = b.cfg.ClientCAs
	if c.MinVersion < tls.VersionTLS12 {
		c.MinVersion = tls.VersionTLS12
	}
	user := c.VerifyConnection
	c.VerifyConnection = func(cs tls.ConnectionState) error {
		if err := b.verifyClientCert(cs); err != nil {
			return err
		}
		if user != nil {
			return user(cs)
		}
		return nil
	}
}

// wsTLSConfig is the WSS listener's config. net/http runs those handshakes
// and only logs their errors, so each connection gets a config of its own
// that logs a refusal with the remote address. WebSocket connections never
// park and cost far more than the clone.
func (b *Broker) wsTLSConfig(base *tls.Config) *tls.Config {
	ws := base.Clone()
	ws.GetConfigForClient = func(hello *tls.ClientHelloInfo) (*tls.Config, error) {
		tmpl := base
		if base.GetConfigForClient != nil {
			c, err := base.GetConfigForClient(hello)
			if err != nil {
				return nil, err
			}
			if c != nil {
				tmpl = c
			}
		}
		c := tmpl.Clone()
		c.GetConfigForClient = nil
		remote := ""
		if hello.Conn != nil {
			remote = hello.Conn.RemoteAddr().String()
		}
		verify := c.VerifyConnection
		c.VerifyConnection = func(cs tls.ConnectionState) error {
			err := verify(cs)
			b.logRefusal(err, remote)
			return err
		}
		return c, nil
	}
	return ws
}

// certRefusal is the handshake error of a refused client certificate.
type certRefusal struct {
	reason          string
	subject, serial string
	err             error
}

func (e *certRefusal) Error() string { return e.err.Error() }
func (e *certRefusal) Unwrap() error { return e.err }

// verifyClientCert verifies a presented client certificate against
// ClientCAs for client authentication, then runs VerifyClient. It counts
// every refusal and returns it as a *certRefusal, which logRefusal logs.
func (b *Broker) verifyClientCert(cs tls.ConnectionState) error {
	if len(cs.PeerCertificates) == 0 {
		return nil
	}
	reason, err := b.checkClientChain(cs.PeerCertificates)
	if err == nil {
		return nil
	}
	b.metrics.refusal(reason)
	leaf := cs.PeerCertificates[0]
	return &certRefusal{reason: reason, subject: leaf.Subject.CommonName, serial: leaf.SerialNumber.String(), err: err}
}

// logRefusal logs err, a failed handshake from remote, if it refused a
// client certificate; rate-limited per remote host and reason.
func (b *Broker) logRefusal(err error, remote string) {
	var r *certRefusal
	if !errors.As(err, &r) {
		return
	}
	if b.limiter.allow("tls|" + r.reason + "|" + remoteHost(remote)) {
		b.log.Warn("client certificate refused", "reason", r.reason, "remote", remote,
			"subject", r.subject, "serial", r.serial, "error", r.err)
	}
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

// dropPeerCertificates makes a TLS connection forget its client
// certificate chain once CONNECT is authenticated: nothing reads it later,
// and it would cost an idle connection about 2.5 KiB for its whole life.
func dropPeerCertificates(c net.Conn) {
	if d, ok := c.(interface{ DropPeerCertificates() }); ok {
		d.DropPeerCertificates()
	}
}
