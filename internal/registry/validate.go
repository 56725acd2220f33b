package registry

import (
	"errors"
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/fieldhub/fieldhub/internal/store"
	"github.com/fieldhub/fieldhub/topic"
)

// Limits on what a CreateRequest may carry.
const (
	MaxNameLength       = 256 // characters
	MaxLabels           = 32
	MaxLabelKeyLength   = 64  // bytes of [A-Za-z0-9._/-], starting with a letter or digit
	MaxLabelValueLength = 256 // bytes of UTF-8, no control characters
)

// ErrInvalid is matched (errors.Is) by every *ValidationError.
var ErrInvalid = errors.New("invalid request")

// ValidationError names the request field that was refused and why.
type ValidationError struct {
	Field  string // e.g. "id", "name", "labels[site]", "auth", "gateway", "csr"
	Reason string
	Err    error // the underlying error, if any (e.g. pki.ErrBadCSR)
}

// Error returns "invalid {field}: {reason}".
func (e *ValidationError) Error() string { return "invalid " + e.Field + ": " + e.Reason }

// Unwrap returns ErrInvalid and the underlying error.
func (e *ValidationError) Unwrap() []error {
	if e.Err != nil {
		return []error{ErrInvalid, e.Err}
	}
	return []error{ErrInvalid}
}

func invalid(field, format string, args ...any) error {
	return &ValidationError{Field: field, Reason: fmt.Sprintf(format, args...)}
}

// ReservedID is the client id of the broker's in-process client; no
// device may take it.
const ReservedID = "inline"

// validate checks everything about req that needs no store access and
// returns the auth kind to use.
func validate(req CreateRequest) (store.AuthKind, error) {
	if !topic.ValidDeviceID(req.ID) {
		return "", invalid("id", "must be 1 to %d characters of A-Z a-z 0-9 . _ : -", topic.MaxDeviceIDLength)
	}
	if req.ID == ReservedID {
		return "", invalid("id", "%q is reserved for the hub's own MQTT client", ReservedID)
	}
	if err := checkText("name", req.Name); err != nil {
		return "", err
	}
	if n := utf8.RuneCountInString(req.Name); n > MaxNameLength {
		return "", invalid("name", "%d characters, at most %d", n, MaxNameLength)
	}
	if len(req.Labels) > MaxLabels {
		return "", invalid("labels", "%d labels, at most %d", len(req.Labels), MaxLabels)
	}
	for k, v := range req.Labels {
		if !validLabelKey(k) {
			return "", invalid("labels", "key %q must be 1 to %d bytes of A-Z a-z 0-9 . _ / -, starting with a letter or digit", k, MaxLabelKeyLength)
		}
		if len(v) > MaxLabelValueLength {
			return "", invalid("labels["+k+"]", "value of %d bytes, at most %d", len(v), MaxLabelValueLength)
		}
		if err := checkText("labels["+k+"]", v); err != nil {
			return "", err
		}
	}
	kind := req.Auth
	switch kind {
	case "":
		kind = store.AuthPassword
	case store.AuthPassword, store.AuthCertificate:
	default:
		return "", invalid("auth", "unknown kind %q (password or certificate)", kind)
	}
	if len(req.CSR) > 0 && kind != store.AuthCertificate {
		return "", invalid("csr", "a CSR is only accepted with certificate auth")
	}
	if req.Gateway != "" {
		if !topic.ValidDeviceID(req.Gateway) {
			return "", invalid("gateway", "%q is not a device id", req.Gateway)
		}
		if req.Gateway == req.ID {
			return "", invalid("gateway", "a device cannot be its own gateway")
		}
	}
	return kind, nil
}

// checkText refuses invalid UTF-8 and control characters.
func checkText(field, s string) error {
	if !utf8.ValidString(s) {
		return invalid(field, "not valid UTF-8")
	}
	if strings.IndexFunc(s, unicode.IsControl) >= 0 {
		return invalid(field, "contains a control character")
	}
	return nil
}

func validLabelKey(k string) bool {
	if k == "" || len(k) > MaxLabelKeyLength {
		return false
	}
	for i := 0; i < len(k); i++ {
		c := k[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case i > 0 && (c == '.' || c == '_' || c == '/' || c == '-'):
		default:
			return false
		}
	}
	return true
}
