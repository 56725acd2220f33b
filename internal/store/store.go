// Package store declares the small storage interfaces the hub is built on,
// so that the embedded store and PostgreSQL are interchangeable. Each
// backend passes the conformance suite in store/storetest.
package store

import (
	"context"
	"encoding/json"
	"errors"
	"time"

	"github.com/fieldhub/fieldhub/payload"
)

// Errors shared by every backend.
var (
	ErrNotFound = errors.New("not found")
	ErrExists   = errors.New("already exists")
	ErrClosed   = errors.New("store closed")
	// ErrTypeMismatch: a point's value kind differs from its metric's kind.
	ErrTypeMismatch = errors.New("metric value type mismatch")
	// ErrInvalidQuery: a query the backend cannot answer as asked (a bad
	// cursor, an aggregate that does not apply to the metric's kind).
	ErrInvalidQuery = errors.New("invalid query")
	// ErrConflict: a compare-and-set write (UpdateCommand, PutTwinDoc)
	// found another state or version than the expected one.
	ErrConflict = errors.New("conflict")
)

// Appender stores telemetry durably.
type Appender interface {
	// Append stores m and returns only once m is durable (it may share a
	// commit with concurrent callers). A message whose (Device, Seq) was
	// already stored is not stored again: Append reports duplicate=true
	// and a nil error. Appending is atomic per message: all points or none.
	Append(ctx context.Context, m *payload.Message) (duplicate bool, err error)
}

// AsyncAppender is an optional interface of an Appender that can pipeline:
// AppendAsync queues m and calls done exactly once, from another goroutine,
// when m is durable or has failed. Calls made in order for one device are
// made durable and completed in that order.
type AsyncAppender interface {
	AppendAsync(m *payload.Message, done func(duplicate bool, err error))
}

// Agg is a downsampling aggregate.
type Agg string

// Aggregates accepted by Query.
const (
	AggNone  Agg = ""
	AggAvg   Agg = "avg"
	AggMin   Agg = "min"
	AggMax   Agg = "max"
	AggSum   Agg = "sum"
	AggCount Agg = "count"
	AggLast  Agg = "last"
)

// Valid reports whether a is a known aggregate.
func (a Agg) Valid() bool {
	switch a {
	case AggNone, AggAvg, AggMin, AggMax, AggSum, AggCount, AggLast:
		return true
	}
	return false
}

// Query selects points of one device in [From, To).
type Query struct {
	Device string
	Metric string // "" for every metric of the device
	From   int64  // Unix ns, inclusive
	To     int64  // Unix ns, exclusive
	// Step > 0 with Agg set downsamples into buckets [From+k*Step, From+(k+1)*Step).
	Step int64
	Agg  Agg
	// Limit bounds the points (or buckets) returned; 0 means no limit.
	// When more remain, Result.Next holds a cursor to pass as After.
	Limit int
	// After resumes a query from Result.Next.
	After string
}

// Series is the answer for one metric, in time order.
type Series struct {
	Metric string
	// Kind is the metric's kind for raw points and for AggLast; other
	// aggregates are numbers.
	Kind payload.ValueKind
	// Points holds raw points, or one point per non-empty bucket (TS is the
	// bucket's start) when the query downsampled. Bool and string metrics
	// support only AggCount and AggLast; other aggregates of them are
	// refused with an error matching ErrTypeMismatch or ErrInvalidQuery.
	// Series with no point in the range are left out.
	Points []payload.Point
}

// Result is the answer to a Query, series ordered by metric name.
type Result struct {
	Series []Series
	Next   string // cursor for the rest, "" when complete
}

// Querier reads telemetry.
type Querier interface {
	Query(ctx context.Context, q Query) (Result, error)
	// Latest returns the last point of each metric of the device, ordered by metric.
	Latest(ctx context.Context, device string) ([]payload.Point, error)
}

// Telemetry is the whole telemetry store.
type Telemetry interface {
	Appender
	Querier
	// DeleteDevice removes every point and the dedup state of a device.
	DeleteDevice(ctx context.Context, device string) error
	// Close flushes and closes. Append after Close returns ErrClosed.
	Close() error
}

// AuthKind is how a device proves its identity.
type AuthKind string

// Device authentication kinds.
const (
	AuthPassword    AuthKind = "password"
	AuthCertificate AuthKind = "certificate"
)

// Device is a registry entry.
type Device struct {
	ID        string
	Name      string
	Labels    map[string]string
	Gateway   string // id of the gateway this device sits behind, if any
	Auth      AuthKind
	CreatedAt time.Time
	// PasswordHash is an encoded argon2id hash (AuthPassword).
	PasswordHash string
	// CertSerial and CertFingerprint identify the one certificate the
	// device may use (AuthCertificate): hex serial, hex SHA-256 of the DER.
	CertSerial      string
	CertFingerprint string
	CertNotAfter    time.Time
	// CredentialsVersion increases at every rotation.
	CredentialsVersion int
	LastSeen           time.Time // zero when never seen
}

// ListOptions pages through devices in id order.
type ListOptions struct {
	After  string // list ids greater than this
	Limit  int    // 0 means all
	Prefix string // only ids with this prefix
}

// Registry stores devices.
type Registry interface {
	CreateDevice(ctx context.Context, d Device) error         // ErrExists
	GetDevice(ctx context.Context, id string) (Device, error) // ErrNotFound
	ListDevices(ctx context.Context, o ListOptions) ([]Device, error)
	// UpdateDevice replaces the stored device d.ID. ErrNotFound.
	UpdateDevice(ctx context.Context, d Device) error
	DeleteDevice(ctx context.Context, id string) error // ErrNotFound
	// SetLastSeen records presence times in bulk (best effort, not durable per call).
	SetLastSeen(ctx context.Context, seen map[string]time.Time) error
}

// KV stores small named blobs (the CA's sealed keys and certificates).
type KV interface {
	Get(ctx context.Context, key string) ([]byte, error) // ErrNotFound
	Put(ctx context.Context, key string, value []byte) error
}

// Alert is a stored alert of a device (DESIGN §3 devices/{id}/alerts).
type Alert struct {
	Device   string
	TS       time.Time // when it was raised or cleared, by the sender's clock
	Received time.Time // when the hub stored it
	Metric   string
	Value    float64
	Rule     string
	Severity string // info, warning or critical
	Message  string
	State    string // raised or cleared
}

// AlertQuery selects alerts, newest (by TS) first.
type AlertQuery struct {
	Device   string // "" for every device
	Severity string // "" for every severity
	// Before resumes a listing from AlertPage.Next.
	Before string
	// Limit bounds the alerts returned; 0 means no limit. When more remain,
	// AlertPage.Next holds a cursor to pass as Before.
	Limit int
}

// AlertPage is the answer to an AlertQuery.
type AlertPage struct {
	Alerts []Alert
	Next   string // cursor for the rest, "" when complete
}

// Alerts stores alerts durably. A backend bounds what it keeps and
// documents how (the embedded store keeps the newest 1,000,000).
type Alerts interface {
	// AppendAlerts stores alerts in one transaction and returns once they
	// are durable. An alert equal to a stored one in Device, TS, Metric,
	// Rule and State is a resend and is not stored again.
	AppendAlerts(ctx context.Context, alerts []Alert) error
	// ListAlerts returns alerts newest first (TS descending, then the
	// reverse of arrival). A malformed Before is ErrInvalidQuery.
	ListAlerts(ctx context.Context, q AlertQuery) (AlertPage, error)
}

// CommandState is where a command is in its life (DESIGN §4): queued →
// sent → succeeded | failed | expired; a queued command may also expire.
type CommandState string

// Command states.
const (
	CommandQueued    CommandState = "queued"    // waiting for the device to be reachable
	CommandSent      CommandState = "sent"      // published to the device, no answer yet
	CommandSucceeded CommandState = "succeeded" // the device answered "ok"
	CommandFailed    CommandState = "failed"    // the device answered "error"
	CommandExpired   CommandState = "expired"   // no answer before ExpiresAt
)

// Terminal reports whether s is a final state.
func (s CommandState) Terminal() bool {
	return s == CommandSucceeded || s == CommandFailed || s == CommandExpired
}

// Valid reports whether s is a known state.
func (s CommandState) Valid() bool {
	return s == CommandQueued || s == CommandSent || s.Terminal()
}

// Command is a stored command for a device.
type Command struct {
	ID     string
	Device string
	Name   string
	Params json.RawMessage // a JSON object
	State  CommandState

	CreatedAt time.Time
	ExpiresAt time.Time
	// SentAt is the time of the latest publish to the device (zero while
	// it was never sent); Attempts counts the publishes.
	SentAt   time.Time
	Attempts int
	// CompletedAt is when the command succeeded, failed or expired.
	CompletedAt time.Time

	Result json.RawMessage // the device's result, any JSON value; nil when none
	Error  string          // the device's error message (failed)
}

// CommandQuery selects the commands of one device, newest first.
type CommandQuery struct {
	Device string
	// Before resumes a listing from CommandPage.Next.
	Before string
	// Limit bounds the commands returned; 0 means no limit.
	Limit int
}

// CommandPage is the answer to a CommandQuery.
type CommandPage struct {
	Commands []Command
	Next     string // cursor for the rest, "" when complete
}

// Commands stores commands durably: every write has returned only once it
// is durable.
type Commands interface {
	// CreateCommand stores a new command. ErrExists when c.ID is taken.
	CreateCommand(ctx context.Context, c Command) error
	// GetCommand returns a command. ErrNotFound.
	GetCommand(ctx context.Context, id string) (Command, error)
	// ListCommands returns a device's commands, newest first (CreatedAt
	// descending, then the reverse of creation). A malformed Before is
	// ErrInvalidQuery.
	ListCommands(ctx context.Context, q CommandQuery) (CommandPage, error)
	// PendingCommands returns the queued and sent commands of a device,
	// oldest first.
	PendingCommands(ctx context.Context, device string) ([]Command, error)
	// UpdateCommand stores c's State, SentAt, Attempts, CompletedAt,
	// Result and Error if the stored command c.ID is in one of the states
	// from: ErrNotFound when there is no such command, ErrConflict when it
	// is in another state.
	UpdateCommand(ctx context.Context, c Command, from ...CommandState) error
	// ExpireCommands marks at most limit (0: no limit) queued or sent
	// commands whose ExpiresAt is not after now as expired (CompletedAt =
	// now) and returns them as stored, with the earliest ExpiresAt of the
	// queued and sent commands left (zero when none).
	ExpireCommands(ctx context.Context, now time.Time, limit int) (expired []Command, next time.Time, err error)
	// DeleteCommands deletes every command of a device.
	DeleteCommands(ctx context.Context, device string) error
	// PruneCommands deletes succeeded, failed and expired commands
	// completed before t and returns how many it deleted.
	PruneCommands(ctx context.Context, before time.Time) (int, error)
}

// TwinSide names one of a twin's two documents.
type TwinSide string

// The two documents of a twin.
const (
	TwinDesired  TwinSide = "desired"  // what the operator wants
	TwinReported TwinSide = "reported" // what the device says it has
)

// TwinDoc is one document of a twin.
type TwinDoc struct {
	// Version is 0 until the document is first written and grows with
	// every write.
	Version int64
	// State is a JSON object; nil while Version is 0.
	State     json.RawMessage
	UpdatedAt time.Time
}

// Twin is a device's desired and reported documents.
type Twin struct {
	Device   string
	Desired  TwinDoc
	Reported TwinDoc
}

// Twins stores device twins durably.
type Twins interface {
	// GetTwin returns the twin of device; a device whose twin was never
	// written has two zero documents (and no error).
	GetTwin(ctx context.Context, device string) (Twin, error)
	// PutTwinDoc replaces the side document of device with doc if the
	// stored document's version is prev (0 when never written), else
	// returns ErrConflict. doc.Version must be greater than prev.
	PutTwinDoc(ctx context.Context, device string, side TwinSide, prev int64, doc TwinDoc) error
	// ListTwins returns up to limit (0: no limit) twins whose device id
	// is greater than after, in device order.
	ListTwins(ctx context.Context, after string, limit int) ([]Twin, error)
	// DeleteTwin deletes the twin of device (no error when it has none).
	DeleteTwin(ctx context.Context, device string) error
}
