package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"time"

	"github.com/fieldhub/fieldhub/internal/command"
	"github.com/fieldhub/fieldhub/internal/store"
	"github.com/fieldhub/fieldhub/topic"
)

// Command listing and waiting limits.
const (
	DefaultCommandLimit = 50
	MaxCommandLimit     = 1000
	// MaxWait bounds ?wait= on command routes.
	MaxWait = time.Minute
)

// Commands is what the API needs of the command service.
type Commands interface {
	Create(ctx context.Context, r command.Request) (store.Command, error)
	Get(ctx context.Context, id string) (store.Command, error)
	// Wait returns the command once finished, or its current state when
	// ctx ends.
	Wait(ctx context.Context, id string) (store.Command, error)
	List(ctx context.Context, q store.CommandQuery) (store.CommandPage, error)
}

// Command is the API's view of a command.
type Command struct {
	ID          string             `json:"id"`
	Device      string             `json:"device"`
	Name        string             `json:"name"`
	Params      json.RawMessage    `json:"params"`
	State       store.CommandState `json:"state"`
	CreatedAt   time.Time          `json:"created_at"`
	ExpiresAt   time.Time          `json:"expires_at"`
	SentAt      *time.Time         `json:"sent_at,omitempty"`
	Attempts    int                `json:"attempts"`
	CompletedAt *time.Time         `json:"completed_at,omitempty"`
	Result      json.RawMessage    `json:"result,omitempty"`
	Error       string             `json:"error,omitempty"`
}

func commandView(c store.Command) Command {
	v := Command{
		ID: c.ID, Device: c.Device, Name: c.Name, Params: c.Params, State: c.State,
		CreatedAt: c.CreatedAt.UTC(), ExpiresAt: c.ExpiresAt.UTC(), Attempts: c.Attempts,
		Result: c.Result, Error: c.Error,
	}
	if len(v.Params) == 0 {
		v.Params = json.RawMessage("{}")
	}
	if !c.SentAt.IsZero() {
		t := c.SentAt.UTC()
		v.SentAt = &t
	}
	if !c.CompletedAt.IsZero() {
		t := c.CompletedAt.UTC()
		v.CompletedAt = &t
	}
	return v
}

type commandRequest struct {
	Name   string          `json:"name"`
	Params json.RawMessage `json:"params"`
	// ExpiresIn is a Go duration ("30s", "5m") or a number of seconds.
	ExpiresIn json.RawMessage `json:"expires_in"`
	// Expires is an RFC 3339 time.
	Expires string `json:"expires"`
}

// parseWait reads ?wait= (a duration such as 5s, or seconds), 0 when
// absent.
func parseWait(r *http.Request) (time.Duration, error) {
	s := r.URL.Query().Get("wait")
	if s == "" {
		return 0, nil
	}
	d, err := parseDuration(s)
	if err != nil || d < 0 || d > MaxWait {
		return 0, badRequest("wait: want a duration from 0s to %v (e.g. 5s), got %q", MaxWait, s)
	}
	return d, nil
}

// parseDuration reads a Go duration or a number of seconds.
func parseDuration(s string) (time.Duration, error) {
	if f, err := strconv.ParseFloat(s, 64); err == nil {
		if f < 0 || f > float64(1<<62)/float64(time.Second) {
			return 0, errors.New("out of range")
		}
		return time.Duration(f * float64(time.Second)), nil
	}
	return time.ParseDuration(s)
}

// createCommand serves POST /api/v1/devices/{id}/commands[?wait=5s].
func (a *API) createCommand(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	wait, err := parseWait(r)
	if err != nil {
		a.storeError(w, err)
		return
	}
	var req commandRequest
	if err := decodeBody(r, &req); err != nil {
		a.storeError(w, err)
		return
	}
	cr := command.Request{Device: id, Name: req.Name, Params: req.Params}
	if raw := bytes.TrimSpace(req.ExpiresIn); len(raw) > 0 && !bytes.Equal(raw, []byte("null")) {
		var s string
		if raw[0] == '"' {
			if err := json.Unmarshal(raw, &s); err != nil {
				a.storeError(w, badRequest("expires_in: %v", err))
				return
			}
		} else {
			s = string(raw)
		}
		d, err := parseDuration(s)
		if err != nil || d <= 0 {
			a.storeError(w, badRequest(`expires_in: want a positive duration ("30s", "5m", "2h") or seconds, got %s`, raw))
			return
		}
		cr.ExpiresIn = d
	}
	if req.Expires != "" {
		t, err := time.Parse(time.RFC3339Nano, req.Expires)
		if err != nil {
			a.storeError(w, badRequest("expires: want an RFC 3339 time, got %q", req.Expires))
			return
		}
		cr.ExpiresAt = t
	}
	if !topic.ValidDeviceID(id) {
		a.storeError(w, badRequest("device: %q is not a device id", id))
		return
	}
	if _, err := a.o.Registry.Get(r.Context(), id); err != nil {
		a.storeError(w, err)
		return
	}
	c, err := a.o.Commands.Create(r.Context(), cr)
	if err != nil {
		a.storeError(w, err)
		return
	}
	a.o.Logger.Info("command created", "command", c.ID, "device", c.Device, "name", c.Name, "state", c.State)
	if wait > 0 && !c.State.Terminal() {
		ctx, cancel := context.WithTimeout(r.Context(), wait)
		defer cancel()
		if got, err := a.o.Commands.Wait(ctx, c.ID); err == nil {
			c = got
		} else if r.Context().Err() != nil {
			return // the client went away
		}
	}
	w.Header().Set("Location", "/api/v1/commands/"+c.ID)
	writeJSON(w, http.StatusCreated, commandView(c))
}

// getCommand serves GET /api/v1/commands/{cid}[?wait=5s].
func (a *API) getCommand(w http.ResponseWriter, r *http.Request) {
	wait, err := parseWait(r)
	if err != nil {
		a.storeError(w, err)
		return
	}
	id := r.PathValue("cid")
	var c store.Command
	if wait > 0 {
		ctx, cancel := context.WithTimeout(r.Context(), wait)
		defer cancel()
		c, err = a.o.Commands.Wait(ctx, id)
	} else {
		c, err = a.o.Commands.Get(r.Context(), id)
	}
	if err != nil {
		a.storeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, commandView(c))
}

// listCommands serves GET /api/v1/devices/{id}/commands?limit=&before=:
// the device's commands, newest first.
func (a *API) listCommands(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	q := r.URL.Query()
	cq := store.CommandQuery{Device: id, Before: q.Get("before"), Limit: DefaultCommandLimit}
	if s := q.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > MaxCommandLimit {
			a.storeError(w, badRequest("limit: want 1..%d, got %q", MaxCommandLimit, s))
			return
		}
		cq.Limit = n
	}
	if _, err := a.o.Registry.Get(r.Context(), id); err != nil {
		a.storeError(w, err)
		return
	}
	page, err := a.o.Commands.List(r.Context(), cq)
	if err != nil {
		a.storeError(w, err)
		return
	}
	out := struct {
		Commands []Command `json:"commands"`
		Next     string    `json:"next,omitempty"`
	}{Commands: make([]Command, 0, len(page.Commands)), Next: page.Next}
	for _, c := range page.Commands {
		out.Commands = append(out.Commands, commandView(c))
	}
	writeJSON(w, http.StatusOK, out)
}
