// Package sqlrow holds the row encodings the two SQL backends (sqlite and
// postgres) share: devices in the same columns, times as Unix nanoseconds,
// and the "{ns}.{id}" cursor of alert and command listings.
package sqlrow

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/fieldhub/fieldhub/internal/store"
)

// DeviceColumns are the columns of the devices table, in the order of
// DeviceArgs and ScanDevice.
const DeviceColumns = `id, name, labels, gateway, auth, created_at, password_hash,
	cert_serial, cert_fingerprint, cert_not_after, credentials_version, last_seen`

// DeviceArgs returns the column values of d in DeviceColumns order.
func DeviceArgs(d store.Device) ([]any, error) {
	labels := []byte("{}")
	if len(d.Labels) > 0 {
		var err error
		if labels, err = json.Marshal(d.Labels); err != nil {
			return nil, fmt.Errorf("encoding labels: %w", err)
		}
	}
	return []any{d.ID, d.Name, string(labels), d.Gateway, string(d.Auth), UnixNano(d.CreatedAt),
		d.PasswordHash, d.CertSerial, d.CertFingerprint, UnixNano(d.CertNotAfter),
		d.CredentialsVersion, UnixNano(d.LastSeen)}, nil
}

// ScanDevice reads a row of DeviceColumns through scan (a row's Scan).
func ScanDevice(scan func(dest ...any) error) (store.Device, error) {
	var (
		d                           store.Device
		labels, auth                string
		created, notAfter, lastSeen int64
	)
	err := scan(&d.ID, &d.Name, &labels, &d.Gateway, &auth, &created, &d.PasswordHash,
		&d.CertSerial, &d.CertFingerprint, &notAfter, &d.CredentialsVersion, &lastSeen)
	if err != nil {
		return store.Device{}, err
	}
	d.Auth = store.AuthKind(auth)
	if labels != "" && labels != "{}" {
		if err := json.Unmarshal([]byte(labels), &d.Labels); err != nil {
			return store.Device{}, fmt.Errorf("decoding labels of %q: %w", d.ID, err)
		}
	}
	d.CreatedAt = FromUnixNano(created)
	d.CertNotAfter = FromUnixNano(notAfter)
	d.LastSeen = FromUnixNano(lastSeen)
	return d, nil
}

// UnixNano maps the zero time to 0 (its UnixNano is undefined).
func UnixNano(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

// FromUnixNano maps 0 to the zero time and other values to UTC times.
func FromUnixNano(n int64) time.Time {
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n).UTC()
}

// FormatCursor returns "{ns}.{id}": the time and the arrival (or
// creation) number of the last row a listing returned.
func FormatCursor(ns, id int64) string {
	return strconv.FormatInt(ns, 10) + "." + strconv.FormatInt(id, 10)
}

// ParseCursor reads a FormatCursor cursor; ok is false when s is malformed.
func ParseCursor(s string) (ns, id int64, ok bool) {
	a, b, found := strings.Cut(s, ".")
	if !found {
		return 0, 0, false
	}
	ns, err1 := strconv.ParseInt(a, 10, 64)
	id, err2 := strconv.ParseInt(b, 10, 64)
	return ns, id, err1 == nil && err2 == nil && id > 0
}
