package postgres

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/fieldhub/fieldhub/internal/store"
	"github.com/fieldhub/fieldhub/internal/store/sqlrow"
)

const twinColumns = sqlrow.TwinColumns

// GetTwin returns the twin of device (two zero documents when none).
func (db *DB) GetTwin(ctx context.Context, device string) (store.Twin, error) {
	if !validText(device) {
		return store.Twin{Device: device}, nil
	}
	rows, _ := db.pool.Query(ctx, `SELECT `+twinColumns+` FROM twins WHERE device = $1`, device)
	t, err := pgx.CollectExactlyOneRow(rows, scanTwin)
	if errors.Is(err, pgx.ErrNoRows) {
		return store.Twin{Device: device}, nil
	}
	if err != nil {
		return store.Twin{}, fmt.Errorf("postgres: reading twin of %q: %w", device, err)
	}
	return t, nil
}

// PutTwinDoc is a compare-and-set on one document's version, in one
// statement: an UPDATE whose WHERE clause checks the version, or for prev
// 0 an INSERT whose ON CONFLICT update checks it. PostgreSQL re-checks
// the condition on the newest row version when a concurrent transaction
// wrote the row first, so of several hubs writing from the same version
// exactly one succeeds and the others get store.ErrConflict.
func (db *DB) PutTwinDoc(ctx context.Context, device string, side store.TwinSide, prev int64, doc store.TwinDoc) error {
	col, err := sqlrow.TwinDocColumn(device, side, prev, doc)
	if err != nil {
		return fmt.Errorf("postgres: %w", err)
	}
	var q string
	if prev == 0 {
		// The row may not exist yet.
		q = `INSERT INTO twins (device, ` + col + `_version, ` + col + `, ` + col + `_updated) VALUES ($1, $2, $3, $4)
			ON CONFLICT (device) DO UPDATE SET ` + col + `_version = excluded.` + col + `_version, ` +
			col + ` = excluded.` + col + `, ` + col + `_updated = excluded.` + col + `_updated
			WHERE twins.` + col + `_version = 0`
	} else {
		q = `UPDATE twins SET ` + col + `_version = $2, ` + col + ` = $3, ` + col + `_updated = $4
			WHERE device = $1 AND ` + col + `_version = $5`
	}
	args := []any{device, doc.Version, sqlrow.NullJSON(doc.State), sqlrow.UnixNano(doc.UpdatedAt)}
	if prev != 0 {
		args = append(args, prev)
	}
	tag, err := db.pool.Exec(ctx, q, args...)
	if err != nil {
		return fmt.Errorf("postgres: writing %s twin of %q: %w", side, device, err)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("postgres: %s twin of %q is not at version %d: %w", side, device, prev, store.ErrConflict)
	}
	return nil
}

// ListTwins returns twins in device order (byte order) after after.
func (db *DB) ListTwins(ctx context.Context, after string, limit int) ([]store.Twin, error) {
	if !validText(after) {
		return nil, fmt.Errorf("postgres: listing twins: after %q is not valid UTF-8", after)
	}
	q := `SELECT ` + twinColumns + ` FROM twins WHERE device > $1 ORDER BY device`
	args := []any{after}
	if limit > 0 {
		q += ` LIMIT $2`
		args = append(args, limit)
	}
	rows, _ := db.pool.Query(ctx, q, args...)
	out, err := pgx.CollectRows(rows, scanTwin)
	if err != nil {
		return nil, fmt.Errorf("postgres: listing twins: %w", err)
	}
	return out, nil
}

// DeleteTwin deletes the twin of device.
func (db *DB) DeleteTwin(ctx context.Context, device string) error {
	if !validText(device) {
		return nil
	}
	if _, err := db.pool.Exec(ctx, `DELETE FROM twins WHERE device = $1`, device); err != nil {
		return fmt.Errorf("postgres: deleting twin of %q: %w", device, err)
	}
	return nil
}

// scanTwin reads a twin row for pgx.CollectRows.
func scanTwin(row pgx.CollectableRow) (store.Twin, error) { return sqlrow.ScanTwin(row.Scan) }
