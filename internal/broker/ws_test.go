package broker

import (
	"context"
	"crypto/tls"
	"net/http"
	"testing"

	paho "github.com/eclipse/paho.golang/paho"
	"github.com/gorilla/websocket"

	"github.com/fieldhub/fieldhub/topic"
)

func TestWebSocket(t *testing.T) {
	p := newTestPKI(t, "ws CA")
	cfg := p.brokerConfig()
	cfg.TLSAddr = ""
	cfg.WSAddr = "127.0.0.1:0"
	cfg.WSSAddr = "127.0.0.1:0"
	e := startEnv(t, cfg, "ok")

	// MQTT 3.1.1 over ws:// with a password (paho.mqtt.golang dials ws natively).
	c3, err := dialV3(t, "ws://"+e.addr("ws")+WSPath, "dev-a", "dev-a", "pw-a", nil)
	if err != nil {
		t.Fatalf("v3 over ws: %v", err)
	}
	tok := c3.c.Publish(topic.Telemetry("dev-a"), 1, false, `{"via":"ws"}`)
	if !tok.WaitTimeout(testTimeout) || tok.Error() != nil {
		t.Fatalf("v3 publish over ws: %v", tok.Error())
	}

	// MQTT 3.1.1 over wss:// with a client certificate only.
	c3s, err := dialV3(t, "wss://"+e.addr("wss")+WSPath, "dev-b", "", "", p.clientTLS(p.clientCert(t, "dev-b")))
	if err != nil {
		t.Fatalf("v3 over wss with a client certificate: %v", err)
	}
	tok = c3s.c.Publish(topic.Telemetry("dev-b"), 1, false, `{"via":"wss"}`)
	if !tok.WaitTimeout(testTimeout) || tok.Error() != nil {
		t.Fatalf("v3 publish over wss: %v", tok.Error())
	}
	if certs := e.auth.seenCerts("dev-b"); len(certs) == 0 {
		t.Error("Authenticate got no peer certificate over wss")
	}

	// MQTT 5 (paho.golang) over a gorilla client connection.
	d := websocket.Dialer{Subprotocols: []string{"mqtt"}, TLSClientConfig: p.clientTLS()}
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	ws, resp, err := d.DialContext(ctx, "wss://"+e.addr("wss")+WSPath, http.Header{})
	if err != nil {
		t.Fatalf("dial wss: %v", err)
	}
	if resp.Header.Get("Sec-Websocket-Protocol") != "mqtt" {
		t.Errorf("negotiated subprotocol %q; want mqtt", resp.Header.Get("Sec-Websocket-Protocol"))
	}
	c5, _, err := dialV5(t, &wsConn{Conn: ws.NetConn(), ws: ws}, &paho.Connect{
		ClientID: "dev-c", CleanStart: true, Username: "dev-c", UsernameFlag: true, Password: []byte("pw-c"), PasswordFlag: true,
	})
	if err != nil {
		t.Fatalf("v5 over wss: %v", err)
	}
	if pr, err := c5.publish(t, topic.Telemetry("dev-c"), 1, `{"via":"v5"}`); err != nil || pr.ReasonCode != 0 {
		t.Fatalf("v5 publish over wss = %+v, %v", pr, err)
	}

	got := map[string]string{}
	for _, m := range e.ing.messages() {
		got[m.device] = m.payload
	}
	if got["dev-a"] != `{"via":"ws"}` || got["dev-b"] != `{"via":"wss"}` || got["dev-c"] != `{"via":"v5"}` {
		t.Fatalf("ingested %v", got)
	}

	// Only /mqtt serves MQTT.
	resp2, err := (&http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: p.pool}}}).Get("https://" + e.addr("wss") + "/")
	if err == nil {
		resp2.Body.Close()
		if resp2.StatusCode != http.StatusNotFound {
			t.Errorf("GET / = %d; want 404", resp2.StatusCode)
		}
	}
}
