package postgres

import (
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/fieldhub/fieldhub/internal/fhtest"
	"github.com/fieldhub/fieldhub/internal/store"
	"github.com/fieldhub/fieldhub/internal/store/storetest"
)

// openURL opens the store at url and closes it at the end of the test.
func openURL(t *testing.T, url string) *DB {
	t.Helper()
	db, err := Open(t.Context(), url, Options{})
	if err != nil {
		t.Fatalf("Open = %v", err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// openTemp opens a store on a new, empty database.
func openTemp(t *testing.T) *DB {
	t.Helper()
	return openURL(t, fhtest.Postgres(t))
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
// arrival, whatever their times; resends do not count.
func TestAlertRetention(t *testing.T) {
	db := openTemp(t)
	defer func(n int64) { maxAlerts = n }(maxAlerts)
	maxAlerts = 3
	ctx := t.Context()
	base := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for i := range 5 {
		a := store.Alert{Device: "d", TS: base.Add(-time.Duration(i) * time.Hour), Rule: fmt.Sprint(i), Severity: "info", State: "raised"}
		if err := db.AppendAlerts(ctx, []store.Alert{a, a}); err != nil {
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
	var n int64
	if err := db.pool.QueryRow(ctx, "SELECT n FROM alert_count").Scan(&n); err != nil || n != 3 {
		t.Errorf("alert_count = %d, %v; want 3", n, err)
	}
}

// TestAlertsConcurrent: hubs appending at once keep the count exact and
// the bound, and resends racing each other are stored once.
func TestAlertsConcurrent(t *testing.T) {
	url := fhtest.Postgres(t)
	dbs := []*DB{openURL(t, url), openURL(t, url)}
	defer func(n int64) { maxAlerts = n }(maxAlerts)
	maxAlerts = 50
	ctx := t.Context()
	base := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	var wg sync.WaitGroup
	errs := make(chan error, 40)
	for w := range 8 {
		wg.Go(func() {
			db := dbs[w%2]
			for i := range 10 {
				// Every worker sends the same 10 batches, in different orders.
				k := (i + w) % 10
				var batch []store.Alert
				for j := range 3 {
					batch = append(batch, store.Alert{Device: "d", TS: base.Add(time.Duration(k*3+j) * time.Second),
						Rule: "r", Severity: "info", State: "raised"})
				}
				if w%2 == 1 {
					batch[0], batch[2] = batch[2], batch[0]
				}
				if err := db.AppendAlerts(ctx, batch); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("AppendAlerts = %v", err)
	}
	var n, rows int64
	if err := dbs[0].pool.QueryRow(ctx, "SELECT (SELECT n FROM alert_count), (SELECT count(*) FROM alerts)").Scan(&n, &rows); err != nil {
		t.Fatal(err)
	}
	if n != 30 || rows != 30 {
		t.Errorf("after 30 distinct alerts sent 8 times each: alert_count = %d, rows = %d; want 30, 30", n, rows)
	}
}

// TestUpdateCommandRace: two hubs on one database moving the same command
// from queued to sent: exactly one wins, the other gets ErrConflict.
func TestUpdateCommandRace(t *testing.T) {
	url := fhtest.Postgres(t)
	a, b := openURL(t, url), openURL(t, url)
	ctx := t.Context()
	now := time.Date(2026, 11, 27, 10, 0, 0, 123456789, time.UTC)
	const rounds = 50
	for i := range rounds {
		c := store.Command{ID: fmt.Sprintf("c%d", i), Device: "d", Name: "reboot", Params: []byte(`{}`),
			State: store.CommandQueued, CreatedAt: now, ExpiresAt: now.Add(time.Hour)}
		if err := a.CreateCommand(ctx, c); err != nil {
			t.Fatal(err)
		}
		var (
			wg      sync.WaitGroup
			results [2]error
			start   = make(chan struct{})
		)
		for j, db := range []*DB{a, b} {
			wg.Go(func() {
				u := c
				u.State, u.SentAt, u.Attempts = store.CommandSent, now.Add(time.Duration(j+1)*time.Second), j+1
				<-start
				results[j] = db.UpdateCommand(ctx, u, store.CommandQueued)
			})
		}
		close(start)
		wg.Wait()
		var won, lost int
		for _, err := range results {
			switch {
			case err == nil:
				won++
			case errors.Is(err, store.ErrConflict):
				lost++
			default:
				t.Fatalf("round %d: UpdateCommand = %v", i, err)
			}
		}
		if won != 1 || lost != 1 {
			t.Fatalf("round %d: %d won, %d conflicted (%v); want 1 and 1", i, won, lost, results)
		}
		got, err := b.GetCommand(ctx, c.ID)
		if err != nil {
			t.Fatal(err)
		}
		winner := 0
		if results[0] != nil {
			winner = 1
		}
		if got.Attempts != winner+1 || !got.SentAt.Equal(now.Add(time.Duration(winner+1)*time.Second)) {
			t.Fatalf("round %d: stored attempts %d, sent %v; want the winner's (%d)", i, got.Attempts, got.SentAt, winner+1)
		}
	}
}

// TestPutTwinDocRace: hubs writing the same document from the same
// version: exactly one wins, from version 0 (insert) and from 1 (update).
func TestPutTwinDocRace(t *testing.T) {
	url := fhtest.Postgres(t)
	dbs := []*DB{openURL(t, url), openURL(t, url)}
	ctx := t.Context()
	for round := range 20 {
		device := fmt.Sprintf("d%d", round)
		for prev := int64(0); prev < 2; prev++ {
			var (
				wg      sync.WaitGroup
				mu      sync.Mutex
				won     int
				start   = make(chan struct{})
				unusual []error
			)
			for w := range 4 {
				wg.Go(func() {
					doc := store.TwinDoc{Version: prev + 1, State: []byte(fmt.Sprintf(`{"w":%d}`, w)), UpdatedAt: time.Now()}
					<-start
					err := dbs[w%2].PutTwinDoc(ctx, device, store.TwinDesired, prev, doc)
					mu.Lock()
					defer mu.Unlock()
					switch {
					case err == nil:
						won++
					case !errors.Is(err, store.ErrConflict):
						unusual = append(unusual, err)
					}
				})
			}
			close(start)
			wg.Wait()
			if won != 1 || len(unusual) > 0 {
				t.Fatalf("%s from version %d: %d won, errors %v; want 1 and only ErrConflict", device, prev, won, unusual)
			}
		}
	}
}

// TestOpenConcurrent: instances opening a fresh database together apply
// each migration once, and both succeed.
func TestOpenConcurrent(t *testing.T) {
	url := fhtest.Postgres(t)
	const n = 4
	var (
		wg   sync.WaitGroup
		dbs  [n]*DB
		errs [n]error
	)
	for i := range n {
		wg.Go(func() { dbs[i], errs[i] = Open(t.Context(), url, Options{}) })
	}
	wg.Wait()
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("Open %d = %v", i, errs[i])
		}
		defer dbs[i].Close()
	}
	ms, err := migrations()
	if err != nil {
		t.Fatal(err)
	}
	var rows, distinct int
	err = dbs[0].pool.QueryRow(t.Context(), "SELECT count(*), count(DISTINCT version) FROM schema_migrations").Scan(&rows, &distinct)
	if err != nil {
		t.Fatal(err)
	}
	if rows != len(ms) || distinct != len(ms) {
		t.Errorf("schema_migrations has %d rows, %d versions; want %d of each", rows, distinct, len(ms))
	}
	// Every instance works on the schema.
	for i, db := range dbs {
		if err := db.Put(t.Context(), fmt.Sprint(i), []byte("v")); err != nil {
			t.Errorf("Put through instance %d = %v", i, err)
		}
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
	}{{"gw", true}, {"c", false}, {"", false}, {"nobody", false}, {"bad\xff", false}} {
		if got, err := db.HasChildren(ctx, tt.id); got != tt.want || err != nil {
			t.Errorf("HasChildren(%q) = %v, %v; want %v", tt.id, got, err, tt.want)
		}
	}
}

// TestTextPostgresRefuses: strings PostgreSQL cannot hold as text are
// not stored keys: reads find nothing instead of failing.
func TestTextPostgresRefuses(t *testing.T) {
	db := openTemp(t)
	ctx := t.Context()
	for _, id := range []string{"bad\xff", "nul\x00"} {
		if _, err := db.GetDevice(ctx, id); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("GetDevice(%q) = %v, want ErrNotFound", id, err)
		}
		if _, err := db.Get(ctx, id); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("Get(%q) = %v, want ErrNotFound", id, err)
		}
		if _, err := db.GetCommand(ctx, id); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("GetCommand(%q) = %v, want ErrNotFound", id, err)
		}
		if got, err := db.ListDevices(ctx, store.ListOptions{Prefix: id}); err != nil || len(got) != 0 {
			t.Errorf("ListDevices(Prefix %q) = %v, %v; want none", id, got, err)
		}
	}
}

// TestPrefixMultibyte: prefixes ending in any code point list exactly the
// ids that start with them.
func TestPrefixMultibyte(t *testing.T) {
	db := openTemp(t)
	ctx := t.Context()
	ids := []string{"ÿ", "ÿa", "Āa", "\ud7ffx", "\ue000", "\U0010ffff", "\U0010ffffz", "a\U0010ffff"}
	for _, id := range ids {
		if err := db.CreateDevice(ctx, store.Device{ID: id, Auth: store.AuthPassword}); err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct {
		prefix string
		want   string
	}{
		{"ÿ", "[ÿ ÿa]"},
		{"\ud7ff", "[\ud7ffx]"},
		{"\U0010ffff", "[\U0010ffff \U0010ffffz]"},
		{"a", "[a\U0010ffff]"},
	}
	for _, tt := range tests {
		got, err := db.ListDevices(ctx, store.ListOptions{Prefix: tt.prefix})
		if err != nil {
			t.Fatalf("ListDevices(Prefix %q) = %v", tt.prefix, err)
		}
		var gotIDs []string
		for _, d := range got {
			gotIDs = append(gotIDs, d.ID)
		}
		if fmt.Sprint(gotIDs) != tt.want {
			t.Errorf("ListDevices(Prefix %q) = %v, want %s", tt.prefix, gotIDs, tt.want)
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
		{"aÿ", "aĀ", true},
		{"a\ud7ff", "a\ue000", true},
		{"a\U0010ffff", "b", true},
		{"\U0010ffff\U0010ffff", "", false},
		{"", "", false},
	}
	for _, tt := range tests {
		got, ok := prefixEnd(tt.in)
		if got != tt.want || ok != tt.ok {
			t.Errorf("prefixEnd(%q) = %q, %v; want %q, %v", tt.in, got, ok, tt.want, tt.ok)
		}
	}
}

// TestReopenKeepsData: a second Open of a migrated database applies
// nothing and sees the data.
func TestReopenKeepsData(t *testing.T) {
	url := fhtest.Postgres(t)
	ctx := t.Context()
	db := openURL(t, url)
	if err := db.CreateDevice(ctx, store.Device{ID: "d1", Auth: store.AuthPassword, CreatedAt: time.Now()}); err != nil {
		t.Fatal(err)
	}
	db.Close()
	db = openURL(t, url)
	if _, err := db.GetDevice(ctx, "d1"); err != nil {
		t.Errorf("GetDevice after reopen = %v", err)
	}
}
