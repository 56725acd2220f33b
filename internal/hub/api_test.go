package hub_test

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/fieldhub/fieldhub/internal/fhtest"
)

func TestAPIRefusesBadRequests(t *testing.T) {
	h := startHub(t, hubConfig(t, t.TempDir()))
	h.addDevice("api-dev", "password")
	do := func(method, path, token, body string) (int, string) {
		t.Helper()
		code, _, b := fhtest.Do(t, method, h.apiURL+path, token, body)
		return code, string(b)
	}
	tok := h.AdminToken()
	for _, tc := range []struct {
		name, method, path, token, body string
		code                            int
		want                            string // in the error message
	}{
		{"no token", "GET", "/api/v1/devices", "", "", 401, "bearer token"},
		{"wrong token", "GET", "/api/v1/devices", "nope-nope-nope-nope", "", 401, "bearer token"},
		{"no token on telemetry", "GET", "/api/v1/devices/api-dev/telemetry", "", "", 401, "bearer token"},
		{"no token on create", "POST", "/api/v1/devices", "", `{"id":"x"}`, 401, "bearer token"},
		{"unknown device", "GET", "/api/v1/devices/ghost", tok, "", 404, "not found"},
		{"bad id", "POST", "/api/v1/devices", tok, `{"id":"a/b"}`, 400, "id"},
		{"unknown field", "POST", "/api/v1/devices", tok, `{"id":"x","colour":"red"}`, 400, "colour"},
		{"bad auth kind", "POST", "/api/v1/devices", tok, `{"id":"x","auth":"magic"}`, 400, "auth"},
		{"not json", "POST", "/api/v1/devices", tok, `id=x`, 400, "invalid JSON"},
		{"duplicate", "POST", "/api/v1/devices", tok, `{"id":"api-dev"}`, 409, "exists"},
		{"bad agg", "GET", "/api/v1/devices/api-dev/telemetry?step=1m&agg=median", tok, "", 400, "agg"},
		{"step without agg", "GET", "/api/v1/devices/api-dev/telemetry?step=1m", tok, "", 400, "step and agg"},
		{"bad step", "GET", "/api/v1/devices/api-dev/telemetry?step=soon&agg=avg", tok, "", 400, "step"},
		{"too many buckets", "GET", "/api/v1/devices/api-dev/telemetry?from=0&to=1700000000000&step=1ms&agg=avg", tok, "", 400, "buckets"},
		{"bad limit", "GET", "/api/v1/devices/api-dev/telemetry?limit=100001", tok, "", 400, "limit"},
		{"bad from", "GET", "/api/v1/devices/api-dev/telemetry?from=yesterday", tok, "", 400, "from"},
		{"from after to", "GET", "/api/v1/devices/api-dev/telemetry?from=2000&to=1000", tok, "", 400, "before"},
		{"bad cursor", "GET", "/api/v1/devices/api-dev/telemetry?cursor=not-a-cursor", tok, "", 400, "cursor"},
		{"telemetry of unknown device", "GET", "/api/v1/devices/ghost/telemetry", tok, "", 404, "not found"},
		{"unknown route", "GET", "/api/v1/nothing", tok, "", 404, "no such route"},
		{"no token on alerts", "GET", "/api/v1/alerts", "", "", 401, "bearer token"},
		{"bad alert severity", "GET", "/api/v1/alerts?severity=fatal", tok, "", 400, "severity"},
		{"bad alert limit", "GET", "/api/v1/alerts?limit=0", tok, "", 400, "limit"},
		{"bad alert device", "GET", "/api/v1/alerts?device=a/b", tok, "", 400, "device"},
		{"bad alert cursor", "GET", "/api/v1/alerts?before=nope", tok, "", 400, "cursor"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, body := do(tc.method, tc.path, tc.token, tc.body)
			var e struct {
				Error struct{ Code, Message string } `json:"error"`
			}
			json.Unmarshal([]byte(body), &e)
			if code != tc.code || !strings.Contains(e.Error.Message, tc.want) {
				t.Errorf("%s %s = %d %s; want %d with %q", tc.method, tc.path, code, body, tc.code, tc.want)
			}
		})
	}
	// Nothing was created by the refused requests.
	var list struct {
		Devices []struct{ ID string } `json:"devices"`
	}
	h.api("GET", "/api/v1/devices", nil, &list)
	if len(list.Devices) != 1 {
		t.Errorf("%d devices after refused requests; want 1", len(list.Devices))
	}
	// Public documents need no token.
	for _, p := range []string{"/api/v1/openapi.json", "/api/v1/ca.pem", "/healthz", "/readyz", "/metrics", "/"} {
		if code, _ := do("GET", p, "", ""); code != 200 {
			t.Errorf("GET %s = %d; want 200", p, code)
		}
	}
}

func TestDevicePaging(t *testing.T) {
	h := startHub(t, hubConfig(t, t.TempDir()))
	for _, id := range []string{"p-a", "p-b", "p-c", "p-d", "p-e", "q-a"} {
		h.addDevice(id, "password")
	}
	var ids []string
	after := ""
	for {
		var page struct {
			Devices []struct{ ID string } `json:"devices"`
			Next    string                `json:"next"`
		}
		h.api("GET", "/api/v1/devices?prefix=p-&limit=2&after="+after, nil, &page)
		for _, d := range page.Devices {
			ids = append(ids, d.ID)
		}
		if page.Next == "" {
			break
		}
		after = page.Next
	}
	if strings.Join(ids, ",") != "p-a,p-b,p-c,p-d,p-e" {
		t.Errorf("paged ids = %v", ids)
	}
}
