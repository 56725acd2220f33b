package sqlrow

import "github.com/fieldhub/fieldhub/internal/store"

// NewCommandColumns are the columns of a new command, in the order of
// CommandArgs: those of CommandColumns but seq, which the database assigns.
const NewCommandColumns = `id, device, name, params, state, created_at, expires_at,
	sent_at, attempts, completed_at, result, error`

// CommandColumns are the columns of the commands table, in the order of
// ScanCommand.
const CommandColumns = `seq, ` + NewCommandColumns

// CommandArgs returns the column values of c in NewCommandColumns order.
func CommandArgs(c store.Command) []any {
	return []any{c.ID, c.Device, c.Name, string(c.Params), string(c.State), UnixNano(c.CreatedAt),
		UnixNano(c.ExpiresAt), UnixNano(c.SentAt), c.Attempts, UnixNano(c.CompletedAt),
		NullJSON(c.Result), c.Error}
}

// ScanCommand reads a row of CommandColumns through scan (a row's Scan);
// seq is the command's creation sequence number.
func ScanCommand(scan func(dest ...any) error) (c store.Command, seq int64, err error) {
	var (
		created, expires, sent, completed int64
		params, state                     string
		result                            *string
	)
	if err := scan(&seq, &c.ID, &c.Device, &c.Name, &params, &state, &created, &expires,
		&sent, &c.Attempts, &completed, &result, &c.Error); err != nil {
		return store.Command{}, 0, err
	}
	c.Params, c.State = []byte(params), store.CommandState(state)
	c.CreatedAt, c.ExpiresAt = FromUnixNano(created), FromUnixNano(expires)
	c.SentAt, c.CompletedAt = FromUnixNano(sent), FromUnixNano(completed)
	if result != nil {
		c.Result = []byte(*result)
	}
	return c, seq, nil
}

// NullJSON stores nil JSON as NULL and other JSON as text.
func NullJSON(b []byte) any {
	if b == nil {
		return nil
	}
	return string(b)
}
