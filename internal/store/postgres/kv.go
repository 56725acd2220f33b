package postgres

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/fieldhub/fieldhub/internal/store"
)

// Get returns the value stored under key; store.ErrNotFound when missing.
func (db *DB) Get(ctx context.Context, key string) ([]byte, error) {
	if !validText(key) {
		return nil, fmt.Errorf("postgres: key %q: %w", key, store.ErrNotFound)
	}
	var v []byte
	err := db.pool.QueryRow(ctx, `SELECT value FROM kv WHERE key = $1`, key).Scan(&v)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, fmt.Errorf("postgres: key %q: %w", key, store.ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("postgres: reading key %q: %w", key, err)
	}
	if v == nil {
		v = []byte{}
	}
	return v, nil
}

// Put stores value under key, replacing any previous value, durably.
func (db *DB) Put(ctx context.Context, key string, value []byte) error {
	if value == nil {
		value = []byte{} // the column is NOT NULL
	}
	_, err := db.pool.Exec(ctx, `INSERT INTO kv (key, value) VALUES ($1, $2)
		ON CONFLICT (key) DO UPDATE SET value = excluded.value`, key, value)
	if err != nil {
		return fmt.Errorf("postgres: writing key %q: %w", key, err)
	}
	return nil
}
