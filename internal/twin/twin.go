// Package twin keeps each device's twin (DESIGN §3 and §4): a desired
// document the operator changes through the API and a reported document
// the device changes over MQTT, each a JSON object with a version that
// grows by one with every change, stored in a store.Twins.
//
// Desired. PatchDesired applies an RFC 7386 JSON merge patch, optionally
// only if the desired version is still the one the caller read (412
// otherwise), stores the result, then publishes it retained at QoS 1 on
// devices/{id}/twin/desired as {"version": n, "state": {…}}, so that a
// device gets the current desired state whenever it subscribes. mochi
// keeps retained messages in memory only: PublishAll publishes every
// stored desired document again when the hub starts.
//
// Reported. A device publishes a merge patch of its reported state on
// devices/{id}/twin/reported; IngestReported applies and stores it before
// the broker acknowledges it (the service implements the broker's
// TwinIngester).
//
// A patch that changes nothing does not change the version. Each document
// is at most MaxDocBytes of compact JSON and MaxDepth levels deep.
package twin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/fieldhub/fieldhub/internal/store"
	"github.com/fieldhub/fieldhub/payload"
	"github.com/fieldhub/fieldhub/topic"
)

// Limits.
const (
	// MaxDocBytes bounds each document, as compact JSON (32 KiB).
	MaxDocBytes = 32 << 10
	// MaxDepth bounds the nesting of a document.
	MaxDepth = 32
	// maxRetries bounds compare-and-set retries against a concurrent
	// writer (another hub process on the same store).
	maxRetries   = 5
	storeTimeout = 10 * time.Second
	publishPage  = 500
)

// Errors of PatchDesired.
var (
	// ErrInvalid: the patch is not a JSON object, or the result is nested
	// too deeply.
	ErrInvalid = errors.New("invalid twin patch")
	// ErrTooLarge: the result would be larger than MaxDocBytes.
	ErrTooLarge = errors.New("twin document too large")
	// ErrVersionMismatch: the desired document is not at the version the
	// caller named (HTTP 412).
	ErrVersionMismatch = errors.New("desired version mismatch")
)

// ReasonTooDeep labels a reported patch refused for nesting beyond
// MaxDepth.
const ReasonTooDeep = "too_deep"

// Publisher is what the service needs of the MQTT broker
// (*broker.Broker has it).
type Publisher interface {
	Publish(topicName string, payload []byte, retain bool, qos byte) error
}

// Options configure a Service. Store and Publisher are required.
type Options struct {
	Store     store.Twins
	Publisher Publisher
	// Logger receives the service's logs; default: discarded.
	Logger *slog.Logger
	// Registerer receives the fieldhub_twin_* metrics; nil keeps them
	// unregistered.
	Registerer prometheus.Registerer
	// Now is the clock; default time.Now.
	Now func() time.Time
}

// Doc is one document of a twin as the API shows it.
type Doc struct {
	Version   int64           `json:"version"`
	State     json.RawMessage `json:"state"` // a JSON object, {} before the first write
	UpdatedAt *time.Time      `json:"updated_at,omitempty"`
}

// View is a device's twin with its delta.
type View struct {
	Device   string `json:"device"`
	Desired  Doc    `json:"desired"`
	Reported Doc    `json:"reported"`
	// Delta holds the desired keys that reported does not match (see
	// Delta).
	Delta json.RawMessage `json:"delta"`
}

// Service keeps the twins. It has no goroutines of its own.
type Service struct {
	o   Options
	log *slog.Logger

	mu    sync.Mutex
	locks map[string]*devLock

	desiredUpdates, reportedUpdates, conflicts prometheus.Counter
	reportedRefused                            *prometheus.CounterVec
}

type devLock struct {
	mu   sync.Mutex
	refs int
}

// New validates o and returns a Service.
func New(o Options) (*Service, error) {
	if o.Store == nil || o.Publisher == nil {
		return nil, errors.New("twin: Store and Publisher are required")
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	s := &Service{
		o: o, log: o.Logger, locks: make(map[string]*devLock),
		desiredUpdates: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "fieldhub_twin_desired_updates_total", Help: "Changes of desired twin documents.",
		}),
		reportedUpdates: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "fieldhub_twin_reported_updates_total", Help: "Changes of reported twin documents.",
		}),
		conflicts: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "fieldhub_twin_version_conflicts_total", Help: "Desired patches refused because the version had moved on (HTTP 412).",
		}),
		reportedRefused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "fieldhub_twin_reported_refused_total", Help: "Reported patches refused, by reason.",
		}, []string{"reason"}),
	}
	if o.Registerer != nil {
		for _, c := range []prometheus.Collector{s.desiredUpdates, s.reportedUpdates, s.conflicts, s.reportedRefused} {
			if err := o.Registerer.Register(c); err != nil {
				return nil, fmt.Errorf("twin: registering metrics: %w", err)
			}
		}
	}
	return s, nil
}

// lock serializes the changes of one device's twin.
func (s *Service) lock(device string) func() {
	s.mu.Lock()
	l := s.locks[device]
	if l == nil {
		l = &devLock{}
		s.locks[device] = l
	}
	l.refs++
	s.mu.Unlock()
	l.mu.Lock()
	return func() {
		l.mu.Unlock()
		s.mu.Lock()
		if l.refs--; l.refs == 0 {
			delete(s.locks, device)
		}
		s.mu.Unlock()
	}
}

// Get returns the twin of device with its delta.
func (s *Service) Get(ctx context.Context, device string) (View, error) {
	tw, err := s.o.Store.GetTwin(ctx, device)
	if err != nil {
		return View{}, fmt.Errorf("twin: reading %s: %w", device, err)
	}
	return view(tw)
}

// PatchDesired applies a merge patch (a JSON object) to the desired
// document of device. ifVersion ≥ 0 makes it conditional: ErrVersionMismatch
// unless the desired version is ifVersion (0: never written). A change is
// stored, then published retained on devices/{id}/twin/desired.
func (s *Service) PatchDesired(ctx context.Context, device string, patch []byte, ifVersion int64) (View, error) {
	p, err := decodeObject(patch)
	if err != nil {
		return View{}, fmt.Errorf("%w: desired: %w", ErrInvalid, err)
	}
	unlock := s.lock(device)
	defer unlock()
	for range maxRetries {
		tw, err := s.o.Store.GetTwin(ctx, device)
		if err != nil {
			return View{}, fmt.Errorf("twin: reading %s: %w", device, err)
		}
		if ifVersion >= 0 && tw.Desired.Version != ifVersion {
			s.conflicts.Inc()
			return View{}, fmt.Errorf("%w: desired is at version %d, not %d", ErrVersionMismatch, tw.Desired.Version, ifVersion)
		}
		next, changed, err := apply(tw.Desired, p)
		if err != nil {
			return View{}, err
		}
		if !changed {
			return view(tw)
		}
		prev := tw.Desired.Version
		tw.Desired = store.TwinDoc{Version: prev + 1, State: next, UpdatedAt: s.o.Now().UTC()}
		err = s.o.Store.PutTwinDoc(ctx, device, store.TwinDesired, prev, tw.Desired)
		if errors.Is(err, store.ErrConflict) {
			if ifVersion >= 0 {
				s.conflicts.Inc()
				return View{}, fmt.Errorf("%w: desired moved on from version %d", ErrVersionMismatch, prev)
			}
			continue // another writer: read again
		}
		if err != nil {
			return View{}, fmt.Errorf("twin: storing desired of %s: %w", device, err)
		}
		s.desiredUpdates.Inc()
		s.publish(device, tw.Desired)
		return view(tw)
	}
	return View{}, fmt.Errorf("twin: desired of %s: %w after %d attempts", device, store.ErrConflict, maxRetries)
}

// apply merges patch p into doc and checks the limits; changed is false
// when the result equals doc's state.
func apply(doc store.TwinDoc, p map[string]any) (json.RawMessage, bool, error) {
	cur, err := decodeObject(doc.State)
	if err != nil {
		return nil, false, fmt.Errorf("twin: stored document: %w", err)
	}
	merged := MergePatch(cur, p)
	if d := depth(merged); d > MaxDepth {
		return nil, false, fmt.Errorf("%w: %d levels deep, at most %d", ErrInvalid, d, MaxDepth)
	}
	b, err := json.Marshal(merged)
	if err != nil {
		return nil, false, fmt.Errorf("twin: encoding: %w", err)
	}
	if len(b) > MaxDocBytes {
		return nil, false, fmt.Errorf("%w: the document would be %d bytes; the limit is %d bytes (%d KiB)", ErrTooLarge, len(b), MaxDocBytes, MaxDocBytes>>10)
	}
	if doc.Version > 0 && equal(cur, merged) {
		return nil, false, nil
	}
	if doc.Version == 0 && len(merged) == 0 {
		return nil, false, nil // {} onto nothing: still nothing
	}
	return b, true, nil
}

// desiredPayload is the retained devices/{id}/twin/desired payload.
func desiredPayload(d store.TwinDoc) []byte {
	state := d.State
	if len(state) == 0 {
		state = json.RawMessage("{}")
	}
	return []byte(`{"version":` + strconv.FormatInt(d.Version, 10) + `,"state":` + string(state) + `}`)
}

func (s *Service) publish(device string, d store.TwinDoc) {
	if err := s.o.Publisher.Publish(topic.TwinDesired(device), desiredPayload(d), true, 1); err != nil {
		// Stored: PublishAll at the next start publishes it.
		s.log.Warn("publishing desired state failed", "device", device, "version", d.Version, "err", err)
	}
}

// PublishAll publishes every stored desired document, retained, and
// returns how many. The hub calls it once its broker runs.
func (s *Service) PublishAll(ctx context.Context) (int, error) {
	n, after := 0, ""
	for {
		page, err := s.o.Store.ListTwins(ctx, after, publishPage)
		if err != nil {
			return n, fmt.Errorf("twin: listing twins: %w", err)
		}
		for _, tw := range page {
			if tw.Desired.Version == 0 {
				continue
			}
			unlock := s.lock(tw.Device)
			// Read again under the lock: a patch may have published a newer one.
			cur, err := s.o.Store.GetTwin(ctx, tw.Device)
			if err == nil && cur.Desired.Version > 0 {
				s.publish(tw.Device, cur.Desired)
				n++
			}
			unlock()
		}
		if len(page) < publishPage {
			return n, nil
		}
		after = page[len(page)-1].Device
	}
}

// Delete deletes the twin of a deleted device and clears its retained
// desired message.
func (s *Service) Delete(ctx context.Context, device string) error {
	unlock := s.lock(device)
	defer unlock()
	if err := s.o.Store.DeleteTwin(ctx, device); err != nil {
		return fmt.Errorf("twin: deleting %s: %w", device, err)
	}
	// An empty retained message deletes the retained one.
	if err := s.o.Publisher.Publish(topic.TwinDesired(device), nil, true, 0); err != nil {
		s.log.Warn("clearing retained desired state failed", "device", device, "err", err)
	}
	return nil
}

// IngestReported applies a device's reported patch
// (broker.TwinIngester). done runs once, before IngestReported returns:
// nil once the change is durable (or changed nothing), a refusal matching
// payload.ErrRefused (not a JSON object: malformed; over the limit:
// too_large; too deep: too_deep), any other error when storing failed.
func (s *Service) IngestReported(device string, body []byte, done func(error)) {
	err := s.ingestReported(device, body)
	if err != nil {
		if reason := payload.Reason(err); reason != "" {
			s.reportedRefused.WithLabelValues(reason).Inc()
			s.log.Debug("reported twin patch refused", "device", device, "reason", reason, "err", err)
		} else {
			s.log.Error("storing reported twin failed", "device", device, "err", err)
		}
	}
	done(err)
}

func (s *Service) ingestReported(device string, body []byte) error {
	if len(body) > MaxDocBytes {
		return &payload.Error{Reason: payload.ReasonTooLarge, Msg: fmt.Sprintf("patch of %d bytes; the limit is %d bytes (%d KiB)", len(body), MaxDocBytes, MaxDocBytes>>10)}
	}
	p, err := decodeObject(body)
	if err != nil {
		return &payload.Error{Reason: payload.ReasonMalformed, Msg: "a reported patch is a JSON object: " + err.Error()}
	}
	ctx, cancel := context.WithTimeout(context.Background(), storeTimeout)
	defer cancel()
	unlock := s.lock(device)
	defer unlock()
	for range maxRetries {
		tw, err := s.o.Store.GetTwin(ctx, device)
		if err != nil {
			return fmt.Errorf("twin: reading %s: %w", device, err)
		}
		next, changed, err := apply(tw.Reported, p)
		switch {
		case errors.Is(err, ErrTooLarge):
			return &payload.Error{Reason: payload.ReasonTooLarge, Msg: err.Error()}
		case errors.Is(err, ErrInvalid):
			return &payload.Error{Reason: ReasonTooDeep, Msg: err.Error()}
		case err != nil:
			return err
		case !changed:
			return nil
		}
		prev := tw.Reported.Version
		doc := store.TwinDoc{Version: prev + 1, State: next, UpdatedAt: s.o.Now().UTC()}
		err = s.o.Store.PutTwinDoc(ctx, device, store.TwinReported, prev, doc)
		if errors.Is(err, store.ErrConflict) {
			continue
		}
		if err != nil {
			return fmt.Errorf("twin: storing reported of %s: %w", device, err)
		}
		s.reportedUpdates.Inc()
		return nil
	}
	return fmt.Errorf("twin: reported of %s: %w after %d attempts", device, store.ErrConflict, maxRetries)
}

// view builds the API's view of a stored twin.
func view(tw store.Twin) (View, error) {
	v := View{Device: tw.Device, Desired: doc(tw.Desired), Reported: doc(tw.Reported)}
	desired, err := decodeObject(tw.Desired.State)
	if err != nil {
		return View{}, fmt.Errorf("twin: stored desired of %s: %w", tw.Device, err)
	}
	reported, err := decodeObject(tw.Reported.State)
	if err != nil {
		return View{}, fmt.Errorf("twin: stored reported of %s: %w", tw.Device, err)
	}
	if v.Delta, err = json.Marshal(Delta(desired, reported)); err != nil {
		return View{}, fmt.Errorf("twin: encoding delta: %w", err)
	}
	return v, nil
}

func doc(d store.TwinDoc) Doc {
	out := Doc{Version: d.Version, State: d.State}
	if len(out.State) == 0 {
		out.State = json.RawMessage("{}")
	}
	if !d.UpdatedAt.IsZero() {
		t := d.UpdatedAt.UTC()
		out.UpdatedAt = &t
	}
	return out
}
