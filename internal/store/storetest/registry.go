package storetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/fieldhub/fieldhub/internal/store"
)

// TestRegistry checks a store.Registry backend. open must return a new,
// empty registry for each call and arrange its own cleanup (t.Cleanup).
//
// What it holds every backend to, beyond the interface comments:
//   - ids sort in byte order (PostgreSQL: COLLATE "C");
//   - Prefix is literal: '_' and '%' match only themselves;
//   - time fields keep at least microsecond precision, the zero time comes
//     back as the zero time, and instants compare Equal whatever the zone;
//   - nil and empty Labels are interchangeable; GetDevice returns a copy;
//   - SetLastSeen ignores ids that are not registered.
func TestRegistry(t *testing.T, open func(t *testing.T) store.Registry) {
	t.Helper()
	runSuite(t, open, []subtest[store.Registry]{
		{"CreateGet", regCreateGet},
		{"CreateExists", regCreateExists},
		{"ConcurrentCreate", regConcurrentCreate},
		{"GetNotFound", regGetNotFound},
		{"Labels", regLabels},
		{"ZeroTimes", regZeroTimes},
		{"List", regList},
		{"ListPaging", regListPaging},
		{"ListPrefix", regListPrefix},
		{"Update", regUpdate},
		{"UpdateNotFound", regUpdateNotFound},
		{"Delete", regDelete},
		{"SetLastSeen", regSetLastSeen},
	})
}

// regT is the time base of the registry tests: microsecond precision, in a
// zone other than UTC so that a backend comparing zones would fail.
var regT = time.Date(2024, 5, 17, 13, 4, 5, 123456000, time.FixedZone("CEST", 2*3600))

func regDevice(id string) store.Device {
	return store.Device{
		ID:                 id,
		Name:               "Device " + id,
		Labels:             map[string]string{"site": "north", "floor": "2"},
		Gateway:            "",
		Auth:               store.AuthPassword,
		CreatedAt:          regT,
		PasswordHash:       "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0c2FsdA$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaGhhc2g",
		CredentialsVersion: 1,
	}
}

// regEqual reports the first difference between two devices, or "".
func regEqual(got, want store.Device) string {
	switch {
	case got.ID != want.ID:
		return fmt.Sprintf("ID = %q, want %q", got.ID, want.ID)
	case got.Name != want.Name:
		return fmt.Sprintf("Name = %q, want %q", got.Name, want.Name)
	case !maps.Equal(got.Labels, want.Labels): // nil equals empty
		return fmt.Sprintf("Labels = %v, want %v", got.Labels, want.Labels)
	case got.Gateway != want.Gateway:
		return fmt.Sprintf("Gateway = %q, want %q", got.Gateway, want.Gateway)
	case got.Auth != want.Auth:
		return fmt.Sprintf("Auth = %q, want %q", got.Auth, want.Auth)
	case !got.CreatedAt.Equal(want.CreatedAt) || got.CreatedAt.IsZero() != want.CreatedAt.IsZero():
		return fmt.Sprintf("CreatedAt = %v, want %v", got.CreatedAt, want.CreatedAt)
	case got.PasswordHash != want.PasswordHash:
		return fmt.Sprintf("PasswordHash = %q, want %q", got.PasswordHash, want.PasswordHash)
	case got.CertSerial != want.CertSerial:
		return fmt.Sprintf("CertSerial = %q, want %q", got.CertSerial, want.CertSerial)
	case got.CertFingerprint != want.CertFingerprint:
		return fmt.Sprintf("CertFingerprint = %q, want %q", got.CertFingerprint, want.CertFingerprint)
	case !got.CertNotAfter.Equal(want.CertNotAfter) || got.CertNotAfter.IsZero() != want.CertNotAfter.IsZero():
		return fmt.Sprintf("CertNotAfter = %v, want %v", got.CertNotAfter, want.CertNotAfter)
	case got.CredentialsVersion != want.CredentialsVersion:
		return fmt.Sprintf("CredentialsVersion = %d, want %d", got.CredentialsVersion, want.CredentialsVersion)
	case !got.LastSeen.Equal(want.LastSeen) || got.LastSeen.IsZero() != want.LastSeen.IsZero():
		return fmt.Sprintf("LastSeen = %v, want %v", got.LastSeen, want.LastSeen)
	}
	return ""
}

func regMustCreate(ctx context.Context, t *testing.T, r store.Registry, d store.Device) {
	t.Helper()
	if err := r.CreateDevice(ctx, d); err != nil {
		t.Fatalf("CreateDevice(%q) = %v", d.ID, err)
	}
}

func regIDs(ds []store.Device) []string {
	ids := make([]string, len(ds))
	for i, d := range ds {
		ids[i] = d.ID
	}
	return ids
}

func regCreateGet(ctx context.Context, t *testing.T, r store.Registry) {
	tests := []store.Device{
		regDevice("sensor-1"),
		func() store.Device {
			d := regDevice("cam:01.A_b")
			d.Auth = store.AuthCertificate
			d.PasswordHash = ""
			d.CertSerial = "9f3c0a1b2c3d4e5f60718293a4b5c6d7"
			d.CertFingerprint = "4a5e1e4baab89f3a32518a88c31bc87f618f76673e2cc77ab2127b7afdeda33b"
			d.CertNotAfter = regT.Add(365 * 24 * time.Hour)
			d.Gateway = "sensor-1"
			d.CredentialsVersion = 7
			d.LastSeen = regT.Add(time.Hour)
			return d
		}(),
		{ID: "minimal", Auth: store.AuthPassword}, // zero times, no labels
	}
	for _, want := range tests {
		regMustCreate(ctx, t, r, want)
	}
	for _, want := range tests {
		got, err := r.GetDevice(ctx, want.ID)
		if err != nil {
			t.Fatalf("GetDevice(%q) = %v", want.ID, err)
		}
		if diff := regEqual(got, want); diff != "" {
			t.Errorf("GetDevice(%q): %s", want.ID, diff)
		}
	}
	// The returned value is a copy.
	got, _ := r.GetDevice(ctx, "sensor-1")
	got.Labels["site"] = "changed"
	again, _ := r.GetDevice(ctx, "sensor-1")
	if again.Labels["site"] != "north" {
		t.Errorf("changing a returned device's labels changed the store: site = %q", again.Labels["site"])
	}
}

func regCreateExists(ctx context.Context, t *testing.T, r store.Registry) {
	d := regDevice("dup")
	regMustCreate(ctx, t, r, d)
	d.Name = "other"
	if err := r.CreateDevice(ctx, d); !errors.Is(err, store.ErrExists) {
		t.Fatalf("second CreateDevice(%q) = %v, want ErrExists", d.ID, err)
	}
	got, err := r.GetDevice(ctx, "dup")
	if err != nil || got.Name != "Device dup" {
		t.Fatalf("after refused create: GetDevice = %q, %v; want the first device kept", got.Name, err)
	}
}

func regConcurrentCreate(ctx context.Context, t *testing.T, r store.Registry) {
	const n = 8
	var (
		wg     sync.WaitGroup
		mu     sync.Mutex
		ok     int
		exists int
		other  []error
	)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			d := regDevice("race")
			d.Name = fmt.Sprint(i)
			err := r.CreateDevice(ctx, d)
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				ok++
			case errors.Is(err, store.ErrExists):
				exists++
			default:
				other = append(other, err)
			}
		}()
	}
	wg.Wait()
	if ok != 1 || exists != n-1 || len(other) > 0 {
		t.Fatalf("%d concurrent creates of one id: %d ok, %d ErrExists, other errors %v; want 1, %d, none", n, ok, exists, other, n-1)
	}
}

func regGetNotFound(ctx context.Context, t *testing.T, r store.Registry) {
	for _, id := range []string{"missing", "", "a'; DROP TABLE devices; --"} {
		if _, err := r.GetDevice(ctx, id); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("GetDevice(%q) = %v, want ErrNotFound", id, err)
		}
	}
}

func regLabels(ctx context.Context, t *testing.T, r store.Registry) {
	tests := []struct {
		name   string
		labels map[string]string
	}{
		{"nil", nil},
		{"empty", map[string]string{}},
		{"one", map[string]string{"k": "v"}},
		{"empty value", map[string]string{"k": ""}},
		{"unicode", map[string]string{"ort": "Zürich – 東京 🚀"}},
		{"json chars", map[string]string{`q"uote`: `back\slash`, "nl": "a\nb", "brace": "{}[]"}},
		{"many", func() map[string]string {
			m := map[string]string{}
			for i := range 32 {
				m[fmt.Sprintf("key%02d", i)] = fmt.Sprintf("value-%d", i)
			}
			return m
		}()},
	}
	for i, tt := range tests {
		d := regDevice(fmt.Sprintf("labels-%d", i))
		d.Labels = tt.labels
		regMustCreate(ctx, t, r, d)
		got, err := r.GetDevice(ctx, d.ID)
		if err != nil {
			t.Fatalf("%s: GetDevice = %v", tt.name, err)
		}
		if !maps.Equal(got.Labels, tt.labels) {
			t.Errorf("%s: labels round trip = %v, want %v", tt.name, got.Labels, tt.labels)
		}
	}
}

func regZeroTimes(ctx context.Context, t *testing.T, r store.Registry) {
	d := regDevice("zero")
	d.CreatedAt, d.CertNotAfter, d.LastSeen = time.Time{}, time.Time{}, time.Time{}
	regMustCreate(ctx, t, r, d)
	got, err := r.GetDevice(ctx, "zero")
	if err != nil {
		t.Fatal(err)
	}
	if !got.CreatedAt.IsZero() || !got.CertNotAfter.IsZero() || !got.LastSeen.IsZero() {
		t.Errorf("zero times came back as CreatedAt=%v CertNotAfter=%v LastSeen=%v", got.CreatedAt, got.CertNotAfter, got.LastSeen)
	}
	// Far past and far future instants survive too.
	d2 := regDevice("far")
	d2.CreatedAt = time.Date(1970, 1, 1, 0, 0, 0, 1000, time.UTC)
	d2.CertNotAfter = time.Date(2199, 12, 31, 23, 59, 59, 999999000, time.UTC)
	regMustCreate(ctx, t, r, d2)
	got, err = r.GetDevice(ctx, "far")
	if err != nil {
		t.Fatal(err)
	}
	if diff := regEqual(got, d2); diff != "" {
		t.Errorf("far times: %s", diff)
	}
}

func regList(ctx context.Context, t *testing.T, r store.Registry) {
	if got, err := r.ListDevices(ctx, store.ListOptions{}); err != nil || len(got) != 0 {
		t.Fatalf("ListDevices on an empty registry = %v, %v; want none", regIDs(got), err)
	}
	// Created out of order; byte order puts digits and upper case first.
	ids := []string{"b", "a", "Z", "a-2", "a.1", "a:3", "a_4", "0", "aa", "b-1"}
	for _, id := range ids {
		regMustCreate(ctx, t, r, regDevice(id))
	}
	want := []string{"0", "Z", "a", "a-2", "a.1", "a:3", "a_4", "aa", "b", "b-1"}
	got, err := r.ListDevices(ctx, store.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(regIDs(got), want) {
		t.Fatalf("ListDevices({}) = %v, want %v", regIDs(got), want)
	}
	for _, d := range got {
		if diff := regEqual(d, regDevice(d.ID)); diff != "" {
			t.Errorf("ListDevices: device %q: %s", d.ID, diff)
		}
	}
}

func regListPaging(ctx context.Context, t *testing.T, r store.Registry) {
	var all []string
	for i := range 25 {
		id := fmt.Sprintf("dev-%03d", i)
		all = append(all, id)
		regMustCreate(ctx, t, r, regDevice(id))
	}
	tests := []struct {
		o    store.ListOptions
		want []string
	}{
		{store.ListOptions{Limit: 3}, all[:3]},
		{store.ListOptions{After: "dev-003", Limit: 2}, all[4:6]},
		{store.ListOptions{After: "dev-0035"}, all[4:]}, // After need not exist
		{store.ListOptions{After: "dev-024"}, nil},
		{store.ListOptions{After: "zzz", Limit: 5}, nil},
		{store.ListOptions{Limit: 100}, all},
		{store.ListOptions{After: "a"}, all},
	}
	for _, tt := range tests {
		got, err := r.ListDevices(ctx, tt.o)
		if err != nil {
			t.Fatalf("ListDevices(%+v) = %v", tt.o, err)
		}
		if !slices.Equal(regIDs(got), tt.want) {
			t.Errorf("ListDevices(%+v) = %v, want %v", tt.o, regIDs(got), tt.want)
		}
	}
	// Walking pages visits every device once.
	var seen []string
	o := store.ListOptions{Limit: 7}
	for range 10 {
		page, err := r.ListDevices(ctx, o)
		if err != nil {
			t.Fatal(err)
		}
		if len(page) == 0 {
			break
		}
		seen = append(seen, regIDs(page)...)
		o.After = page[len(page)-1].ID
	}
	if !slices.Equal(seen, all) {
		t.Errorf("paging by 7 visited %v, want %v", seen, all)
	}
}

func regListPrefix(ctx context.Context, t *testing.T, r store.Registry) {
	for _, id := range []string{"plant1.a", "plant1.b", "plant1.c", "plant10.a", "plant2.a", "plant_x", "plantAx", "p", "q"} {
		regMustCreate(ctx, t, r, regDevice(id))
	}
	tests := []struct {
		o    store.ListOptions
		want []string
	}{
		{store.ListOptions{Prefix: "plant1."}, []string{"plant1.a", "plant1.b", "plant1.c"}},
		{store.ListOptions{Prefix: "plant1"}, []string{"plant1.a", "plant1.b", "plant1.c", "plant10.a"}},
		{store.ListOptions{Prefix: "plant1.", Limit: 2}, []string{"plant1.a", "plant1.b"}},
		{store.ListOptions{Prefix: "plant1.", After: "plant1.a"}, []string{"plant1.b", "plant1.c"}},
		{store.ListOptions{Prefix: "plant1.", After: "plant0"}, []string{"plant1.a", "plant1.b", "plant1.c"}},
		{store.ListOptions{Prefix: "plant1.", After: "plant1.c"}, nil},
		{store.ListOptions{Prefix: "plant_"}, []string{"plant_x"}}, // '_' is not a wildcard
		{store.ListOptions{Prefix: "plant%"}, nil},
		{store.ListOptions{Prefix: "p"}, []string{"p", "plant1.a", "plant1.b", "plant1.c", "plant10.a", "plant2.a", "plantAx", "plant_x"}},
		{store.ListOptions{Prefix: "nothing"}, nil},
	}
	for _, tt := range tests {
		got, err := r.ListDevices(ctx, tt.o)
		if err != nil {
			t.Fatalf("ListDevices(%+v) = %v", tt.o, err)
		}
		if !slices.Equal(regIDs(got), tt.want) {
			t.Errorf("ListDevices(%+v) = %v, want %v", tt.o, regIDs(got), tt.want)
		}
	}
}

func regUpdate(ctx context.Context, t *testing.T, r store.Registry) {
	d := regDevice("upd")
	regMustCreate(ctx, t, r, d)
	regMustCreate(ctx, t, r, regDevice("neighbour"))
	d.Name = "renamed"
	d.Labels = map[string]string{"new": "label"}
	d.Gateway = "neighbour"
	d.Auth = store.AuthCertificate
	d.PasswordHash = ""
	d.CertSerial = "01"
	d.CertFingerprint = "ab"
	d.CertNotAfter = regT.Add(48 * time.Hour)
	d.CredentialsVersion = 2
	d.LastSeen = regT.Add(time.Minute)
	if err := r.UpdateDevice(ctx, d); err != nil {
		t.Fatalf("UpdateDevice = %v", err)
	}
	got, err := r.GetDevice(ctx, "upd")
	if err != nil {
		t.Fatal(err)
	}
	if diff := regEqual(got, d); diff != "" {
		t.Errorf("after UpdateDevice: %s", diff)
	}
	// Clearing labels works too.
	d.Labels = nil
	if err := r.UpdateDevice(ctx, d); err != nil {
		t.Fatal(err)
	}
	if got, _ := r.GetDevice(ctx, "upd"); len(got.Labels) != 0 {
		t.Errorf("labels after clearing = %v, want none", got.Labels)
	}
	if got, _ := r.GetDevice(ctx, "neighbour"); regEqual(got, regDevice("neighbour")) != "" {
		t.Errorf("UpdateDevice changed another device: %s", regEqual(got, regDevice("neighbour")))
	}
}

func regUpdateNotFound(ctx context.Context, t *testing.T, r store.Registry) {
	if err := r.UpdateDevice(ctx, regDevice("ghost")); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("UpdateDevice(missing) = %v, want ErrNotFound", err)
	}
	if _, err := r.GetDevice(ctx, "ghost"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("UpdateDevice(missing) created it: GetDevice = %v", err)
	}
}

func regDelete(ctx context.Context, t *testing.T, r store.Registry) {
	regMustCreate(ctx, t, r, regDevice("del"))
	regMustCreate(ctx, t, r, regDevice("keep"))
	if err := r.DeleteDevice(ctx, "del"); err != nil {
		t.Fatalf("DeleteDevice = %v", err)
	}
	if _, err := r.GetDevice(ctx, "del"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("GetDevice after delete = %v, want ErrNotFound", err)
	}
	if err := r.DeleteDevice(ctx, "del"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("second DeleteDevice = %v, want ErrNotFound", err)
	}
	got, err := r.ListDevices(ctx, store.ListOptions{})
	if err != nil || !slices.Equal(regIDs(got), []string{"keep"}) {
		t.Errorf("ListDevices after delete = %v, %v; want [keep]", regIDs(got), err)
	}
	// The id can be used again.
	regMustCreate(ctx, t, r, regDevice("del"))
}

func regSetLastSeen(ctx context.Context, t *testing.T, r store.Registry) {
	for _, id := range []string{"s1", "s2", "s3"} {
		regMustCreate(ctx, t, r, regDevice(id))
	}
	if err := r.SetLastSeen(ctx, nil); err != nil {
		t.Fatalf("SetLastSeen(nil) = %v", err)
	}
	t1, t2 := regT.Add(10*time.Second), regT.Add(20*time.Second+time.Microsecond)
	err := r.SetLastSeen(ctx, map[string]time.Time{"s1": t1, "s2": t2, "unknown": t2})
	if err != nil {
		t.Fatalf("SetLastSeen = %v", err)
	}
	want := map[string]time.Time{"s1": t1, "s2": t2, "s3": {}}
	for id, w := range want {
		got, err := r.GetDevice(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if !got.LastSeen.Equal(w) || got.LastSeen.IsZero() != w.IsZero() {
			t.Errorf("%s: LastSeen = %v, want %v", id, got.LastSeen, w)
		}
		// Nothing else changed.
		exp := regDevice(id)
		exp.LastSeen = w
		if diff := regEqual(got, exp); diff != "" {
			t.Errorf("%s after SetLastSeen: %s", id, diff)
		}
	}
	if _, err := r.GetDevice(ctx, "unknown"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("SetLastSeen created an unknown device: GetDevice = %v", err)
	}
	// A later call overwrites.
	t3 := t2.Add(time.Hour)
	if err := r.SetLastSeen(ctx, map[string]time.Time{"s1": t3}); err != nil {
		t.Fatal(err)
	}
	if got, _ := r.GetDevice(ctx, "s1"); !got.LastSeen.Equal(t3) {
		t.Errorf("s1: LastSeen = %v, want %v", got.LastSeen, t3)
	}
}

// TestKV checks a store.KV backend. open must return a new, empty KV for
// each call and arrange its own cleanup.
func TestKV(t *testing.T, open func(t *testing.T) store.KV) {
	t.Helper()
	tests := []struct {
		name string
		fn   func(ctx context.Context, t *testing.T, kv store.KV)
	}{
		{"GetNotFound", kvGetNotFound},
		{"RoundTrip", kvRoundTrip},
		{"Overwrite", kvOverwrite},
		{"Copy", kvCopy},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			tt.fn(ctx, t, open(t))
		})
	}
}

func kvGetNotFound(ctx context.Context, t *testing.T, kv store.KV) {
	for _, k := range []string{"missing", "", "pki/ca"} {
		if v, err := kv.Get(ctx, k); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("Get(%q) = %q, %v; want ErrNotFound", k, v, err)
		}
	}
}

func kvRoundTrip(ctx context.Context, t *testing.T, kv store.KV) {
	big := bytes.Repeat([]byte{0, 1, 2, 0xff, 0xfe}, 200_000) // 1 MB
	tests := []struct {
		key   string
		value []byte
	}{
		{"text", []byte("hello")},
		{"binary", []byte{0, 0xff, 0, 0x80, '\n', 0}},
		{"empty", []byte{}},
		{"pki/ca.json", []byte(`{"version":1}`)},
		{"unicode/ключ", []byte("значение")},
		{"big", big},
	}
	for _, tt := range tests {
		if err := kv.Put(ctx, tt.key, tt.value); err != nil {
			t.Fatalf("Put(%q) = %v", tt.key, err)
		}
	}
	for _, tt := range tests {
		got, err := kv.Get(ctx, tt.key)
		if err != nil {
			t.Fatalf("Get(%q) = %v", tt.key, err)
		}
		if !bytes.Equal(got, tt.value) {
			t.Errorf("Get(%q) = %d bytes, want %d bytes equal to those put", tt.key, len(got), len(tt.value))
		}
	}
}

func kvOverwrite(ctx context.Context, t *testing.T, kv store.KV) {
	for _, v := range []string{"one", "two, longer", "3"} {
		if err := kv.Put(ctx, "k", []byte(v)); err != nil {
			t.Fatal(err)
		}
		got, err := kv.Get(ctx, "k")
		if err != nil || string(got) != v {
			t.Fatalf("Get after Put(%q) = %q, %v", v, got, err)
		}
	}
	if err := kv.Put(ctx, "other", []byte("x")); err != nil {
		t.Fatal(err)
	}
	if got, _ := kv.Get(ctx, "k"); string(got) != "3" {
		t.Errorf("Put of another key changed k to %q", got)
	}
}

func kvCopy(ctx context.Context, t *testing.T, kv store.KV) {
	v := []byte("original")
	if err := kv.Put(ctx, "c", v); err != nil {
		t.Fatal(err)
	}
	copy(v, "CHANGED!")
	got, _ := kv.Get(ctx, "c")
	if string(got) != "original" {
		t.Fatalf("changing the slice passed to Put changed the stored value to %q", got)
	}
	got[0] = 'X'
	if again, _ := kv.Get(ctx, "c"); string(again) != "original" {
		t.Fatalf("changing a slice returned by Get changed the stored value to %q", again)
	}
}
