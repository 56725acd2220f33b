package fhtest

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
)

// Do sends a request to url with token as its bearer token (none when
// empty) and body as its JSON content (none when empty), and returns the
// answer's status code, header and body. It fails t when the request
// cannot be sent.
func Do(t testing.TB, method, url, token, body string) (int, http.Header, []byte) {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, b
}

// API calls fieldhub's REST API (or any JSON API) at url with token as
// its bearer token: body, when not nil, is sent as JSON, and out, when
// not nil, is decoded from an answer below 300 (failing t if it does not
// decode); an answer of 300 or more is logged. It returns the status
// code.
func API(t testing.TB, method, url, token string, body, out any) int {
	t.Helper()
	var s string
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			t.Fatal(err)
		}
		s = string(b)
	}
	code, _, b := Do(t, method, url, token, s)
	if code >= 300 {
		t.Logf("%s %s = %d %s", method, url, code, b)
		return code
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			t.Fatalf("%s %s: decoding %s: %v", method, url, b, err)
		}
	}
	return code
}
