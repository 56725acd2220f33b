// Package command is the hub's command service (DESIGN §3 and §4): it
// takes commands for devices from the API, keeps their state machine
// (queued → sent → succeeded | failed | expired, a queued command may also
// expire) durably in a store.Commands, publishes them to the devices, and
// records the devices' answers.
//
// Delivery. A command is published, at QoS 1 on devices/{id}/commands/{name}
// with the payload {"id","params","expires"}, only while a connected client
// (the device, or its gateway) holds a subscription matching that topic;
// until then it stays queued. The broker tells the service when a device
// connects and when a client subscribes, and the service then sends what
// is queued for it. MQTT 5 subscribers also get the Response Topic
// devices/{id}/responses/{cid}, the Correlation Data cid and a Message
// Expiry Interval. Delivery is at least once: a command that was sent and
// not answered is sent again each time the device connects anew (also
// after a hub restart), so a device must recognise a command it has
// already run by its id. A command whose expiry has passed is never sent:
// expiry is checked at every send, the broker drops unacknowledged copies
// of a device's commands from a resumed session, and a sweeper marks due
// commands expired.
//
// Answers. A device answers on devices/{id}/responses/{cid} (an MQTT 5
// device may equally use the Response Topic it was given, which is the
// same topic) with {"status": "ok" | "error", "result": …, "error": "…"}.
// The answer is stored before it is acknowledged (the service implements
// the broker's ResponseIngester); answers to unknown commands, to another
// device's commands, to expired commands, or that are malformed are
// refused and counted.
package command

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/fieldhub/fieldhub/internal/store"
	"github.com/fieldhub/fieldhub/topic"
)

// Defaults of Options fields left at their zero value, and fixed limits.
const (
	DefaultExpiry    = time.Hour
	DefaultMaxExpiry = 7 * 24 * time.Hour
	DefaultRetention = 30 * 24 * time.Hour
	DefaultWorkers   = 2
	// MaxParamsBytes bounds a command's params (compact JSON).
	MaxParamsBytes = 32 << 10
	// MaxResponseBytes bounds a device's answer.
	MaxResponseBytes = 64 << 10
	// MaxErrorLen bounds the error message kept from an answer.
	MaxErrorLen = 4096
	// expireBatch bounds the commands expired in one transaction.
	expireBatch = 1000
	// maxSweepInterval bounds the sweeper's sleep (it also prunes).
	maxSweepInterval = time.Minute
	pruneInterval    = time.Hour
	storeTimeout     = 10 * time.Second
)

// ErrInvalid is wrapped by every refusal of a command request.
var ErrInvalid = errors.New("invalid command")

// ErrClosed is returned by Create after Close.
var ErrClosed = errors.New("command service closed")

// Publisher is what the service needs of the MQTT broker.
type Publisher interface {
	// PublishCommand publishes a command payload at QoS 1 on topicName,
	// with the MQTT 5 Response Topic, Correlation Data and Message Expiry
	// Interval.
	PublishCommand(topicName string, payload []byte, responseTopic string, correlation []byte, expiry time.Duration) error
	// HasSubscriber reports whether a connected client would receive a
	// message published on topicName now.
	HasSubscriber(topicName string) bool
}

// Options configure a Service. Store and Publisher are required.
type Options struct {
	Store     store.Commands
	Publisher Publisher
	// DefaultExpiry applies to requests without an expiry; default 1 h.
	DefaultExpiry time.Duration
	// MaxExpiry bounds how far ahead a command may expire; default 7 days.
	MaxExpiry time.Duration
	// Retention: finished commands older than this are deleted; default
	// 30 days.
	Retention time.Duration
	// Workers send queued commands when devices connect or subscribe;
	// default 2.
	Workers int
	// Logger receives the service's logs; default: discarded.
	Logger *slog.Logger
	// Registerer receives the fieldhub_command* metrics; nil keeps them
	// unregistered.
	Registerer prometheus.Registerer
	// Now is the clock; default time.Now.
	Now func() time.Time
	// PollWaiters > 0 makes Wait also re-read the command at this
	// interval: with several hub instances, the answer may be stored by
	// another instance, which cannot wake this one's waiters.
	PollWaiters time.Duration
}

// Request asks for a command.
type Request struct {
	Device string
	Name   string // one topic level: no '/', '+', '#' or control characters, at most 128 bytes
	// Params is a JSON object (nil or empty: {}).
	Params json.RawMessage
	// Expiry: ExpiresIn from now, or the time ExpiresAt; at most one of
	// them; neither means Options.DefaultExpiry.
	ExpiresIn time.Duration
	ExpiresAt time.Time
}

// Service is the command service. Create it with New, Start it once the
// broker runs, and Close it after the broker has stopped.
type Service struct {
	o   Options
	log *slog.Logger
	m   *metrics

	locks keyedMutex // serializes sends and answers per device

	mu        sync.Mutex
	epoch     map[string]uint64   // device → connection number
	sentEpoch map[string]uint64   // command id → epoch of its last send
	dirty     map[string]struct{} // devices to dispatch
	order     []string            // dirty devices in arrival order
	waiters   map[string][]chan struct{}

	wake     chan struct{} // a device was marked dirty (capacity 1)
	sweep    chan struct{} // the earliest expiry moved earlier (capacity 1)
	nextWake atomic.Int64  // Unix ns of the sweeper's next run
	stop     chan struct{}
	wg       sync.WaitGroup
	started  atomic.Bool
	closed   atomic.Bool
	noWait   atomic.Bool // StopWaiting was called
}

// New validates o and returns a Service.
func New(o Options) (*Service, error) {
	if o.Store == nil || o.Publisher == nil {
		return nil, errors.New("command: Store and Publisher are required")
	}
	if o.DefaultExpiry <= 0 {
		o.DefaultExpiry = DefaultExpiry
	}
	if o.MaxExpiry <= 0 {
		o.MaxExpiry = DefaultMaxExpiry
	}
	if o.DefaultExpiry > o.MaxExpiry {
		return nil, fmt.Errorf("command: DefaultExpiry %v is above MaxExpiry %v", o.DefaultExpiry, o.MaxExpiry)
	}
	if o.Retention <= 0 {
		o.Retention = DefaultRetention
	}
	if o.Workers <= 0 {
		o.Workers = DefaultWorkers
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	m, err := newMetrics(o.Registerer)
	if err != nil {
		return nil, err
	}
	return &Service{
		o: o, log: o.Logger, m: m,
		locks:     keyedMutex{m: make(map[string]*keyedEntry)},
		epoch:     make(map[string]uint64),
		sentEpoch: make(map[string]uint64),
		dirty:     make(map[string]struct{}),
		waiters:   make(map[string][]chan struct{}),
		wake:      make(chan struct{}, 1),
		sweep:     make(chan struct{}, 1),
		stop:      make(chan struct{}),
	}, nil
}

// Start starts the dispatch workers and the expiry sweeper. Devices
// reported connected before Start are served once it runs.
func (s *Service) Start() {
	if s.closed.Load() || !s.started.CompareAndSwap(false, true) {
		return
	}
	for range s.o.Workers {
		s.wg.Add(1)
		go s.worker()
	}
	s.wg.Add(1)
	go s.sweeper()
}

// Close stops the workers and the sweeper and waits for them, or for ctx.
// Waiting API calls return the current state. It is safe to call twice.
func (s *Service) Close(ctx context.Context) error {
	if !s.closed.CompareAndSwap(false, true) {
		return nil
	}
	close(s.stop)
	s.StopWaiting()
	done := make(chan struct{})
	go func() {
		s.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("command: close: %w", ctx.Err())
	}
}

// StopWaiting makes every Wait in progress, and every later one, return
// the current state at once, so that a server shutting down is not held
// by long polls. Close calls it.
func (s *Service) StopWaiting() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.noWait.Store(true)
	for id, ws := range s.waiters {
		for _, ch := range ws {
			close(ch)
		}
		delete(s.waiters, id)
	}
}

// Create validates r, stores the command and, when the device listens
// for it, sends it at once (stored as sent). It returns the command as
// stored.
func (s *Service) Create(ctx context.Context, r Request) (store.Command, error) {
	if s.closed.Load() {
		return store.Command{}, ErrClosed
	}
	now := s.o.Now()
	c, err := s.build(r, now)
	if err != nil {
		return store.Command{}, err
	}
	name := topic.Command(c.Device, c.Name)
	unlock := s.locks.lock(c.Device)
	defer unlock()
	send, older := s.o.Publisher.HasSubscriber(name), false
	if send {
		// Older queued commands go first: leave this one to the worker.
		pending, err := s.o.Store.PendingCommands(ctx, c.Device)
		if err != nil {
			return store.Command{}, fmt.Errorf("command: reading pending commands: %w", err)
		}
		for _, p := range pending {
			if p.State == store.CommandQueued {
				send, older = false, true
				break
			}
		}
	}
	if send {
		c.State, c.SentAt, c.Attempts = store.CommandSent, now.UTC(), 1
	}
	if err := s.o.Store.CreateCommand(ctx, c); err != nil {
		return store.Command{}, fmt.Errorf("command: storing: %w", err)
	}
	s.m.state(store.CommandQueued)
	s.log.Debug("command created", "command", c.ID, "device", c.Device, "name", c.Name, "sent", send)
	if send {
		s.m.state(store.CommandSent)
		s.publish(c)
	}
	if older {
		s.markDirty(c.Device)
	}
	s.nudgeSweeper(c.ExpiresAt)
	return c, nil
}

// build validates a request into a new queued command.
func (s *Service) build(r Request, now time.Time) (store.Command, error) {
	if !topic.ValidDeviceID(r.Device) {
		return store.Command{}, fmt.Errorf("%w: device: %q is not a device id", ErrInvalid, r.Device)
	}
	if t, err := topic.Parse(topic.Command(r.Device, r.Name)); err != nil || t.Kind != topic.KindCommand || t.Rest != r.Name {
		return store.Command{}, fmt.Errorf("%w: name: %q is not a command name (1–128 bytes of UTF-8 without '/', '+', '#' or control characters)", ErrInvalid, r.Name)
	}
	params, err := compactObject(r.Params)
	if err != nil {
		return store.Command{}, fmt.Errorf("%w: params: %w", ErrInvalid, err)
	}
	if len(params) > MaxParamsBytes {
		return store.Command{}, fmt.Errorf("%w: params: %d bytes, at most %d (%d KiB)", ErrInvalid, len(params), MaxParamsBytes, MaxParamsBytes>>10)
	}
	var expires time.Time
	switch {
	case r.ExpiresIn != 0 && !r.ExpiresAt.IsZero():
		return store.Command{}, fmt.Errorf("%w: give expires_in or expires, not both", ErrInvalid)
	case r.ExpiresIn < 0:
		return store.Command{}, fmt.Errorf("%w: expires_in: %v is negative", ErrInvalid, r.ExpiresIn)
	case r.ExpiresIn > 0:
		expires = now.Add(r.ExpiresIn)
	case !r.ExpiresAt.IsZero():
		expires = r.ExpiresAt
		if !expires.After(now) {
			return store.Command{}, fmt.Errorf("%w: expires: %s is not in the future", ErrInvalid, expires.UTC().Format(time.RFC3339Nano))
		}
	default:
		expires = now.Add(s.o.DefaultExpiry)
	}
	if expires.Sub(now) > s.o.MaxExpiry {
		return store.Command{}, fmt.Errorf("%w: expiry: %v ahead, at most %v", ErrInvalid, expires.Sub(now).Round(time.Second), s.o.MaxExpiry)
	}
	return store.Command{
		ID: newID(), Device: r.Device, Name: r.Name, Params: params, State: store.CommandQueued,
		CreatedAt: now.UTC(), ExpiresAt: expires.UTC(),
	}, nil
}

// compactObject checks that b is one JSON object (empty means {}) and
// returns it compacted.
func compactObject(b json.RawMessage) (json.RawMessage, error) {
	b = bytes.TrimSpace(b)
	if len(b) == 0 || bytes.Equal(b, []byte("null")) {
		return json.RawMessage("{}"), nil
	}
	if b[0] != '{' {
		return nil, errors.New("not a JSON object")
	}
	var buf bytes.Buffer
	if err := json.Compact(&buf, b); err != nil {
		return nil, fmt.Errorf("invalid JSON: %w", err)
	}
	return buf.Bytes(), nil
}

// newID returns a random command id: 32 hex digits.
func newID() string {
	var b [16]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// Get returns a command.
func (s *Service) Get(ctx context.Context, id string) (store.Command, error) {
	return s.o.Store.GetCommand(ctx, id)
}

// List returns a device's commands, newest first.
func (s *Service) List(ctx context.Context, q store.CommandQuery) (store.CommandPage, error) {
	return s.o.Store.ListCommands(ctx, q)
}

// Wait returns command id once it is succeeded, failed or expired, or
// when ctx ends (then with its current state and no error).
func (s *Service) Wait(ctx context.Context, id string) (store.Command, error) {
	ch := make(chan struct{})
	s.mu.Lock()
	closed := s.noWait.Load()
	if !closed {
		s.waiters[id] = append(s.waiters[id], ch)
	}
	s.mu.Unlock()
	defer s.unwait(id, ch)
	c, err := s.o.Store.GetCommand(ctx, id)
	if err != nil || c.State.Terminal() || closed {
		return c, err
	}
	var poll <-chan time.Time
	if s.o.PollWaiters > 0 {
		t := time.NewTicker(s.o.PollWaiters)
		defer t.Stop()
		poll = t.C
	}
wait:
	for {
		select {
		case <-ch:
			break wait
		case <-ctx.Done():
			break wait
		case <-poll:
			if c, err := s.o.Store.GetCommand(ctx, id); err == nil && c.State.Terminal() {
				return c, nil
			}
		}
	}
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), storeTimeout)
	defer cancel()
	return s.o.Store.GetCommand(rctx, id)
}

func (s *Service) unwait(id string, ch chan struct{}) {
	s.mu.Lock()
	defer s.mu.Unlock()
	ws := s.waiters[id]
	for i, w := range ws {
		if w == ch {
			ws = append(ws[:i], ws[i+1:]...)
			break
		}
	}
	if len(ws) == 0 {
		delete(s.waiters, id)
	} else {
		s.waiters[id] = ws
	}
}

// finished wakes the waiters of a command that reached a final state and
// forgets its send epoch.
func (s *Service) finished(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.sentEpoch, id)
	for _, ch := range s.waiters[id] {
		close(ch)
	}
	delete(s.waiters, id)
}

// DeleteDevice deletes every command of a deleted device.
func (s *Service) DeleteDevice(ctx context.Context, device string) error {
	unlock := s.locks.lock(device)
	defer unlock()
	if err := s.o.Store.DeleteCommands(ctx, device); err != nil {
		return fmt.Errorf("command: deleting commands of %s: %w", device, err)
	}
	s.mu.Lock()
	delete(s.epoch, device)
	s.mu.Unlock()
	return nil
}

// Connected is told that device has a new connection (broker.Presence):
// what is queued for it, and what was sent and not answered, is sent
// again once it subscribes. It does not block.
func (s *Service) Connected(device string) {
	s.mu.Lock()
	s.epoch[device]++
	s.mu.Unlock()
	s.markDirty(device)
}

// Subscribed is told the filters a client subscribed to
// (broker.SubscribeWatcher): each device whose commands the filters
// cover is dispatched. A gateway subscribing for a child counts as a new
// connection of the child. It does not block.
func (s *Service) Subscribed(clientID string, filters []string) {
	for _, f := range filters {
		device := topic.FilterDevice(f)
		if device == "" || !coversCommands(f) {
			continue
		}
		if device != clientID {
			s.mu.Lock()
			s.epoch[device]++
			s.mu.Unlock()
		}
		s.markDirty(device)
	}
}

// coversCommands reports whether filter f (whose id level is literal)
// may match one of that device's command topics,
// devices/{id}/commands/{name}.
func coversCommands(f string) bool {
	levels := strings.Split(f, "/")
	if len(levels) < 3 {
		return false
	}
	switch levels[2] {
	case "#":
		return true
	case "commands", "+":
	default:
		return false
	}
	switch len(levels) {
	case 3:
		return false
	case 4:
		return true
	}
	return len(levels) == 5 && levels[4] == "#"
}

func (s *Service) markDirty(device string) {
	s.mu.Lock()
	if _, ok := s.dirty[device]; !ok {
		s.dirty[device] = struct{}{}
		s.order = append(s.order, device)
	}
	s.mu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// next takes the oldest dirty device, or "".
func (s *Service) next() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.order) == 0 {
		return ""
	}
	d := s.order[0]
	s.order[0] = ""
	s.order = s.order[1:]
	if len(s.order) == 0 {
		s.order = nil
	}
	delete(s.dirty, d)
	return d
}

func (s *Service) worker() {
	defer s.wg.Done()
	for {
		for d := s.next(); d != ""; d = s.next() {
			select {
			case <-s.stop:
				return
			default:
			}
			s.dispatch(d)
		}
		select {
		case <-s.stop:
			return
		case <-s.wake:
			// Pass the wake-up on: another worker may take a device too.
			s.mu.Lock()
			more := len(s.order) > 1
			s.mu.Unlock()
			if more {
				select {
				case s.wake <- struct{}{}:
				default:
				}
			}
		}
	}
}

// dispatch sends device's queued commands, and its sent ones not sent on
// its current connection, in creation order, when it listens for them.
func (s *Service) dispatch(device string) {
	ctx, cancel := context.WithTimeout(context.Background(), storeTimeout)
	defer cancel()
	unlock := s.locks.lock(device)
	defer unlock()
	pending, err := s.o.Store.PendingCommands(ctx, device)
	if err != nil {
		s.log.Error("reading pending commands failed", "device", device, "err", err)
		return
	}
	s.mu.Lock()
	epoch := s.epoch[device]
	s.mu.Unlock()
	for _, c := range pending {
		now := s.o.Now()
		if !now.Before(c.ExpiresAt) {
			s.expire(ctx, c, now)
			continue
		}
		if c.State == store.CommandSent {
			s.mu.Lock()
			e, ok := s.sentEpoch[c.ID]
			s.mu.Unlock()
			if ok && e == epoch {
				continue // already sent on this connection
			}
		}
		if !s.o.Publisher.HasSubscriber(topic.Command(c.Device, c.Name)) {
			continue
		}
		from := c.State
		c.State, c.SentAt, c.Attempts = store.CommandSent, now.UTC(), c.Attempts+1
		if err := s.o.Store.UpdateCommand(ctx, c, from); err != nil {
			if !errors.Is(err, store.ErrConflict) && !errors.Is(err, store.ErrNotFound) {
				s.log.Error("storing a command send failed", "command", c.ID, "device", device, "err", err)
			}
			continue
		}
		if from == store.CommandQueued {
			s.m.state(store.CommandSent)
		} else {
			s.m.resends.Inc()
		}
		s.publish(c)
	}
}

// expire marks one due command expired (the sweeper does so in bulk).
func (s *Service) expire(ctx context.Context, c store.Command, now time.Time) {
	from := c.State
	c.State, c.CompletedAt = store.CommandExpired, now.UTC()
	if err := s.o.Store.UpdateCommand(ctx, c, from); err != nil {
		if !errors.Is(err, store.ErrConflict) && !errors.Is(err, store.ErrNotFound) {
			s.log.Error("expiring a command failed", "command", c.ID, "err", err)
		}
		return
	}
	s.m.state(store.CommandExpired)
	s.finished(c.ID)
}

// wireCommand is the payload of devices/{id}/commands/{name} (DESIGN §3).
type wireCommand struct {
	ID      string          `json:"id"`
	Params  json.RawMessage `json:"params"`
	Expires string          `json:"expires"`
}

// ExpiresFormat is the layout of "expires": RFC 3339 in UTC with
// milliseconds.
const ExpiresFormat = "2006-01-02T15:04:05.000Z07:00"

// publish sends a command stored as sent. The caller holds the device's
// lock.
func (s *Service) publish(c store.Command) {
	payload, err := json.Marshal(wireCommand{ID: c.ID, Params: c.Params, Expires: c.ExpiresAt.UTC().Format(ExpiresFormat)})
	if err != nil {
		s.log.Error("encoding a command failed", "command", c.ID, "err", err)
		return
	}
	s.mu.Lock()
	s.sentEpoch[c.ID] = s.epoch[c.Device]
	s.mu.Unlock()
	left := c.ExpiresAt.Sub(s.o.Now())
	err = s.o.Publisher.PublishCommand(topic.Command(c.Device, c.Name), payload,
		topic.Response(c.Device, c.ID), []byte(c.ID), left)
	if err != nil {
		// Stored as sent: it is sent again when the device next connects.
		s.log.Warn("publishing a command failed", "command", c.ID, "device", c.Device, "err", err)
		return
	}
	s.log.Debug("command sent", "command", c.ID, "device", c.Device, "name", c.Name, "attempt", c.Attempts)
}

// nudgeSweeper wakes the sweeper when t is before its next run.
func (s *Service) nudgeSweeper(t time.Time) {
	if n := s.nextWake.Load(); n != 0 && t.UnixNano() >= n {
		return
	}
	select {
	case s.sweep <- struct{}{}:
	default:
	}
}

// sweeper marks due commands expired, at each command's expiry, and
// prunes old finished commands hourly.
func (s *Service) sweeper() {
	defer s.wg.Done()
	timer := time.NewTimer(0)
	defer timer.Stop()
	var lastPrune time.Time
	for {
		select {
		case <-s.stop:
			return
		case <-timer.C:
		case <-s.sweep:
		}
		now := s.o.Now()
		next := s.expireDue(now)
		if now.Sub(lastPrune) >= pruneInterval {
			lastPrune = now
			s.prune(now)
		}
		wait := maxSweepInterval
		if !next.IsZero() {
			wait = min(wait, max(next.Sub(s.o.Now()), 0))
		}
		s.nextWake.Store(s.o.Now().Add(wait).UnixNano())
		if !timer.Stop() {
			select {
			case <-timer.C:
			default:
			}
		}
		timer.Reset(wait)
	}
}

// expireDue expires every due command; it returns the next expiry.
func (s *Service) expireDue(now time.Time) time.Time {
	ctx, cancel := context.WithTimeout(context.Background(), storeTimeout)
	defer cancel()
	for {
		expired, next, err := s.o.Store.ExpireCommands(ctx, now, expireBatch)
		if err != nil {
			if !errors.Is(err, store.ErrClosed) {
				s.log.Error("expiring commands failed", "err", err)
			}
			return now.Add(time.Second)
		}
		for _, c := range expired {
			s.m.state(store.CommandExpired)
			s.finished(c.ID)
			s.log.Debug("command expired", "command", c.ID, "device", c.Device, "was_sent", c.Attempts > 0)
		}
		if len(expired) < expireBatch {
			return next
		}
	}
}

func (s *Service) prune(now time.Time) {
	ctx, cancel := context.WithTimeout(context.Background(), storeTimeout)
	defer cancel()
	n, err := s.o.Store.PruneCommands(ctx, now.Add(-s.o.Retention))
	if err != nil {
		if !errors.Is(err, store.ErrClosed) {
			s.log.Warn("pruning old commands failed", "err", err)
		}
		return
	}
	if n > 0 {
		s.log.Info("pruned finished commands", "count", n, "older_than", s.o.Retention)
	}
}

// keyedMutex is one mutex per key, forgotten when unused.
type keyedMutex struct {
	mu sync.Mutex
	m  map[string]*keyedEntry
}

type keyedEntry struct {
	mu   sync.Mutex
	refs int
}

// lock locks key and returns its unlock.
func (k *keyedMutex) lock(key string) func() {
	k.mu.Lock()
	e := k.m[key]
	if e == nil {
		e = &keyedEntry{}
		k.m[key] = e
	}
	e.refs++
	k.mu.Unlock()
	e.mu.Lock()
	return func() {
		e.mu.Unlock()
		k.mu.Lock()
		if e.refs--; e.refs == 0 {
			delete(k.m, key)
		}
		k.mu.Unlock()
	}
}
