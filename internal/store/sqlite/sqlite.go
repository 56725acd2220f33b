// Package sqlite is the embedded registry store: store.Registry, store.KV,
// store.Alerts, store.Commands and store.Twins on one SQLite file (by
// convention DIR/registry.db) through the pure-Go modernc.org/sqlite
// driver.
//
// The file is opened in WAL mode. Every registry change is committed with
// synchronous=FULL, so it survives a power cut once the call returns; the
// bulk presence updates of SetLastSeen, which the interface declares best
// effort, are committed with synchronous=NORMAL and become durable with the
// next full commit. Writes go through a single connection (SQLite allows one
// writer at a time; queuing in Go is cheaper than spinning on SQLITE_BUSY),
// reads through a small pool of read-only connections.
//
// The schema is versioned with PRAGMA user_version and migrated forward on
// Open; a file written by a newer binary is refused with ErrNewerSchema.
package sqlite

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"

	"github.com/fieldhub/fieldhub/internal/store"

	_ "modernc.org/sqlite" // registers the "sqlite" database/sql driver
)

// ErrNewerSchema is returned by Open when the file's schema version is newer
// than this binary knows.
var ErrNewerSchema = errors.New("registry database was written by a newer fieldhub")

// busyTimeoutMS bounds how long a connection waits for another process's
// lock before failing with SQLITE_BUSY.
const busyTimeoutMS = 10000

// readConns is the size of the read-only connection pool.
const readConns = 4

// DB is an open registry database. It is safe for concurrent use.
type DB struct {
	w      *sql.DB // one read-write connection
	r      *sql.DB // read-only connections
	closed atomic.Bool
	// maxAlerts is how many alerts are kept (MaxAlerts; tests lower it).
	maxAlerts int64
}

var (
	_ store.Registry = (*DB)(nil)
	_ store.KV       = (*DB)(nil)
	_ store.Alerts   = (*DB)(nil)
	_ store.Commands = (*DB)(nil)
	_ store.Twins    = (*DB)(nil)
)

// migrations[i] moves the schema from version i to i+1. Append only; never
// edit a released step.
var migrations = []string{
	// 1: devices and kv.
	`CREATE TABLE devices (
		id                  TEXT PRIMARY KEY NOT NULL,
		name                TEXT NOT NULL DEFAULT '',
		labels              TEXT NOT NULL DEFAULT '{}', -- JSON object
		gateway             TEXT NOT NULL DEFAULT '',
		auth                TEXT NOT NULL,
		created_at          INTEGER NOT NULL,           -- Unix ns, 0 = zero time
		password_hash       TEXT NOT NULL DEFAULT '',
		cert_serial         TEXT NOT NULL DEFAULT '',
		cert_fingerprint    TEXT NOT NULL DEFAULT '',
		cert_not_after      INTEGER NOT NULL DEFAULT 0,
		credentials_version INTEGER NOT NULL DEFAULT 0,
		last_seen           INTEGER NOT NULL DEFAULT 0
	);
	CREATE TABLE kv (
		key   TEXT PRIMARY KEY NOT NULL,
		value BLOB NOT NULL
	);`,
	// 2: alerts; an index to find the devices behind a gateway.
	`CREATE TABLE alerts (
		id       INTEGER PRIMARY KEY AUTOINCREMENT, -- arrival order
		device   TEXT NOT NULL,
		ts       INTEGER NOT NULL,                  -- Unix ns, raised or cleared
		received INTEGER NOT NULL,                  -- Unix ns, stored
		metric   TEXT NOT NULL DEFAULT '',
		value    REAL NOT NULL DEFAULT 0,
		rule     TEXT NOT NULL DEFAULT '',
		severity TEXT NOT NULL,
		message  TEXT NOT NULL DEFAULT '',
		state    TEXT NOT NULL
	);
	CREATE UNIQUE INDEX alerts_identity ON alerts (device, ts, metric, rule, state);
	CREATE INDEX alerts_ts ON alerts (ts, id);
	CREATE INDEX alerts_device_ts ON alerts (device, ts, id);
	CREATE INDEX alerts_severity_ts ON alerts (severity, ts, id);
	CREATE INDEX devices_gateway ON devices (gateway) WHERE gateway != '';`,
	// 3: commands and twins.
	`CREATE TABLE commands (
		seq          INTEGER PRIMARY KEY AUTOINCREMENT, -- creation order
		id           TEXT NOT NULL UNIQUE,
		device       TEXT NOT NULL,
		name         TEXT NOT NULL,
		params       TEXT NOT NULL,           -- JSON object
		state        TEXT NOT NULL,           -- queued, sent, succeeded, failed, expired
		created_at   INTEGER NOT NULL,        -- Unix ns
		expires_at   INTEGER NOT NULL,
		sent_at      INTEGER NOT NULL DEFAULT 0, -- 0 = never
		attempts     INTEGER NOT NULL DEFAULT 0,
		completed_at INTEGER NOT NULL DEFAULT 0,
		result       TEXT,                    -- JSON value or NULL
		error        TEXT NOT NULL DEFAULT ''
	);
	CREATE INDEX commands_device ON commands (device, created_at, seq);
	CREATE INDEX commands_pending ON commands (device, seq) WHERE state IN ('queued', 'sent');
	CREATE INDEX commands_expiry ON commands (expires_at) WHERE state IN ('queued', 'sent');
	CREATE INDEX commands_completed ON commands (completed_at) WHERE state IN ('succeeded', 'failed', 'expired');
	CREATE TABLE twins (
		device           TEXT PRIMARY KEY NOT NULL,
		desired_version  INTEGER NOT NULL DEFAULT 0,
		desired          TEXT,                -- JSON object, NULL until written
		desired_updated  INTEGER NOT NULL DEFAULT 0,
		reported_version INTEGER NOT NULL DEFAULT 0,
		reported         TEXT,
		reported_updated INTEGER NOT NULL DEFAULT 0
	);`,
}

// Open opens (creating when missing) the registry database at path and
// migrates its schema. The parent directory is created with mode 0700 and a
// new file with mode 0600: the file holds password hashes and sealed keys.
func Open(path string) (*DB, error) {
	if path == "" || strings.ContainsRune(path, '?') {
		return nil, fmt.Errorf("sqlite: invalid database path %q", path)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("sqlite: creating directory: %w", err)
	}
	// Create the file ourselves so that SQLite, which gives the -wal and
	// -shm files the main file's permissions, never makes it world-readable.
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("sqlite: opening %s: %w", path, err)
	}
	f.Close()

	common := fmt.Sprintf("%s?_pragma=busy_timeout(%d)&_pragma=foreign_keys(1)", path, busyTimeoutMS)
	w, err := sql.Open("sqlite", common+"&_journal_mode=WAL&_synchronous=FULL&_txlock=immediate")
	if err != nil {
		return nil, fmt.Errorf("sqlite: opening %s: %w", path, err)
	}
	w.SetMaxOpenConns(1)
	w.SetMaxIdleConns(1)
	w.SetConnMaxLifetime(0)
	w.SetConnMaxIdleTime(0)
	db := &DB{w: w, maxAlerts: MaxAlerts}
	// Migrating first also switches the file to WAL before any reader opens.
	if err := db.migrate(context.Background()); err != nil {
		w.Close()
		return nil, fmt.Errorf("sqlite: %s: %w", path, err)
	}
	r, err := sql.Open("sqlite", common+"&_query_only=1")
	if err != nil {
		w.Close()
		return nil, fmt.Errorf("sqlite: opening %s: %w", path, err)
	}
	r.SetMaxOpenConns(readConns)
	r.SetMaxIdleConns(readConns)
	db.r = r
	return db, nil
}

// migrate brings the schema to SchemaVersion in one transaction.
func (db *DB) migrate(ctx context.Context) error {
	tx, err := db.w.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("beginning migration: %w", err)
	}
	defer tx.Rollback()
	var v int
	if err := tx.QueryRowContext(ctx, "PRAGMA user_version").Scan(&v); err != nil {
		return fmt.Errorf("reading schema version: %w", err)
	}
	if v > len(migrations) {
		return fmt.Errorf("%w: schema version %d, this binary knows up to %d", ErrNewerSchema, v, len(migrations))
	}
	if v == len(migrations) {
		return nil
	}
	for i := v; i < len(migrations); i++ {
		if _, err := tx.ExecContext(ctx, migrations[i]); err != nil {
			return fmt.Errorf("migrating schema to version %d: %w", i+1, err)
		}
	}
	// PRAGMA does not take bound parameters; the value is our own integer.
	if _, err := tx.ExecContext(ctx, fmt.Sprintf("PRAGMA user_version = %d", len(migrations))); err != nil {
		return fmt.Errorf("setting schema version: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("committing migration: %w", err)
	}
	return nil
}

// Close closes the database. It is safe to call more than once; every
// method called afterwards returns store.ErrClosed.
func (db *DB) Close() error {
	if !db.closed.CompareAndSwap(false, true) {
		return nil
	}
	errR := db.r.Close()
	errW := db.w.Close()
	if err := errors.Join(errW, errR); err != nil {
		return fmt.Errorf("sqlite: closing: %w", err)
	}
	return nil
}

// check returns store.ErrClosed after Close.
func (db *DB) check() error {
	if db.closed.Load() {
		return store.ErrClosed
	}
	return nil
}

// withRelaxedSync runs fn in a transaction committed with
// synchronous=NORMAL: in WAL mode the commit is atomic and ordered but not
// fsynced; the next FULL commit makes it durable.
func (db *DB) withRelaxedSync(ctx context.Context, fn func(*sql.Tx) error) (err error) {
	conn, err := db.w.Conn(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	if _, err := conn.ExecContext(ctx, "PRAGMA synchronous = NORMAL"); err != nil {
		return err
	}
	defer func() {
		// Restore with a fresh context: the caller's may be done already.
		if _, rerr := conn.ExecContext(context.Background(), "PRAGMA synchronous = FULL"); rerr != nil {
			// Never hand a relaxed connection back to the pool.
			_ = conn.Raw(func(any) error { return driver.ErrBadConn })
			err = errors.Join(err, rerr)
		}
	}()
	tx, err := conn.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	if err := fn(tx); err != nil {
		return err
	}
	return tx.Commit()
}
