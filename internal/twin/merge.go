package twin

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
)

// decodeObject decodes a JSON object with numbers kept as json.Number (so
// that they are written back exactly as they came).
func decodeObject(b []byte) (map[string]any, error) {
	b = bytes.TrimSpace(b)
	if len(b) == 0 {
		return map[string]any{}, nil
	}
	if b[0] != '{' {
		return nil, errors.New("not a JSON object")
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var m map[string]any
	if err := dec.Decode(&m); err != nil {
		return nil, fmt.Errorf("invalid JSON: %w", err)
	}
	if dec.More() {
		return nil, errors.New("invalid JSON: trailing data")
	}
	if _, err := dec.Token(); err == nil {
		return nil, errors.New("invalid JSON: trailing data")
	}
	return m, nil
}

// MergePatch applies an RFC 7386 JSON merge patch to target and returns
// the result: a key whose patch value is null is removed, an object value
// is merged recursively, any other value (arrays included) replaces the
// target's. target is not modified.
func MergePatch(target, patch map[string]any) map[string]any {
	out := make(map[string]any, len(target)+len(patch))
	for k, v := range target {
		out[k] = v
	}
	for k, pv := range patch {
		switch pv := pv.(type) {
		case nil:
			delete(out, k)
		case map[string]any:
			cur, _ := out[k].(map[string]any)
			out[k] = MergePatch(cur, pv)
		default:
			out[k] = pv
		}
	}
	return out
}

// Delta returns the part of desired that reported does not match yet:
// every key of desired whose value differs from reported's under the same
// key (missing counts as different), where two objects are compared key
// by key recursively (so a nested delta holds only the differing keys),
// and any other values (numbers by value, strings, booleans, arrays
// element by element) are compared whole. Keys only in reported are not
// part of the delta. An empty delta means the device has applied the
// desired state.
func Delta(desired, reported map[string]any) map[string]any {
	out := map[string]any{}
	for k, dv := range desired {
		rv, ok := reported[k]
		dm, dObj := dv.(map[string]any)
		rm, rObj := rv.(map[string]any)
		if dObj && rObj {
			if sub := Delta(dm, rm); len(sub) > 0 {
				out[k] = sub
			}
			continue
		}
		if !ok || !equal(dv, rv) {
			out[k] = dv
		}
	}
	return out
}

// equal compares two decoded JSON values; numbers compare by value (1 and
// 1.0 are equal).
func equal(a, b any) bool {
	switch a := a.(type) {
	case nil:
		return b == nil
	case bool:
		bb, ok := b.(bool)
		return ok && a == bb
	case string:
		bs, ok := b.(string)
		return ok && a == bs
	case json.Number:
		bn, ok := b.(json.Number)
		if !ok {
			return false
		}
		if a == bn {
			return true
		}
		af, err1 := strconv.ParseFloat(string(a), 64)
		bf, err2 := strconv.ParseFloat(string(bn), 64)
		return err1 == nil && err2 == nil && af == bf
	case []any:
		bs, ok := b.([]any)
		if !ok || len(a) != len(bs) {
			return false
		}
		for i := range a {
			if !equal(a[i], bs[i]) {
				return false
			}
		}
		return true
	case map[string]any:
		bm, ok := b.(map[string]any)
		if !ok || len(a) != len(bm) {
			return false
		}
		for k, av := range a {
			bv, ok := bm[k]
			if !ok || !equal(av, bv) {
				return false
			}
		}
		return true
	}
	return false
}

// depth returns the nesting depth of a decoded JSON value (a scalar is 0,
// an object or array holding scalars 1).
func depth(v any) int {
	d := 0
	switch v := v.(type) {
	case map[string]any:
		for _, x := range v {
			d = max(d, depth(x))
		}
		return d + 1
	case []any:
		for _, x := range v {
			d = max(d, depth(x))
		}
		return d + 1
	}
	return 0
}
