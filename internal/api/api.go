// Package api serves the hub's REST API (DESIGN §4): devices, credentials,
// telemetry queries, alerts, commands and twins as JSON over HTTP, behind
// a bearer token.
package api

import (
	"bytes"
	"context"
	"crypto/subtle"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/fieldhub/fieldhub/internal/command"
	"github.com/fieldhub/fieldhub/internal/registry"
	"github.com/fieldhub/fieldhub/internal/store"
)

// Registry is what the API needs of the device registry.
type Registry interface {
	Create(ctx context.Context, req registry.CreateRequest) (store.Device, registry.Credentials, error)
	Get(ctx context.Context, id string) (store.Device, error)
	List(ctx context.Context, o store.ListOptions) ([]store.Device, error)
	Delete(ctx context.Context, id string) error
	Rotate(ctx context.Context, id string, csrPEM []byte) (registry.Credentials, error)
}

// Presence tells whether a device is connected and when it was last seen.
type Presence interface {
	Online(id string) bool
	LastSeen(id string) time.Time
}

// Options configure the API handler.
type Options struct {
	AdminToken string
	Registry   Registry
	Telemetry  store.Querier
	Alerts     AlertLister // nil leaves GET /api/v1/alerts out
	Commands   Commands    // nil leaves the command routes out
	Twins      Twins       // nil leaves the twin routes out
	Live       Live        // nil leaves GET …/telemetry/live out
	Presence   Presence
	// Rates, when set, gives each device's msg_rate (messages stored in
	// the last minute).
	Rates Rates
	// TwinIndex, when set, gives the device list each device's firmware
	// version (Twins gives it for one device).
	TwinIndex TwinIndex
	CAPEM     []byte
	Metrics   http.Handler // served at /metrics
	Ready     func() error // nil error when ready to serve
	Logger    *slog.Logger
	Now       func() time.Time
}

// API is the REST handler.
type API struct {
	o   Options
	mux *http.ServeMux
}

//go:embed openapi.json
var openapi []byte

// New returns the API handler.
func New(o Options) *API {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	a := &API{o: o, mux: http.NewServeMux()}
	m := a.mux
	m.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok\n") })
	m.HandleFunc("GET /readyz", a.readyz)
	if o.Metrics != nil {
		m.Handle("GET /metrics", o.Metrics)
	}
	m.HandleFunc("GET /api/v1/openapi.json", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Write(openapi)
	})
	m.HandleFunc("GET /api/v1/ca.pem", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/x-pem-file")
		w.Write(o.CAPEM)
	})
	auth := a.authenticated
	m.Handle("POST /api/v1/devices", auth(a.createDevice))
	m.Handle("GET /api/v1/devices", auth(a.listDevices))
	m.Handle("GET /api/v1/devices/{id}", auth(a.getDevice))
	m.Handle("GET /api/v1/gateways", auth(a.listGateways))
	m.Handle("DELETE /api/v1/devices/{id}", auth(a.deleteDevice))
	m.Handle("POST /api/v1/devices/{id}/credentials", auth(a.rotate))
	m.Handle("GET /api/v1/devices/{id}/telemetry", auth(a.telemetry))
	m.Handle("GET /api/v1/devices/{id}/telemetry/latest", auth(a.latest))
	if o.Live != nil {
		m.Handle("GET /api/v1/devices/{id}/telemetry/live", auth(a.liveStream))
	}
	if o.Alerts != nil {
		m.Handle("GET /api/v1/alerts", auth(a.alerts))
	}
	if o.Commands != nil {
		m.Handle("POST /api/v1/devices/{id}/commands", auth(a.createCommand))
		m.Handle("GET /api/v1/devices/{id}/commands", auth(a.listCommands))
		m.Handle("GET /api/v1/commands/{cid}", auth(a.getCommand))
	}
	if o.Twins != nil {
		m.Handle("GET /api/v1/devices/{id}/twin", auth(a.getTwin))
		m.Handle("PATCH /api/v1/devices/{id}/twin", auth(a.patchTwin))
	}
	m.Handle("/api/", auth(func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, "not_found", "no such route: "+r.Method+" "+r.URL.Path)
	}))
	return a
}

// ServeHTTP implements http.Handler.
func (a *API) ServeHTTP(w http.ResponseWriter, r *http.Request) { a.mux.ServeHTTP(w, r) }

// Handle adds a route to the API's mux (later features mount here).
func (a *API) Handle(pattern string, h http.Handler) { a.mux.Handle(pattern, h) }

// Authenticated wraps h in the admin-token check.
func (a *API) Authenticated(h http.HandlerFunc) http.Handler { return a.authenticated(h) }

func (a *API) authenticated(h http.HandlerFunc) http.Handler {
	want := []byte("Bearer " + a.o.AdminToken)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got := []byte(r.Header.Get("Authorization"))
		if a.o.AdminToken == "" || subtle.ConstantTimeCompare(got, want) != 1 {
			w.Header().Set("WWW-Authenticate", `Bearer realm="fieldhub"`)
			writeError(w, http.StatusUnauthorized, "unauthorized", "a valid bearer token is required")
			return
		}
		h(w, r)
	})
}

func (a *API) readyz(w http.ResponseWriter, r *http.Request) {
	if a.o.Ready != nil {
		if err := a.o.Ready(); err != nil {
			http.Error(w, "not ready: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
	}
	io.WriteString(w, "ready\n")
}

// errorBody is the DESIGN §4 error shape.
type errorBody struct {
	Error struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
}

func writeError(w http.ResponseWriter, status int, code, msg string) {
	var b errorBody
	b.Error.Code, b.Error.Message = code, msg
	writeJSON(w, status, b)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(true)
	enc.Encode(v)
}

// storeError maps a backend error onto an HTTP answer.
func (a *API) storeError(w http.ResponseWriter, err error) {
	switch {
	case errors.Is(err, store.ErrNotFound):
		writeError(w, http.StatusNotFound, "not_found", err.Error())
	case errors.Is(err, store.ErrExists):
		writeError(w, http.StatusConflict, "exists", err.Error())
	case errors.Is(err, registry.ErrInvalid), errors.Is(err, errBadRequest), errors.Is(err, command.ErrInvalid):
		writeError(w, http.StatusBadRequest, "invalid", err.Error())
	case errors.Is(err, store.ErrInvalidQuery):
		writeError(w, http.StatusBadRequest, "invalid_query", err.Error())
	case errors.Is(err, store.ErrTypeMismatch):
		writeError(w, http.StatusBadRequest, "type_mismatch", err.Error())
	case errors.Is(err, store.ErrConflict):
		writeError(w, http.StatusConflict, "conflict", err.Error())
	case errors.Is(err, command.ErrClosed):
		writeError(w, http.StatusServiceUnavailable, "unavailable", "the hub is shutting down")
	case errors.Is(err, context.Canceled):
		writeError(w, 499, "canceled", "request canceled")
	default:
		a.o.Logger.Error("api request failed", "err", err)
		writeError(w, http.StatusInternalServerError, "internal", "internal error; see the hub's log")
	}
}

var errBadRequest = errors.New("bad request")

func badRequest(format string, args ...any) error {
	return fmt.Errorf("%w: %s", errBadRequest, fmt.Sprintf(format, args...))
}

// decodeBody reads a JSON body of at most 1 MiB into v, refusing unknown fields.
func decodeBody(r *http.Request, v any) error {
	if ct := r.Header.Get("Content-Type"); ct != "" && !strings.HasPrefix(ct, "application/json") {
		return badRequest("content type %q is not application/json", ct)
	}
	b, err := io.ReadAll(io.LimitReader(r.Body, maxBody+1))
	if err != nil {
		return badRequest("reading the body: %v", err)
	}
	if len(b) > maxBody {
		return badRequest("body larger than %d bytes", maxBody)
	}
	return decodeStrict(b, v)
}

// maxBody bounds a request body.
const maxBody = 1 << 20

// decodeStrict decodes one JSON value of b into v, refusing unknown fields.
func decodeStrict(b []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		if errors.Is(err, io.EOF) {
			return badRequest("empty body")
		}
		return badRequest("invalid JSON body: %v", err)
	}
	if dec.More() {
		return badRequest("trailing data after the JSON body")
	}
	return nil
}
