package postgres

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/fieldhub/fieldhub/internal/store"
	"github.com/fieldhub/fieldhub/internal/store/sqlrow"
)

const commandColumns = sqlrow.CommandColumns

// CreateCommand stores a new command; store.ErrExists when c.ID is taken.
func (db *DB) CreateCommand(ctx context.Context, c store.Command) error {
	return db.insert(ctx, "command", c.ID, `INSERT INTO commands (`+sqlrow.NewCommandColumns+`)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)`, sqlrow.CommandArgs(c)...)
}

// GetCommand returns one command; store.ErrNotFound when missing.
func (db *DB) GetCommand(ctx context.Context, id string) (store.Command, error) {
	c, err := getRow(ctx, db, "command", id, `SELECT `+commandColumns+` FROM commands WHERE id = $1`, scanCommand)
	return c.Command, err
}

// ListCommands returns a device's commands newest first: creation time
// descending, then creation order descending. The cursor is
// "{created_at}.{seq}" of the last command returned (Unix ns and creation
// sequence number), as in the embedded store.
func (db *DB) ListCommands(ctx context.Context, q store.CommandQuery) (store.CommandPage, error) {
	if q.Limit < 0 {
		return store.CommandPage{}, fmt.Errorf("postgres: commands: limit %d: %w", q.Limit, store.ErrInvalidQuery)
	}
	query := `SELECT ` + commandColumns + ` FROM commands WHERE device = $1`
	args := []any{q.Device}
	if q.Before != "" {
		ns, seq, ok := sqlrow.ParseCursor(q.Before)
		if !ok {
			return store.CommandPage{}, fmt.Errorf("postgres: commands: cursor %q: %w", q.Before, store.ErrInvalidQuery)
		}
		query += ` AND (created_at, seq) < ($2, $3)`
		args = append(args, ns, seq)
	}
	if !validText(q.Device) {
		return store.CommandPage{}, nil
	}
	query += ` ORDER BY created_at DESC, seq DESC`
	if q.Limit > 0 {
		args = append(args, q.Limit+1)
		query += fmt.Sprintf(` LIMIT $%d`, len(args))
	}
	rows, _ := db.pool.Query(ctx, query, args...)
	cs, err := pgx.CollectRows(rows, scanCommand)
	if err != nil {
		return store.CommandPage{}, fmt.Errorf("postgres: listing commands: %w", err)
	}
	var page store.CommandPage
	if q.Limit > 0 && len(cs) > q.Limit {
		cs = cs[:q.Limit]
		last := cs[len(cs)-1]
		page.Next = sqlrow.FormatCursor(sqlrow.UnixNano(last.CreatedAt), last.seq)
	}
	page.Commands = make([]store.Command, len(cs))
	for i, c := range cs {
		page.Commands[i] = c.Command
	}
	return page, nil
}

// PendingCommands returns the queued and sent commands of device, oldest
// first (in creation order).
func (db *DB) PendingCommands(ctx context.Context, device string) ([]store.Command, error) {
	if !validText(device) {
		return nil, nil
	}
	rows, _ := db.pool.Query(ctx, `SELECT `+commandColumns+` FROM commands
		WHERE device = $1 AND state IN ('queued', 'sent') ORDER BY seq`, device)
	cs, err := pgx.CollectRows(rows, scanCommand)
	if err != nil {
		return nil, fmt.Errorf("postgres: pending commands of %q: %w", device, err)
	}
	return commandsOf(cs), nil
}

// UpdateCommand is a compare-and-set on the command's state, in one
// statement: the UPDATE's WHERE clause checks the state, and PostgreSQL
// re-checks it on the newest row version when a concurrent transaction
// changed the row first, so of several hubs moving a command out of the
// same state exactly one succeeds. The same statement reads whether the
// command exists, to tell store.ErrNotFound from store.ErrConflict.
func (db *DB) UpdateCommand(ctx context.Context, c store.Command, from ...store.CommandState) error {
	if len(from) == 0 {
		return fmt.Errorf("postgres: updating command %q: no expected state", c.ID)
	}
	if !validText(c.ID) {
		return fmt.Errorf("postgres: command %q: %w", c.ID, store.ErrNotFound)
	}
	states := make([]string, len(from))
	for i, s := range from {
		states[i] = string(s)
	}
	var (
		updated bool
		state   *string
	)
	err := db.pool.QueryRow(ctx, `WITH upd AS (
			UPDATE commands
			SET state = $3, sent_at = $4, attempts = $5, completed_at = $6, result = $7, error = $8
			WHERE id = $1 AND state = ANY($2::text[])
			RETURNING 1)
		SELECT EXISTS (SELECT 1 FROM upd), (SELECT state FROM commands WHERE id = $1)`,
		c.ID, states, string(c.State), sqlrow.UnixNano(c.SentAt), c.Attempts, sqlrow.UnixNano(c.CompletedAt),
		sqlrow.NullJSON(c.Result), c.Error).Scan(&updated, &state)
	switch {
	case err != nil:
		return fmt.Errorf("postgres: updating command %q: %w", c.ID, err)
	case updated:
		return nil
	case state == nil:
		return fmt.Errorf("postgres: command %q: %w", c.ID, store.ErrNotFound)
	default:
		// The state read is that of the statement's snapshot: the command
		// may have moved on since, but not into one of from at that time.
		return fmt.Errorf("postgres: command %q is %s: %w", c.ID, *state, store.ErrConflict)
	}
}

// ExpireCommands marks due commands expired in one statement and returns
// them, oldest ExpiresAt first. Rows another hub is updating are skipped
// (SKIP LOCKED) rather than waited for: that hub is answering or expiring
// them, and a later call expires them if they are still due.
func (db *DB) ExpireCommands(ctx context.Context, now time.Time, limit int) ([]store.Command, time.Time, error) {
	n := sqlrow.UnixNano(now)
	var lim *int
	if limit > 0 {
		lim = &limit
	}
	var (
		expired []store.Command
		next    *int64
	)
	err := pgx.BeginFunc(ctx, db.pool, func(tx pgx.Tx) error {
		rows, _ := tx.Query(ctx, `WITH due AS (
				SELECT seq FROM commands
				WHERE state IN ('queued', 'sent') AND expires_at <= $1
				ORDER BY expires_at, seq
				LIMIT $2
				FOR UPDATE SKIP LOCKED)
			UPDATE commands c SET state = 'expired', completed_at = $1
			FROM due WHERE c.seq = due.seq
			RETURNING `+qualified("c", commandColumns), n, lim)
		cs, err := pgx.CollectRows(rows, scanCommand)
		if err != nil {
			return err
		}
		sortByExpiry(cs)
		expired = commandsOf(cs)
		return tx.QueryRow(ctx, `SELECT min(expires_at) FROM commands WHERE state IN ('queued', 'sent')`).Scan(&next)
	})
	if err != nil {
		return nil, time.Time{}, fmt.Errorf("postgres: expiring commands: %w", err)
	}
	var nextT time.Time
	if next != nil {
		nextT = sqlrow.FromUnixNano(*next)
	}
	return expired, nextT, nil
}

// DeleteCommands deletes every command of device.
func (db *DB) DeleteCommands(ctx context.Context, device string) error {
	if !validText(device) {
		return nil
	}
	if _, err := db.pool.Exec(ctx, `DELETE FROM commands WHERE device = $1`, device); err != nil {
		return fmt.Errorf("postgres: deleting commands of %q: %w", device, err)
	}
	return nil
}

// PruneCommands deletes finished commands completed before t.
func (db *DB) PruneCommands(ctx context.Context, before time.Time) (int, error) {
	tag, err := db.pool.Exec(ctx, `DELETE FROM commands
		WHERE state IN ('succeeded', 'failed', 'expired') AND completed_at < $1`, sqlrow.UnixNano(before))
	if err != nil {
		return 0, fmt.Errorf("postgres: pruning commands: %w", err)
	}
	return int(tag.RowsAffected()), nil
}

// seqCommand is a command with its creation sequence number.
type seqCommand struct {
	store.Command
	seq int64
}

// scanCommand reads a command row for pgx.CollectRows.
func scanCommand(row pgx.CollectableRow) (seqCommand, error) {
	c, seq, err := sqlrow.ScanCommand(row.Scan)
	return seqCommand{c, seq}, err
}

func commandsOf(cs []seqCommand) []store.Command {
	out := make([]store.Command, len(cs))
	for i, c := range cs {
		out[i] = c.Command
	}
	return out
}

// sortByExpiry orders cs by ExpiresAt, then creation: RETURNING gives
// rows in no particular order.
func sortByExpiry(cs []seqCommand) {
	slices.SortFunc(cs, func(a, b seqCommand) int {
		if c := a.ExpiresAt.Compare(b.ExpiresAt); c != 0 {
			return c
		}
		return cmp.Compare(a.seq, b.seq)
	})
}

// qualified prefixes each of the comma-separated columns with table.
func qualified(table, columns string) string {
	fields := strings.Split(columns, ",")
	for i, f := range fields {
		fields[i] = table + "." + strings.TrimSpace(f)
	}
	return strings.Join(fields, ", ")
}
