package postgres

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/fieldhub/fieldhub/internal/store"
	"github.com/fieldhub/fieldhub/internal/store/sqlrow"
)

var (
	_ store.Registry = (*DB)(nil)
	_ store.KV       = (*DB)(nil)
	_ store.Alerts   = (*DB)(nil)
	_ store.Commands = (*DB)(nil)
	_ store.Twins    = (*DB)(nil)
)

// PostgreSQL error codes the store branches on.
const (
	codeUniqueViolation = "23505"
)

// isCode reports whether err is a PostgreSQL error with the given code.
func isCode(err error, code string) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && pe.Code == code
}

const deviceColumns = sqlrow.DeviceColumns

// CreateDevice stores a new device; store.ErrExists when d.ID is taken.
func (db *DB) CreateDevice(ctx context.Context, d store.Device) error {
	args, err := sqlrow.DeviceArgs(d)
	if err != nil {
		return fmt.Errorf("postgres: creating device %q: %w", d.ID, err)
	}
	return db.insert(ctx, "device", d.ID, `INSERT INTO devices (`+deviceColumns+`)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)`, args...)
}

// GetDevice returns the device id; store.ErrNotFound when missing.
func (db *DB) GetDevice(ctx context.Context, id string) (store.Device, error) {
	return getRow(ctx, db, "device", id, `SELECT `+deviceColumns+` FROM devices WHERE id = $1`, scanDevice)
}

// ListDevices returns devices in id order (byte order), after o.After, with
// prefix o.Prefix, at most o.Limit of them when o.Limit > 0.
func (db *DB) ListDevices(ctx context.Context, o store.ListOptions) ([]store.Device, error) {
	if !validText(o.Prefix) {
		return nil, nil // no stored id has this prefix
	}
	if !validText(o.After) {
		return nil, fmt.Errorf("postgres: listing devices: after %q is not valid UTF-8", o.After)
	}
	var (
		where []string
		args  []any
	)
	if o.After != "" {
		args = append(args, o.After)
		where = append(where, fmt.Sprintf("id > $%d", len(args)))
	}
	if o.Prefix != "" {
		// A range rather than LIKE: ids may contain '_' and '%', and a
		// range uses the primary key.
		args = append(args, o.Prefix)
		where = append(where, fmt.Sprintf("id >= $%d", len(args)))
		if end, ok := prefixEnd(o.Prefix); ok {
			args = append(args, end)
			where = append(where, fmt.Sprintf("id < $%d", len(args)))
		}
	}
	q := `SELECT ` + deviceColumns + ` FROM devices`
	if len(where) > 0 {
		q += " WHERE " + strings.Join(where, " AND ")
	}
	q += " ORDER BY id"
	if o.Limit > 0 {
		args = append(args, o.Limit)
		q += fmt.Sprintf(" LIMIT $%d", len(args))
	}
	rows, _ := db.pool.Query(ctx, q, args...)
	out, err := pgx.CollectRows(rows, scanDevice)
	if err != nil {
		return nil, fmt.Errorf("postgres: listing devices: %w", err)
	}
	return out, nil
}

// UpdateDevice replaces every field of the stored device d.ID;
// store.ErrNotFound when missing.
func (db *DB) UpdateDevice(ctx context.Context, d store.Device) error {
	if !validText(d.ID) {
		return fmt.Errorf("postgres: device %q: %w", d.ID, store.ErrNotFound)
	}
	args, err := sqlrow.DeviceArgs(d)
	if err != nil {
		return fmt.Errorf("postgres: updating device %q: %w", d.ID, err)
	}
	tag, err := db.pool.Exec(ctx, `UPDATE devices SET name = $2, labels = $3, gateway = $4,
		auth = $5, created_at = $6, password_hash = $7, cert_serial = $8, cert_fingerprint = $9,
		cert_not_after = $10, credentials_version = $11, last_seen = $12 WHERE id = $1`, args...)
	if err != nil {
		return fmt.Errorf("postgres: updating device %q: %w", d.ID, err)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("postgres: device %q: %w", d.ID, store.ErrNotFound)
	}
	return nil
}

// DeleteDevice removes the device id; store.ErrNotFound when missing.
func (db *DB) DeleteDevice(ctx context.Context, id string) error {
	if !validText(id) {
		return fmt.Errorf("postgres: device %q: %w", id, store.ErrNotFound)
	}
	tag, err := db.pool.Exec(ctx, `DELETE FROM devices WHERE id = $1`, id)
	if err != nil {
		return fmt.Errorf("postgres: deleting device %q: %w", id, err)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("postgres: device %q: %w", id, store.ErrNotFound)
	}
	return nil
}

// SetLastSeen records presence times in one transaction committed with
// synchronous_commit off: the interface declares it best effort, so it
// does not wait for the WAL flush (the commit is atomic and becomes
// durable within a few hundred milliseconds). Unknown ids are ignored. The
// rows are updated in id order, so that hubs sharing the database and
// updating overlapping devices lock them in the same order and cannot
// deadlock.
func (db *DB) SetLastSeen(ctx context.Context, seen map[string]time.Time) error {
	if len(seen) == 0 {
		return nil
	}
	ids := make([]string, 0, len(seen))
	for id := range seen {
		if validText(id) {
			ids = append(ids, id)
		}
	}
	slices.Sort(ids) // byte order, as COLLATE "C" compares
	err := pgx.BeginFunc(ctx, db.pool, func(tx pgx.Tx) error {
		b := &pgx.Batch{}
		b.Queue(`SET LOCAL synchronous_commit = off`)
		for _, id := range ids {
			b.Queue(`UPDATE devices SET last_seen = $2 WHERE id = $1`, id, sqlrow.UnixNano(seen[id]))
		}
		return tx.SendBatch(ctx, b).Close()
	})
	if err != nil {
		return fmt.Errorf("postgres: setting last seen: %w", err)
	}
	return nil
}

// HasChildren reports whether any device is registered behind gateway.
// The registry uses it (an optional interface) to tell gateways apart.
func (db *DB) HasChildren(ctx context.Context, gateway string) (bool, error) {
	if gateway == "" || !validText(gateway) {
		return false, nil
	}
	var ok bool
	err := db.pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM devices WHERE gateway = $1 AND gateway <> '')`, gateway).Scan(&ok)
	if err != nil {
		return false, fmt.Errorf("postgres: looking up devices behind %q: %w", gateway, err)
	}
	return ok, nil
}

// insert runs query, an INSERT of the kind (say "device") with key key;
// store.ErrExists when the key is taken.
func (db *DB) insert(ctx context.Context, kind, key, query string, args ...any) error {
	_, err := db.pool.Exec(ctx, query, args...)
	if isCode(err, codeUniqueViolation) {
		return fmt.Errorf("postgres: %s %q: %w", kind, key, store.ErrExists)
	}
	if err != nil {
		return fmt.Errorf("postgres: creating %s %q: %w", kind, key, err)
	}
	return nil
}

// getRow returns the one row, read by scan, that query (with the one
// parameter key) finds of the kind (say "device"); store.ErrNotFound when
// there is none.
func getRow[T any](ctx context.Context, db *DB, kind, key, query string, scan pgx.RowToFunc[T]) (T, error) {
	var zero T
	if !validText(key) {
		// PostgreSQL refuses such a string; no stored key is one.
		return zero, fmt.Errorf("postgres: %s %q: %w", kind, key, store.ErrNotFound)
	}
	rows, _ := db.pool.Query(ctx, query, key)
	v, err := pgx.CollectExactlyOneRow(rows, scan)
	if errors.Is(err, pgx.ErrNoRows) {
		return zero, fmt.Errorf("postgres: %s %q: %w", kind, key, store.ErrNotFound)
	}
	if err != nil {
		return zero, fmt.Errorf("postgres: reading %s %q: %w", kind, key, err)
	}
	return v, nil
}

// scanDevice reads a device row for pgx.CollectRows.
func scanDevice(row pgx.CollectableRow) (store.Device, error) { return sqlrow.ScanDevice(row.Scan) }

// validText reports whether PostgreSQL accepts s as text: valid UTF-8
// without NUL. A string it refuses cannot be a stored key, so lookups of
// one find nothing instead of failing.
func validText(s string) bool {
	return utf8.ValidString(s) && !strings.ContainsRune(s, 0)
}

// prefixEnd returns the smallest valid UTF-8 string greater (in byte
// order) than every string with prefix p, or false when there is none.
// It increments the last code point that can be, rather than the last
// byte, because PostgreSQL refuses text that is not valid UTF-8; UTF-8
// byte order is code point order, so the bound is the same.
func prefixEnd(p string) (string, bool) {
	for p != "" {
		r, size := utf8.DecodeLastRuneInString(p)
		p = p[:len(p)-size]
		switch {
		case r == utf8.MaxRune:
			continue // no greater code point: carry into the previous one
		case r == 0xD7FF:
			r = 0xE000 // skip the surrogates
		default:
			r++
		}
		return p + string(r), true
	}
	return "", false
}
