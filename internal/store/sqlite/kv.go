package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/fieldhub/fieldhub/internal/store"
)

// Get returns the value stored under key; store.ErrNotFound when missing.
func (db *DB) Get(ctx context.Context, key string) ([]byte, error) {
	if err := db.check(); err != nil {
		return nil, err
	}
	var v []byte
	err := db.r.QueryRowContext(ctx, `SELECT value FROM kv WHERE key = ?`, key).Scan(&v)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("sqlite: key %q: %w", key, store.ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("sqlite: reading key %q: %w", key, err)
	}
	if v == nil {
		v = []byte{}
	}
	return v, nil
}

// Put stores value under key, replacing any previous value, durably.
func (db *DB) Put(ctx context.Context, key string, value []byte) error {
	if err := db.check(); err != nil {
		return err
	}
	if value == nil {
		value = []byte{} // the column is NOT NULL
	}
	_, err := db.w.ExecContext(ctx, `INSERT INTO kv (key, value) VALUES (?, ?)
		ON CONFLICT (key) DO UPDATE SET value = excluded.value`, key, value)
	if err != nil {
		return fmt.Errorf("sqlite: writing key %q: %w", key, err)
	}
	return nil
}
