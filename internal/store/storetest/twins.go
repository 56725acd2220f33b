package storetest

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/fieldhub/fieldhub/internal/store"
)

// TestTwins checks a store.Twins backend. open must return a new, empty
// store for each call and arrange its own cleanup.
//
// Beyond the interface comments it holds every backend to: states come
// back byte for byte; times keep nanosecond precision and come back in
// UTC; the two sides of a twin are versioned independently.
func TestTwins(t *testing.T, open func(t *testing.T) store.Twins) {
	t.Helper()
	runSuite(t, open, []subtest[store.Twins]{
		{"Empty", twEmpty},
		{"PutGet", twPutGet},
		{"Conflicts", twConflicts},
		{"ListDelete", twListDelete},
	})
}

func twinDoc(v int64, state string, sec int) store.TwinDoc {
	return store.TwinDoc{Version: v, State: []byte(state), UpdatedAt: cmdT.Add(time.Duration(sec) * time.Second)}
}

func docDiff(got, want store.TwinDoc) string {
	switch {
	case got.Version != want.Version:
		return fmt.Sprintf("Version = %d, want %d", got.Version, want.Version)
	case string(got.State) != string(want.State) || (got.State == nil) != (want.State == nil):
		return fmt.Sprintf("State = %q, want %q", got.State, want.State)
	case !got.UpdatedAt.Equal(want.UpdatedAt) || (!got.UpdatedAt.IsZero() && got.UpdatedAt.Location() != time.UTC):
		return fmt.Sprintf("UpdatedAt = %v, want %v in UTC", got.UpdatedAt, want.UpdatedAt)
	}
	return ""
}

func checkTwin(t *testing.T, what string, got store.Twin, device string, desired, reported store.TwinDoc) {
	t.Helper()
	if got.Device != device {
		t.Errorf("%s: Device = %q, want %q", what, got.Device, device)
	}
	if d := docDiff(got.Desired, desired); d != "" {
		t.Errorf("%s: desired: %s", what, d)
	}
	if d := docDiff(got.Reported, reported); d != "" {
		t.Errorf("%s: reported: %s", what, d)
	}
}

func mustGetTwin(ctx context.Context, t *testing.T, s store.Twins, device string) store.Twin {
	t.Helper()
	tw, err := s.GetTwin(ctx, device)
	if err != nil {
		t.Fatalf("GetTwin(%s) = %v", device, err)
	}
	return tw
}

func mustPut(ctx context.Context, t *testing.T, s store.Twins, device string, side store.TwinSide, prev int64, doc store.TwinDoc) {
	t.Helper()
	if err := s.PutTwinDoc(ctx, device, side, prev, doc); err != nil {
		t.Fatalf("PutTwinDoc(%s, %s, %d) = %v", device, side, prev, err)
	}
}

func twEmpty(ctx context.Context, t *testing.T, s store.Twins) {
	checkTwin(t, "GetTwin of a new device", mustGetTwin(ctx, t, s, "d1"), "d1", store.TwinDoc{}, store.TwinDoc{})
	if l, err := s.ListTwins(ctx, "", 0); err != nil || len(l) != 0 {
		t.Errorf("ListTwins of an empty store = %v, %v", l, err)
	}
	if err := s.DeleteTwin(ctx, "d1"); err != nil {
		t.Errorf("DeleteTwin of a device without twin = %v", err)
	}
}

func twPutGet(ctx context.Context, t *testing.T, s store.Twins) {
	r1 := twinDoc(1, `{"fw":"1.0","temp":{"unit":"C"}}`, 1)
	mustPut(ctx, t, s, "d1", store.TwinReported, 0, r1)
	checkTwin(t, "after the first reported", mustGetTwin(ctx, t, s, "d1"), "d1", store.TwinDoc{}, r1)
	d1 := twinDoc(1, `{"interval":10}`, 2)
	mustPut(ctx, t, s, "d1", store.TwinDesired, 0, d1)
	d2 := twinDoc(2, `{"interval":20}`, 3)
	mustPut(ctx, t, s, "d1", store.TwinDesired, 1, d2)
	// Versions may jump.
	r5 := twinDoc(5, `{}`, 4)
	mustPut(ctx, t, s, "d1", store.TwinReported, 1, r5)
	checkTwin(t, "after updates", mustGetTwin(ctx, t, s, "d1"), "d1", d2, r5)
	checkTwin(t, "another device", mustGetTwin(ctx, t, s, "d2"), "d2", store.TwinDoc{}, store.TwinDoc{})
}

func twConflicts(ctx context.Context, t *testing.T, s store.Twins) {
	d1 := twinDoc(1, `{"a":1}`, 1)
	mustPut(ctx, t, s, "d1", store.TwinDesired, 0, d1)
	for _, tt := range []struct {
		side store.TwinSide
		prev int64
		doc  store.TwinDoc
	}{
		{store.TwinDesired, 0, twinDoc(2, `{"a":2}`, 2)},  // already written
		{store.TwinDesired, 2, twinDoc(3, `{"a":3}`, 3)},  // ahead of the stored version
		{store.TwinReported, 1, twinDoc(2, `{"b":1}`, 2)}, // reported never written
	} {
		if err := s.PutTwinDoc(ctx, "d1", tt.side, tt.prev, tt.doc); !errors.Is(err, store.ErrConflict) {
			t.Errorf("PutTwinDoc(d1, %s, prev %d) = %v, want ErrConflict", tt.side, tt.prev, err)
		}
	}
	if err := s.PutTwinDoc(ctx, "nobody", store.TwinDesired, 3, twinDoc(4, `{}`, 1)); !errors.Is(err, store.ErrConflict) {
		t.Errorf("PutTwinDoc(nobody, prev 3) = %v, want ErrConflict", err)
	}
	checkTwin(t, "after conflicts", mustGetTwin(ctx, t, s, "d1"), "d1", d1, store.TwinDoc{})
	if _, err := s.GetTwin(ctx, "nobody"); err != nil {
		t.Errorf("GetTwin(nobody) = %v", err)
	}
	if l, _ := s.ListTwins(ctx, "", 0); len(l) != 1 {
		t.Errorf("a conflicting write created a twin: ListTwins = %v", l)
	}
}

func twListDelete(ctx context.Context, t *testing.T, s store.Twins) {
	for _, d := range []string{"c", "a", "b", "d"} {
		mustPut(ctx, t, s, d, store.TwinDesired, 0, twinDoc(1, `{"id":"`+d+`"}`, 1))
	}
	mustPut(ctx, t, s, "b", store.TwinReported, 0, twinDoc(1, `{"r":1}`, 2))
	var got []string
	after := ""
	for pages := 0; ; pages++ {
		if pages > 5 {
			t.Fatal("ListTwins paging does not end")
		}
		l, err := s.ListTwins(ctx, after, 3)
		if err != nil {
			t.Fatal(err)
		}
		if len(l) == 0 {
			break
		}
		for _, tw := range l {
			got = append(got, tw.Device)
			if tw.Device == "b" {
				checkTwin(t, "listed b", tw, "b", twinDoc(1, `{"id":"b"}`, 1), twinDoc(1, `{"r":1}`, 2))
			}
		}
		after = l[len(l)-1].Device
	}
	if fmt.Sprint(got) != "[a b c d]" {
		t.Errorf("ListTwins visited %v, want [a b c d]", got)
	}
	if err := s.DeleteTwin(ctx, "b"); err != nil {
		t.Fatal(err)
	}
	checkTwin(t, "after DeleteTwin", mustGetTwin(ctx, t, s, "b"), "b", store.TwinDoc{}, store.TwinDoc{})
	// A deleted twin starts again from version 0.
	mustPut(ctx, t, s, "b", store.TwinDesired, 0, twinDoc(1, `{}`, 3))
}
