package brokerauth

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/fieldhub/fieldhub/internal/registry"
	"github.com/fieldhub/fieldhub/internal/store"
)

func TestHandler(t *testing.T) {
	e := newEnv(t, registry.Options{})
	pwA := e.create(t, "dev-a", "", "")
	pwG := e.create(t, "gw-1", "", "")
	e.create(t, "child-1", "gw-1", "")
	e.create(t, "stranger", "", "")
	e.create(t, "cert-1", "", store.AuthCertificate)
	const secret = "0123456789abcdef-secret"
	hub := HubUser{Name: "fieldhub-hub", Password: randomSecret()}
	h, err := NewHandler(e.svc, HandlerConfig{Secret: secret, HubUsers: []HubUser{hub}, CertificateLogins: true})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(http.StripPrefix("/broker", h))
	defer srv.Close()

	post := func(t *testing.T, path, auth, body string) (int, map[string]any) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodPost, srv.URL+"/broker"+path, strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var m map[string]any
		_ = json.NewDecoder(resp.Body).Decode(&m)
		return resp.StatusCode, m
	}
	js := func(kv ...string) string {
		m := map[string]string{}
		for i := 0; i+1 < len(kv); i += 2 {
			m[kv[i]] = kv[i+1]
		}
		b, _ := json.Marshal(m)
		return string(b)
	}
	bearer := "Bearer " + secret

	authn := []struct {
		name, body, result string
		super              bool
	}{
		{"device", js("clientid", "dev-a", "username", "dev-a", "password", pwA), "allow", false},
		{"wrong password", js("clientid", "dev-a", "username", "dev-a", "password", pwG), "deny", false},
		{"no password", js("clientid", "dev-a", "username", "dev-a", "password", ""), "deny", false},
		{"client id not username", js("clientid", "other", "username", "dev-a", "password", pwA), "deny", false},
		{"unknown device", js("clientid", "nobody", "username", "nobody", "password", pwA), "deny", false},
		{"hub user", js("clientid", "hub-1", "username", hub.Name, "password", hub.Password), "allow", true},
		{"hub user, wrong password", js("clientid", "hub-1", "username", hub.Name, "password", pwA), "deny", false},
		{"certificate device", js("clientid", "cert-1", "username", "cert-1", "password", "", "cert_common_name", "cert-1"), "allow", false},
		{"certificate CN of another", js("clientid", "cert-1", "username", "cert-1", "password", "", "cert_common_name", "dev-a"), "deny", false},
		{"CN of a password device", js("clientid", "dev-a", "username", "dev-a", "cert_common_name", "dev-a"), "deny", false},
	}
	for _, tt := range authn {
		status, m := post(t, AuthPath, bearer, tt.body)
		if status != 200 || m["result"] != tt.result || m["is_superuser"] != tt.super {
			t.Errorf("auth %s = %d %v; want 200 result=%s is_superuser=%v", tt.name, status, m, tt.result, tt.super)
		}
	}

	authz := []struct{ user, action, topic, result string }{
		{"dev-a", "publish", "devices/dev-a/telemetry", "allow"},
		{"dev-a", "publish", "devices/stranger/telemetry", "deny"},
		{"dev-a", "publish", "devices/dev-a/commands/x", "deny"},
		{"dev-a", "subscribe", "devices/dev-a/commands/+", "allow"},
		{"dev-a", "subscribe", "devices/stranger/commands/+", "deny"},
		{"dev-a", "subscribe", "devices/+/commands/+", "deny"},
		{"dev-a", "subscribe", "#", "deny"},
		{"dev-a", "subscribe", "devices/dev-a/telemetry", "deny"},
		{"dev-a", "publish", "devices/dev-a/batch", "deny"},
		{"gw-1", "publish", "devices/gw-1/batch", "allow"},
		{"gw-1", "publish", "devices/child-1/alerts", "allow"},
		{"gw-1", "publish", "devices/stranger/alerts", "deny"},
		{"gw-1", "subscribe", "devices/child-1/commands/+", "allow"},
		{"gw-1", "subscribe", "devices/stranger/commands/+", "deny"},
		{"child-1", "subscribe", "devices/gw-1/commands/+", "deny"},
		{hub.Name, "subscribe", "$share/hubs/devices/#", "allow"},
		{hub.Name, "publish", "devices/dev-a/commands/x", "allow"},
		{hub.Name, "subscribe", "#", "deny"},
	}
	for _, tt := range authz {
		client := tt.user
		if tt.user == hub.Name {
			client = "hub-1"
		}
		status, m := post(t, ACLPath, bearer, js("clientid", client, "username", tt.user, "topic", tt.topic, "action", tt.action))
		if status != 200 || m["result"] != tt.result {
			t.Errorf("acl %s %s %s = %d %v; want 200 result=%s", tt.user, tt.action, tt.topic, status, m, tt.result)
		}
	}
	if _, m := post(t, ACLPath, bearer, js("clientid", "dev-b", "username", "dev-a", "topic", "devices/dev-a/telemetry", "action", "publish")); m["result"] != "deny" {
		t.Errorf("acl with client id ≠ username = %v; want deny", m)
	}

	good := js("clientid", "dev-a", "username", "dev-a", "password", pwA)
	for _, tt := range []struct {
		name, path, auth, body string
		status                 int
	}{
		{"no secret", AuthPath, "", good, 401},
		{"not bearer", AuthPath, "Basic " + secret, good, 401},
		{"wrong secret", AuthPath, "Bearer nope-nope-nope-nope", good, 403},
		{"wrong secret, acl", ACLPath, "Bearer nope-nope-nope-nope", good, 403},
		{"malformed JSON", AuthPath, bearer, `{"clientid": "dev-a",`, 400},
		{"not an object", AuthPath, bearer, `[1,2]`, 400},
		{"trailing data", AuthPath, bearer, good + `{}`, 400},
		{"missing username", AuthPath, bearer, js("clientid", "dev-a", "password", pwA), 400},
		{"acl missing topic", ACLPath, bearer, js("clientid", "dev-a", "username", "dev-a", "action", "publish"), 400},
		{"acl bad action", ACLPath, bearer, js("clientid", "dev-a", "username", "dev-a", "topic", "t", "action", "delete"), 400},
		{"unknown path", "/mqtt/other", bearer, good, 404},
	} {
		status, m := post(t, tt.path, tt.auth, tt.body)
		if status != tt.status {
			t.Errorf("%s: status %d %v; want %d", tt.name, status, m, tt.status)
		}
		if status == 400 && m["error"] == "" {
			t.Errorf("%s: 400 without a reason: %v", tt.name, m)
		}
	}
	resp, err := http.Get(srv.URL + "/broker" + AuthPath)
	if err == nil {
		resp.Body.Close()
		if resp.StatusCode != 405 {
			t.Errorf("GET %s = %d; want 405", AuthPath, resp.StatusCode)
		}
	}
}

func TestNewHandlerConfig(t *testing.T) {
	e := newEnv(t, registry.Options{})
	for _, cfg := range []HandlerConfig{
		{Secret: "short"},
		{Secret: "0123456789abcdef", HubUsers: []HubUser{{Name: "a:b", Password: "x"}}},
		{Secret: "0123456789abcdef", HubUsers: []HubUser{{Name: "hub", Password: ""}}},
	} {
		if _, err := NewHandler(e.svc, cfg); err == nil {
			t.Errorf("NewHandler(%+v) = nil error", cfg)
		}
	}
}
