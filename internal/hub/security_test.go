package hub_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/fieldhub/fieldhub/topic"
)

func TestConnectRefusals(t *testing.T) {
	h := startHub(t, hubConfig(t, t.TempDir()))
	mqtt, mqtts := h.Addr("mqtt").String(), h.Addr("mqtts").String()
	pw := h.addDevice("pw-dev", "password")
	cert := h.addDevice("cert-dev", "certificate")
	other := h.addDevice("other-dev", "certificate")

	refused := func(name string, err error) {
		t.Helper()
		if err == nil {
			t.Errorf("%s: connected; want refused", name)
		}
	}
	_, _, err := dial5(t, mqtt, nil, pw.ID, pw.ID, "wrong-password")
	refused("wrong password", err)
	_, _, err = dial5(t, mqtt, nil, "nobody", "nobody", "whatever-password")
	refused("unknown device", err)
	_, _, err = dial5(t, mqtt, nil, pw.ID, "", "")
	refused("anonymous", err)
	_, _, err = dial5(t, mqtt, nil, "pw-dev-2", pw.ID, pw.Password)
	refused("client id is not the device id", err)
	_, err = dial3(t, "tcp://"+mqtt, nil, pw.ID, pw.ID, "wrong-password")
	refused("wrong password (3.1.1)", err)

	// A certificate whose name is another device's.
	_, _, err = dial5(t, mqtts, h.clientTLS(&other), cert.ID, "", "")
	refused("certificate of another device", err)

	// A certificate from another CA, naming a real device.
	foreign := selfSignedClient(t, cert.ID, time.Now().Add(-time.Hour), time.Now().Add(time.Hour))
	tc := h.clientTLS(nil)
	// Present it whatever CAs the server names, as OpenSSL-based clients do.
	tc.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &foreign, nil }
	_, _, err = dial5(t, mqtts, tc, cert.ID, "", "")
	refused("foreign CA", err)

	// An expired certificate issued by the hub's own CA.
	expired := h.issueExpired(cert.ID)
	tc = h.clientTLS(nil)
	tc.Certificates = []tls.Certificate{expired}
	_, _, err = dial5(t, mqtts, tc, cert.ID, "", "")
	refused("expired certificate", err)

	for _, reason := range []string{"tls_unknown_ca", "tls_expired"} {
		if got := h.counter("fieldhub_mqtt_connect_refusals_total", "reason", reason); got < 1 {
			t.Errorf("refusals{reason=%s} = %v; want ≥ 1", reason, got)
		}
	}
	if got := h.counter("fieldhub_mqtt_connect_refusals_total"); got < 8 {
		t.Errorf("refusals counted = %v; want ≥ 8", got)
	}

	// The right credentials still work.
	if _, _, err := dial5(t, mqtt, nil, pw.ID, pw.ID, pw.Password); err != nil {
		t.Errorf("password device: %v", err)
	}
	if _, _, err := dial5(t, mqtts, h.clientTLS(&cert), cert.ID, "", ""); err != nil {
		t.Errorf("certificate device: %v", err)
	}
}

func TestDeleteClosesSessionAndRefuses(t *testing.T) {
	h := startHub(t, hubConfig(t, t.TempDir()))
	for _, auth := range []string{"password", "certificate"} {
		t.Run(auth, func(t *testing.T) {
			cr := h.addDevice("del-"+auth, auth)
			addr, tc, user := h.Addr("mqtt").String(), (*tls.Config)(nil), cr.ID
			if auth == "certificate" {
				addr, tc, user = h.Addr("mqtts").String(), h.clientTLS(&cr), ""
			}
			c, _, err := dial5(t, addr, tc, cr.ID, user, cr.Password)
			if err != nil {
				t.Fatal(err)
			}
			if code := h.api("DELETE", "/api/v1/devices/"+cr.ID, nil, nil); code != 204 {
				t.Fatalf("delete = HTTP %d", code)
			}
			select {
			case <-c.Done():
			case <-time.After(5 * time.Second):
				t.Fatal("live session still open 5 s after delete")
			}
			if _, _, err := dial5(t, addr, tc, cr.ID, user, cr.Password); err == nil {
				t.Error("deleted device connected again")
			}
		})
	}
}

func TestRotateRevokesOldCredentials(t *testing.T) {
	h := startHub(t, hubConfig(t, t.TempDir()))
	old := h.addDevice("rot", "certificate")
	var out struct {
		Credentials creds `json:"credentials"`
	}
	if code := h.api("POST", "/api/v1/devices/rot/credentials", nil, &out); code != 200 {
		t.Fatalf("rotate = HTTP %d", code)
	}
	if _, _, err := dial5(t, h.Addr("mqtts").String(), h.clientTLS(&old), "rot", "", ""); err == nil {
		t.Error("rotated-out certificate still connects")
	}
	nu := out.Credentials
	if _, _, err := dial5(t, h.Addr("mqtts").String(), h.clientTLS(&nu), "rot", "", ""); err != nil {
		t.Errorf("new certificate: %v", err)
	}
	if got := h.counter("fieldhub_mqtt_connect_refusals_total", "reason", "cert_revoked"); got < 1 {
		t.Errorf("refusals{reason=cert_revoked} = %v; want ≥ 1", got)
	}
}

func TestTopicACL(t *testing.T) {
	h := startHub(t, hubConfig(t, t.TempDir()))
	a := h.addDevice("acl-a", "password")
	h.addDevice("acl-b", "password")
	c, _, err := dial5(t, h.Addr("mqtt").String(), nil, a.ID, a.ID, a.Password)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	resp, err := c.Publish(ctx, &paho.Publish{Topic: topic.Telemetry("acl-b"), QoS: 1, Payload: telemetryJSON(1, 1, time.Now())})
	if err == nil && resp.ReasonCode < 0x80 {
		t.Errorf("publish to another device's telemetry: reason 0x%02x; want refused", resp.ReasonCode)
	}
	for _, f := range []string{"devices/acl-b/commands/#", "devices/+/commands/#", "#", "devices/acl-b/twin/desired"} {
		sa, err := c.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: f, QoS: 1}}})
		if err == nil && len(sa.Reasons) == 1 && sa.Reasons[0] < 0x80 {
			t.Errorf("subscribe %q granted 0x%02x; want refused", f, sa.Reasons[0])
		}
	}
	// Its own commands are fine.
	sa, err := c.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "devices/acl-a/commands/#", QoS: 1}}})
	if err != nil || sa.Reasons[0] >= 0x80 {
		t.Errorf("subscribe to own commands: %v %v", err, sa)
	}
	if got := h.counter("fieldhub_mqtt_acl_denials_total", "action", "publish"); got < 1 {
		t.Errorf("publish denials = %v; want ≥ 1", got)
	}
	if got := h.counter("fieldhub_mqtt_acl_denials_total", "action", "subscribe"); got < 4 {
		t.Errorf("subscribe denials = %v; want ≥ 4", got)
	}
	if n := len(h.telemetry("acl-b")); n != 0 {
		t.Errorf("acl-b has %d metrics stored; want none", n)
	}
}

func TestInvalidPayloadsRefused(t *testing.T) {
	h := startHub(t, hubConfig(t, t.TempDir()))
	bad := h.addDevice("bad", "password")
	good := h.addDevice("good", "password")
	c, _, err := dial5(t, h.Addr("mqtt").String(), nil, bad.ID, bad.ID, bad.Password)
	if err != nil {
		t.Fatal(err)
	}
	g, _, err := dial5(t, h.Addr("mqtt").String(), nil, good.ID, good.ID, good.Password)
	if err != nil {
		t.Fatal(err)
	}
	big := `{"data":{"s":"` + strings.Repeat("x", 70<<10) + `"}}`
	cases := map[string]string{
		"malformed":       `{"data":{"t":21.5`,
		"not json":        `temperature=21`,
		"too large":       big,
		"array value":     `{"data":{"t":[1,2]}}`,
		"null value":      `{"data":{"t":null}}`,
		"string seq":      `{"seq":"7","data":{"t":1}}`,
		"bad ts":          `{"ts":"yesterday","data":{"t":1}}`,
		"no data":         `{"seq":1}`,
		"device mismatch": `{"device_id":"good","data":{"t":1}}`,
	}
	ctx := context.Background()
	for i := 0; i < 3; i++ { // interleave good traffic from another device
		if resp, err := g.Publish(ctx, &paho.Publish{Topic: topic.Telemetry(good.ID), QoS: 1, Payload: telemetryJSON(i+1, float64(i), time.Now())}); err != nil || resp.ReasonCode != 0 {
			t.Fatalf("good device: %v %v", err, resp)
		}
	}
	for name, p := range cases {
		resp, err := c.Publish(ctx, &paho.Publish{Topic: topic.Telemetry(bad.ID), QoS: 1, Payload: []byte(p)})
		if resp == nil {
			t.Fatalf("%s: no PUBACK: %v", name, err)
		}
		if resp.ReasonCode != 0x99 {
			t.Errorf("%s: PUBACK reason 0x%02x; want 0x99 (payload format invalid)", name, resp.ReasonCode)
		}
	}
	// An unknown topic under its own id is denied, not stored.
	resp, err := c.Publish(ctx, &paho.Publish{Topic: "devices/bad/telemetryx", QoS: 1, Payload: telemetryJSON(1, 1, time.Now())})
	if err == nil && resp.ReasonCode < 0x80 {
		t.Errorf("unknown topic: reason 0x%02x; want refused", resp.ReasonCode)
	}
	// Type change of an existing metric.
	g.Publish(ctx, &paho.Publish{Topic: topic.Telemetry(good.ID), QoS: 1, Payload: []byte(`{"data":{"temperature":"hot"}}`)})

	// MQTT 3.1.1 has no reason codes: the message is acknowledged (so the
	// client does not resend it forever), dropped and counted.
	b3 := h.addDevice("bad3", "password")
	c3, err := dial3(t, "tcp://"+h.Addr("mqtt").String(), nil, b3.ID, b3.ID, b3.Password)
	if err != nil {
		t.Fatal(err)
	}
	if tok := c3.Publish(topic.Telemetry(b3.ID), 1, false, []byte(`{"data":`)); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Errorf("3.1.1 malformed publish: %v", tok.Error())
	}
	if n := len(h.telemetry(b3.ID)); n != 0 {
		t.Errorf("3.1.1 device has %d metrics stored; want none", n)
	}
	if n := len(h.telemetry(bad.ID)); n != 0 {
		t.Errorf("refused device has %d metrics stored; want none", n)
	}
	if got := len(h.telemetry(good.ID)["temperature"]); got != 3 {
		t.Errorf("good device stored %d points; want 3", got)
	}
	if got := h.counter("fieldhub_telemetry_messages_total", "result", "refused"); got != float64(len(cases)+2) {
		t.Errorf("refused counted = %v; want %d", got, len(cases)+2)
	}
}

func TestMosquittoPubOverTLS(t *testing.T) {
	bin := requireTool(t, "mosquitto_pub")
	h := startHub(t, hubConfig(t, t.TempDir()))
	cr := h.addDevice("stock-client", "password")
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	os.WriteFile(caFile, h.CAPEM(), 0o644)
	port := h.Addr("mqtts").(interface{ String() string }).String()
	port = port[strings.LastIndex(port, ":")+1:]
	base := time.Now().Add(-time.Minute).Truncate(time.Second)
	for _, v := range []string{"mqttv311", "mqttv5"} {
		for i := 1; i <= 5; i++ {
			seq := i
			if v == "mqttv5" {
				seq += 5
			}
			msg := fmt.Sprintf(`{"seq":%d,"ts":%q,"data":{"temperature":%d.5}}`, seq, base.Add(time.Duration(seq)*time.Second).Format("2006-01-02T15:04:05"), seq)
			out, err := exec.Command(bin, "-h", "localhost", "-p", port, "--cafile", caFile, "-V", v,
				"-i", cr.ID, "-u", cr.ID, "-P", cr.Password, "-q", "1", "-t", topic.Telemetry(cr.ID), "-m", msg).CombinedOutput()
			if err != nil {
				t.Fatalf("mosquitto_pub %s: %v\n%s", v, err, out)
			}
		}
	}
	got := h.telemetry(cr.ID)["temperature"]
	if len(got) != 10 {
		t.Fatalf("stored %d points; want 10", len(got))
	}
	for i, p := range got {
		if want := float64(i+1) + 0.5; p.Value != want {
			t.Errorf("point %d = %v; want %v", i, p.Value, want)
		}
	}
	// Wrong password: mosquitto_pub fails.
	out, err := exec.Command(bin, "-h", "localhost", "-p", port, "--cafile", caFile,
		"-i", cr.ID, "-u", cr.ID, "-P", "nope", "-q", "1", "-t", topic.Telemetry(cr.ID), "-m", "{}").CombinedOutput()
	if err == nil {
		t.Errorf("mosquitto_pub with a wrong password succeeded: %s", out)
	}
}

func TestRestartKeepsState(t *testing.T) {
	dir := t.TempDir()
	cfg := hubConfig(t, dir)
	h := startHub(t, cfg)
	cr := h.addDevice("keep", "password")
	cc := h.addDevice("keep-cert", "certificate")
	c, _, err := dial5(t, h.Addr("mqtt").String(), nil, cr.ID, cr.ID, cr.Password)
	if err != nil {
		t.Fatal(err)
	}
	ts := time.Now().Add(-time.Minute)
	for i := 1; i <= 5; i++ {
		c.Publish(context.Background(), &paho.Publish{Topic: topic.Telemetry(cr.ID), QoS: 1, Payload: telemetryJSON(i, float64(i), ts.Add(time.Duration(i)*time.Second))})
	}
	ca, token := h.CAPEM(), h.AdminToken()
	c.Disconnect(&paho.Disconnect{})
	h.stop()

	h2 := startHub(t, cfg)
	if !bytes.Equal(h2.CAPEM(), ca) {
		t.Error("CA changed across a restart")
	}
	if h2.AdminToken() != token {
		t.Error("admin token changed across a restart")
	}
	if got := len(h2.telemetry(cr.ID)["temperature"]); got != 5 {
		t.Errorf("after restart %d points; want 5", got)
	}
	if _, _, err := dial5(t, h2.Addr("mqtt").String(), nil, cr.ID, cr.ID, cr.Password); err != nil {
		t.Errorf("password after restart: %v", err)
	}
	if _, _, err := dial5(t, h2.Addr("mqtts").String(), h2.clientTLS(&cc), cc.ID, "", ""); err != nil {
		t.Errorf("certificate after restart: %v", err)
	}
	// A duplicate of a message stored before the restart is still a duplicate.
	c2, _, _ := dial5(t, h2.Addr("mqtt").String(), nil, cr.ID, cr.ID, cr.Password)
	c2.Publish(context.Background(), &paho.Publish{Topic: topic.Telemetry(cr.ID), QoS: 1, Payload: telemetryJSON(5, 5, ts.Add(5*time.Second))})
	if got := len(h2.telemetry(cr.ID)["temperature"]); got != 5 {
		t.Errorf("after resending seq 5: %d points; want 5", got)
	}
}

// selfSignedClient makes a client certificate from a throwaway CA.
func selfSignedClient(t *testing.T, cn string, notBefore, notAfter time.Time) tls.Certificate {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(42), Subject: pkix.Name{CommonName: cn},
		NotBefore: notBefore, NotAfter: notAfter,
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true, IsCA: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, _ := x509.MarshalECPrivateKey(key)
	c, err := tls.X509KeyPair(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// issueExpired issues a certificate for id from the hub's own CA that has
// already expired.
func (h *testHub) issueExpired(id string) tls.Certificate {
	h.t.Helper()
	iss, key, err := h.CA().IssueKeyPair(id, time.Millisecond)
	if err != nil {
		h.t.Fatal(err)
	}
	time.Sleep(20 * time.Millisecond)
	c, err := tls.X509KeyPair(iss.CertPEM, key)
	if err != nil {
		h.t.Fatal(err)
	}
	return c
}
