package twin

import (
	"encoding/json"
	"testing"
)

func mustObject(t *testing.T, s string) map[string]any {
	t.Helper()
	m, err := decodeObject([]byte(s))
	if err != nil {
		t.Fatalf("decodeObject(%s) = %v", s, err)
	}
	return m
}

func encode(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestMergePatch runs the examples of RFC 7386 Appendix A whose target
// and patch are objects (a twin document is always one).
func TestMergePatch(t *testing.T) {
	tests := []struct{ target, patch, want string }{
		{`{"a":"b"}`, `{"a":"c"}`, `{"a":"c"}`},
		{`{"a":"b"}`, `{"b":"c"}`, `{"a":"b","b":"c"}`},
		{`{"a":"b"}`, `{"a":null}`, `{}`},
		{`{"a":"b","b":"c"}`, `{"a":null}`, `{"b":"c"}`},
		{`{"a":["b"]}`, `{"a":"c"}`, `{"a":"c"}`},
		{`{"a":"c"}`, `{"a":["b"]}`, `{"a":["b"]}`},
		{`{"a":{"b":"c"}}`, `{"a":{"b":"d","c":null}}`, `{"a":{"b":"d"}}`},
		{`{"a":[{"b":"c"}]}`, `{"a":[1]}`, `{"a":[1]}`},
		{`{"e":null}`, `{"a":1}`, `{"a":1,"e":null}`},
		{`{"a":"foo"}`, `{}`, `{"a":"foo"}`},
		{`{}`, `{"a":{"bb":{"ccc":null}}}`, `{"a":{"bb":{}}}`},
		{`{"a":1.50}`, `{"b":1e3}`, `{"a":1.50,"b":1e3}`}, // numbers kept as written
	}
	for _, tt := range tests {
		got := encode(t, MergePatch(mustObject(t, tt.target), mustObject(t, tt.patch)))
		if got != tt.want {
			t.Errorf("MergePatch(%s, %s) = %s; want %s", tt.target, tt.patch, got, tt.want)
		}
	}
}

func TestDelta(t *testing.T) {
	tests := []struct{ name, desired, reported, want string }{
		{"in sync", `{"a":1,"b":{"c":"x"}}`, `{"a":1,"b":{"c":"x"},"extra":true}`, `{}`},
		{"missing key", `{"a":1,"b":2}`, `{"a":1}`, `{"b":2}`},
		{"changed value", `{"a":1}`, `{"a":2}`, `{"a":1}`},
		{"numbers by value", `{"a":1,"b":100}`, `{"a":1.0,"b":1e2}`, `{}`},
		{"nested: only differing keys", `{"led":{"color":"red","on":true}}`, `{"led":{"color":"blue","on":true}}`, `{"led":{"color":"red"}}`},
		{"object vs scalar", `{"led":{"color":"red"}}`, `{"led":"off"}`, `{"led":{"color":"red"}}`},
		{"scalar vs object", `{"led":"off"}`, `{"led":{"color":"red"}}`, `{"led":"off"}`},
		{"arrays whole", `{"a":[1,2,3]}`, `{"a":[1,2]}`, `{"a":[1,2,3]}`},
		{"equal arrays", `{"a":[1,{"b":2}]}`, `{"a":[1.0,{"b":2}]}`, `{}`},
		{"reported null", `{"a":1}`, `{"a":null}`, `{"a":1}`},
		{"empty desired", `{}`, `{"a":1}`, `{}`},
		{"type differs", `{"a":"1"}`, `{"a":1}`, `{"a":"1"}`},
		{"bools", `{"a":true}`, `{"a":false}`, `{"a":true}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := encode(t, Delta(mustObject(t, tt.desired), mustObject(t, tt.reported)))
			if got != tt.want {
				t.Errorf("Delta(%s, %s) = %s; want %s", tt.desired, tt.reported, got, tt.want)
			}
		})
	}
}

func TestDecodeObjectRefuses(t *testing.T) {
	for _, in := range []string{`[]`, `1`, `"x"`, `null`, `{"a":1}{}`, `{"a":1} x`, `{"a":`, `{'a':1}`} {
		if _, err := decodeObject([]byte(in)); err == nil {
			t.Errorf("decodeObject(%s) = nil error; want a refusal", in)
		}
	}
	for _, in := range []string{``, ` `, `{}`, ` {"a":1} `} {
		if _, err := decodeObject([]byte(in)); err != nil {
			t.Errorf("decodeObject(%q) = %v", in, err)
		}
	}
}

func TestDepth(t *testing.T) {
	for _, tt := range []struct {
		in   string
		want int
	}{
		{`{}`, 1},
		{`{"a":1}`, 1},
		{`{"a":{"b":[1,{"c":2}]}}`, 4},
	} {
		if got := depth(mustObject(t, tt.in)); got != tt.want {
			t.Errorf("depth(%s) = %d; want %d", tt.in, got, tt.want)
		}
	}
}
