package sqlrow

import "github.com/fieldhub/fieldhub/internal/store"

// AlertColumns are the columns of the alerts table, in the order of
// ScanAlert.
const AlertColumns = `id, device, ts, received, metric, value, rule, severity, message, state`

// ScanAlert reads a row of AlertColumns through scan (a row's Scan); id
// is the alert's arrival number and ts its time in Unix ns, the parts of
// a FormatCursor cursor.
func ScanAlert(scan func(dest ...any) error) (a store.Alert, id, ts int64, err error) {
	var rcv int64
	if err := scan(&id, &a.Device, &ts, &rcv, &a.Metric, &a.Value, &a.Rule, &a.Severity, &a.Message, &a.State); err != nil {
		return store.Alert{}, 0, 0, err
	}
	a.TS, a.Received = FromUnixNano(ts), FromUnixNano(rcv)
	return a, id, ts, nil
}
