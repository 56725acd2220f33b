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

const commandColumns = sqlrow.CommandColumns

// CreateCommand stores a new command durably (synchronous=FULL).
func (db *DB) CreateCommand(ctx context.Context, c store.Command) error {
	if err := db.check(); err != nil {
		return err
	}
	res, err := db.w.ExecContext(ctx, `INSERT INTO commands (`+sqlrow.NewCommandColumns+`)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING`, sqlrow.CommandArgs(c)...)
	if err != nil {
		return fmt.Errorf("sqlite: creating command %q: %w", c.ID, err)
	}
	if n, err := res.RowsAffected(); err != nil {
		return fmt.Errorf("sqlite: creating command %q: %w", c.ID, err)
	} else if n == 0 {
		return fmt.Errorf("sqlite: command %q: %w", c.ID, store.ErrExists)
	}
	return nil
}

// GetCommand returns one command.
func (db *DB) GetCommand(ctx context.Context, id string) (store.Command, error) {
	if err := db.check(); err != nil {
		return store.Command{}, err
	}
	c, _, err := scanCommand(db.r.QueryRowContext(ctx, `SELECT `+commandColumns+` FROM commands WHERE id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return store.Command{}, fmt.Errorf("sqlite: command %q: %w", id, store.ErrNotFound)
	}
	if err != nil {
		return store.Command{}, fmt.Errorf("sqlite: reading command %q: %w", id, err)
	}
	return c, nil
}

// ListCommands returns a device's commands newest first. The cursor is
// "{created_at}.{seq}" of the last command returned.
func (db *DB) ListCommands(ctx context.Context, q store.CommandQuery) (store.CommandPage, error) {
	if err := db.check(); err != nil {
		return store.CommandPage{}, err
	}
	if q.Limit < 0 {
		return store.CommandPage{}, fmt.Errorf("sqlite: commands: limit %d: %w", q.Limit, store.ErrInvalidQuery)
	}
	query := `SELECT ` + commandColumns + ` FROM commands WHERE device = ?`
	args := []any{q.Device}
	if q.Before != "" {
		ts, seq, ok := sqlrow.ParseCursor(q.Before)
		if !ok {
			return store.CommandPage{}, fmt.Errorf("sqlite: commands: cursor %q: %w", q.Before, store.ErrInvalidQuery)
		}
		query += ` AND (created_at < ? OR (created_at = ? AND seq < ?))`
		args = append(args, ts, ts, seq)
	}
	query += ` ORDER BY created_at DESC, seq DESC`
	if q.Limit > 0 {
		query += ` LIMIT ?`
		args = append(args, q.Limit+1)
	}
	rows, err := db.r.QueryContext(ctx, query, args...)
	if err != nil {
		return store.CommandPage{}, fmt.Errorf("sqlite: listing commands: %w", err)
	}
	defer rows.Close()
	var (
		page    store.CommandPage
		lastSeq int64
	)
	for rows.Next() {
		if q.Limit > 0 && len(page.Commands) == q.Limit {
			last := page.Commands[len(page.Commands)-1]
			page.Next = sqlrow.FormatCursor(last.CreatedAt.UnixNano(), lastSeq)
			break
		}
		c, seq, err := scanCommand(rows)
		if err != nil {
			return store.CommandPage{}, fmt.Errorf("sqlite: listing commands: %w", err)
		}
		lastSeq = seq
		page.Commands = append(page.Commands, c)
	}
	if err := rows.Err(); err != nil {
		return store.CommandPage{}, fmt.Errorf("sqlite: listing commands: %w", err)
	}
	return page, nil
}

// PendingCommands returns the queued and sent commands of device, oldest
// first.
func (db *DB) PendingCommands(ctx context.Context, device string) ([]store.Command, error) {
	if err := db.check(); err != nil {
		return nil, err
	}
	rows, err := db.r.QueryContext(ctx, `SELECT `+commandColumns+` FROM commands
		WHERE device = ? AND state IN ('queued', 'sent') ORDER BY seq`, device)
	if err != nil {
		return nil, fmt.Errorf("sqlite: pending commands of %q: %w", device, err)
	}
	defer rows.Close()
	var out []store.Command
	for rows.Next() {
		c, _, err := scanCommand(rows)
		if err != nil {
			return nil, fmt.Errorf("sqlite: pending commands of %q: %w", device, err)
		}
		out = append(out, c)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sqlite: pending commands of %q: %w", device, err)
	}
	return out, nil
}

// UpdateCommand is a compare-and-set on the command's state, committed
// durably.
func (db *DB) UpdateCommand(ctx context.Context, c store.Command, from ...store.CommandState) error {
	if err := db.check(); err != nil {
		return err
	}
	if len(from) == 0 {
		return fmt.Errorf("sqlite: updating command %q: no expected state", c.ID)
	}
	args := []any{string(c.State), sqlrow.UnixNano(c.SentAt), c.Attempts, sqlrow.UnixNano(c.CompletedAt), sqlrow.NullJSON(c.Result), c.Error, c.ID}
	for _, s := range from {
		args = append(args, string(s))
	}
	res, err := db.w.ExecContext(ctx, `UPDATE commands
		SET state = ?, sent_at = ?, attempts = ?, completed_at = ?, result = ?, error = ?
		WHERE id = ? AND state IN (?`+strings.Repeat(", ?", len(from)-1)+`)`, args...)
	if err != nil {
		return fmt.Errorf("sqlite: updating command %q: %w", c.ID, err)
	}
	if n, err := res.RowsAffected(); err != nil {
		return fmt.Errorf("sqlite: updating command %q: %w", c.ID, err)
	} else if n == 1 {
		return nil
	}
	var state string
	err = db.w.QueryRowContext(ctx, `SELECT state FROM commands WHERE id = ?`, c.ID).Scan(&state)
	if errors.Is(err, sql.ErrNoRows) {
		return fmt.Errorf("sqlite: command %q: %w", c.ID, store.ErrNotFound)
	}
	if err != nil {
		return fmt.Errorf("sqlite: updating command %q: %w", c.ID, err)
	}
	return fmt.Errorf("sqlite: command %q is %s: %w", c.ID, state, store.ErrConflict)
}

// ExpireCommands marks due commands expired in one durable transaction.
func (db *DB) ExpireCommands(ctx context.Context, now time.Time, limit int) ([]store.Command, time.Time, error) {
	if err := db.check(); err != nil {
		return nil, time.Time{}, err
	}
	tx, err := db.w.BeginTx(ctx, nil)
	if err != nil {
		return nil, time.Time{}, fmt.Errorf("sqlite: expiring commands: %w", err)
	}
	defer tx.Rollback()
	n := sqlrow.UnixNano(now)
	query := `SELECT ` + commandColumns + ` FROM commands
		WHERE state IN ('queued', 'sent') AND expires_at <= ? ORDER BY expires_at, seq`
	args := []any{n}
	if limit > 0 {
		query += ` LIMIT ?`
		args = append(args, limit)
	}
	rows, err := tx.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, time.Time{}, fmt.Errorf("sqlite: expiring commands: %w", err)
	}
	var (
		expired []store.Command
		seqs    []int64
	)
	for rows.Next() {
		c, seq, err := scanCommand(rows)
		if err != nil {
			rows.Close()
			return nil, time.Time{}, fmt.Errorf("sqlite: expiring commands: %w", err)
		}
		c.State, c.CompletedAt = store.CommandExpired, time.Unix(0, n).UTC()
		expired = append(expired, c)
		seqs = append(seqs, seq)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, time.Time{}, fmt.Errorf("sqlite: expiring commands: %w", err)
	}
	if len(seqs) > 0 {
		stmt, err := tx.PrepareContext(ctx, `UPDATE commands SET state = 'expired', completed_at = ? WHERE seq = ?`)
		if err != nil {
			return nil, time.Time{}, fmt.Errorf("sqlite: expiring commands: %w", err)
		}
		defer stmt.Close()
		for _, seq := range seqs {
			if _, err := stmt.ExecContext(ctx, n, seq); err != nil {
				return nil, time.Time{}, fmt.Errorf("sqlite: expiring commands: %w", err)
			}
		}
	}
	var next sql.NullInt64
	if err := tx.QueryRowContext(ctx, `SELECT MIN(expires_at) FROM commands WHERE state IN ('queued', 'sent')`).Scan(&next); err != nil {
		return nil, time.Time{}, fmt.Errorf("sqlite: expiring commands: %w", err)
	}
	if len(seqs) > 0 {
		if err := tx.Commit(); err != nil {
			return nil, time.Time{}, fmt.Errorf("sqlite: expiring commands: %w", err)
		}
	}
	var nextT time.Time
	if next.Valid {
		nextT = sqlrow.FromUnixNano(next.Int64)
	}
	return expired, nextT, nil
}

// DeleteCommands deletes every command of device.
func (db *DB) DeleteCommands(ctx context.Context, device string) error {
	if err := db.check(); err != nil {
		return err
	}
	if _, err := db.w.ExecContext(ctx, `DELETE FROM commands WHERE device = ?`, device); err != nil {
		return fmt.Errorf("sqlite: deleting commands of %q: %w", device, err)
	}
	return nil
}

// PruneCommands deletes finished commands completed before t.
func (db *DB) PruneCommands(ctx context.Context, before time.Time) (int, error) {
	if err := db.check(); err != nil {
		return 0, err
	}
	res, err := db.w.ExecContext(ctx, `DELETE FROM commands
		WHERE state IN ('succeeded', 'failed', 'expired') AND completed_at < ?`, sqlrow.UnixNano(before))
	if err != nil {
		return 0, fmt.Errorf("sqlite: pruning commands: %w", err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return 0, fmt.Errorf("sqlite: pruning commands: %w", err)
	}
	return int(n), nil
}

type rowScanner interface{ Scan(dest ...any) error }

func scanCommand(r rowScanner) (store.Command, int64, error) { return sqlrow.ScanCommand(r.Scan) }
