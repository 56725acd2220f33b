package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/fieldhub/fieldhub/internal/store"
	"github.com/fieldhub/fieldhub/internal/store/sqlrow"
)

const twinColumns = sqlrow.TwinColumns

// GetTwin returns the twin of device (two zero documents when none).
func (db *DB) GetTwin(ctx context.Context, device string) (store.Twin, error) {
	if err := db.check(); err != nil {
		return store.Twin{}, err
	}
	t, err := scanTwin(db.r.QueryRowContext(ctx, `SELECT `+twinColumns+` FROM twins WHERE device = ?`, device))
	if errors.Is(err, sql.ErrNoRows) {
		return store.Twin{Device: device}, nil
	}
	if err != nil {
		return store.Twin{}, fmt.Errorf("sqlite: reading twin of %q: %w", device, err)
	}
	return t, nil
}

// PutTwinDoc is a compare-and-set on one document's version, committed
// durably (synchronous=FULL).
func (db *DB) PutTwinDoc(ctx context.Context, device string, side store.TwinSide, prev int64, doc store.TwinDoc) error {
	if err := db.check(); err != nil {
		return err
	}
	col, err := sqlrow.TwinDocColumn(device, side, prev, doc)
	if err != nil {
		return fmt.Errorf("sqlite: %w", err)
	}
	args := []any{doc.Version, string(doc.State), sqlrow.UnixNano(doc.UpdatedAt)}
	var q string
	if prev == 0 {
		// The row may not exist yet.
		q = `INSERT INTO twins (device, ` + col + `_version, ` + col + `, ` + col + `_updated) VALUES (?, ?, ?, ?)
			ON CONFLICT (device) DO UPDATE SET ` + col + `_version = excluded.` + col + `_version, ` +
			col + ` = excluded.` + col + `, ` + col + `_updated = excluded.` + col + `_updated
			WHERE twins.` + col + `_version = 0`
		args = append([]any{device}, args...)
	} else {
		q = `UPDATE twins SET ` + col + `_version = ?, ` + col + ` = ?, ` + col + `_updated = ?
			WHERE device = ? AND ` + col + `_version = ?`
		args = append(args, device, prev)
	}
	res, err := db.w.ExecContext(ctx, q, args...)
	if err != nil {
		return fmt.Errorf("sqlite: writing %s twin of %q: %w", side, device, err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return fmt.Errorf("sqlite: writing %s twin of %q: %w", side, device, err)
	}
	if n == 0 {
		return fmt.Errorf("sqlite: %s twin of %q is not at version %d: %w", side, device, prev, store.ErrConflict)
	}
	return nil
}

// ListTwins returns twins in device order after after.
func (db *DB) ListTwins(ctx context.Context, after string, limit int) ([]store.Twin, error) {
	if err := db.check(); err != nil {
		return nil, err
	}
	q := `SELECT ` + twinColumns + ` FROM twins WHERE device > ? ORDER BY device`
	args := []any{after}
	if limit > 0 {
		q += ` LIMIT ?`
		args = append(args, limit)
	}
	rows, err := db.r.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("sqlite: listing twins: %w", err)
	}
	defer rows.Close()
	var out []store.Twin
	for rows.Next() {
		t, err := scanTwin(rows)
		if err != nil {
			return nil, fmt.Errorf("sqlite: listing twins: %w", err)
		}
		out = append(out, t)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sqlite: listing twins: %w", err)
	}
	return out, nil
}

// DeleteTwin deletes the twin of device.
func (db *DB) DeleteTwin(ctx context.Context, device string) error {
	if err := db.check(); err != nil {
		return err
	}
	if _, err := db.w.ExecContext(ctx, `DELETE FROM twins WHERE device = ?`, device); err != nil {
		return fmt.Errorf("sqlite: deleting twin of %q: %w", device, err)
	}
	return nil
}

func scanTwin(r rowScanner) (store.Twin, error) { return sqlrow.ScanTwin(r.Scan) }
