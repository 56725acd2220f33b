package bench

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net"
	"testing"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

// testCA issues certificates for a TLS test.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pool *x509.CertPool
}

func newTestCA(t *testing.T) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "bench test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &testCA{cert: cert, key: key, pool: pool}
}

// issue returns a leaf certificate for cn; server certificates are for
// 127.0.0.1.
func (ca *testCA) issue(t *testing.T, cn string, server bool) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	if server {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
		tmpl.IPAddresses = []net.IP{net.IPv4(127, 0, 0, 1)}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// certHook admits a client only when its TLS client certificate's common
// name is its client id.
type certHook struct{ mqtt.HookBase }

func (h *certHook) ID() string { return "cert" }
func (h *certHook) Provides(b byte) bool {
	return b == mqtt.OnConnectAuthenticate || b == mqtt.OnACLCheck
}
func (h *certHook) OnACLCheck(*mqtt.Client, string, bool) bool {
	return true
}
func (h *certHook) OnConnectAuthenticate(cl *mqtt.Client, _ packets.Packet) bool {
	tc, ok := cl.Net.Conn.(*tls.Conn)
	if !ok {
		return false
	}
	certs := tc.ConnectionState().PeerCertificates
	return len(certs) > 0 && certs[0].Subject.CommonName == cl.ID
}

func TestIngestTLSClientCertificates(t *testing.T) {
	ca := newTestCA(t)
	serverCert := ca.issue(t, "broker", true)
	b, err := startBaseline("127.0.0.1:0", testLogger(t), &tls.Config{
		Certificates: []tls.Certificate{serverCert},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    ca.pool,
		MinVersion:   tls.VersionTLS12,
	}, new(certHook))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	devs := Devices(3, "tls")
	for i := range devs {
		c := ca.issue(t, devs[i].ID, false)
		devs[i].Cert = &c
	}
	res, err := RunIngest(t.Context(), IngestConfig{
		Addr: b.Addr().String(), TLS: &tls.Config{RootCAs: ca.pool}, Devices: devs,
		Protocol: 5, Duration: 300 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	checkSane(t, res)

	// Another device's certificate is refused by the hook.
	devs[0].Cert = devs[1].Cert
	if _, err := RunIngest(t.Context(), IngestConfig{
		Addr: b.Addr().String(), TLS: &tls.Config{RootCAs: ca.pool}, Devices: devs[:1], Protocol: 5,
	}); err == nil {
		t.Error("a device with another's certificate connected")
	}
}

func TestIngestKeepAliveWhilePaced(t *testing.T) {
	if testing.Short() {
		t.Skip("takes 3 s")
	}
	b, err := StartBaseline("127.0.0.1:0", testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	// One message every 5 s, a keep alive of 1 s: mochi drops a client
	// silent for 1.5 s, so only PINGREQs keep the connection.
	res, err := RunIngest(t.Context(), IngestConfig{
		Addr: b.Addr().String(), Devices: Devices(1, ""), Rate: 0.2, KeepAlive: time.Second,
		Duration: 3 * time.Second,
	})
	if err != nil || res.Disconnects != 0 || res.Messages != 1 {
		t.Errorf("paced slower than the keep alive: err %v, disconnects %d, messages %d; want nil, 0, 1",
			err, res.Disconnects, res.Messages)
	}
}
