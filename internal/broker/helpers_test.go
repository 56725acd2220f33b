package broker

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"os"
	"sync"
	"testing"
	"time"

	pahopackets "github.com/eclipse/paho.golang/packets"
	paho "github.com/eclipse/paho.golang/paho"
	pahov3 "github.com/eclipse/paho.mqtt.golang"
	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/fieldhub/fieldhub/internal/fhtest"
	"github.com/fieldhub/fieldhub/internal/store"
	"github.com/fieldhub/fieldhub/payload"
)

const testTimeout = 5 * time.Second

// testLogger discards logs unless FIELDHUB_TEST_LOG is set.
func testLogger() *slog.Logger {
	if os.Getenv("FIELDHUB_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// refusal is an Authenticator refusal with a metric reason.
type refusal struct {
	reason string
	bad    bool
}

func (r *refusal) Error() string         { return "refused: " + r.reason }
func (r *refusal) RefusalReason() string { return r.reason }
func (r *refusal) BadCredentials() bool  { return r.bad }

// fakeAuth accepts devices by password (username = device id = client id)
// or by client certificate (CN = client id), and records what it saw.
type fakeAuth struct {
	mu        sync.Mutex
	passwords map[string]string
	certs     map[string][]*x509.Certificate // client id → peer chain seen
}

func newFakeAuth(pw map[string]string) *fakeAuth {
	return &fakeAuth{passwords: pw, certs: map[string][]*x509.Certificate{}}
}

func (a *fakeAuth) Authenticate(ctx context.Context, clientID, username string, password []byte, peerCerts []*x509.Certificate) (string, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if len(peerCerts) > 0 {
		a.certs[clientID] = peerCerts
		return peerCerts[0].Subject.CommonName, nil
	}
	pw, ok := a.passwords[username]
	if !ok || pw != string(password) {
		return "", &refusal{reason: "bad_password", bad: true}
	}
	if username == "disabled" {
		return "", &refusal{reason: "disabled"}
	}
	if username == "slow" {
		<-ctx.Done()
		return "", ctx.Err()
	}
	return username, nil
}

func (a *fakeAuth) seenCerts(id string) []*x509.Certificate {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.certs[id]
}

// ingested is one message the recording ingester saw.
type ingested struct {
	device  string
	payload string
	done    func(error)
}

// recIngester records Ingest calls; by default it completes them at once
// with the error its mode says, or holds them in "hold" mode.
type recIngester struct {
	mu      sync.Mutex
	mode    string // "ok", "hold", "refuse", "mismatch", "fail"
	got     []ingested
	held    []ingested
	arrived chan struct{}
}

func newRecIngester(mode string) *recIngester {
	return &recIngester{mode: mode, arrived: make(chan struct{}, 100000)}
}

func (r *recIngester) setMode(m string) {
	r.mu.Lock()
	r.mode = m
	r.mu.Unlock()
}

func (r *recIngester) Ingest(device string, p []byte, done func(error)) {
	r.mu.Lock()
	m := ingested{device: device, payload: string(p), done: done}
	r.got = append(r.got, m)
	mode := r.mode
	if mode == "hold" {
		r.held = append(r.held, m)
	}
	r.mu.Unlock()
	r.arrived <- struct{}{}
	switch mode {
	case "ok":
		done(nil)
	case "refuse":
		done(&payload.Error{Reason: payload.ReasonMalformed, Msg: "not a JSON object"})
	case "mismatch":
		done(fmt.Errorf("appending: %w", store.ErrTypeMismatch))
	case "fail":
		done(errors.New("disk on fire"))
	}
}

// waitArrived waits until n more Ingest calls have arrived.
func (r *recIngester) waitArrived(t *testing.T, n int) {
	t.Helper()
	deadline := time.After(testTimeout)
	for i := 0; i < n; i++ {
		select {
		case <-r.arrived:
		case <-deadline:
			t.Fatalf("only %d of %d ingests arrived", i, n)
		}
	}
}

// release completes the held messages with err, in reverse order when
// reverse, from another goroutine; it returns how many it completed.
func (r *recIngester) release(err error, reverse bool) int {
	r.mu.Lock()
	held := r.held
	r.held = nil
	r.mu.Unlock()
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := range held {
			j := i
			if reverse {
				j = len(held) - 1 - i
			}
			held[j].done(err)
		}
	}()
	<-done
	return len(held)
}

func (r *recIngester) messages() []ingested {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]ingested(nil), r.got...)
}

// presenceRec records presence events.
type presenceRec struct {
	mu     sync.Mutex
	events []string
}

func (p *presenceRec) Connected(id string, _ time.Time) {
	p.mu.Lock()
	p.events = append(p.events, "+"+id)
	p.mu.Unlock()
}

func (p *presenceRec) Disconnected(id string, _ time.Time) {
	p.mu.Lock()
	p.events = append(p.events, "-"+id)
	p.mu.Unlock()
}

func (p *presenceRec) list() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.events...)
}

// env is a started broker with its fakes.
type env struct {
	b    *Broker
	reg  *prometheus.Registry
	auth *fakeAuth
	ing  *recIngester
	pres *presenceRec
	// shutdownErrOK: the test shut the broker down with a short ctx itself.
	shutdownErrOK bool
}

var testPasswords = map[string]string{"dev-a": "pw-a", "dev-b": "pw-b", "dev-c": "pw-c", "disabled": "pw-d", "slow": "pw-s"}

// startEnv starts a broker with cfg (TCP on loopback when no address is
// set), a fake authenticator and a recording ingester in mode.
func startEnv(t *testing.T, cfg Config, mode string, tweaks ...func(*Broker)) *env {
	t.Helper()
	e := &env{
		reg:  prometheus.NewRegistry(),
		auth: newFakeAuth(testPasswords),
		ing:  newRecIngester(mode),
		pres: &presenceRec{},
	}
	if cfg.TCPAddr == "" && cfg.TLSAddr == "" && cfg.WSAddr == "" && cfg.WSSAddr == "" {
		cfg.TCPAddr = "127.0.0.1:0"
	}
	cfg.Registerer = e.reg
	cfg.Logger = testLogger()
	var auth Authenticator = e.auth
	if cfg.OpenPolicy {
		auth = nil
	}
	b, err := New(cfg, auth, e.ing, e.pres)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	for _, tw := range tweaks {
		tw(b)
	}
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	if err := b.Start(ctx); err != nil {
		t.Fatalf("Start: %v", err)
	}
	e.b = b
	t.Cleanup(func() {
		e.ing.setMode("ok")
		e.ing.release(errors.New("test over"), false)
		ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
		defer cancel()
		if err := b.Shutdown(ctx); err != nil && !e.shutdownErrOK {
			t.Errorf("Shutdown: %v", err)
		}
	})
	return e
}

func (e *env) addr(name string) string { return e.b.Addr(name).String() }

// counter reads a counter or gauge of the env's registry.
func (e *env) counter(t *testing.T, name string, labels ...string) float64 {
	t.Helper()
	mfs, err := e.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	metrics:
		for _, m := range mf.GetMetric() {
			for i := 0; i+1 < len(labels); i += 2 {
				found := false
				for _, lp := range m.GetLabel() {
					if lp.GetName() == labels[i] && lp.GetValue() == labels[i+1] {
						found = true
					}
				}
				if !found {
					continue metrics
				}
			}
			switch {
			case m.GetCounter() != nil:
				return m.GetCounter().GetValue()
			case m.GetGauge() != nil:
				return m.GetGauge().GetValue()
			case m.GetHistogram() != nil:
				return float64(m.GetHistogram().GetSampleCount())
			}
		}
	}
	return 0
}

// eventually polls cond until it holds or the test times out.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(testTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// --- MQTT 5 clients (paho.golang) ---

type v5client struct {
	c            *paho.Client
	conn         net.Conn
	received     chan *paho.Publish
	disconnected chan struct{} // closed on server DISCONNECT or connection error
	serverDisc   chan *paho.Disconnect
	once         sync.Once
}

// dialV5 connects an MQTT 5 client over conn (already dialled).
func dialV5(t *testing.T, conn net.Conn, cp *paho.Connect) (*v5client, *paho.Connack, error) {
	t.Helper()
	vc := &v5client{
		conn:         conn,
		received:     make(chan *paho.Publish, 1000),
		disconnected: make(chan struct{}),
		serverDisc:   make(chan *paho.Disconnect, 1),
	}
	vc.c = paho.NewClient(paho.ClientConfig{
		Conn: pahopackets.NewThreadSafeConn(conn),
		OnPublishReceived: []func(paho.PublishReceived) (bool, error){func(pr paho.PublishReceived) (bool, error) {
			vc.received <- pr.Packet
			return true, nil
		}},
		OnServerDisconnect: func(d *paho.Disconnect) {
			select {
			case vc.serverDisc <- d:
			default:
			}
			vc.once.Do(func() { close(vc.disconnected) })
		},
		OnClientError: func(error) { vc.once.Do(func() { close(vc.disconnected) }) },
		PacketTimeout: testTimeout,
	})
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	if cp.KeepAlive == 0 {
		cp.KeepAlive = 30
	}
	ca, err := vc.c.Connect(ctx, cp)
	t.Cleanup(func() {
		_ = vc.c.Disconnect(&paho.Disconnect{})
		conn.Close()
		select {
		case <-vc.c.Done():
		case <-time.After(testTimeout):
		}
	})
	return vc, ca, err
}

func dialTCP(t *testing.T, addr string) net.Conn {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, testTimeout)
	if err != nil {
		t.Fatal(err)
	}
	return conn
}

// connectV5 connects device id with its password over plain TCP.
func connectV5(t *testing.T, addr, id string) *v5client {
	t.Helper()
	vc, _, err := dialV5(t, dialTCP(t, addr), &paho.Connect{
		ClientID: id, CleanStart: true,
		Username: id, UsernameFlag: true,
		Password: []byte(testPasswords[id]), PasswordFlag: true,
	})
	if err != nil {
		t.Fatalf("connect %s: %v", id, err)
	}
	return vc
}

func (vc *v5client) publish(t *testing.T, topicName string, qos byte, body string) (*paho.PublishResponse, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	return vc.c.Publish(ctx, &paho.Publish{Topic: topicName, QoS: qos, Payload: []byte(body)})
}

func (vc *v5client) subscribe(t *testing.T, filters ...string) []byte {
	t.Helper()
	return fhtest.Subscribe(t, vc.c, testTimeout, filters...)
}

func (vc *v5client) waitDisconnected(t *testing.T) {
	t.Helper()
	select {
	case <-vc.disconnected:
	case <-time.After(testTimeout):
		t.Fatal("client was not disconnected")
	}
}

// --- MQTT 3.1.1 clients (paho.mqtt.golang) ---

type v3client struct {
	c    pahov3.Client
	lost chan error
}

func dialV3(t *testing.T, url, id, user, pass string, tlsCfg *tls.Config) (*v3client, error) {
	t.Helper()
	vc := &v3client{lost: make(chan error, 1)}
	opts := pahov3.NewClientOptions().AddBroker(url).SetClientID(id).
		SetProtocolVersion(4).SetCleanSession(true).SetAutoReconnect(false).
		SetConnectRetry(false).SetConnectTimeout(testTimeout).SetKeepAlive(30 * time.Second).
		SetOrderMatters(false).
		SetConnectionLostHandler(func(_ pahov3.Client, err error) {
			select {
			case vc.lost <- err:
			default:
			}
		})
	if user != "" {
		opts.SetUsername(user).SetPassword(pass)
	}
	if tlsCfg != nil {
		opts.SetTLSConfig(tlsCfg)
	}
	vc.c = pahov3.NewClient(opts)
	tok := vc.c.Connect()
	if !tok.WaitTimeout(testTimeout) {
		return nil, errors.New("connect timed out")
	}
	if err := tok.Error(); err != nil {
		return nil, err
	}
	t.Cleanup(func() { vc.c.Disconnect(50) })
	return vc, nil
}

func connectV3(t *testing.T, addr, id string) *v3client {
	t.Helper()
	vc, err := dialV3(t, "tcp://"+addr, id, id, testPasswords[id], nil)
	if err != nil {
		t.Fatalf("connect v3 %s: %v", id, err)
	}
	return vc
}

func (vc *v3client) waitLost(t *testing.T) {
	t.Helper()
	select {
	case <-vc.lost:
	case <-time.After(testTimeout):
		t.Fatal("v3 client connection was not closed")
	}
}

// --- raw MQTT over a socket (mochi's packet codec), for what clients hide ---

type rawClient struct {
	conn    net.Conn
	r       *bufio.Reader
	version byte
}

func rawConnect(t *testing.T, addr, id string, version byte) *rawClient {
	t.Helper()
	rc := &rawClient{conn: dialTCP(t, addr), version: version}
	rc.r = bufio.NewReader(rc.conn)
	t.Cleanup(func() { rc.conn.Close() })
	rc.send(t, packets.Packet{
		FixedHeader:     packets.FixedHeader{Type: packets.Connect},
		ProtocolVersion: version,
		Connect: packets.ConnectParams{
			ProtocolName: []byte("MQTT"), Clean: true, Keepalive: 30, ClientIdentifier: id,
			UsernameFlag: true, Username: []byte(id), PasswordFlag: true, Password: []byte(testPasswords[id]),
		},
	})
	pk, err := rc.read(t)
	if err != nil || pk.FixedHeader.Type != packets.Connack || pk.ReasonCode != 0 {
		t.Fatalf("raw connect %s: %+v, %v", id, pk.FixedHeader, err)
	}
	return rc
}

func (rc *rawClient) send(t *testing.T, pk packets.Packet) {
	t.Helper()
	pk.ProtocolVersion = rc.version
	var buf bytes.Buffer
	var err error
	switch pk.FixedHeader.Type {
	case packets.Connect:
		err = pk.ConnectEncode(&buf)
	case packets.Publish:
		err = pk.PublishEncode(&buf)
	case packets.Subscribe:
		err = pk.SubscribeEncode(&buf)
	default:
		t.Fatalf("raw send: unsupported type %d", pk.FixedHeader.Type)
	}
	if err != nil {
		t.Fatal(err)
	}
	if _, err := rc.conn.Write(buf.Bytes()); err != nil {
		t.Fatalf("raw write: %v", err)
	}
}

func (rc *rawClient) publish(t *testing.T, id uint16, topicName string, qos byte, body string) {
	t.Helper()
	rc.send(t, packets.Packet{
		FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: qos},
		TopicName:   topicName, PacketID: id, Payload: []byte(body),
	})
}

// read reads one packet, waiting at most testTimeout.
func (rc *rawClient) read(t *testing.T) (packets.Packet, error) {
	return rc.readWithin(testTimeout)
}

func (rc *rawClient) readWithin(d time.Duration) (packets.Packet, error) {
	_ = rc.conn.SetReadDeadline(time.Now().Add(d))
	var pk packets.Packet
	b, err := rc.r.ReadByte()
	if err != nil {
		return pk, err
	}
	if err := pk.FixedHeader.Decode(b); err != nil {
		return pk, err
	}
	n, _, err := packets.DecodeLength(rc.r)
	if err != nil {
		return pk, err
	}
	body := make([]byte, n)
	if _, err := io.ReadFull(rc.r, body); err != nil {
		return pk, err
	}
	pk.FixedHeader.Remaining = n
	pk.ProtocolVersion = rc.version
	switch pk.FixedHeader.Type {
	case packets.Connack:
		err = pk.ConnackDecode(body)
	case packets.Puback:
		err = pk.PubackDecode(body)
	case packets.Suback:
		err = pk.SubackDecode(body)
	case packets.Disconnect:
		err = pk.DisconnectDecode(body)
	case packets.Publish:
		err = pk.PublishDecode(body)
	}
	return pk, err
}

// --- throwaway PKI ---

type testPKI struct {
	ca      *x509.Certificate
	caKey   *ecdsa.PrivateKey
	pool    *x509.CertPool
	server  tls.Certificate
	serial  int64
	rootsMu sync.Mutex
}

func newTestPKI(t testing.TB, name string) *testPKI {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	p := &testPKI{ca: ca, caKey: key, pool: x509.NewCertPool(), serial: 1}
	p.pool.AddCert(ca)
	p.server = p.issue(t, "localhost", time.Now().Add(-time.Hour), time.Now().Add(24*time.Hour), x509.ExtKeyUsageServerAuth)
	return p
}

// issue signs a leaf certificate for cn.
func (p *testPKI) issue(t testing.TB, cn string, notBefore, notAfter time.Time, eku ...x509.ExtKeyUsage) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	p.rootsMu.Lock()
	p.serial++
	serial := p.serial
	p.rootsMu.Unlock()
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial),
		Subject:      pkix.Name{CommonName: cn},
		NotBefore:    notBefore,
		NotAfter:     notAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  eku,
		DNSNames:     []string{"localhost"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.ca, &key.PublicKey, p.caKey)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}
}

func (p *testPKI) clientCert(t *testing.T, cn string) tls.Certificate {
	return p.issue(t, cn, time.Now().Add(-time.Hour), time.Now().Add(time.Hour), x509.ExtKeyUsageClientAuth)
}

// clientTLS is a client config trusting p's CA, presenting certs.
// The certificate is sent even when its CA is not among those the server
// names (as OpenSSL clients do; Go's would otherwise send none).
func (p *testPKI) clientTLS(certs ...tls.Certificate) *tls.Config {
	c := &tls.Config{RootCAs: p.pool, ServerName: "localhost"}
	if len(certs) > 0 {
		c.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &certs[0], nil }
	}
	return c
}

// tlsConfigEnv returns a Config with TLS listeners backed by p.
func (p *testPKI) brokerConfig() Config {
	return Config{
		TLSAddr:   "127.0.0.1:0",
		TLS:       &tls.Config{Certificates: []tls.Certificate{p.server}},
		ClientCAs: p.pool,
	}
}

var _ = testutil.ToFloat64
