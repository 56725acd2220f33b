package storetest

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/fieldhub/fieldhub/internal/store"
)

// TestAlerts checks a store.Alerts backend. open must return a new, empty
// store for each call and arrange its own cleanup.
//
// Beyond the interface comments it holds every backend to: times keep
// nanosecond precision and come back in UTC; a zero Received is filled in;
// paging with any limit visits every alert exactly once, in the order of
// an unlimited listing, also when several alerts share a time.
func TestAlerts(t *testing.T, open func(t *testing.T) store.Alerts) {
	t.Helper()
	runSuite(t, open, []subtest[store.Alerts]{
		{"AppendList", alAppendList},
		{"Empty", alEmpty},
		{"Filters", alFilters},
		{"Paging", alPaging},
		{"Resend", alResend},
		{"BadCursor", alBadCursor},
	})
}

// alT is the time base of the alert tests, with nanoseconds.
var alT = time.Date(2026, 11, 27, 10, 0, 0, 123456789, time.UTC)

func alert(device string, sec int, severity, rule string) store.Alert {
	return store.Alert{
		Device: device, TS: alT.Add(time.Duration(sec) * time.Second), Received: alT.Add(time.Hour),
		Metric: "temperature", Value: 90 + float64(sec), Rule: rule, Severity: severity,
		Message: fmt.Sprintf("%s %d", device, sec), State: "raised",
	}
}

func mustAppendAlerts(ctx context.Context, t *testing.T, s store.Alerts, as ...store.Alert) {
	t.Helper()
	if err := s.AppendAlerts(ctx, as); err != nil {
		t.Fatalf("AppendAlerts = %v", err)
	}
}

func listAlerts(ctx context.Context, t *testing.T, s store.Alerts, q store.AlertQuery) store.AlertPage {
	t.Helper()
	p, err := s.ListAlerts(ctx, q)
	if err != nil {
		t.Fatalf("ListAlerts(%+v) = %v", q, err)
	}
	return p
}

// alertDiff returns the first difference between two alerts, or "".
func alertDiff(got, want store.Alert) string {
	switch {
	case got.Device != want.Device, got.Metric != want.Metric, got.Value != want.Value, got.Rule != want.Rule,
		got.Severity != want.Severity, got.Message != want.Message, got.State != want.State:
		return fmt.Sprintf("got %+v, want %+v", got, want)
	case !got.TS.Equal(want.TS) || got.TS.Location() != time.UTC:
		return fmt.Sprintf("TS = %v, want %v in UTC", got.TS, want.TS)
	case !want.Received.IsZero() && !got.Received.Equal(want.Received):
		return fmt.Sprintf("Received = %v, want %v", got.Received, want.Received)
	}
	return ""
}

func checkAlerts(t *testing.T, what string, got, want []store.Alert) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d alerts, want %d: %+v", what, len(got), len(want), got)
	}
	for i := range want {
		if d := alertDiff(got[i], want[i]); d != "" {
			t.Errorf("%s: alert %d: %s", what, i, d)
		}
	}
}

func alAppendList(ctx context.Context, t *testing.T, s store.Alerts) {
	a1, a2, a3 := alert("d1", 1, "info", "r"), alert("d2", 3, "critical", "r"), alert("d1", 2, "warning", "r")
	a3.Received = time.Time{}
	before := time.Now()
	mustAppendAlerts(ctx, t, s, a1, a2)
	mustAppendAlerts(ctx, t, s, a3)
	p := listAlerts(ctx, t, s, store.AlertQuery{})
	checkAlerts(t, "ListAlerts", p.Alerts, []store.Alert{a2, a3, a1})
	if p.Next != "" {
		t.Errorf("ListAlerts without limit: Next = %q, want \"\"", p.Next)
	}
	if r := p.Alerts[1].Received; r.Before(before.Add(-time.Second)) || r.After(time.Now().Add(time.Second)) {
		t.Errorf("a zero Received came back as %v; want the time of the append", r)
	}
	if err := s.AppendAlerts(ctx, nil); err != nil {
		t.Errorf("AppendAlerts(nil) = %v", err)
	}
}

func alEmpty(ctx context.Context, t *testing.T, s store.Alerts) {
	p := listAlerts(ctx, t, s, store.AlertQuery{Limit: 10})
	if len(p.Alerts) != 0 || p.Next != "" {
		t.Errorf("ListAlerts of an empty store = %+v", p)
	}
}

func alFilters(ctx context.Context, t *testing.T, s store.Alerts) {
	var all []store.Alert
	for i, sev := range []string{"info", "warning", "critical", "warning", "critical", "info"} {
		all = append(all, alert(fmt.Sprintf("d%d", i%2), i, sev, "r"))
	}
	mustAppendAlerts(ctx, t, s, all...)
	tests := []struct {
		q    store.AlertQuery
		want []int
	}{
		{store.AlertQuery{Device: "d0"}, []int{4, 2, 0}},
		{store.AlertQuery{Severity: "critical"}, []int{4, 2}},
		{store.AlertQuery{Device: "d1", Severity: "warning"}, []int{3, 1}},
		{store.AlertQuery{Device: "nobody"}, nil},
		{store.AlertQuery{Device: "d0", Limit: 2}, []int{4, 2}},
	}
	for _, tt := range tests {
		var want []store.Alert
		for _, i := range tt.want {
			want = append(want, all[i])
		}
		checkAlerts(t, fmt.Sprintf("ListAlerts(%+v)", tt.q), listAlerts(ctx, t, s, tt.q).Alerts, want)
	}
}

func alPaging(ctx context.Context, t *testing.T, s store.Alerts) {
	var all []store.Alert
	for i := range 7 {
		// pairs of alerts share a time: the tie is broken by arrival
		all = append(all, alert("d", i/2, "warning", fmt.Sprintf("r%d", i)))
	}
	mustAppendAlerts(ctx, t, s, all...)
	full := listAlerts(ctx, t, s, store.AlertQuery{}).Alerts
	if len(full) != len(all) {
		t.Fatalf("ListAlerts = %d alerts, want %d", len(full), len(all))
	}
	for i := 1; i < len(full); i++ {
		if full[i].TS.After(full[i-1].TS) {
			t.Fatalf("ListAlerts not newest first: %v after %v", full[i].TS, full[i-1].TS)
		}
	}
	if full[0].Rule != "r6" || full[1].Rule != "r5" || full[2].Rule != "r4" {
		t.Errorf("ListAlerts starts %s, %s, %s; want r6, r5, r4 (time, then the later arrival first)", full[0].Rule, full[1].Rule, full[2].Rule)
	}
	for _, limit := range []int{1, 2, 3, 7, 8} {
		var got []store.Alert
		q := store.AlertQuery{Limit: limit}
		for pages := 0; ; pages++ {
			if pages > len(all)+1 {
				t.Fatalf("limit %d: paging does not end", limit)
			}
			p := listAlerts(ctx, t, s, q)
			if len(p.Alerts) > limit {
				t.Fatalf("limit %d: a page of %d", limit, len(p.Alerts))
			}
			got = append(got, p.Alerts...)
			if p.Next == "" {
				break
			}
			q.Before = p.Next
		}
		checkAlerts(t, fmt.Sprintf("paging by %d", limit), got, full)
	}
}

func alResend(ctx context.Context, t *testing.T, s store.Alerts) {
	a := alert("d", 1, "critical", "threshold_above")
	cleared := a
	cleared.State = "cleared"
	mustAppendAlerts(ctx, t, s, a, a)
	mustAppendAlerts(ctx, t, s, a, cleared)
	checkAlerts(t, "after resends", listAlerts(ctx, t, s, store.AlertQuery{}).Alerts, []store.Alert{cleared, a})
}

func alBadCursor(ctx context.Context, t *testing.T, s store.Alerts) {
	mustAppendAlerts(ctx, t, s, alert("d", 1, "info", "r"))
	for _, c := range []string{"x", "1.", ".1", "1.x", "1"} {
		if _, err := s.ListAlerts(ctx, store.AlertQuery{Before: c}); !errors.Is(err, store.ErrInvalidQuery) {
			t.Errorf("ListAlerts(Before: %q) = %v, want ErrInvalidQuery", c, err)
		}
	}
	if _, err := s.ListAlerts(ctx, store.AlertQuery{Limit: -1}); !errors.Is(err, store.ErrInvalidQuery) {
		t.Errorf("ListAlerts(Limit: -1) = %v, want ErrInvalidQuery", err)
	}
}
