package sqlrow

import (
	"fmt"

	"github.com/fieldhub/fieldhub/internal/store"
)

// TwinColumns are the columns of the twins table, in the order of ScanTwin.
const TwinColumns = `device, desired_version, desired, desired_updated,
	reported_version, reported, reported_updated`

// ScanTwin reads a row of TwinColumns through scan (a row's Scan). A NULL
// document is a nil State.
func ScanTwin(scan func(dest ...any) error) (store.Twin, error) {
	var (
		t                  store.Twin
		desired, reported  *string
		dUpdated, rUpdated int64
	)
	if err := scan(&t.Device, &t.Desired.Version, &desired, &dUpdated,
		&t.Reported.Version, &reported, &rUpdated); err != nil {
		return store.Twin{}, err
	}
	if desired != nil {
		t.Desired.State = []byte(*desired)
	}
	if reported != nil {
		t.Reported.State = []byte(*reported)
	}
	t.Desired.UpdatedAt, t.Reported.UpdatedAt = FromUnixNano(dUpdated), FromUnixNano(rUpdated)
	return t, nil
}

// TwinDocColumn checks a PutTwinDoc of doc over version prev and returns
// the column prefix of side ("desired" or "reported": the document is
// stored in col, col_version and col_updated).
func TwinDocColumn(device string, side store.TwinSide, prev int64, doc store.TwinDoc) (col string, err error) {
	switch side {
	case store.TwinDesired:
		col = "desired"
	case store.TwinReported:
		col = "reported"
	default:
		return "", fmt.Errorf("twin of %q: unknown side %q", device, side)
	}
	if doc.Version <= prev {
		return "", fmt.Errorf("twin of %q: %s version %d is not above %d", device, side, doc.Version, prev)
	}
	return col, nil
}
