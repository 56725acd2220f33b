package pki

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fieldhub/fieldhub/internal/store"
	"github.com/fieldhub/fieldhub/internal/store/sqlite"
)

func tempKV(t *testing.T) store.KV {
	t.Helper()
	db, err := sqlite.Open(filepath.Join(t.TempDir(), "registry.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

func newKey(t *testing.T) []byte {
	k := make([]byte, SealKeySize)
	rand.Read(k)
	return k
}

func newCA(t *testing.T) *CA {
	t.Helper()
	ca, err := Open(t.Context(), tempKV(t), newKey(t), nil)
	if err != nil {
		t.Fatalf("Open = %v", err)
	}
	return ca
}

func TestLoadSealKey(t *testing.T) {
	k := bytes.Repeat([]byte{7}, 32)
	std := base64.StdEncoding.EncodeToString(k)
	dir := t.TempDir()
	good := filepath.Join(dir, "good.key")
	os.WriteFile(good, []byte(std+"\n"), 0o600)
	bad := filepath.Join(dir, "bad.key")
	os.WriteFile(bad, []byte("c2hvcnQ=\n"), 0o600)

	tests := []struct {
		name    string
		path    string
		env     string
		want    []byte
		wantErr error
	}{
		{"env std", "", std, k, nil},
		{"env raw url", "", base64.RawURLEncoding.EncodeToString(k), k, nil},
		{"env with spaces", "", "  " + std + "\n", k, nil},
		{"env wins over file", bad, std, k, nil},
		{"env too short", "", "c2hvcnQ=", nil, ErrBadSealKey},
		{"env not base64", "", "not base64 at all!", nil, ErrBadSealKey},
		{"file", good, "", k, nil},
		{"file too short", bad, "", nil, ErrBadSealKey},
		{"nothing", "", "", nil, ErrBadSealKey},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := LoadSealKey(tt.path, tt.env)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("LoadSealKey(%q, %q) = %v, want %v", tt.path, tt.env, err, tt.wantErr)
				}
				return
			}
			if err != nil || !bytes.Equal(got, tt.want) {
				t.Fatalf("LoadSealKey(%q, %q) = %x, %v; want %x", tt.path, tt.env, got, err, tt.want)
			}
		})
	}
}

func TestLoadSealKeyCreates(t *testing.T) {
	path := filepath.Join(t.TempDir(), "secrets", "master.key")
	k1, err := LoadSealKey(path, "")
	if err != nil {
		t.Fatalf("LoadSealKey(missing) = %v", err)
	}
	if len(k1) != 32 || bytes.Equal(k1, make([]byte, 32)) {
		t.Fatalf("created key = %x, want 32 random bytes", k1)
	}
	for p, want := range map[string]os.FileMode{path: 0o600, filepath.Dir(path): 0o700} {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if got := fi.Mode().Perm(); got != want {
			t.Errorf("mode of %s = %v, want %v", p, got, want)
		}
	}
	k2, err := LoadSealKey(path, "")
	if err != nil || !bytes.Equal(k1, k2) {
		t.Fatalf("second LoadSealKey = %x, %v; want the created key %x", k2, err, k1)
	}
	// The file holds base64, usable as the environment value.
	b, _ := os.ReadFile(path)
	k3, err := LoadSealKey("", string(b))
	if err != nil || !bytes.Equal(k1, k3) {
		t.Fatalf("file content as env value = %x, %v; want %x", k3, err, k1)
	}
	entries, _ := os.ReadDir(filepath.Dir(path))
	if len(entries) != 1 {
		t.Errorf("key directory holds %d entries, want only the key (temporary file left behind?)", len(entries))
	}
}

func TestSeal(t *testing.T) {
	key, other := newKey(t), newKey(t)
	blob, err := seal(key, []byte("secret"), "slot-a")
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(blob, []byte("secret")) {
		t.Fatal("sealed blob contains the plaintext")
	}
	again, _ := seal(key, []byte("secret"), "slot-a")
	if bytes.Equal(blob, again) {
		t.Error("two seals of the same plaintext are equal; want a random nonce")
	}
	if pt, err := unseal(key, blob, "slot-a"); err != nil || string(pt) != "secret" {
		t.Fatalf("unseal = %q, %v", pt, err)
	}
	tampered := bytes.Clone(blob)
	tampered[len(tampered)-1] ^= 1
	tests := []struct {
		name string
		key  []byte
		blob []byte
		aad  string
	}{
		{"wrong key", other, blob, "slot-a"},
		{"wrong slot", key, blob, "slot-b"},
		{"tampered", key, tampered, "slot-a"},
		{"truncated", key, blob[:10], "slot-a"},
		{"empty", key, nil, "slot-a"},
	}
	for _, tt := range tests {
		if _, err := unseal(tt.key, tt.blob, tt.aad); !errors.Is(err, ErrSealKey) {
			t.Errorf("%s: unseal = %v, want ErrSealKey", tt.name, err)
		}
	}
	v2 := bytes.Clone(blob)
	v2[0] = 2
	if _, err := unseal(key, v2, "slot-a"); err == nil || !strings.Contains(err.Error(), "version") {
		t.Errorf("unseal of version 2 = %v, want a version error", err)
	}
}

func TestOpenReopen(t *testing.T) {
	ctx := t.Context()
	kv := tempKV(t)
	key := newKey(t)
	ca1, err := Open(ctx, kv, key, nil)
	if err != nil {
		t.Fatal(err)
	}
	ca2, err := Open(ctx, kv, key, nil)
	if err != nil {
		t.Fatalf("reopen = %v", err)
	}
	if !bytes.Equal(ca1.CertPEM(), ca2.CertPEM()) {
		t.Error("reopened CA has a different bundle")
	}
	root, issuing := ca1.root, ca1.issuing
	if !root.IsCA || !issuing.IsCA || issuing.CheckSignatureFrom(root) != nil {
		t.Error("issuing CA is not a CA signed by the root")
	}
	if d := root.NotAfter.Sub(root.NotBefore); d < RootValidity {
		t.Errorf("root valid for %v, want %v", d, RootValidity)
	}
	if d := issuing.NotAfter.Sub(issuing.NotBefore); d < IssuingValidity {
		t.Errorf("issuing CA valid for %v, want %v", d, IssuingValidity)
	}
	if k, ok := root.PublicKey.(*ecdsa.PublicKey); !ok || k.Curve != elliptic.P256() {
		t.Errorf("root key %T, want ECDSA P-256", root.PublicKey)
	}
	// The bundle is root then issuing, and parses as a device would read it.
	certs, err := parseCertPEM(string(ca1.CertPEM()))
	if err != nil || len(certs) != 2 || !certs[0].Equal(root) || !certs[1].Equal(issuing) {
		t.Errorf("CertPEM = %d certificates, %v; want [root, issuing]", len(certs), err)
	}
	// No private key is stored in the clear.
	raw, _ := kv.Get(ctx, kvCA)
	if bytes.Contains(raw, []byte("PRIVATE KEY")) {
		t.Error("stored CA contains a PEM private key")
	}

	_, err = Open(ctx, kv, newKey(t), nil)
	if !errors.Is(err, ErrSealKey) || !strings.Contains(err.Error(), "wrong master key?") {
		t.Fatalf("Open with another key = %v, want ErrSealKey saying \"wrong master key?\"", err)
	}
	if _, err := Open(ctx, kv, key[:16], nil); !errors.Is(err, ErrBadSealKey) {
		t.Errorf("Open with a 16-byte key = %v, want ErrBadSealKey", err)
	}
}

// handshake runs a real TLS handshake over a pipe between a hub configured
// the way the broker should be and a device trusting ca.pem. It returns the
// server's and the client's errors and the server's view of the peer.
func handshake(t *testing.T, ca *CA, server tls.Certificate, client *tls.Certificate) (serr, cerr error, peer []*x509.Certificate) {
	t.Helper()
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(ca.CertPEM()) {
		t.Fatal("ca.pem does not parse")
	}
	sc, cc := net.Pipe()
	defer sc.Close()
	defer cc.Close()
	deadline := time.Now().Add(10 * time.Second)
	sc.SetDeadline(deadline)
	cc.SetDeadline(deadline)
	srv := tls.Server(sc, &tls.Config{
		Certificates:     []tls.Certificate{server},
		ClientAuth:       tls.RequestClientCert,
		VerifyConnection: ca.VerifyConnection,
		MinVersion:       tls.VersionTLS12,
	})
	ccfg := &tls.Config{RootCAs: roots, ServerName: "localhost", MinVersion: tls.VersionTLS12}
	if client != nil {
		ccfg.Certificates = []tls.Certificate{*client}
	}
	cli := tls.Client(cc, ccfg)
	done := make(chan error, 1)
	go func() {
		err := srv.Handshake()
		if err == nil {
			_, err = srv.Write([]byte{1})
		}
		sc.Close() // not srv.Close: its close_notify would wait for a reader
		done <- err
	}()
	cerr = cli.Handshake()
	if cerr == nil {
		// In TLS 1.3 a client learns of a refused certificate on its
		// first read; on success it reads the server's byte.
		_, cerr = cli.Read(make([]byte, 1))
	}
	serr = <-done
	cc.Close()
	return serr, cerr, srv.ConnectionState().PeerCertificates
}

func keyPair(t *testing.T, certPEM, keyPEM []byte) *tls.Certificate {
	t.Helper()
	c, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	return &c
}

func csrFor(t *testing.T, key crypto.Signer, cn string) []byte {
	t.Helper()
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		Subject:  pkix.Name{CommonName: cn},
		DNSNames: []string{"evil.example.com"},
	}, key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})
}

func TestTLSHandshake(t *testing.T) {
	ca := newCA(t)
	server, err := ca.ServerCertificate(t.Context(), []string{"localhost", "127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	iss, keyPEM, err := ca.IssueKeyPair("sensor-1", 0)
	if err != nil {
		t.Fatal(err)
	}
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	rsaIss, err := ca.IssueFromCSR(csrFor(t, rsaKey, "ignored"), "sensor-rsa", 0)
	if err != nil {
		t.Fatal(err)
	}
	rsaDER, _ := x509.MarshalPKCS8PrivateKey(rsaKey)
	rsaKeyPEM := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: rsaDER})

	tests := []struct {
		name   string
		client *tls.Certificate
		device string
	}{
		{"generated P-256 key", keyPair(t, iss.CertPEM, keyPEM), "sensor-1"},
		{"RSA key from CSR", keyPair(t, rsaIss.CertPEM, rsaKeyPEM), "sensor-rsa"},
		{"no client certificate (password devices)", nil, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			serr, cerr, peer := handshake(t, ca, server, tt.client)
			if serr != nil || cerr != nil {
				t.Fatalf("handshake: server %v, client %v", serr, cerr)
			}
			if tt.device == "" {
				if len(peer) != 0 {
					t.Fatalf("server saw %d client certificates, want none", len(peer))
				}
				return
			}
			leaf, err := ca.VerifyClient(peer, time.Now())
			if err != nil {
				t.Fatalf("VerifyClient(presented chain) = %v", err)
			}
			if got := DeviceID(leaf); got != tt.device {
				t.Errorf("DeviceID = %q, want %q", got, tt.device)
			}
		})
	}
}

func TestTLSHandshakeRefused(t *testing.T) {
	ca, foreign := newCA(t), newCA(t)
	server, err := ca.ServerCertificate(t.Context(), nil)
	if err != nil {
		t.Fatal(err)
	}
	fIss, fKey, err := foreign.IssueKeyPair("sensor-1", 0)
	if err != nil {
		t.Fatal(err)
	}
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	now := time.Now()
	expired, err := ca.issueAt(key.Public(), "sensor-1", now.Add(-48*time.Hour), now.Add(-time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	keyDER, _ := x509.MarshalPKCS8PrivateKey(key)
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})

	tests := []struct {
		name   string
		client *tls.Certificate
		want   error
	}{
		{"foreign CA", keyPair(t, fIss.CertPEM, fKey), ErrUnknownCA},
		{"expired", keyPair(t, expired.CertPEM, keyPEM), ErrExpired},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			serr, cerr, _ := handshake(t, ca, server, tt.client)
			if !errors.Is(serr, tt.want) {
				t.Errorf("server handshake error = %v, want %v", serr, tt.want)
			}
			if cerr == nil {
				t.Errorf("client handshake succeeded, want the server's alert")
			}
		})
	}
	// A device trusting another CA refuses the hub.
	other := x509.NewCertPool()
	other.AppendCertsFromPEM(foreign.CertPEM())
	sc, cc := net.Pipe()
	defer sc.Close()
	defer cc.Close()
	sc.SetDeadline(time.Now().Add(10 * time.Second))
	cc.SetDeadline(time.Now().Add(10 * time.Second))
	go tls.Server(sc, &tls.Config{Certificates: []tls.Certificate{server}}).Handshake()
	err = tls.Client(cc, &tls.Config{RootCAs: other, ServerName: "localhost"}).Handshake()
	var unknown x509.UnknownAuthorityError
	if !errors.As(err, &unknown) {
		t.Errorf("client trusting another CA: handshake = %v, want unknown authority", err)
	}
}

func TestVerifyClient(t *testing.T) {
	ca, foreign := newCA(t), newCA(t)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	now := time.Now()
	parse := func(iss Issued, err error) *x509.Certificate {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		c, err := parseCertPEM(string(iss.CertPEM))
		if err != nil {
			t.Fatal(err)
		}
		return c[0]
	}
	good := parse(ca.issueAt(key.Public(), "dev", now.Add(-time.Hour), now.Add(time.Hour)))
	expired := parse(ca.issueAt(key.Public(), "dev", now.Add(-2*time.Hour), now.Add(-time.Hour)))
	future := parse(ca.issueAt(key.Public(), "dev", now.Add(time.Hour), now.Add(2*time.Hour)))
	foreignCert := parse(foreign.issueAt(key.Public(), "dev", now.Add(-time.Hour), now.Add(time.Hour)))
	srv, err := ca.ServerCertificate(t.Context(), nil)
	if err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name  string
		chain []*x509.Certificate
		at    time.Time
		want  error
	}{
		{"good", []*x509.Certificate{good}, now, nil},
		{"good with issuing in chain", []*x509.Certificate{good, ca.issuing}, now, nil},
		{"good at a later time", []*x509.Certificate{good}, now.Add(2 * time.Hour), ErrExpired},
		{"expired", []*x509.Certificate{expired}, now, ErrExpired},
		{"not yet valid", []*x509.Certificate{future}, now, ErrExpired},
		{"foreign CA", []*x509.Certificate{foreignCert}, now, ErrUnknownCA},
		{"foreign CA with its issuing", []*x509.Certificate{foreignCert, foreign.issuing}, now, ErrUnknownCA},
		{"server certificate", []*x509.Certificate{srv.Leaf}, now, ErrBadCertificate},
		{"issuing CA as leaf", []*x509.Certificate{ca.issuing}, now, ErrBadCertificate},
		{"empty", nil, now, ErrBadCertificate},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			leaf, err := ca.VerifyClient(tt.chain, tt.at)
			if tt.want == nil {
				if err != nil || leaf != tt.chain[0] {
					t.Fatalf("VerifyClient = %v, %v; want the leaf", leaf, err)
				}
				return
			}
			if !errors.Is(err, tt.want) {
				t.Fatalf("VerifyClient = %v, want %v", err, tt.want)
			}
			for _, other := range []error{ErrUnknownCA, ErrExpired, ErrBadCertificate} {
				if other != tt.want && errors.Is(err, other) {
					t.Errorf("VerifyClient error %v also matches %v", err, other)
				}
			}
		})
	}
}

func TestIssueFromCSR(t *testing.T) {
	ca := newCA(t)
	p256, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	p224, _ := ecdsa.GenerateKey(elliptic.P224(), rand.Reader)
	rsa1024, _ := rsa.GenerateKey(rand.Reader, 1024)
	_, ed, _ := ed25519.GenerateKey(rand.Reader)

	good := csrFor(t, p256, "someone-else")
	block, _ := pem.Decode(good)
	badSig := bytes.Clone(block.Bytes)
	badSig[len(badSig)-1] ^= 0x01
	badSigPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: badSig})

	tests := []struct {
		name   string
		csr    []byte
		device string
		want   error
	}{
		{"P-256", good, "dev-1", nil},
		{"P-384", csrFor(t, p384, ""), "dev-2", nil},
		{"bad signature", badSigPEM, "dev-3", ErrBadCSR},
		{"P-224", csrFor(t, p224, ""), "dev-4", ErrBadCSR},
		{"RSA 1024", csrFor(t, rsa1024, ""), "dev-5", ErrBadCSR},
		{"Ed25519", csrFor(t, ed, ""), "dev-6", ErrBadCSR},
		{"not PEM", []byte("hello"), "dev-7", ErrBadCSR},
		{"certificate instead of CSR", ca.CertPEM(), "dev-8", ErrBadCSR},
		{"too big", bytes.Repeat([]byte("A"), maxCSRSize+1), "dev-9", ErrBadCSR},
		{"bad device id", good, "a/b", ErrBadDeviceID},
		{"empty device id", good, "", ErrBadDeviceID},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			iss, err := ca.IssueFromCSR(tt.csr, tt.device, 0)
			if tt.want != nil {
				if !errors.Is(err, tt.want) {
					t.Fatalf("IssueFromCSR = %v, want %v", err, tt.want)
				}
				return
			}
			if err != nil {
				t.Fatalf("IssueFromCSR = %v", err)
			}
			certs, _ := parseCertPEM(string(iss.CertPEM))
			c := certs[0]
			if c.Subject.CommonName != tt.device || len(c.DNSNames) != 0 {
				t.Errorf("subject %q, DNS %v; want CN=%s and the CSR's names ignored", c.Subject, c.DNSNames, tt.device)
			}
			if len(c.URIs) != 1 || c.URIs[0].String() != DeviceURIPrefix+tt.device {
				t.Errorf("URIs = %v, want [%s%s]", c.URIs, DeviceURIPrefix, tt.device)
			}
			if len(c.ExtKeyUsage) != 1 || c.ExtKeyUsage[0] != x509.ExtKeyUsageClientAuth || c.IsCA {
				t.Errorf("ExtKeyUsage = %v, IsCA = %v; want client auth only", c.ExtKeyUsage, c.IsCA)
			}
			if iss.Serial != c.SerialNumber.Text(16) || iss.Fingerprint != Fingerprint(c) || !iss.NotAfter.Equal(c.NotAfter) {
				t.Errorf("Issued = %+v does not describe the certificate", iss)
			}
			if bits := c.SerialNumber.BitLen(); bits > 128 || bits < 64 {
				t.Errorf("serial has %d bits, want a random 128-bit number", bits)
			}
			if d := time.Until(c.NotAfter); d < DefaultDeviceTTL-time.Hour || d > DefaultDeviceTTL {
				t.Errorf("validity left %v, want about %v", d, DefaultDeviceTTL)
			}
		})
	}
}

func TestIssueTTLAndSerials(t *testing.T) {
	ca := newCA(t)
	seen := map[string]bool{}
	for i := range 20 {
		iss, key, err := ca.IssueKeyPair(fmt.Sprintf("d%d", i), time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		if seen[iss.Serial] {
			t.Fatalf("serial %s issued twice", iss.Serial)
		}
		seen[iss.Serial] = true
		if d := time.Until(iss.NotAfter); d > time.Hour || d < 59*time.Minute {
			t.Errorf("ttl 1h: validity left %v", d)
		}
		if !bytes.Contains(key, []byte("BEGIN PRIVATE KEY")) {
			t.Errorf("key PEM = %q, want PKCS #8", key)
		}
	}
	// A ttl past the issuing CA is clamped to it.
	iss, _, err := ca.IssueKeyPair("long", 20*365*24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if !iss.NotAfter.Equal(ca.issuing.NotAfter) {
		t.Errorf("NotAfter = %v, want clamped to the issuing CA's %v", iss.NotAfter, ca.issuing.NotAfter)
	}
	if _, _, err := ca.IssueKeyPair("neg", -time.Hour); err == nil {
		t.Error("negative ttl accepted")
	}
}

func TestServerCertificate(t *testing.T) {
	ctx := t.Context()
	kv := tempKV(t)
	key := newKey(t)
	now := time.Now()
	clock := func() time.Time { return now }
	ca, err := openAt(ctx, kv, key, nil, clock)
	if err != nil {
		t.Fatal(err)
	}
	c1, err := ca.ServerCertificate(ctx, []string{"localhost", "127.0.0.1", "Hub.Example.com"})
	if err != nil {
		t.Fatal(err)
	}
	leaf := c1.Leaf
	if len(c1.Certificate) != 2 || !bytes.Equal(c1.Certificate[1], ca.issuing.Raw) {
		t.Errorf("chain has %d certificates, want [server, issuing]", len(c1.Certificate))
	}
	if len(leaf.IPAddresses) != 1 || !leaf.IPAddresses[0].Equal(net.ParseIP("127.0.0.1")) {
		t.Errorf("IP SANs = %v", leaf.IPAddresses)
	}
	if fmt.Sprint(leaf.DNSNames) != "[hub.example.com localhost]" {
		t.Errorf("DNS SANs = %v", leaf.DNSNames)
	}
	if d := leaf.NotAfter.Sub(now); d < ServerValidity-time.Hour || d > ServerValidity {
		t.Errorf("server validity %v, want %v", d, ServerValidity)
	}
	roots := ca.Pool()
	inter := x509.NewCertPool()
	inter.AddCert(ca.issuing)
	if _, err := leaf.Verify(x509.VerifyOptions{DNSName: "hub.example.com", Roots: roots, Intermediates: inter, CurrentTime: now}); err != nil {
		t.Errorf("server certificate does not verify for hub.example.com: %v", err)
	}

	same := func(c tls.Certificate) bool { return bytes.Equal(c.Certificate[0], c1.Certificate[0]) }
	tests := []struct {
		name  string
		names []string
		at    time.Time
		reuse bool
	}{
		{"same names, other order and case", []string{"hub.example.com", "127.0.0.1", "LOCALHOST", "localhost"}, now, true},
		{"a month later", []string{"localhost", "127.0.0.1", "hub.example.com"}, now.Add(30 * 24 * time.Hour), true},
		{"other names", []string{"localhost"}, now, false},
		{"back to the first names", []string{"localhost", "127.0.0.1", "hub.example.com"}, now, false}, // only the last is kept
	}
	for _, tt := range tests {
		now = tt.at
		c, err := ca.ServerCertificate(ctx, tt.names)
		if err != nil {
			t.Fatal(err)
		}
		if same(c) != tt.reuse {
			t.Errorf("%s: reused = %v, want %v", tt.name, same(c), tt.reuse)
		}
		c1 = c
	}
	// Across a restart.
	now = time.Now()
	ca2, err := openAt(ctx, kv, key, nil, clock)
	if err != nil {
		t.Fatal(err)
	}
	c2, err := ca2.ServerCertificate(ctx, []string{"localhost", "127.0.0.1", "hub.example.com"})
	if err != nil || !same(c2) {
		t.Errorf("after reopen: reused = %v, %v; want the stored certificate", same(c2), err)
	}
	// Near expiry it is replaced.
	now = c2.Leaf.NotAfter.Add(-ServerRenewBefore + time.Hour)
	c3, err := ca2.ServerCertificate(ctx, []string{"localhost", "127.0.0.1", "hub.example.com"})
	if err != nil || same(c3) {
		t.Errorf("within %v of expiry: reused = %v, %v; want a new certificate", ServerRenewBefore, same(c3), err)
	}
	// GetServerCertificate renews in place.
	now = time.Now()
	get := ca2.GetServerCertificate([]string{"localhost"})
	g1, err := get(nil)
	if err != nil {
		t.Fatal(err)
	}
	if g2, _ := get(nil); g2 != g1 {
		t.Error("GetServerCertificate did not cache")
	}
	now = g1.Leaf.NotAfter.Add(-time.Hour)
	if g3, _ := get(nil); g3 == g1 || g3.Leaf.NotAfter.Before(g1.Leaf.NotAfter) {
		t.Error("GetServerCertificate did not renew a certificate about to expire")
	}
}

func TestIssuingRenewal(t *testing.T) {
	ctx := t.Context()
	kv := tempKV(t)
	key := newKey(t)
	now := time.Now()
	clock := func() time.Time { return now }
	ca1, err := openAt(ctx, kv, key, nil, clock)
	if err != nil {
		t.Fatal(err)
	}
	devKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	// A certificate issued near the end of the first issuing CA's life.
	now = ca1.issuing.NotAfter.Add(-IssuingRenewBefore - time.Hour)
	old, err := ca1.issue(devKey.Public(), "old-device", 0)
	if err != nil {
		t.Fatal(err)
	}
	oldCert, _ := parseCertPEM(string(old.CertPEM))

	now = now.Add(2 * time.Hour) // now within IssuingRenewBefore
	ca2, err := openAt(ctx, kv, key, nil, clock)
	if err != nil {
		t.Fatal(err)
	}
	if ca2.issuing.Equal(ca1.issuing) {
		t.Fatal("issuing CA not renewed")
	}
	if !ca2.root.Equal(ca1.root) {
		t.Fatal("root changed on issuing renewal")
	}
	if _, err := ca2.VerifyClient(oldCert, now); err != nil {
		t.Errorf("certificate from the previous issuing CA: VerifyClient = %v", err)
	}
	fresh, err := ca2.issue(devKey.Public(), "new-device", 0)
	if err != nil {
		t.Fatal(err)
	}
	freshCert, _ := parseCertPEM(string(fresh.CertPEM))
	if freshCert[0].CheckSignatureFrom(ca2.issuing) != nil {
		t.Error("new certificate not signed by the new issuing CA")
	}
	// A third open keeps the renewed CA.
	ca3, err := openAt(ctx, kv, key, nil, clock)
	if err != nil || !ca3.issuing.Equal(ca2.issuing) {
		t.Fatalf("reopen after renewal: %v, same issuing = %v", err, err == nil && ca3.issuing.Equal(ca2.issuing))
	}
	if _, err := ca3.VerifyClient(oldCert, now); err != nil {
		t.Errorf("after another reopen, old certificate: VerifyClient = %v", err)
	}
}

func TestDeviceID(t *testing.T) {
	u := func(s string) *x509.Certificate {
		c := &x509.Certificate{}
		if s != "" {
			uri, _ := url.Parse(s)
			c.URIs = append(c.URIs, uri)
		}
		return c
	}
	withCN := func(c *x509.Certificate, cn string) *x509.Certificate { c.Subject.CommonName = cn; return c }
	tests := []struct {
		name string
		cert *x509.Certificate
		want string
	}{
		{"cn only", withCN(u(""), "dev-1"), "dev-1"},
		{"uri only", u("urn:fieldhub:device:dev:2"), "dev:2"},
		{"both agree", withCN(u("urn:fieldhub:device:d3"), "d3"), "d3"},
		{"both disagree", withCN(u("urn:fieldhub:device:d3"), "d4"), ""},
		{"cn not an id, uri is", withCN(u("urn:fieldhub:device:d5"), "My Device"), "d5"},
		{"cn not an id", withCN(u(""), "a/b"), ""},
		{"other uri", u("spiffe://example.org/d6"), ""},
		{"nil", nil, ""},
	}
	for _, tt := range tests {
		if got := DeviceID(tt.cert); got != tt.want {
			t.Errorf("%s: DeviceID = %q, want %q", tt.name, got, tt.want)
		}
	}
}
