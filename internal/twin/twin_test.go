package twin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/fieldhub/fieldhub/internal/store/sqlite"
	"github.com/fieldhub/fieldhub/payload"
)

// pubRec records retained publishes.
type pubRec struct {
	mu  sync.Mutex
	got []string // "topic payload"
}

func (p *pubRec) Publish(topicName string, b []byte, retain bool, qos byte) error {
	if !retain {
		return errors.New("not retained")
	}
	p.mu.Lock()
	p.got = append(p.got, topicName+" "+string(b))
	p.mu.Unlock()
	return nil
}

func (p *pubRec) list() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.got...)
}

func newService(t *testing.T) (*Service, *pubRec, *sqlite.DB) {
	t.Helper()
	db, err := sqlite.Open(filepath.Join(t.TempDir(), "registry.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	pub := &pubRec{}
	s, err := New(Options{Store: db, Publisher: pub, Registerer: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	return s, pub, db
}

func TestConcurrentPatchesKeepOrder(t *testing.T) {
	s, pub, _ := newService(t)
	ctx := context.Background()
	const n = 20
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := s.PatchDesired(ctx, "d", []byte(fmt.Sprintf(`{"k%d":%d}`, i, i)), -1); err != nil {
				t.Errorf("PatchDesired = %v", err)
			}
		}()
	}
	wg.Wait()
	v, err := s.Get(ctx, "d")
	if err != nil {
		t.Fatal(err)
	}
	var state map[string]int
	json.Unmarshal(v.Desired.State, &state)
	if v.Desired.Version != n || len(state) != n {
		t.Errorf("after %d patches: version %d, %d keys", n, v.Desired.Version, len(state))
	}
	got := pub.list()
	if len(got) != n {
		t.Fatalf("%d publishes; want %d", len(got), n)
	}
	for i, g := range got {
		var m struct{ Version int64 }
		json.Unmarshal([]byte(g[len("devices/d/twin/desired "):]), &m)
		if m.Version != int64(i+1) {
			t.Errorf("publish %d has version %d; want versions in order", i, m.Version)
		}
	}
}

func TestReportedIngest(t *testing.T) {
	s, _, _ := newService(t)
	ingest := func(body string) error {
		var got error
		called := 0
		s.IngestReported("d", []byte(body), func(err error) { got = err; called++ })
		if called != 1 {
			t.Fatalf("done called %d times", called)
		}
		return got
	}
	for _, tt := range []struct {
		body   string
		reason string // "" when taken
	}{
		{`{"fw":"1.0","temp":{"unit":"C"}}`, ""},
		{`{"temp":{"unit":null}}`, ""},
		{`[]`, payload.ReasonMalformed},
		{`nope`, payload.ReasonMalformed},
		{`{"x":"` + strings.Repeat("x", MaxDocBytes) + `"}`, payload.ReasonTooLarge},
	} {
		err := ingest(tt.body)
		if got := payload.Reason(err); got != tt.reason || (tt.reason != "" && !errors.Is(err, payload.ErrRefused)) {
			t.Errorf("IngestReported(%.30s) = %v; want reason %q", tt.body, err, tt.reason)
		}
	}
	v, err := s.Get(context.Background(), "d")
	if err != nil {
		t.Fatal(err)
	}
	if v.Reported.Version != 2 || string(v.Reported.State) != `{"fw":"1.0","temp":{}}` {
		t.Errorf("reported = v%d %s; want v2 {\"fw\":\"1.0\",\"temp\":{}}", v.Reported.Version, v.Reported.State)
	}
}

func TestPublishAll(t *testing.T) {
	s, pub, _ := newService(t)
	ctx := context.Background()
	for i := range 3 {
		if _, err := s.PatchDesired(ctx, fmt.Sprintf("d%d", i), []byte(`{"on":true}`), 0); err != nil {
			t.Fatal(err)
		}
	}
	s.IngestReported("reported-only", []byte(`{"a":1}`), func(error) {})
	before := len(pub.list())
	n, err := s.PublishAll(ctx)
	if err != nil || n != 3 {
		t.Fatalf("PublishAll = %d, %v; want 3", n, err)
	}
	got := pub.list()[before:]
	want := []string{`devices/d0/twin/desired {"version":1,"state":{"on":true}}`, `devices/d1/twin/desired {"version":1,"state":{"on":true}}`, `devices/d2/twin/desired {"version":1,"state":{"on":true}}`}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("PublishAll published %q; want %q", got, want)
	}
}

func TestPatchDesiredErrors(t *testing.T) {
	s, _, _ := newService(t)
	ctx := context.Background()
	for _, tt := range []struct {
		patch string
		ifV   int64
		want  error
	}{
		{`[1]`, -1, ErrInvalid},
		{`{"a":1}`, 3, ErrVersionMismatch},
		{`{"a":"` + strings.Repeat("x", MaxDocBytes) + `"}`, -1, ErrTooLarge},
	} {
		if _, err := s.PatchDesired(ctx, "d", []byte(tt.patch), tt.ifV); !errors.Is(err, tt.want) {
			t.Errorf("PatchDesired(%.20s, %d) = %v; want %v", tt.patch, tt.ifV, err, tt.want)
		}
	}
	// {} on nothing stays nothing.
	v, err := s.PatchDesired(ctx, "d", []byte(`{}`), 0)
	if err != nil || v.Desired.Version != 0 || string(v.Desired.State) != "{}" {
		t.Errorf("PatchDesired({}) = %+v, %v; want version 0", v, err)
	}
}
