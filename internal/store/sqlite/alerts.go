package sqlite

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/fieldhub/fieldhub/internal/store"
	"github.com/fieldhub/fieldhub/internal/store/sqlrow"
)

// MaxAlerts is how many alerts the database keeps: appending beyond it
// deletes the oldest by arrival, in the same transaction, so the table
// never holds more (at about 200 bytes an alert, some 200 MB at most).
const MaxAlerts = 1_000_000

// AppendAlerts stores alerts in one durable transaction (synchronous=FULL).
// An alert equal to a stored one in device, time, metric, rule and state is
// a resend and is skipped. A zero Received is the time of the call.
func (db *DB) AppendAlerts(ctx context.Context, alerts []store.Alert) error {
	if err := db.check(); err != nil {
		return err
	}
	if len(alerts) == 0 {
		return nil
	}
	now := time.Now().UnixNano()
	tx, err := db.w.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("sqlite: appending alerts: %w", err)
	}
	defer tx.Rollback()
	stmt, err := tx.PrepareContext(ctx, `INSERT INTO alerts
		(device, ts, received, metric, value, rule, severity, message, state)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
		ON CONFLICT (device, ts, metric, rule, state) DO NOTHING`)
	if err != nil {
		return fmt.Errorf("sqlite: appending alerts: %w", err)
	}
	defer stmt.Close()
	for _, a := range alerts {
		recv := now
		if !a.Received.IsZero() {
			recv = a.Received.UnixNano()
		}
		if _, err := stmt.ExecContext(ctx, a.Device, a.TS.UnixNano(), recv, a.Metric, a.Value,
			a.Rule, a.Severity, a.Message, a.State); err != nil {
			return fmt.Errorf("sqlite: appending alert of %q: %w", a.Device, err)
		}
	}
	// Retention: keep the newest maxAlerts by arrival. AUTOINCREMENT ids
	// only grow, so this is one range delete on the primary key.
	if _, err := tx.ExecContext(ctx, `DELETE FROM alerts WHERE id <=
		(SELECT seq FROM sqlite_sequence WHERE name = 'alerts') - ?`, db.maxAlerts); err != nil {
		return fmt.Errorf("sqlite: pruning alerts: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("sqlite: appending alerts: %w", err)
	}
	return nil
}

// ListAlerts returns alerts newest first: time descending, then arrival
// descending. The cursor is "{ts}.{id}" of the last alert returned.
func (db *DB) ListAlerts(ctx context.Context, q store.AlertQuery) (store.AlertPage, error) {
	if err := db.check(); err != nil {
		return store.AlertPage{}, err
	}
	if q.Limit < 0 {
		return store.AlertPage{}, fmt.Errorf("sqlite: alerts: limit %d: %w", q.Limit, store.ErrInvalidQuery)
	}
	var (
		where []string
		args  []any
	)
	if q.Device != "" {
		where = append(where, "device = ?")
		args = append(args, q.Device)
	}
	if q.Severity != "" {
		where = append(where, "severity = ?")
		args = append(args, q.Severity)
	}
	if q.Before != "" {
		ts, id, ok := sqlrow.ParseCursor(q.Before)
		if !ok {
			return store.AlertPage{}, fmt.Errorf("sqlite: alerts: cursor %q: %w", q.Before, store.ErrInvalidQuery)
		}
		where = append(where, "(ts < ? OR (ts = ? AND id < ?))")
		args = append(args, ts, ts, id)
	}
	query := `SELECT ` + sqlrow.AlertColumns + ` FROM alerts`
	if len(where) > 0 {
		query += " WHERE " + strings.Join(where, " AND ")
	}
	query += " ORDER BY ts DESC, id DESC"
	if q.Limit > 0 {
		query += " LIMIT ?"
		args = append(args, q.Limit+1)
	}
	rows, err := db.r.QueryContext(ctx, query, args...)
	if err != nil {
		return store.AlertPage{}, fmt.Errorf("sqlite: listing alerts: %w", err)
	}
	defer rows.Close()
	var (
		page   store.AlertPage
		lastTS int64
		lastID int64
	)
	for rows.Next() {
		if q.Limit > 0 && len(page.Alerts) == q.Limit {
			page.Next = sqlrow.FormatCursor(lastTS, lastID)
			break
		}
		a, id, ts, err := sqlrow.ScanAlert(rows.Scan)
		if err != nil {
			return store.AlertPage{}, fmt.Errorf("sqlite: listing alerts: %w", err)
		}
		lastID, lastTS = id, ts
		page.Alerts = append(page.Alerts, a)
	}
	if err := rows.Err(); err != nil {
		return store.AlertPage{}, fmt.Errorf("sqlite: listing alerts: %w", err)
	}
	return page, nil
}

// HasChildren reports whether any device is registered behind gateway.
// The registry uses it (an optional interface) to tell gateways apart.
func (db *DB) HasChildren(ctx context.Context, gateway string) (bool, error) {
	if err := db.check(); err != nil {
		return false, err
	}
	var one int
	err := db.r.QueryRowContext(ctx, `SELECT EXISTS (SELECT 1 FROM devices WHERE gateway = ? AND gateway != '')`, gateway).Scan(&one)
	if err != nil {
		return false, fmt.Errorf("sqlite: looking up devices behind %q: %w", gateway, err)
	}
	return one == 1, nil
}
