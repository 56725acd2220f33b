package brokerauth

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/fieldhub/fieldhub/internal/registry"
)

// FuzzHandler posts arbitrary bodies with the right secret to both
// routes: the answer is always 200 (a decision) or 400 (a reason), never a
// panic or a server error, and "allow" only for what the registry allows.
func FuzzHandler(f *testing.F) {
	e := newEnv(f, registry.Options{})
	e.create(f, "dev-a", "", "")
	const secret = "0123456789abcdef-secret"
	h, err := NewHandler(e.svc, HandlerConfig{Secret: secret})
	if err != nil {
		f.Fatal(err)
	}
	for _, seed := range []string{
		`{"clientid":"dev-a","username":"dev-a","password":"x"}`,
		`{"clientid":"dev-a","username":"dev-a","topic":"devices/dev-a/telemetry","action":"publish"}`,
		`{"clientid":"dev-a","username":"dev-a","topic":"devices/dev-b/telemetry","action":"publish"}`,
		`{"clientid":"x","username":"x","topic":"#","action":"subscribe"}`,
		`{}`, `[]`, `null`, `{"clientid":1}`, `{"a":"b"} {}`, "\x00",
	} {
		f.Add(true, seed)
		f.Add(false, seed)
	}
	f.Fuzz(func(t *testing.T, auth bool, body string) {
		path := AuthPath
		if !auth {
			path = ACLPath
		}
		req := httptest.NewRequest(http.MethodPost, path, strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Authorization", "Bearer "+secret)
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		switch w.Code {
		case http.StatusOK, http.StatusBadRequest:
		default:
			t.Fatalf("POST %s %q: status %d %s", path, body, w.Code, w.Body)
		}
		if w.Code == http.StatusOK && strings.Contains(w.Body.String(), `"allow"`) {
			// Only dev-a's own publishes can be allowed (no password is
			// right: the fuzzer does not know it).
			if auth || !strings.Contains(body, "dev-a") {
				t.Fatalf("POST %s %q allowed: %s", path, body, w.Body)
			}
		}
	})
}
