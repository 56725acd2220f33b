package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// TestCmd runs `fieldhub cmd` against a stand-in for the API and checks
// the request it makes and how it reports each outcome.
func TestCmd(t *testing.T) {
	var gotPath, gotQuery string
	var gotBody map[string]any
	state := "succeeded"
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer tok-tok-tok-tok" || r.Method != http.MethodPost {
			http.Error(w, "bad request", 400)
			return
		}
		gotPath, gotQuery = r.URL.Path, r.URL.RawQuery
		b, _ := io.ReadAll(r.Body)
		gotBody = nil
		json.Unmarshal(b, &gotBody)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(201)
		io.WriteString(w, `{"id":"c1","device":"dev-1","name":"reboot","state":"`+state+`","error":"stuck"}`)
	}))
	defer srv.Close()
	run := func(args ...string) (int, string, string) {
		var out, errb bytes.Buffer
		code := Main(context.Background(), append([]string{"cmd", "--server", srv.URL, "--token", "tok-tok-tok-tok"}, args...), &out, &errb)
		return code, out.String(), errb.String()
	}

	code, out, errs := run("dev-1", "reboot", "--params", `{"delay":5}`, "--expires", "1m", "--wait", "10s")
	if code != 0 || !strings.Contains(out, `"state": "succeeded"`) {
		t.Fatalf("cmd = %d, %q, %q", code, out, errs)
	}
	if gotPath != "/api/v1/devices/dev-1/commands" || gotQuery != "wait=10s" {
		t.Errorf("request %s?%s", gotPath, gotQuery)
	}
	if gotBody["name"] != "reboot" || gotBody["expires_in"] != "1m" || gotBody["params"].(map[string]any)["delay"] != 5.0 {
		t.Errorf("body %v", gotBody)
	}
	for _, tc := range []struct {
		state string
		code  int
		want  string
	}{
		{"failed", 1, "failed: stuck"},
		{"expired", 1, "expired"},
		{"sent", 1, "no answer within 10s"},
	} {
		state = tc.state
		if code, _, errs := run("dev-1", "reboot", "--wait", "10s"); code != tc.code || !strings.Contains(errs, tc.want) {
			t.Errorf("state %s: exit %d, %q; want %d with %q", tc.state, code, errs, tc.code, tc.want)
		}
	}
	// Without --wait any state is fine, and no wait is asked for.
	state = "queued"
	if code, _, errs := run("dev-1", "reboot"); code != 0 || gotQuery != "" || gotBody["params"] != nil {
		t.Errorf("cmd without --wait = %d %q, query %q, body %v", code, errs, gotQuery, gotBody)
	}
	for _, args := range [][]string{
		{"dev-1", "reboot", "--params", "[1]"},
		{"dev-1", "reboot", "--params", "{"},
		{"dev-1", "reboot", "--expires", "soon"},
		{"dev-1", "reboot", "--wait", "2m"},
	} {
		if code, _, _ := run(args...); code != 2 {
			t.Errorf("cmd %v = exit %d; want 2 (usage)", args, code)
		}
	}
}
