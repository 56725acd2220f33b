package storetest

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/fieldhub/fieldhub/internal/store"
)

// TestCommands checks a store.Commands backend. open must return a new,
// empty store for each call and arrange its own cleanup.
//
// Beyond the interface comments it holds every backend to: times keep
// nanosecond precision and come back in UTC; Params and Result come back
// byte for byte (a nil Result stays nil); paging with any limit visits
// every command exactly once, in the order of an unlimited listing, also
// when several commands share a creation time.
func TestCommands(t *testing.T, open func(t *testing.T) store.Commands) {
	t.Helper()
	runSuite(t, open, []subtest[store.Commands]{
		{"CreateGet", cmdCreateGet},
		{"Transitions", cmdTransitions},
		{"Pending", cmdPending},
		{"ListPaging", cmdListPaging},
		{"Expire", cmdExpire},
		{"DeletePrune", cmdDeletePrune},
		{"BadQuery", cmdBadQuery},
	})
}

// cmdT is the time base of the command tests, with nanoseconds.
var cmdT = time.Date(2026, 11, 27, 10, 0, 0, 123456789, time.UTC)

func command(id, device string, sec int) store.Command {
	return store.Command{
		ID: id, Device: device, Name: "reboot", Params: []byte(`{"delay":5,"mode":"soft"}`),
		State: store.CommandQueued, CreatedAt: cmdT.Add(time.Duration(sec) * time.Second),
		ExpiresAt: cmdT.Add(time.Duration(sec)*time.Second + time.Hour),
	}
}

func mustCreateCommand(ctx context.Context, t *testing.T, s store.Commands, cs ...store.Command) {
	t.Helper()
	for _, c := range cs {
		if err := s.CreateCommand(ctx, c); err != nil {
			t.Fatalf("CreateCommand(%s) = %v", c.ID, err)
		}
	}
}

func mustGetCommand(ctx context.Context, t *testing.T, s store.Commands, id string) store.Command {
	t.Helper()
	c, err := s.GetCommand(ctx, id)
	if err != nil {
		t.Fatalf("GetCommand(%s) = %v", id, err)
	}
	return c
}

// commandDiff returns the first difference between two commands, or "".
func commandDiff(got, want store.Command) string {
	times := []struct {
		name      string
		got, want time.Time
	}{
		{"CreatedAt", got.CreatedAt, want.CreatedAt},
		{"ExpiresAt", got.ExpiresAt, want.ExpiresAt},
		{"SentAt", got.SentAt, want.SentAt},
		{"CompletedAt", got.CompletedAt, want.CompletedAt},
	}
	for _, tt := range times {
		if !tt.got.Equal(tt.want) || (!tt.got.IsZero() && tt.got.Location() != time.UTC) {
			return fmt.Sprintf("%s = %v, want %v in UTC", tt.name, tt.got, tt.want)
		}
	}
	switch {
	case got.ID != want.ID, got.Device != want.Device, got.Name != want.Name, got.State != want.State,
		got.Attempts != want.Attempts, got.Error != want.Error:
		return fmt.Sprintf("got %+v, want %+v", got, want)
	case string(got.Params) != string(want.Params):
		return fmt.Sprintf("Params = %s, want %s", got.Params, want.Params)
	case string(got.Result) != string(want.Result) || (got.Result == nil) != (want.Result == nil):
		return fmt.Sprintf("Result = %q, want %q", got.Result, want.Result)
	}
	return ""
}

func checkCommands(t *testing.T, what string, got, want []store.Command) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d commands, want %d: %+v", what, len(got), len(want), got)
	}
	for i := range want {
		if d := commandDiff(got[i], want[i]); d != "" {
			t.Errorf("%s: command %d: %s", what, i, d)
		}
	}
}

func cmdCreateGet(ctx context.Context, t *testing.T, s store.Commands) {
	c := command("c1", "d1", 0)
	mustCreateCommand(ctx, t, s, c)
	if d := commandDiff(mustGetCommand(ctx, t, s, "c1"), c); d != "" {
		t.Errorf("GetCommand after CreateCommand: %s", d)
	}
	if err := s.CreateCommand(ctx, command("c1", "d2", 1)); !errors.Is(err, store.ErrExists) {
		t.Errorf("CreateCommand of a taken id = %v, want ErrExists", err)
	}
	if _, err := s.GetCommand(ctx, "nope"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("GetCommand(nope) = %v, want ErrNotFound", err)
	}
	// A command may be created already sent.
	sent := command("c2", "d1", 1)
	sent.State, sent.SentAt, sent.Attempts = store.CommandSent, sent.CreatedAt, 1
	mustCreateCommand(ctx, t, s, sent)
	if d := commandDiff(mustGetCommand(ctx, t, s, "c2"), sent); d != "" {
		t.Errorf("GetCommand of a command created sent: %s", d)
	}
}

func cmdTransitions(ctx context.Context, t *testing.T, s store.Commands) {
	c := command("c1", "d1", 0)
	mustCreateCommand(ctx, t, s, c)

	c.State, c.SentAt, c.Attempts = store.CommandSent, cmdT.Add(time.Second), 1
	if err := s.UpdateCommand(ctx, c, store.CommandQueued); err != nil {
		t.Fatalf("UpdateCommand(queued → sent) = %v", err)
	}
	// Resend: sent → sent.
	c.SentAt, c.Attempts = cmdT.Add(2*time.Second), 2
	if err := s.UpdateCommand(ctx, c, store.CommandQueued, store.CommandSent); err != nil {
		t.Fatalf("UpdateCommand(sent → sent) = %v", err)
	}
	done := c
	done.State, done.CompletedAt, done.Result = store.CommandSucceeded, cmdT.Add(3*time.Second), []byte(`{"uptime":12,"ok":[true,null]}`)
	if err := s.UpdateCommand(ctx, done, store.CommandQueued, store.CommandSent); err != nil {
		t.Fatalf("UpdateCommand(sent → succeeded) = %v", err)
	}
	if d := commandDiff(mustGetCommand(ctx, t, s, "c1"), done); d != "" {
		t.Errorf("after the transitions: %s", d)
	}
	// The state is compared and set: a second answer conflicts.
	failed := c
	failed.State, failed.CompletedAt, failed.Error = store.CommandFailed, cmdT.Add(4*time.Second), "no"
	if err := s.UpdateCommand(ctx, failed, store.CommandQueued, store.CommandSent); !errors.Is(err, store.ErrConflict) {
		t.Errorf("UpdateCommand of a succeeded command from sent = %v, want ErrConflict", err)
	}
	if d := commandDiff(mustGetCommand(ctx, t, s, "c1"), done); d != "" {
		t.Errorf("a conflicting update changed the command: %s", d)
	}
	if err := s.UpdateCommand(ctx, command("nope", "d1", 0), store.CommandQueued); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("UpdateCommand(nope) = %v, want ErrNotFound", err)
	}
	// A failure with a null result keeps it: "null" is not nil.
	f := command("c2", "d1", 1)
	mustCreateCommand(ctx, t, s, f)
	f.State, f.CompletedAt, f.Error, f.Result = store.CommandFailed, cmdT.Add(5*time.Second), "disk full", []byte("null")
	if err := s.UpdateCommand(ctx, f, store.CommandQueued, store.CommandSent); err != nil {
		t.Fatalf("UpdateCommand(queued → failed) = %v", err)
	}
	if d := commandDiff(mustGetCommand(ctx, t, s, "c2"), f); d != "" {
		t.Errorf("failed command: %s", d)
	}
}

func cmdPending(ctx context.Context, t *testing.T, s store.Commands) {
	a, b, c, other := command("a", "d1", 3), command("b", "d1", 1), command("c", "d1", 2), command("o", "d2", 0)
	mustCreateCommand(ctx, t, s, a, b, c, other)
	b.State, b.SentAt, b.Attempts = store.CommandSent, cmdT.Add(4*time.Second), 1
	if err := s.UpdateCommand(ctx, b, store.CommandQueued); err != nil {
		t.Fatal(err)
	}
	c.State, c.CompletedAt = store.CommandSucceeded, cmdT.Add(5*time.Second)
	if err := s.UpdateCommand(ctx, c, store.CommandQueued); err != nil {
		t.Fatal(err)
	}
	got, err := s.PendingCommands(ctx, "d1")
	if err != nil {
		t.Fatal(err)
	}
	// Oldest first means in creation order.
	checkCommands(t, "PendingCommands(d1)", got, []store.Command{a, b})
	if got, err := s.PendingCommands(ctx, "nobody"); err != nil || len(got) != 0 {
		t.Errorf("PendingCommands(nobody) = %v, %v; want none", got, err)
	}
}

func cmdListPaging(ctx context.Context, t *testing.T, s store.Commands) {
	var all []store.Command
	for i := range 7 {
		// pairs share a creation time: the later creation comes first
		all = append(all, command(fmt.Sprintf("c%d", i), "d1", i/2))
	}
	mustCreateCommand(ctx, t, s, all...)
	mustCreateCommand(ctx, t, s, command("x", "d2", 9))
	p, err := s.ListCommands(ctx, store.CommandQuery{Device: "d1"})
	if err != nil {
		t.Fatal(err)
	}
	want := []store.Command{all[6], all[5], all[4], all[3], all[2], all[1], all[0]}
	checkCommands(t, "ListCommands(d1)", p.Commands, want)
	if p.Next != "" {
		t.Errorf("ListCommands without limit: Next = %q", p.Next)
	}
	for _, limit := range []int{1, 2, 3, 7, 8} {
		var got []store.Command
		q := store.CommandQuery{Device: "d1", Limit: limit}
		for pages := 0; ; pages++ {
			if pages > len(all)+1 {
				t.Fatalf("limit %d: paging does not end", limit)
			}
			p, err := s.ListCommands(ctx, q)
			if err != nil {
				t.Fatalf("ListCommands(%+v) = %v", q, err)
			}
			if len(p.Commands) > limit {
				t.Fatalf("limit %d: a page of %d", limit, len(p.Commands))
			}
			got = append(got, p.Commands...)
			if p.Next == "" {
				break
			}
			q.Before = p.Next
		}
		checkCommands(t, fmt.Sprintf("paging by %d", limit), got, want)
	}
	if p, err := s.ListCommands(ctx, store.CommandQuery{Device: "nobody", Limit: 5}); err != nil || len(p.Commands) != 0 || p.Next != "" {
		t.Errorf("ListCommands(nobody) = %+v, %v", p, err)
	}
}

func cmdExpire(ctx context.Context, t *testing.T, s store.Commands) {
	if got, next, err := s.ExpireCommands(ctx, cmdT, 0); err != nil || len(got) != 0 || !next.IsZero() {
		t.Fatalf("ExpireCommands on an empty store = %v, %v, %v", got, next, err)
	}
	mk := func(id string, expires time.Duration, state store.CommandState) store.Command {
		c := command(id, "d1", 0)
		c.ExpiresAt, c.State = cmdT.Add(expires), state
		if state == store.CommandSent {
			c.SentAt, c.Attempts = cmdT, 1
		}
		if state.Terminal() {
			c.CompletedAt = cmdT
		}
		return c
	}
	q1 := mk("q1", time.Second, store.CommandQueued)
	s1 := mk("s1", 2*time.Second, store.CommandSent)
	q2 := mk("q2", 3*time.Second, store.CommandQueued)
	q3 := mk("q3", 4*time.Second, store.CommandQueued)
	done := mk("done", time.Second, store.CommandSucceeded)
	mustCreateCommand(ctx, t, s, q1, s1, q2, q3, done)

	// Not yet due.
	got, next, err := s.ExpireCommands(ctx, cmdT, 0)
	if err != nil || len(got) != 0 || !next.Equal(q1.ExpiresAt) {
		t.Fatalf("ExpireCommands(before any expiry) = %v, %v, %v; want none, next %v", got, next, err, q1.ExpiresAt)
	}
	// Due at exactly ExpiresAt, limited.
	now := cmdT.Add(3 * time.Second)
	got, next, err = s.ExpireCommands(ctx, now, 2)
	if err != nil {
		t.Fatal(err)
	}
	wq1, ws1 := q1, s1
	wq1.State, wq1.CompletedAt = store.CommandExpired, now
	ws1.State, ws1.CompletedAt = store.CommandExpired, now
	checkCommands(t, "ExpireCommands(limit 2)", got, []store.Command{wq1, ws1})
	if !next.Equal(q2.ExpiresAt) {
		t.Errorf("ExpireCommands(limit 2): next = %v, want %v (q2 left due)", next, q2.ExpiresAt)
	}
	got, next, err = s.ExpireCommands(ctx, now, 0)
	if err != nil {
		t.Fatal(err)
	}
	wq2 := q2
	wq2.State, wq2.CompletedAt = store.CommandExpired, now
	checkCommands(t, "ExpireCommands(rest)", got, []store.Command{wq2})
	if !next.Equal(q3.ExpiresAt) {
		t.Errorf("ExpireCommands(rest): next = %v, want %v", next, q3.ExpiresAt)
	}
	for _, w := range []store.Command{wq1, ws1, wq2, q3, done} {
		if d := commandDiff(mustGetCommand(ctx, t, s, w.ID), w); d != "" {
			t.Errorf("%s after expiry: %s", w.ID, d)
		}
	}
	// An expired command no longer takes an answer.
	late := ws1
	late.State, late.CompletedAt = store.CommandSucceeded, now
	if err := s.UpdateCommand(ctx, late, store.CommandQueued, store.CommandSent); !errors.Is(err, store.ErrConflict) {
		t.Errorf("answering an expired command = %v, want ErrConflict", err)
	}
}

func cmdDeletePrune(ctx context.Context, t *testing.T, s store.Commands) {
	old := command("old", "d1", 0)
	old.State, old.CompletedAt = store.CommandSucceeded, cmdT.Add(time.Second)
	recent := command("recent", "d1", 0)
	recent.State, recent.CompletedAt = store.CommandExpired, cmdT.Add(time.Hour)
	pending := command("pending", "d1", 0)
	other := command("other", "d2", 0)
	mustCreateCommand(ctx, t, s, old, recent, pending, other)
	n, err := s.PruneCommands(ctx, cmdT.Add(time.Minute))
	if err != nil || n != 1 {
		t.Fatalf("PruneCommands = %d, %v; want 1", n, err)
	}
	if _, err := s.GetCommand(ctx, "old"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("pruned command: GetCommand = %v, want ErrNotFound", err)
	}
	mustGetCommand(ctx, t, s, "recent")
	mustGetCommand(ctx, t, s, "pending") // never pruned while pending
	if err := s.DeleteCommands(ctx, "d1"); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"recent", "pending"} {
		if _, err := s.GetCommand(ctx, id); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("after DeleteCommands(d1): GetCommand(%s) = %v, want ErrNotFound", id, err)
		}
	}
	mustGetCommand(ctx, t, s, "other")
	if err := s.DeleteCommands(ctx, "nobody"); err != nil {
		t.Errorf("DeleteCommands(nobody) = %v", err)
	}
}

func cmdBadQuery(ctx context.Context, t *testing.T, s store.Commands) {
	mustCreateCommand(ctx, t, s, command("c", "d", 0))
	for _, c := range []string{"x", "1.", ".1", "1.x", "1"} {
		if _, err := s.ListCommands(ctx, store.CommandQuery{Device: "d", Before: c}); !errors.Is(err, store.ErrInvalidQuery) {
			t.Errorf("ListCommands(Before: %q) = %v, want ErrInvalidQuery", c, err)
		}
	}
	if _, err := s.ListCommands(ctx, store.CommandQuery{Device: "d", Limit: -1}); !errors.Is(err, store.ErrInvalidQuery) {
		t.Errorf("ListCommands(Limit: -1) = %v, want ErrInvalidQuery", err)
	}
}
