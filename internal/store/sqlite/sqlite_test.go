package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/fieldhub/fieldhub/internal/store"
	"github.com/fieldhub/fieldhub/internal/store/storetest"
)

func openTemp(t *testing.T) *DB {
	t.Helper()
	db, err := Open(filepath.Join(t.TempDir(), "registry.db"))
	if err != nil {
		t.Fatalf("Open = %v", err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

func TestRegistry(t *testing.T) {
	storetest.TestRegistry(t, func(t *testing.T) store.Registry { return openTemp(t) })
}

func TestKV(t *testing.T) {
	storetest.TestKV(t, func(t *testing.T) store.KV { return openTemp(t) })
}

func TestAlerts(t *testing.T) {
	storetest.TestAlerts(t, func(t *testing.T) store.Alerts { return openTemp(t) })
}

func TestCommands(t *testing.T) {
	storetest.TestCommands(t, func(t *testing.T) store.Commands { return openTemp(t) })
}

func TestTwins(t *testing.T) {
	storetest.TestTwins(t, func(t *testing.T) store.Twins { return openTemp(t) })
}

// TestAlertRetention: appending beyond maxAlerts deletes the oldest by
// arrival, whatever their times.
func TestAlertRetention(t *testing.T) {
	db := openTemp(t)
	db.maxAlerts = 3
	ctx := t.Context()
	base := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for i := range 5 {
		a := store.Alert{Device: "d", TS: base.Add(-time.Duration(i) * time.Hour), Rule: fmt.Sprint(i), Severity: "info", State: "raised"}
		if err := db.AppendAlerts(ctx, []store.Alert{a}); err != nil {
			t.Fatal(err)
		}
	}
	p, err := db.ListAlerts(ctx, store.AlertQuery{})
	if err != nil {
		t.Fatal(err)
	}
	var rules []string
	for _, a := range p.Alerts {
		rules = append(rules, a.Rule)
	}
	if fmt.Sprint(rules) != "[2 3 4]" {
		t.Errorf("after 5 appends with room for 3: rules %v; want [2 3 4]", rules)
	}
}

func TestHasChildren(t *testing.T) {
	db := openTemp(t)
	ctx := t.Context()
	for _, d := range []store.Device{{ID: "gw", Auth: store.AuthPassword}, {ID: "c", Gateway: "gw", Auth: store.AuthPassword}} {
		if err := db.CreateDevice(ctx, d); err != nil {
			t.Fatal(err)
		}
	}
	for _, tt := range []struct {
		id   string
		want bool
	}{{"gw", true}, {"c", false}, {"", false}, {"nobody", false}} {
		if got, err := db.HasChildren(ctx, tt.id); got != tt.want || err != nil {
			t.Errorf("HasChildren(%q) = %v, %v; want %v", tt.id, got, err, tt.want)
		}
	}
}

func TestPragmas(t *testing.T) {
	db := openTemp(t)
	ctx := t.Context()
	tests := []struct {
		db     *sql.DB
		pragma string
		want   string
	}{
		{db.w, "journal_mode", "wal"},
		{db.w, "synchronous", "2"}, // FULL
		{db.w, "busy_timeout", fmt.Sprint(busyTimeoutMS)},
		{db.w, "user_version", fmt.Sprint(len(migrations))},
		{db.r, "journal_mode", "wal"},
		{db.r, "query_only", "1"},
	}
	for _, tt := range tests {
		var got string
		if err := tt.db.QueryRowContext(ctx, "PRAGMA "+tt.pragma).Scan(&got); err != nil {
			t.Fatalf("PRAGMA %s: %v", tt.pragma, err)
		}
		if got != tt.want {
			t.Errorf("PRAGMA %s = %s, want %s", tt.pragma, got, tt.want)
		}
	}
	// SetLastSeen restores FULL on the writer.
	if err := db.SetLastSeen(ctx, map[string]time.Time{"x": time.Now()}); err != nil {
		t.Fatal(err)
	}
	var sync string
	if err := db.w.QueryRowContext(ctx, "PRAGMA synchronous").Scan(&sync); err != nil || sync != "2" {
		t.Errorf("after SetLastSeen: PRAGMA synchronous = %s, %v; want 2", sync, err)
	}
}

func TestReopenKeepsData(t *testing.T) {
	ctx := t.Context()
	path := filepath.Join(t.TempDir(), "sub", "registry.db")
	db, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.CreateDevice(ctx, store.Device{ID: "d1", Auth: store.AuthPassword, CreatedAt: time.Now()}); err != nil {
		t.Fatal(err)
	}
	if err := db.Put(ctx, "k", []byte("v")); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Errorf("second Close = %v, want nil", err)
	}
	if _, err := db.GetDevice(ctx, "d1"); !errors.Is(err, store.ErrClosed) {
		t.Errorf("GetDevice after Close = %v, want ErrClosed", err)
	}
	if err := db.Put(ctx, "k", nil); !errors.Is(err, store.ErrClosed) {
		t.Errorf("Put after Close = %v, want ErrClosed", err)
	}

	db, err = Open(path)
	if err != nil {
		t.Fatalf("reopen: %v", err)
	}
	defer db.Close()
	if _, err := db.GetDevice(ctx, "d1"); err != nil {
		t.Errorf("GetDevice after reopen = %v", err)
	}
	if v, err := db.Get(ctx, "k"); err != nil || string(v) != "v" {
		t.Errorf("Get after reopen = %q, %v", v, err)
	}
	for _, p := range []string{path, filepath.Dir(path)} {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if perm := fi.Mode().Perm(); perm&0o077 != 0 {
			t.Errorf("%s has mode %v; want no group or other access", p, perm)
		}
	}
}

func TestNewerSchemaRefused(t *testing.T) {
	path := filepath.Join(t.TempDir(), "registry.db")
	db, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.w.Exec(fmt.Sprintf("PRAGMA user_version = %d", len(migrations)+1)); err != nil {
		t.Fatal(err)
	}
	db.Close()
	if db, err := Open(path); !errors.Is(err, ErrNewerSchema) {
		if db != nil {
			db.Close()
		}
		t.Fatalf("Open of a newer schema = %v, want ErrNewerSchema", err)
	}
}

func TestOpenBadPath(t *testing.T) {
	for _, p := range []string{"", filepath.Join(t.TempDir(), "a?b.db")} {
		if db, err := Open(p); err == nil {
			db.Close()
			t.Errorf("Open(%q) = nil error, want refusal", p)
		}
	}
}

func TestPrefixEnd(t *testing.T) {
	tests := []struct {
		in, want string
		ok       bool
	}{
		{"a", "b", true},
		{"ab", "ac", true},
		{"a\xff", "b", true},
		{"\xff\xff", "", false},
	}
	for _, tt := range tests {
		got, ok := prefixEnd(tt.in)
		if got != tt.want || ok != tt.ok {
			t.Errorf("prefixEnd(%q) = %q, %v; want %q, %v", tt.in, got, ok, tt.want, tt.ok)
		}
	}
}

// BenchmarkGetDevice is the per-CONNECT registry read.
func BenchmarkGetDevice(b *testing.B) {
	db, err := Open(filepath.Join(b.TempDir(), "registry.db"))
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	ctx := context.Background()
	for i := range 1000 {
		d := store.Device{ID: fmt.Sprintf("dev-%04d", i), Auth: store.AuthPassword, Labels: map[string]string{"a": "b"}}
		if err := db.CreateDevice(ctx, d); err != nil {
			b.Fatal(err)
		}
	}
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		if _, err := db.GetDevice(ctx, fmt.Sprintf("dev-%04d", i%1000)); err != nil {
			b.Fatal(err)
		}
	}
}
