package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/fieldhub/fieldhub/internal/store"
	"github.com/fieldhub/fieldhub/internal/store/sqlrow"
)

const deviceColumns = sqlrow.DeviceColumns

// CreateDevice stores a new device; store.ErrExists when d.ID is taken.
func (db *DB) CreateDevice(ctx context.Context, d store.Device) error {
	if err := db.check(); err != nil {
		return err
	}
	args, err := sqlrow.DeviceArgs(d)
	if err != nil {
		return fmt.Errorf("sqlite: creating device %q: %w", d.ID, err)
	}
	res, err := db.w.ExecContext(ctx, `INSERT INTO devices (`+deviceColumns+`)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING`, args...)
	if err != nil {
		return fmt.Errorf("sqlite: creating device %q: %w", d.ID, err)
	}
	if n, err := res.RowsAffected(); err != nil {
		return fmt.Errorf("sqlite: creating device %q: %w", d.ID, err)
	} else if n == 0 {
		return fmt.Errorf("sqlite: device %q: %w", d.ID, store.ErrExists)
	}
	return nil
}

// GetDevice returns the device id; store.ErrNotFound when missing.
func (db *DB) GetDevice(ctx context.Context, id string) (store.Device, error) {
	if err := db.check(); err != nil {
		return store.Device{}, err
	}
	row := db.r.QueryRowContext(ctx, `SELECT `+deviceColumns+` FROM devices WHERE id = ?`, id)
	d, err := sqlrow.ScanDevice(row.Scan)
	if errors.Is(err, sql.ErrNoRows) {
		return store.Device{}, fmt.Errorf("sqlite: device %q: %w", id, store.ErrNotFound)
	}
	if err != nil {
		return store.Device{}, fmt.Errorf("sqlite: reading device %q: %w", id, err)
	}
	return d, nil
}

// ListDevices returns devices in id order (byte order), after o.After, with
// prefix o.Prefix, at most o.Limit of them when o.Limit > 0.
func (db *DB) ListDevices(ctx context.Context, o store.ListOptions) ([]store.Device, error) {
	if err := db.check(); err != nil {
		return nil, err
	}
	var (
		where []string
		args  []any
	)
	if o.After != "" {
		where = append(where, "id > ?")
		args = append(args, o.After)
	}
	if o.Prefix != "" {
		// A range rather than LIKE: ids may contain '_', and a range uses
		// the primary key index.
		where = append(where, "id >= ?")
		args = append(args, o.Prefix)
		if end, ok := prefixEnd(o.Prefix); ok {
			where = append(where, "id < ?")
			args = append(args, end)
		}
	}
	q := `SELECT ` + deviceColumns + ` FROM devices`
	if len(where) > 0 {
		q += " WHERE " + strings.Join(where, " AND ")
	}
	q += " ORDER BY id"
	if o.Limit > 0 {
		q += " LIMIT ?"
		args = append(args, o.Limit)
	}
	rows, err := db.r.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("sqlite: listing devices: %w", err)
	}
	defer rows.Close()
	var out []store.Device
	for rows.Next() {
		d, err := sqlrow.ScanDevice(rows.Scan)
		if err != nil {
			return nil, fmt.Errorf("sqlite: listing devices: %w", err)
		}
		out = append(out, d)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sqlite: listing devices: %w", err)
	}
	return out, nil
}

// UpdateDevice replaces every field of the stored device d.ID;
// store.ErrNotFound when missing.
func (db *DB) UpdateDevice(ctx context.Context, d store.Device) error {
	if err := db.check(); err != nil {
		return err
	}
	args, err := sqlrow.DeviceArgs(d)
	if err != nil {
		return fmt.Errorf("sqlite: updating device %q: %w", d.ID, err)
	}
	res, err := db.w.ExecContext(ctx, `UPDATE devices SET name = ?2, labels = ?3, gateway = ?4,
		auth = ?5, created_at = ?6, password_hash = ?7, cert_serial = ?8, cert_fingerprint = ?9,
		cert_not_after = ?10, credentials_version = ?11, last_seen = ?12 WHERE id = ?1`, args...)
	if err != nil {
		return fmt.Errorf("sqlite: updating device %q: %w", d.ID, err)
	}
	if n, err := res.RowsAffected(); err != nil {
		return fmt.Errorf("sqlite: updating device %q: %w", d.ID, err)
	} else if n == 0 {
		return fmt.Errorf("sqlite: device %q: %w", d.ID, store.ErrNotFound)
	}
	return nil
}

// DeleteDevice removes the device id; store.ErrNotFound when missing.
func (db *DB) DeleteDevice(ctx context.Context, id string) error {
	if err := db.check(); err != nil {
		return err
	}
	res, err := db.w.ExecContext(ctx, `DELETE FROM devices WHERE id = ?`, id)
	if err != nil {
		return fmt.Errorf("sqlite: deleting device %q: %w", id, err)
	}
	if n, err := res.RowsAffected(); err != nil {
		return fmt.Errorf("sqlite: deleting device %q: %w", id, err)
	} else if n == 0 {
		return fmt.Errorf("sqlite: device %q: %w", id, store.ErrNotFound)
	}
	return nil
}

// SetLastSeen records presence times in one transaction. Unknown ids are
// ignored (the device may have been deleted meanwhile). The commit is not
// fsynced; see the package documentation.
func (db *DB) SetLastSeen(ctx context.Context, seen map[string]time.Time) error {
	if err := db.check(); err != nil {
		return err
	}
	if len(seen) == 0 {
		return nil
	}
	err := db.withRelaxedSync(ctx, func(tx *sql.Tx) error {
		stmt, err := tx.PrepareContext(ctx, `UPDATE devices SET last_seen = ? WHERE id = ?`)
		if err != nil {
			return err
		}
		defer stmt.Close()
		for id, t := range seen {
			if _, err := stmt.ExecContext(ctx, sqlrow.UnixNano(t), id); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("sqlite: setting last seen: %w", err)
	}
	return nil
}

// prefixEnd returns the smallest string greater than every string with
// prefix p, or false when there is none (p is all 0xff bytes).
func prefixEnd(p string) (string, bool) {
	b := []byte(p)
	for i := len(b) - 1; i >= 0; i-- {
		if b[i] < 0xff {
			b[i]++
			return string(b[:i+1]), true
		}
	}
	return "", false
}
