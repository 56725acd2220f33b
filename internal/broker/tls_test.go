package broker

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	paho "github.com/eclipse/paho.golang/paho"
	"github.com/gorilla/websocket"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/fieldhub/fieldhub/internal/fhtest"
	"github.com/fieldhub/fieldhub/topic"
)

// revoked is a VerifyClient refusal with a reason.
type revoked struct{}

func (revoked) Error() string         { return "certificate revoked" }
func (revoked) RefusalReason() string { return "revoked" }

func TestTLSClientCertificates(t *testing.T) {
	p := newTestPKI(t, "fieldhub test CA")
	cfg := p.brokerConfig()
	cfg.VerifyClient = func(certs []*x509.Certificate) error {
		if len(certs) < 2 || !certs[len(certs)-1].Equal(p.ca) {
			return errors.New("VerifyClient got an unverified chain")
		}
		if certs[0].Subject.CommonName == "dev-revoked" {
			return revoked{}
		}
		return nil
	}
	e := startEnv(t, cfg, "ok")
	addr := e.addr("tls")

	// A device certificate alone authenticates (no user name or password).
	conn, err := tls.Dial("tcp", addr, p.clientTLS(p.clientCert(t, "dev-a")))
	if err != nil {
		t.Fatal(err)
	}
	c, _, err := dialV5(t, conn, &paho.Connect{ClientID: "dev-a", CleanStart: true})
	if err != nil {
		t.Fatalf("connect with a client certificate: %v", err)
	}
	if pr, err := c.publish(t, topic.Telemetry("dev-a"), 1, `{"data":{"t":1}}`); err != nil || pr.ReasonCode != 0 {
		t.Fatalf("publish over TLS = %+v, %v", pr, err)
	}
	if certs := e.auth.seenCerts("dev-a"); len(certs) == 0 || certs[0].Subject.CommonName != "dev-a" {
		t.Fatalf("Authenticate got peer certs %v; want dev-a's", certs)
	}
	// Once CONNECT was authenticated the broker let the certificate go.
	// (Ingest ran after OnConnect on the client's reader: reading the
	// ingested messages orders this read after the drop.)
	if len(e.ing.messages()) == 0 {
		t.Fatal("publish not ingested")
	}
	if cl, ok := e.b.server.Clients.Get("dev-a"); !ok {
		t.Fatal("dev-a not connected")
	} else if cs := cl.Net.Conn.(interface{ ConnectionState() tls.ConnectionState }).ConnectionState(); len(cs.PeerCertificates) != 0 {
		t.Errorf("the connection still holds %d peer certificates after CONNECT", len(cs.PeerCertificates))
	}

	// A password client over TLS without a certificate (mosquitto_pub --cafile … -u -P).
	if _, err := dialV3(t, "ssl://"+addr, "dev-b", "dev-b", "pw-b", p.clientTLS()); err != nil {
		t.Fatalf("password login over TLS without a client certificate: %v", err)
	}

	foreign := newTestPKI(t, "someone else's CA")
	tests := []struct {
		name   string
		cert   tls.Certificate
		reason string
	}{
		{"foreign CA", foreign.clientCert(t, "dev-c"), ReasonTLSUnknownCA},
		{"expired", p.issue(t, "dev-c", time.Now().Add(-48*time.Hour), time.Now().Add(-24*time.Hour), x509.ExtKeyUsageClientAuth), ReasonTLSExpired},
		{"server-only usage", p.issue(t, "dev-c", time.Now().Add(-time.Hour), time.Now().Add(time.Hour), x509.ExtKeyUsageServerAuth), ReasonTLSBadCertificate},
		{"revoked", p.clientCert(t, "dev-revoked"), "revoked"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// TLS 1.3 finishes the client's side of the handshake before the
			// server checks the client certificate: the refusal shows as a
			// failed CONNECT (an alert instead of CONNACK).
			conn, err := tls.Dial("tcp", addr, p.clientTLS(tt.cert))
			if err == nil {
				_, _, err = dialV5(t, conn, &paho.Connect{ClientID: "dev-c", CleanStart: true})
			}
			if err == nil {
				t.Fatal("connect succeeded")
			}
			eventually(t, "refusal counted", func() bool {
				return testutil.ToFloat64(e.b.metrics.refusals.WithLabelValues(tt.reason)) == 1
			})
		})
	}
	if e.auth.seenCerts("dev-c") != nil || e.auth.seenCerts("dev-revoked") != nil {
		t.Error("Authenticate saw a refused certificate")
	}
}

func TestTLSWithoutClientCAs(t *testing.T) {
	p := newTestPKI(t, "ca")
	cfg := p.brokerConfig()
	cfg.ClientCAs = nil
	e := startEnv(t, cfg, "ok")
	conn, err := tls.Dial("tcp", e.addr("tls"), p.clientTLS(p.clientCert(t, "dev-a")))
	if err == nil {
		_, _, err = dialV5(t, conn, &paho.Connect{ClientID: "dev-a", CleanStart: true})
	}
	if err == nil {
		t.Fatal("client certificate accepted with no ClientCAs")
	}
	eventually(t, "refusal counted", func() bool {
		return testutil.ToFloat64(e.b.metrics.refusals.WithLabelValues(ReasonTLSUnknownCA)) == 1
	})
}

// A refused client certificate is logged with the device's address, on
// the TLS listener (one shared config; the listener logs the failed
// handshake) and on the WSS listener (net/http handshakes; a config per
// connection logs it).
func TestTLSRefusalLogged(t *testing.T) {
	p := newTestPKI(t, "log CA")
	cfg := p.brokerConfig()
	cfg.WSSAddr = "127.0.0.1:0"
	logs := &fhtest.Buffer{}
	e := startEnv(t, cfg, "ok", func(b *Broker) {
		b.log = slog.New(slog.NewTextHandler(logs, nil))
	})
	foreign := newTestPKI(t, "foreign CA")
	// Different reasons: refusals are logged once per host and reason a while.
	conn, err := tls.Dial("tcp", e.addr("tls"), p.clientTLS(foreign.clientCert(t, "dev-c")))
	if err != nil {
		t.Fatal(err)
	}
	tlsLocal := conn.LocalAddr().String()
	if _, _, err := dialV5(t, conn, &paho.Connect{ClientID: "dev-c", CleanStart: true}); err == nil {
		t.Fatal("connect succeeded")
	}

	var wssLocal string
	d := websocket.Dialer{
		TLSClientConfig: p.clientTLS(p.issue(t, "dev-c", time.Now().Add(-48*time.Hour), time.Now().Add(-24*time.Hour), x509.ExtKeyUsageClientAuth)),
		Subprotocols:    []string{"mqtt"},
		NetDialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
			if err == nil {
				wssLocal = c.LocalAddr().String()
			}
			return c, err
		},
	}
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	if ws, _, err := d.DialContext(ctx, "wss://"+e.addr("wss")+WSPath, nil); err == nil {
		// TLS 1.3: the client may finish before the server refuses.
		_, _, err = ws.ReadMessage()
		ws.Close()
		if err == nil {
			t.Fatal("wss read succeeded with a refused certificate")
		}
	}
	for _, want := range []string{"reason=tls_unknown_ca remote=" + tlsLocal + " ", "reason=tls_expired remote=" + wssLocal + " "} {
		eventually(t, want+"logged", func() bool {
			return strings.Contains(logs.String(), `msg="client certificate refused" `+want)
		})
	}
}
