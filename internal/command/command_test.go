package command

import (
	"context"
	"encoding/json"
	"errors"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/fieldhub/fieldhub/internal/store"
	"github.com/fieldhub/fieldhub/internal/store/sqlite"
	"github.com/fieldhub/fieldhub/payload"
	"github.com/fieldhub/fieldhub/topic"
)

func TestCoversCommands(t *testing.T) {
	for _, tt := range []struct {
		filter string
		want   bool
	}{
		{"devices/d/#", true},
		{"devices/d/commands/#", true},
		{"devices/d/commands/+", true},
		{"devices/d/commands/reboot", true},
		{"devices/d/commands/reboot/#", true},
		{"devices/d/+/+", true},
		{"devices/d/+/#", true},
		{"devices/d/twin/desired", false},
		{"devices/d/commands", false},
		{"devices/d/ota/#", false},
		{"devices/d/commands/a/b", false},
		{"devices/d", false},
	} {
		if got := coversCommands(tt.filter); got != tt.want {
			t.Errorf("coversCommands(%q) = %v; want %v", tt.filter, got, tt.want)
		}
	}
}

func TestParseAnswer(t *testing.T) {
	for _, tt := range []struct {
		in      string
		ok      bool
		result  string
		msg     string
		refusal string
	}{
		{`{"status":"ok"}`, true, "", "", ""},
		{`{"status":"ok","result":{"a": [1, 2]}}`, true, `{"a":[1,2]}`, "", ""},
		{`{"status":"ok","result":null}`, true, "null", "", ""},
		{`{"status":"error","error":"disk full","result":3}`, false, "3", "disk full", ""},
		{`{"status":"error","error":null}`, false, "", "", ""},
		{` {"status":"ok","extra":1} `, true, "", "", ""},
		{`{"status":"OK"}`, false, "", "", payload.ReasonWrongType},
		{`{"result":1}`, false, "", "", payload.ReasonWrongType},
		{`{"status":1}`, false, "", "", payload.ReasonWrongType},
		{`{"status":"error","error":7}`, false, "", "", payload.ReasonWrongType},
		{`"ok"`, false, "", "", payload.ReasonMalformed},
		{``, false, "", "", payload.ReasonMalformed},
		{`{"status":"ok"`, false, "", "", payload.ReasonMalformed},
		{`{"status":"ok","result":"` + strings.Repeat("x", MaxResponseBytes) + `"}`, false, "", "", payload.ReasonTooLarge},
	} {
		ok, result, msg, err := parseAnswer([]byte(tt.in))
		if tt.refusal != "" {
			if payload.Reason(err) != tt.refusal || !errors.Is(err, payload.ErrRefused) {
				t.Errorf("parseAnswer(%.40s) = %v; want a %s refusal", tt.in, err, tt.refusal)
			}
			continue
		}
		if err != nil || ok != tt.ok || string(result) != tt.result || msg != tt.msg {
			t.Errorf("parseAnswer(%s) = %v, %s, %q, %v; want %v, %s, %q", tt.in, ok, result, msg, err, tt.ok, tt.result, tt.msg)
		}
	}
	long := `{"status":"error","error":"` + strings.Repeat("é", MaxErrorLen) + `"}`
	if _, _, msg, err := parseAnswer([]byte(long)); err != nil || len(msg) > MaxErrorLen || !strings.HasPrefix(msg, "éé") {
		t.Errorf("a long error message is kept as %d bytes (%v); want at most %d of valid UTF-8", len(msg), err, MaxErrorLen)
	}
}

// fakePub is a Publisher whose devices listen when listening says so.
type fakePub struct {
	mu        sync.Mutex
	listening map[string]bool
	sent      []string // command ids in send order
	payloads  []wireCommand
}

func (f *fakePub) PublishCommand(name string, b []byte, responseTopic string, corr []byte, expiry time.Duration) error {
	var wc wireCommand
	if err := json.Unmarshal(b, &wc); err != nil {
		return err
	}
	if responseTopic != topic.Response(strings.Split(name, "/")[1], wc.ID) || string(corr) != wc.ID || expiry <= 0 {
		return errors.New("bad request properties")
	}
	f.mu.Lock()
	f.sent = append(f.sent, wc.ID)
	f.payloads = append(f.payloads, wc)
	f.mu.Unlock()
	return nil
}

func (f *fakePub) HasSubscriber(name string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.listening[strings.Split(name, "/")[1]]
}

func (f *fakePub) listen(device string, on bool) {
	f.mu.Lock()
	f.listening[device] = on
	f.mu.Unlock()
}

func (f *fakePub) sentIDs() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.sent...)
}

func newTestService(t *testing.T) (*Service, *fakePub) {
	t.Helper()
	db, err := sqlite.Open(filepath.Join(t.TempDir(), "registry.db"))
	if err != nil {
		t.Fatal(err)
	}
	pub := &fakePub{listening: map[string]bool{}}
	s, err := New(Options{Store: db, Publisher: pub, Registerer: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	s.Start()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := s.Close(ctx); err != nil {
			t.Error(err)
		}
		db.Close()
	})
	return s, pub
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestCreateValidates(t *testing.T) {
	s, _ := newTestService(t)
	ctx := context.Background()
	future := time.Now().Add(time.Hour)
	for _, tt := range []struct {
		name string
		r    Request
	}{
		{"bad device", Request{Device: "a/b", Name: "x"}},
		{"empty name", Request{Device: "d"}},
		{"name with #", Request{Device: "d", Name: "a#"}},
		{"name with control", Request{Device: "d", Name: "a\x01"}},
		{"long name", Request{Device: "d", Name: strings.Repeat("n", 129)}},
		{"params array", Request{Device: "d", Name: "x", Params: json.RawMessage(`[1]`)}},
		{"params invalid", Request{Device: "d", Name: "x", Params: json.RawMessage(`{"a":}`)}},
		{"both expiries", Request{Device: "d", Name: "x", ExpiresIn: time.Minute, ExpiresAt: future}},
		{"past", Request{Device: "d", Name: "x", ExpiresAt: time.Now().Add(-time.Second)}},
		{"too far", Request{Device: "d", Name: "x", ExpiresIn: 8 * 24 * time.Hour}},
		{"negative", Request{Device: "d", Name: "x", ExpiresIn: -time.Second}},
	} {
		if _, err := s.Create(ctx, tt.r); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: Create(%+v) = %v; want ErrInvalid", tt.name, tt.r, err)
		}
	}
	c, err := s.Create(ctx, Request{Device: "d", Name: "ünïcode-ok", Params: json.RawMessage(` { "a" : 1 } `)})
	if err != nil {
		t.Fatal(err)
	}
	if string(c.Params) != `{"a":1}` || c.State != store.CommandQueued || c.ExpiresAt.Sub(c.CreatedAt) != DefaultExpiry || len(c.ID) != 32 {
		t.Errorf("Create = %+v; want compact params, queued, default expiry, a 32-digit id", c)
	}
}

func TestDispatchOrderAndResend(t *testing.T) {
	s, pub := newTestService(t)
	ctx := context.Background()
	var ids []string
	for _, name := range []string{"a", "b", "c"} {
		c, err := s.Create(ctx, Request{Device: "d", Name: name})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, c.ID)
	}
	s.Connected("d") // not listening yet: nothing sent
	time.Sleep(50 * time.Millisecond)
	if n := len(pub.sentIDs()); n != 0 {
		t.Fatalf("%d sent to a device that does not listen", n)
	}
	pub.listen("d", true)
	s.Subscribed("d", []string{"devices/d/commands/+"})
	waitFor(t, "three sends", func() bool { return len(pub.sentIDs()) == 3 })
	if got := pub.sentIDs(); got[0] != ids[0] || got[1] != ids[1] || got[2] != ids[2] {
		t.Errorf("sent %v; want creation order %v", got, ids)
	}
	// The same connection subscribing again: nothing twice.
	s.Subscribed("d", []string{"devices/d/#"})
	time.Sleep(50 * time.Millisecond)
	if n := len(pub.sentIDs()); n != 3 {
		t.Errorf("%d sends after a second subscription; want 3", n)
	}
	// Answer one; a new connection gets the other two again.
	done := make(chan error, 1)
	s.IngestResponse("d", ids[1], []byte(ids[1]), []byte(`{"status":"ok"}`), func(err error) { done <- err })
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	s.Connected("d")
	waitFor(t, "two resends", func() bool { return len(pub.sentIDs()) == 5 })
	if got := pub.sentIDs()[3:]; got[0] != ids[0] || got[1] != ids[2] {
		t.Errorf("resent %v; want %s, %s", got, ids[0], ids[2])
	}
	c, _ := s.Get(ctx, ids[0])
	if c.Attempts != 2 || c.State != store.CommandSent {
		t.Errorf("after the resend: %+v", c)
	}
	// A gateway subscribing for a child counts as a new connection of the child.
	s.Subscribed("gw", []string{"devices/d/commands/#"})
	waitFor(t, "resends for the gateway", func() bool { return len(pub.sentIDs()) == 7 })
}

func TestWaitAndExpire(t *testing.T) {
	s, pub := newTestService(t)
	ctx := context.Background()
	c, err := s.Create(ctx, Request{Device: "d", Name: "x", ExpiresIn: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	start := time.Now()
	got, err := s.Wait(wctx, c.ID)
	if err != nil || got.State != store.CommandExpired {
		t.Fatalf("Wait = %+v, %v; want expired", got, err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("expired after %v; want about 200ms", d)
	}
	// An expired command is not sent when the device listens.
	pub.listen("d", true)
	s.Connected("d")
	time.Sleep(50 * time.Millisecond)
	if n := len(pub.sentIDs()); n != 0 {
		t.Errorf("an expired command was sent")
	}
	// Wait on a command that stays pending returns at the deadline.
	live, _ := s.Create(ctx, Request{Device: "d", Name: "y"})
	sctx, scancel := context.WithTimeout(ctx, 100*time.Millisecond)
	defer scancel()
	got, err = s.Wait(sctx, live.ID)
	if err != nil || got.State != store.CommandSent {
		t.Errorf("Wait until the deadline = %s, %v; want sent", got.State, err)
	}
	if _, err := s.Wait(ctx, "nope"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Wait(nope) = %v; want ErrNotFound", err)
	}
}

func TestAnswerRefusals(t *testing.T) {
	s, _ := newTestService(t)
	ctx := context.Background()
	c, _ := s.Create(ctx, Request{Device: "d", Name: "x"})
	other, _ := s.Create(ctx, Request{Device: "e", Name: "x"})
	for _, tt := range []struct {
		device, cid, corr, body string
		reason                  string
		code                    byte
	}{
		{"d", "nope", "", `{"status":"ok"}`, ReasonUnknownCommand, codeTopicNameInvalid},
		{"d", other.ID, "", `{"status":"ok"}`, ReasonUnknownCommand, codeTopicNameInvalid},
		{"d", c.ID, "x", `{"status":"ok"}`, ReasonCorrelationMismatch, codeImplSpecific},
		{"d", c.ID, "", `{}`, payload.ReasonWrongType, 0},
	} {
		var got error
		s.IngestResponse(tt.device, tt.cid, []byte(tt.corr), []byte(tt.body), func(err error) { got = err })
		var rc interface{ ReasonCode() byte }
		if payload.Reason(got) != tt.reason || !errors.As(got, &rc) || rc.ReasonCode() != tt.code {
			t.Errorf("answer %s/%s %s = %v; want %s (code 0x%02x)", tt.device, tt.cid, tt.body, got, tt.reason, tt.code)
		}
	}
	if got, _ := s.Get(ctx, c.ID); got.State != store.CommandQueued {
		t.Errorf("after refused answers: %s", got.State)
	}
}

func TestCreateKeepsOrderBehindQueued(t *testing.T) {
	s, pub := newTestService(t)
	ctx := context.Background()
	a, _ := s.Create(ctx, Request{Device: "d", Name: "a"})
	// The device starts listening; before the broker's news reaches the
	// service, a new command arrives: it must not overtake a.
	pub.listen("d", true)
	b, err := s.Create(ctx, Request{Device: "d", Name: "b"})
	if err != nil {
		t.Fatal(err)
	}
	if b.State != store.CommandQueued {
		t.Errorf("a command behind a queued one is %s; want queued", b.State)
	}
	waitFor(t, "both sent", func() bool { return len(pub.sentIDs()) == 2 })
	if got := pub.sentIDs(); got[0] != a.ID || got[1] != b.ID {
		t.Errorf("sent %v; want %s then %s", got, a.ID, b.ID)
	}
	// With nothing queued, a new command is sent at once.
	c, _ := s.Create(ctx, Request{Device: "d", Name: "c"})
	if c.State != store.CommandSent || len(pub.sentIDs()) != 3 {
		t.Errorf("a command to a listening device is %s; want sent at once", c.State)
	}
}

func TestStopWaitingReleasesWaits(t *testing.T) {
	s, _ := newTestService(t)
	ctx := context.Background()
	c, _ := s.Create(ctx, Request{Device: "d", Name: "x"})
	got := make(chan store.Command, 1)
	go func() {
		r, _ := s.Wait(ctx, c.ID) // no deadline: only StopWaiting ends it
		got <- r
	}()
	time.Sleep(50 * time.Millisecond)
	s.StopWaiting()
	select {
	case r := <-got:
		if r.State != store.CommandQueued {
			t.Errorf("released Wait = %s; want queued", r.State)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("StopWaiting did not release a Wait")
	}
	// Later waits do not wait.
	if r, err := s.Wait(ctx, c.ID); err != nil || r.ID != c.ID {
		t.Errorf("Wait after StopWaiting = %+v, %v", r, err)
	}
}
