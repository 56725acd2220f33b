package postgres

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/fieldhub/fieldhub/internal/store"
	"github.com/fieldhub/fieldhub/internal/store/sqlrow"
)

// MaxAlerts is how many alerts the database keeps: appending beyond it
// deletes the oldest by arrival, in the same transaction, so the table
// never holds more (at about 200 bytes an alert, some 200 MB at most).
//
// The count is kept in the one row of alert_count, which every append
// locks first: appends from all the hubs sharing the database are
// serialized (alerts are rare; each holds the lock for one short
// transaction), arrival ids are assigned in commit order, and trimming
// never has to count the table.
const MaxAlerts = 1_000_000

// maxAlerts is the bound applied; tests lower it.
var maxAlerts int64 = MaxAlerts

// AppendAlerts stores alerts in one transaction and returns once it is
// committed (durable with the default synchronous_commit). An alert equal
// to a stored one in device, time, metric, rule and state is a resend and
// is skipped. A zero Received is the time of the call.
func (db *DB) AppendAlerts(ctx context.Context, alerts []store.Alert) error {
	if len(alerts) == 0 {
		return nil
	}
	now := time.Now().UnixNano()
	keep := maxAlerts
	err := pgx.BeginFunc(ctx, db.pool, func(tx pgx.Tx) error {
		b := &pgx.Batch{}
		b.Queue(`SELECT n FROM alert_count FOR UPDATE`)
		for _, a := range alerts {
			recv := now
			if !a.Received.IsZero() {
				recv = a.Received.UnixNano()
			}
			b.Queue(`INSERT INTO alerts (device, ts, received, metric, value, rule, severity, message, state)
				VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
				ON CONFLICT (device, ts, metric, rule, state) DO NOTHING`,
				a.Device, sqlrow.UnixNano(a.TS), recv, a.Metric, a.Value, a.Rule, a.Severity, a.Message, a.State)
		}
		br := tx.SendBatch(ctx, b)
		var n int64
		if err := br.QueryRow().Scan(&n); err != nil {
			br.Close()
			return fmt.Errorf("locking alert_count: %w", err)
		}
		for _, a := range alerts {
			tag, err := br.Exec()
			if err != nil {
				br.Close()
				return fmt.Errorf("alert of %q: %w", a.Device, err)
			}
			n += tag.RowsAffected()
		}
		if err := br.Close(); err != nil {
			return err
		}
		// Retention: keep the newest keep by arrival.
		_, err := tx.Exec(ctx, `WITH del AS (
				DELETE FROM alerts WHERE id IN (SELECT id FROM alerts ORDER BY id LIMIT greatest($1::bigint - $2::bigint, 0))
				RETURNING 1)
			UPDATE alert_count SET n = $1::bigint - (SELECT count(*) FROM del)`, n, keep)
		if err != nil {
			return fmt.Errorf("pruning alerts: %w", err)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("postgres: appending alerts: %w", err)
	}
	return nil
}

// ListAlerts returns alerts newest first: time descending, then arrival
// descending. The cursor is "{ts}.{id}" of the last alert returned (Unix
// ns and arrival id), as in the embedded store.
func (db *DB) ListAlerts(ctx context.Context, q store.AlertQuery) (store.AlertPage, error) {
	if q.Limit < 0 {
		return store.AlertPage{}, fmt.Errorf("postgres: alerts: limit %d: %w", q.Limit, store.ErrInvalidQuery)
	}
	var (
		where []string
		args  []any
	)
	if q.Before != "" {
		ts, id, ok := sqlrow.ParseCursor(q.Before)
		if !ok {
			return store.AlertPage{}, fmt.Errorf("postgres: alerts: cursor %q: %w", q.Before, store.ErrInvalidQuery)
		}
		args = append(args, ts, id)
		where = append(where, "(ts, id) < ($1, $2)")
	}
	if !validText(q.Device) || !validText(q.Severity) {
		return store.AlertPage{}, nil // nothing stored matches
	}
	if q.Device != "" {
		args = append(args, q.Device)
		where = append(where, fmt.Sprintf("device = $%d", len(args)))
	}
	if q.Severity != "" {
		args = append(args, q.Severity)
		where = append(where, fmt.Sprintf("severity = $%d", len(args)))
	}
	query := `SELECT ` + sqlrow.AlertColumns + ` FROM alerts`
	if len(where) > 0 {
		query += " WHERE " + strings.Join(where, " AND ")
	}
	query += " ORDER BY ts DESC, id DESC"
	if q.Limit > 0 {
		args = append(args, q.Limit+1)
		query += fmt.Sprintf(" LIMIT $%d", len(args))
	}
	rows, err := db.pool.Query(ctx, query, args...)
	if err != nil {
		return store.AlertPage{}, fmt.Errorf("postgres: listing alerts: %w", err)
	}
	defer rows.Close()
	var (
		page           store.AlertPage
		lastTS, lastID int64
	)
	for rows.Next() {
		if q.Limit > 0 && len(page.Alerts) == q.Limit {
			page.Next = sqlrow.FormatCursor(lastTS, lastID)
			break
		}
		a, id, ts, err := sqlrow.ScanAlert(rows.Scan)
		if err != nil {
			return store.AlertPage{}, fmt.Errorf("postgres: listing alerts: %w", err)
		}
		lastID, lastTS = id, ts
		page.Alerts = append(page.Alerts, a)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return store.AlertPage{}, fmt.Errorf("postgres: listing alerts: %w", err)
	}
	return page, nil
}
