package registry

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/fieldhub/fieldhub/internal/fhtest"
	"github.com/fieldhub/fieldhub/internal/pki"
	"github.com/fieldhub/fieldhub/internal/store"
	"github.com/fieldhub/fieldhub/internal/store/sqlite"
)

// cheap argon2id parameters for tests that are not about cost.
var cheap = PasswordParams{Memory: 64, Iterations: 1}

type fixture struct {
	svc *Service
	db  *sqlite.DB
	ca  *pki.CA
	now atomic.Pointer[time.Time]
}

func newFixture(t testing.TB, opts Options) *fixture {
	t.Helper()
	db, ca := fhtest.CA(t)
	f := &fixture{db: db, ca: ca}
	now := time.Now()
	f.now.Store(&now)
	if opts.Now == nil {
		opts.Now = func() time.Time { return *f.now.Load() }
	}
	if opts.Password == (PasswordParams{}) {
		opts.Password = cheap
	}
	f.svc = New(db, ca, opts)
	return f
}

func (f *fixture) create(t testing.TB, req CreateRequest) (store.Device, Credentials) {
	t.Helper()
	d, c, err := f.svc.Create(context.Background(), req)
	if err != nil {
		t.Fatalf("Create(%q) = %v", req.ID, err)
	}
	return d, c
}

// peerCerts runs a real TLS handshake presenting the certificate and key
// and returns the chain the hub's side received.
func (f *fixture) peerCerts(t *testing.T, certPEM, keyPEM string) []*x509.Certificate {
	t.Helper()
	client, err := tls.X509KeyPair([]byte(certPEM), []byte(keyPEM))
	if err != nil {
		t.Fatal(err)
	}
	server, err := f.ca.ServerCertificate(t.Context(), nil)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(f.ca.CertPEM())
	sc, cc := net.Pipe()
	defer cc.Close()
	sc.SetDeadline(time.Now().Add(10 * time.Second))
	cc.SetDeadline(time.Now().Add(10 * time.Second))
	srv := tls.Server(sc, &tls.Config{Certificates: []tls.Certificate{server}, ClientAuth: tls.RequestClientCert, VerifyConnection: f.ca.VerifyConnection})
	done := make(chan error, 1)
	go func() {
		err := srv.Handshake()
		if err == nil {
			_, err = srv.Write([]byte{1})
		}
		sc.Close()
		done <- err
	}()
	cli := tls.Client(cc, &tls.Config{RootCAs: roots, ServerName: "localhost", Certificates: []tls.Certificate{client}})
	cerr := cli.Handshake()
	if cerr == nil {
		_, cerr = cli.Read(make([]byte, 1))
	}
	if serr := <-done; serr != nil || cerr != nil {
		t.Fatalf("TLS handshake: server %v, client %v", serr, cerr)
	}
	return srv.ConnectionState().PeerCertificates
}

func csrPEM(t testing.TB) ([]byte, string) {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "whatever"}}, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, _ := x509.MarshalPKCS8PrivateKey(key)
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}),
		string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}))
}

func reason(err error) string {
	var ae *AuthError
	if errors.As(err, &ae) {
		return ae.RefusalReason()
	}
	if err != nil {
		return "error: " + err.Error()
	}
	return ""
}

func TestCreateGetListDelete(t *testing.T) {
	f := newFixture(t, Options{Password: PasswordParams{}}) // OWASP defaults
	f.svc.params = PasswordParams{}.withDefaults()
	ctx := t.Context()
	d, c := f.create(t, CreateRequest{ID: "sensor-1", Name: "Boiler", Labels: map[string]string{"site": "north"}})
	if d.Auth != store.AuthPassword || d.CredentialsVersion != 1 || d.CreatedAt.IsZero() || d.PasswordHash != "" {
		t.Errorf("Create returned %+v; want password auth, version 1, a creation time and no hash", d)
	}
	raw, err := base64.RawURLEncoding.DecodeString(c.Password)
	if err != nil || len(raw) != 24 {
		t.Errorf("password %q decodes to %d bytes, %v; want 24 bytes of base64url", c.Password, len(raw), err)
	}
	if c.DeviceID != "sensor-1" || !strings.Contains(c.CAPEM, "BEGIN CERTIFICATE") || c.CertificatePEM != "" {
		t.Errorf("credentials = device %q, CA %d bytes, cert %d bytes", c.DeviceID, len(c.CAPEM), len(c.CertificatePEM))
	}
	stored, err := f.db.GetDevice(ctx, "sensor-1")
	if err != nil {
		t.Fatal(err)
	}
	phc := regexp.MustCompile(`^\$argon2id\$v=19\$m=19456,t=2,p=1\$[A-Za-z0-9+/]{22}\$[A-Za-z0-9+/]{43}$`)
	if !phc.MatchString(stored.PasswordHash) {
		t.Errorf("stored hash %q is not an argon2id PHC string with OWASP parameters", stored.PasswordHash)
	}
	if strings.Contains(stored.PasswordHash, c.Password) {
		t.Error("stored hash contains the password")
	}

	got, err := f.svc.Get(ctx, "sensor-1")
	if err != nil || got.Name != "Boiler" || got.Labels["site"] != "north" || got.PasswordHash != "" {
		t.Errorf("Get = %+v, %v", got, err)
	}
	f.create(t, CreateRequest{ID: "sensor-2", Auth: store.AuthCertificate})
	list, err := f.svc.List(ctx, store.ListOptions{})
	if err != nil || len(list) != 2 || list[0].ID != "sensor-1" || list[1].ID != "sensor-2" || list[0].PasswordHash != "" {
		t.Errorf("List = %v, %v", list, err)
	}
	if _, _, err := f.svc.Create(ctx, CreateRequest{ID: "sensor-1"}); !errors.Is(err, ErrExists) {
		t.Errorf("Create of a taken id = %v, want ErrExists", err)
	}
	if err := f.svc.Delete(ctx, "sensor-1"); err != nil {
		t.Fatal(err)
	}
	if _, err := f.svc.Get(ctx, "sensor-1"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Get after Delete = %v, want ErrNotFound", err)
	}
	if err := f.svc.Delete(ctx, "sensor-1"); !errors.Is(err, ErrNotFound) {
		t.Errorf("second Delete = %v, want ErrNotFound", err)
	}
	if _, err := f.svc.Authenticate(ctx, "sensor-1", "sensor-1", []byte(c.Password), nil); reason(err) != ReasonUnknownDevice {
		t.Errorf("Authenticate after Delete: %s, want %s", reason(err), ReasonUnknownDevice)
	}
}

func TestCreateValidation(t *testing.T) {
	f := newFixture(t, Options{})
	f.create(t, CreateRequest{ID: "gw"})
	f.create(t, CreateRequest{ID: "behind", Gateway: "gw"})
	csr, _ := csrPEM(t)
	labels := func(n int) map[string]string {
		m := map[string]string{}
		for i := range n {
			m[fmt.Sprint("k", i)] = "v"
		}
		return m
	}
	tests := []struct {
		name  string
		req   CreateRequest
		field string
	}{
		{"empty id", CreateRequest{ID: ""}, "id"},
		{"slash in id", CreateRequest{ID: "a/b"}, "id"},
		{"wildcard in id", CreateRequest{ID: "a+"}, "id"},
		{"long id", CreateRequest{ID: strings.Repeat("a", 129)}, "id"},
		{"long name", CreateRequest{ID: "d", Name: strings.Repeat("é", 257)}, "name"},
		{"control in name", CreateRequest{ID: "d", Name: "a\x00b"}, "name"},
		{"bad UTF-8 name", CreateRequest{ID: "d", Name: "\xff"}, "name"},
		{"too many labels", CreateRequest{ID: "d", Labels: labels(33)}, "labels"},
		{"empty label key", CreateRequest{ID: "d", Labels: map[string]string{"": "v"}}, "labels"},
		{"label key with space", CreateRequest{ID: "d", Labels: map[string]string{"a b": "v"}}, "labels"},
		{"label key starting with -", CreateRequest{ID: "d", Labels: map[string]string{"-a": "v"}}, "labels"},
		{"long label key", CreateRequest{ID: "d", Labels: map[string]string{strings.Repeat("k", 65): "v"}}, "labels"},
		{"long label value", CreateRequest{ID: "d", Labels: map[string]string{"k": strings.Repeat("v", 257)}}, "labels[k]"},
		{"control in label value", CreateRequest{ID: "d", Labels: map[string]string{"k": "a\nb"}}, "labels[k]"},
		{"unknown auth", CreateRequest{ID: "d", Auth: "token"}, "auth"},
		{"CSR with password auth", CreateRequest{ID: "d", CSR: csr}, "csr"},
		{"bad CSR", CreateRequest{ID: "d", Auth: store.AuthCertificate, CSR: []byte("junk")}, "csr"},
		{"missing gateway", CreateRequest{ID: "d", Gateway: "nope"}, "gateway"},
		{"own gateway", CreateRequest{ID: "d", Gateway: "d"}, "gateway"},
		{"nested gateway", CreateRequest{ID: "d", Gateway: "behind"}, "gateway"},
		{"bad gateway id", CreateRequest{ID: "d", Gateway: "#"}, "gateway"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, c, err := f.svc.Create(t.Context(), tt.req)
			var ve *ValidationError
			if !errors.Is(err, ErrInvalid) || !errors.As(err, &ve) {
				t.Fatalf("Create = %v, want a ValidationError", err)
			}
			if ve.Field != tt.field || !strings.Contains(err.Error(), tt.field) {
				t.Errorf("Create error %q names field %q, want %q", err, ve.Field, tt.field)
			}
			if c != (Credentials{}) {
				t.Error("refused Create returned credentials")
			}
			if _, err := f.svc.Get(t.Context(), "d"); !errors.Is(err, ErrNotFound) {
				t.Errorf("refused Create stored the device: Get = %v", err)
			}
		})
	}
	// Limits themselves are accepted.
	f.create(t, CreateRequest{ID: strings.Repeat("a", 128), Name: strings.Repeat("é", 256), Labels: labels(32)})
	_, _, err := f.svc.Create(t.Context(), CreateRequest{ID: "x", Auth: store.AuthCertificate, CSR: []byte("junk")})
	if !errors.Is(err, pki.ErrBadCSR) {
		t.Errorf("bad CSR: %v does not wrap pki.ErrBadCSR", err)
	}
}

func TestAuthenticatePassword(t *testing.T) {
	f := newFixture(t, Options{})
	_, c := f.create(t, CreateRequest{ID: "dev-1"})
	f.create(t, CreateRequest{ID: "dev-2"})
	f.create(t, CreateRequest{ID: "cert-dev", Auth: store.AuthCertificate})
	pw := []byte(c.Password)
	tests := []struct {
		name, clientID, username string
		password                 []byte
		want                     string
	}{
		{"ok", "dev-1", "dev-1", pw, ""},
		{"ok again (cached)", "dev-1", "dev-1", pw, ""},
		{"wrong password", "dev-1", "dev-1", []byte("guess"), ReasonBadPassword},
		{"password with one more byte", "dev-1", "dev-1", append(bytes.Clone(pw), 'x'), ReasonBadPassword},
		{"another device's client id", "dev-2", "dev-1", pw, ReasonBadClientID},
		{"username not the client id", "dev-1", "dev-2", pw, ReasonBadClientID},
		{"no username", "dev-1", "", pw, ReasonBadClientID},
		{"empty client id", "", "", pw, ReasonBadClientID},
		{"client id not a device id", "dev/1", "dev/1", pw, ReasonBadClientID},
		{"unknown device", "ghost", "ghost", pw, ReasonUnknownDevice},
		{"anonymous", "dev-1", "", nil, ReasonAnonymous},
		{"username without password", "dev-1", "dev-1", nil, ReasonAnonymous},
		{"certificate device with a password", "cert-dev", "cert-dev", pw, ReasonWrongAuthKind},
		{"still ok after refusals", "dev-1", "dev-1", pw, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id, err := f.svc.Authenticate(t.Context(), tt.clientID, tt.username, tt.password, nil)
			if got := reason(err); got != tt.want {
				t.Fatalf("Authenticate(%q, %q) refused with %q, want %q", tt.clientID, tt.username, got, tt.want)
			}
			if tt.want == "" && id != tt.clientID {
				t.Errorf("Authenticate = %q, want %q", id, tt.clientID)
			}
			if tt.want != "" {
				var ae *AuthError
				errors.As(err, &ae)
				if !strings.Contains(ae.Error(), tt.want) {
					t.Errorf("Error() = %q does not name the reason", ae.Error())
				}
			}
		})
	}
}

func TestAuthenticateCertificate(t *testing.T) {
	f := newFixture(t, Options{})
	ctx := t.Context()
	csr, csrKey := csrPEM(t)
	dCSR, cCSR := f.create(t, CreateRequest{ID: "csr-dev", Auth: store.AuthCertificate, CSR: csr})
	if cCSR.PrivateKeyPEM != "" || cCSR.CertificatePEM == "" || cCSR.Password != "" {
		t.Fatalf("CSR credentials: key %d bytes, cert %d bytes, password %q", len(cCSR.PrivateKeyPEM), len(cCSR.CertificatePEM), cCSR.Password)
	}
	if dCSR.CertFingerprint == "" || dCSR.CertSerial == "" || dCSR.CertNotAfter.IsZero() {
		t.Errorf("device does not record its certificate: %+v", dCSR)
	}
	_, cGen := f.create(t, CreateRequest{ID: "gen-dev", Auth: store.AuthCertificate})
	if !strings.Contains(cGen.PrivateKeyPEM, "PRIVATE KEY") {
		t.Fatal("generated key pair: no private key returned")
	}
	_, cPw := f.create(t, CreateRequest{ID: "pw-dev"})

	csrChain := f.peerCerts(t, cCSR.CertificatePEM, csrKey)
	genChain := f.peerCerts(t, cGen.CertificatePEM, cGen.PrivateKeyPEM)
	// Valid certificates from this CA for a password device and an unknown one.
	pwIss, pwKey, _ := f.ca.IssueKeyPair("pw-dev", 0)
	pwChain := f.peerCerts(t, string(pwIss.CertPEM), string(pwKey))
	ghostIss, ghostKey, _ := f.ca.IssueKeyPair("ghost", 0)
	ghostChain := f.peerCerts(t, string(ghostIss.CertPEM), string(ghostKey))
	// A certificate from another CA (not through TLS: the handshake refuses it).
	other := newFixture(t, Options{})
	foreignIss, _, _ := other.ca.IssueKeyPair("gen-dev", 0)
	foreignBlock, _ := pem.Decode(foreignIss.CertPEM)
	foreign, _ := x509.ParseCertificate(foreignBlock.Bytes)

	tests := []struct {
		name, clientID, username string
		password                 []byte
		chain                    []*x509.Certificate
		want                     string
		wantErr                  error
	}{
		{"from CSR", "csr-dev", "", nil, csrChain, "", nil},
		{"generated key pair", "gen-dev", "", nil, genChain, "", nil},
		{"username equal to client id", "gen-dev", "gen-dev", nil, genChain, "", nil},
		{"password ignored", "gen-dev", "gen-dev", []byte(cPw.Password), genChain, "", nil},
		{"client id of another device", "csr-dev", "", nil, genChain, ReasonCertMismatch, nil},
		{"username of another device", "gen-dev", "csr-dev", nil, genChain, ReasonCertMismatch, nil},
		{"password device with a certificate", "pw-dev", "", nil, pwChain, ReasonWrongAuthKind, nil},
		{"unknown device", "ghost", "", nil, ghostChain, ReasonUnknownDevice, nil},
		{"foreign CA", "gen-dev", "", nil, []*x509.Certificate{foreign}, ReasonBadCertificate, pki.ErrUnknownCA},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id, err := f.svc.Authenticate(ctx, tt.clientID, tt.username, tt.password, tt.chain)
			if got := reason(err); got != tt.want {
				t.Fatalf("Authenticate refused with %q, want %q", got, tt.want)
			}
			if tt.want == "" && id != tt.clientID {
				t.Errorf("Authenticate = %q, want %q", id, tt.clientID)
			}
			if tt.wantErr != nil && !errors.Is(err, tt.wantErr) {
				t.Errorf("Authenticate = %v, want it to wrap %v", err, tt.wantErr)
			}
		})
	}

	// Two years later the certificate has expired.
	later := time.Now().Add(2 * 365 * 24 * time.Hour)
	f.now.Store(&later)
	_, err := f.svc.Authenticate(ctx, "gen-dev", "", nil, genChain)
	if reason(err) != ReasonBadCertificate || !errors.Is(err, pki.ErrExpired) {
		t.Errorf("expired certificate: Authenticate = %v, want %s wrapping pki.ErrExpired", err, ReasonBadCertificate)
	}
}

func TestRotate(t *testing.T) {
	f := newFixture(t, Options{})
	ctx := t.Context()
	var (
		mu      sync.Mutex
		revoked []string
	)
	f.svc.OnRevoke(func(id string) { mu.Lock(); revoked = append(revoked, id); mu.Unlock() })
	f.svc.OnRevoke(func(id string) { mu.Lock(); revoked = append(revoked, "second:"+id); mu.Unlock() })

	_, old := f.create(t, CreateRequest{ID: "pw"})
	if _, err := f.svc.Authenticate(ctx, "pw", "pw", []byte(old.Password), nil); err != nil {
		t.Fatal(err) // now cached
	}
	nw, err := f.svc.Rotate(ctx, "pw", nil)
	if err != nil {
		t.Fatal(err)
	}
	if nw.Password == "" || nw.Password == old.Password {
		t.Fatal("Rotate did not return a new password")
	}
	if _, err := f.svc.Authenticate(ctx, "pw", "pw", []byte(old.Password), nil); reason(err) != ReasonBadPassword {
		t.Errorf("old password after rotation: %s, want %s", reason(err), ReasonBadPassword)
	}
	if _, err := f.svc.Authenticate(ctx, "pw", "pw", []byte(nw.Password), nil); err != nil {
		t.Errorf("new password after rotation: %v", err)
	}
	if d, _ := f.svc.Get(ctx, "pw"); d.CredentialsVersion != 2 {
		t.Errorf("CredentialsVersion = %d, want 2", d.CredentialsVersion)
	}

	_, oldCert := f.create(t, CreateRequest{ID: "cert", Auth: store.AuthCertificate})
	oldChain := f.peerCerts(t, oldCert.CertificatePEM, oldCert.PrivateKeyPEM)
	if _, err := f.svc.Authenticate(ctx, "cert", "", nil, oldChain); err != nil {
		t.Fatal(err)
	}
	csr, key := csrPEM(t)
	nc, err := f.svc.Rotate(ctx, "cert", csr)
	if err != nil {
		t.Fatal(err)
	}
	newChain := f.peerCerts(t, nc.CertificatePEM, key)
	if _, err := f.svc.Authenticate(ctx, "cert", "", nil, oldChain); reason(err) != ReasonCertRevoked {
		t.Errorf("old certificate after rotation: %s, want %s", reason(err), ReasonCertRevoked)
	}
	if _, err := f.svc.Authenticate(ctx, "cert", "", nil, newChain); err != nil {
		t.Errorf("new certificate after rotation: %v", err)
	}
	gen, err := f.svc.Rotate(ctx, "cert", nil)
	if err != nil || gen.PrivateKeyPEM == "" {
		t.Errorf("Rotate without CSR = key %d bytes, %v; want a new key pair", len(gen.PrivateKeyPEM), err)
	}

	if _, err := f.svc.Rotate(ctx, "pw", csr); !errors.Is(err, ErrInvalid) {
		t.Errorf("Rotate of a password device with a CSR = %v, want ErrInvalid", err)
	}
	if _, err := f.svc.Rotate(ctx, "ghost", nil); !errors.Is(err, ErrNotFound) {
		t.Errorf("Rotate(unknown) = %v, want ErrNotFound", err)
	}
	if err := f.svc.Delete(ctx, "pw"); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	want := "[pw second:pw cert second:cert cert second:cert pw second:pw]"
	if got := fmt.Sprint(revoked); got != want {
		t.Errorf("revoke hooks called with %s, want %s", got, want)
	}
}

func TestDeleteDetachesGateway(t *testing.T) {
	f := newFixture(t, Options{})
	ctx := t.Context()
	f.create(t, CreateRequest{ID: "gw"})
	f.create(t, CreateRequest{ID: "a", Gateway: "gw"})
	f.create(t, CreateRequest{ID: "b", Gateway: "gw"})
	f.create(t, CreateRequest{ID: "c"})
	if err := f.svc.Delete(ctx, "gw"); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"a", "b", "c"} {
		d, err := f.svc.Get(ctx, id)
		if err != nil || d.Gateway != "" {
			t.Errorf("after deleting the gateway, %s has gateway %q, %v; want none", id, d.Gateway, err)
		}
	}
	// A new device with the gateway's id gains nothing.
	f.create(t, CreateRequest{ID: "gw"})
	if d, _ := f.svc.Get(ctx, "a"); d.Gateway != "" {
		t.Errorf("a is behind %q", d.Gateway)
	}
}

func TestDeleteRecreateDuringAuth(t *testing.T) {
	// A device deleted and created again under the same id is a new
	// device: the old password must fail even though the version is 1 again.
	f := newFixture(t, Options{})
	ctx := t.Context()
	_, old := f.create(t, CreateRequest{ID: "d"})
	if _, err := f.svc.Authenticate(ctx, "d", "d", []byte(old.Password), nil); err != nil {
		t.Fatal(err)
	}
	if err := f.svc.Delete(ctx, "d"); err != nil {
		t.Fatal(err)
	}
	f.create(t, CreateRequest{ID: "d"})
	if _, err := f.svc.Authenticate(ctx, "d", "d", []byte(old.Password), nil); reason(err) != ReasonBadPassword {
		t.Errorf("old password on a recreated device: %s, want %s", reason(err), ReasonBadPassword)
	}
}

func TestHashQueueHonoursContext(t *testing.T) {
	f := newFixture(t, Options{MaxConcurrentHashes: 1})
	_, c := f.create(t, CreateRequest{ID: "d"})
	f.svc.hashers.sem <- struct{}{} // the only slot is busy
	defer f.svc.hashers.release()
	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancel()
	_, err := f.svc.Authenticate(ctx, "d", "d", []byte(c.Password), nil)
	var ae *AuthError
	if !errors.Is(err, context.DeadlineExceeded) || errors.As(err, &ae) {
		t.Fatalf("Authenticate with the hash queue full = %v, want the context's error (not a refusal)", err)
	}
}

func TestConcurrentAuthenticate(t *testing.T) {
	f := newFixture(t, Options{MaxConcurrentHashes: 2})
	ctx := t.Context()
	const n = 20
	pws := make([]string, n)
	for i := range n {
		_, c := f.create(t, CreateRequest{ID: fmt.Sprint("d", i)})
		pws[i] = c.Password
	}
	var wg sync.WaitGroup
	errs := make(chan error, 3*n)
	for range 3 {
		for i := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				id := fmt.Sprint("d", i)
				if _, err := f.svc.Authenticate(ctx, id, id, []byte(pws[i]), nil); err != nil {
					errs <- err
				}
			}()
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func TestCacheMakesSecondAuthFast(t *testing.T) {
	reg := prometheus.NewRegistry()
	f := newFixture(t, Options{Registerer: reg})
	New(f.db, f.ca, Options{Registerer: reg}) // a second service on one registry must not panic
	f.svc.params = PasswordParams{}.withDefaults()
	ctx := t.Context()
	_, c := f.create(t, CreateRequest{ID: "d"})
	start := time.Now()
	if _, err := f.svc.Authenticate(ctx, "d", "d", []byte(c.Password), nil); err != nil {
		t.Fatal(err)
	}
	first := time.Since(start)
	start = time.Now()
	if _, err := f.svc.Authenticate(ctx, "d", "d", []byte(c.Password), nil); err != nil {
		t.Fatal(err)
	}
	second := time.Since(start)
	t.Logf("argon2id verify %v, cached %v", first, second)
	if second*5 > first {
		t.Errorf("cached authentication took %v, argon2id %v; want the cache much faster", second, first)
	}
	for result, want := range map[string]float64{"ok": 1, "cached": 1, "mismatch": 0} {
		if got := testutil.ToFloat64(f.svc.metrics.verifications.WithLabelValues(result)); got != want {
			t.Errorf("verifications{result=%q} = %v, want %v", result, got, want)
		}
	}
	if n, err := testutil.GatherAndCount(reg, "fieldhub_registry_argon2_verify_seconds"); n != 1 || err != nil {
		t.Errorf("argon2 histogram gathered %d series, %v; want 1", n, err)
	}
}

func TestCredentialsNeverLogged(t *testing.T) {
	var buf bytes.Buffer
	logger := slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	f := newFixture(t, Options{Logger: logger})
	ctx := t.Context()
	_, pw := f.create(t, CreateRequest{ID: "pw"})
	_, cert := f.create(t, CreateRequest{ID: "cert", Auth: store.AuthCertificate})
	rot, err := f.svc.Rotate(ctx, "pw", nil)
	if err != nil {
		t.Fatal(err)
	}
	f.svc.Authenticate(ctx, "pw", "pw", []byte(rot.Password), nil)
	f.svc.Authenticate(ctx, "pw", "pw", []byte(pw.Password), nil)

	for _, c := range []Credentials{pw, cert, rot} {
		logger.Info("credentials", "creds", c)
		logger.Info("pointer", "creds", &c)
		logger.Info("any", slog.Any("creds", c))
		logger.Info("group", slog.Group("g", "creds", c))
		logger.With("creds", c).Info("with")
		logger.Info("slice", "all", []any{c})
		fmt.Fprintf(&buf, "%v %+v %#v %s %q %x %d\n", c, c, c, c, c, c, c)
		fmt.Fprintln(&buf, c, &c)
	}
	out := buf.String()
	keyBody := strings.Split(cert.PrivateKeyPEM, "\n")[1] // first base64 line of the key
	for name, secret := range map[string]string{"password": pw.Password, "rotated password": rot.Password, "private key": keyBody} {
		if secret == "" {
			t.Fatalf("%s is empty", name)
		}
		if strings.Contains(out, secret) {
			t.Errorf("the %s appears in the log output", name)
		}
	}
	if !strings.Contains(out, `"password":"REDACTED"`) || !strings.Contains(out, `"device_id":"pw"`) {
		t.Errorf("log output lacks the redacted credentials:\n%s", out)
	}
}

func TestPasswordHash(t *testing.T) {
	hash := HashPassword([]byte("secret"), cheap)
	if ok, err := VerifyPassword(hash, []byte("secret")); !ok || err != nil {
		t.Errorf("VerifyPassword(right) = %v, %v", ok, err)
	}
	if ok, err := VerifyPassword(hash, []byte("Secret")); ok || err != nil {
		t.Errorf("VerifyPassword(wrong) = %v, %v", ok, err)
	}
	if HashPassword([]byte("secret"), cheap) == hash {
		t.Error("two hashes of one password are equal; want a random salt")
	}
	// A hash made with other parameters still verifies.
	other := HashPassword([]byte("secret"), PasswordParams{Memory: 128, Iterations: 3, Parallelism: 2, SaltLength: 32, KeyLength: 64})
	if ok, err := VerifyPassword(other, []byte("secret")); !ok || err != nil {
		t.Errorf("VerifyPassword(other parameters) = %v, %v", ok, err)
	}
	salt, key := "c2FsdHNhbHRzYWx0c2FsdA", "aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaGhhc2g"
	bad := []string{
		"",
		"plain",
		"$argon2i$v=19$m=64,t=1,p=1$" + salt + "$" + key,
		"$argon2id$v=16$m=64,t=1,p=1$" + salt + "$" + key,
		"$argon2id$v=19$m=4294967295,t=1,p=1$" + salt + "$" + key, // 4 TiB
		"$argon2id$v=19$m=64,t=1000,p=1$" + salt + "$" + key,
		"$argon2id$v=19$m=64,t=1,p=0$" + salt + "$" + key,
		"$argon2id$v=19$m=64,t=1$" + salt + "$" + key,
		"$argon2id$v=19$m=64,t=1,p=1,x=2$" + salt + "$" + key,
		"$argon2id$v=19$m=64,t=1,p=1$!!$" + key,
		"$argon2id$v=19$m=64,t=1,p=1$" + salt + "$c2hvcnQ",
		"$argon2id$v=19$m=64,t=1,p=1$" + salt + "$" + key + "$",
	}
	for _, h := range bad {
		if _, err := VerifyPassword(h, []byte("x")); !errors.Is(err, ErrBadHash) {
			t.Errorf("VerifyPassword(%q) = %v, want ErrBadHash", h, err)
		}
	}
}

func benchAuth(b *testing.B, cached bool) {
	f := newFixture(b, Options{})
	f.svc.params = PasswordParams{}.withDefaults() // OWASP cost
	ctx := context.Background()
	_, c := f.create(b, CreateRequest{ID: "d"})
	pw := []byte(c.Password)
	if _, err := f.svc.Authenticate(ctx, "d", "d", pw, nil); err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if !cached {
			f.svc.forget("d")
		}
		if _, err := f.svc.Authenticate(ctx, "d", "d", pw, nil); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkAuthenticateCached is a reconnect: store read plus HMAC.
func BenchmarkAuthenticateCached(b *testing.B) { benchAuth(b, true) }

// BenchmarkAuthenticateUncached is a first connect: store read plus argon2id.
func BenchmarkAuthenticateUncached(b *testing.B) { benchAuth(b, false) }
