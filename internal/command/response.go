package command

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"
	"unicode/utf8"

	"github.com/fieldhub/fieldhub/internal/store"
	"github.com/fieldhub/fieldhub/payload"
)

// Refusal reasons of answers (fieldhub_command_responses_refused_total
// {reason}, and the MQTT 5 reason string).
const (
	ReasonMalformed           = payload.ReasonMalformed // not a JSON object
	ReasonWrongType           = payload.ReasonWrongType // status not "ok"/"error", error not a string
	ReasonTooLarge            = payload.ReasonTooLarge  // over MaxResponseBytes
	ReasonUnknownCommand      = "unknown_command"       // no such command of this device
	ReasonCorrelationMismatch = "correlation_mismatch"  // MQTT 5 Correlation Data is not the topic's command id
	ReasonExpired             = "command_expired"       // the command expired before the answer
)

// MQTT 5 PUBACK reason codes of refused answers.
const (
	codeTopicNameInvalid = 0x90 // unknown_command
	codeImplSpecific     = 0x83 // correlation_mismatch, command_expired
)

// refusal is a refused answer: a payload refusal (so the broker acks it
// and does not ask for it again) with its MQTT 5 reason code.
type refusal struct {
	err  *payload.Error
	code byte // 0: the broker's default (0x99)
}

func (r *refusal) Error() string    { return r.err.Error() }
func (r *refusal) Unwrap() error    { return r.err }
func (r *refusal) ReasonCode() byte { return r.code }

func refuse(reason string, code byte, format string, args ...any) error {
	return &refusal{err: &payload.Error{Reason: reason, Msg: fmt.Sprintf(format, args...)}, code: code}
}

// answer is the payload of devices/{id}/responses/{cid} (DESIGN §3).
type answer struct {
	Status *string          `json:"status"`
	Result json.RawMessage  `json:"result"`
	Error  *json.RawMessage `json:"error"`
}

// parseAnswer validates an answer: status "ok" or "error"; result any
// JSON value; error a string (or null). Other keys are ignored.
func parseAnswer(b []byte) (ok bool, result json.RawMessage, msg string, err error) {
	if len(b) > MaxResponseBytes {
		return false, nil, "", refuse(ReasonTooLarge, 0, "%d bytes, at most %d", len(b), MaxResponseBytes)
	}
	b = bytes.TrimSpace(b)
	var a answer
	if len(b) == 0 || b[0] != '{' {
		return false, nil, "", refuse(ReasonMalformed, 0, "an answer is a JSON object")
	}
	if err := json.Unmarshal(b, &a); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) {
			return false, nil, "", refuse(ReasonWrongType, 0, "%s: want a %s", te.Field, te.Type)
		}
		return false, nil, "", refuse(ReasonMalformed, 0, "invalid JSON: %v", err)
	}
	if a.Status == nil || (*a.Status != "ok" && *a.Status != "error") {
		return false, nil, "", refuse(ReasonWrongType, 0, `status: want "ok" or "error"`)
	}
	if a.Error != nil && !bytes.Equal(*a.Error, []byte("null")) {
		if err := json.Unmarshal(*a.Error, &msg); err != nil {
			return false, nil, "", refuse(ReasonWrongType, 0, "error: want a string")
		}
		if len(msg) > MaxErrorLen {
			msg = msg[:MaxErrorLen]
			for !utf8.ValidString(msg) {
				msg = msg[:len(msg)-1]
			}
		}
	}
	if len(a.Result) > 0 {
		var buf bytes.Buffer
		if err := json.Compact(&buf, a.Result); err != nil {
			return false, nil, "", refuse(ReasonMalformed, 0, "result: %v", err)
		}
		result = buf.Bytes()
	}
	return *a.Status == "ok", result, msg, nil
}

// IngestResponse stores a device's answer to command cid
// (broker.ResponseIngester). done runs once, before IngestResponse
// returns: nil once the answer is durable (or when it repeats the
// recorded outcome), a refusal (matching payload.ErrRefused) for an
// answer that will never be taken, any other error when storing failed.
func (s *Service) IngestResponse(device, cid string, correlation, body []byte, done func(error)) {
	err := s.ingestResponse(device, cid, correlation, body)
	switch {
	case err == nil:
	case errors.Is(err, payload.ErrRefused):
		reason := payload.Reason(err)
		s.m.responses.WithLabelValues("refused").Inc()
		s.m.refused.WithLabelValues(reason).Inc()
		s.log.Debug("command answer refused", "device", device, "command", cid, "reason", reason, "err", err)
	default:
		s.log.Error("storing a command answer failed", "device", device, "command", cid, "err", err)
	}
	done(err)
}

func (s *Service) ingestResponse(device, cid string, correlation, body []byte) error {
	if len(correlation) > 0 && string(correlation) != cid {
		return refuse(ReasonCorrelationMismatch, codeImplSpecific, "correlation data is not the command id of the topic")
	}
	ok, result, msg, err := parseAnswer(body)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), storeTimeout)
	defer cancel()
	unlock := s.locks.lock(device)
	defer unlock()
	c, err := s.o.Store.GetCommand(ctx, cid)
	if errors.Is(err, store.ErrNotFound) || (err == nil && c.Device != device) {
		// Another device's command is as unknown as a missing one.
		return refuse(ReasonUnknownCommand, codeTopicNameInvalid, "no command %s for device %s", cid, device)
	}
	if err != nil {
		return err
	}
	state := store.CommandFailed
	if ok {
		state = store.CommandSucceeded
	}
	switch c.State {
	case store.CommandExpired:
		return refuse(ReasonExpired, codeImplSpecific, "command %s expired at %s", cid, c.ExpiresAt.Format(time.RFC3339))
	case store.CommandSucceeded, store.CommandFailed:
		// A resend (the PUBACK was lost): the first answer stands.
		s.m.responses.WithLabelValues("duplicate").Inc()
		return nil
	}
	now := s.o.Now()
	if !now.Before(c.ExpiresAt) {
		s.expire(ctx, c, now)
		return refuse(ReasonExpired, codeImplSpecific, "command %s expired at %s", cid, c.ExpiresAt.Format(time.RFC3339))
	}
	from := c.State
	c.State, c.CompletedAt, c.Result = state, now.UTC(), result
	if !ok {
		c.Error = msg
		if c.Error == "" {
			c.Error = "the device reported an error"
		}
	}
	if err := s.o.Store.UpdateCommand(ctx, c, from); err != nil {
		if errors.Is(err, store.ErrConflict) {
			// Expired by the sweeper in between.
			return refuse(ReasonExpired, codeImplSpecific, "command %s expired at %s", cid, c.ExpiresAt.Format(time.RFC3339))
		}
		return fmt.Errorf("command: storing the answer to %s: %w", cid, err)
	}
	s.m.responses.WithLabelValues("stored").Inc()
	s.m.state(state)
	if !c.SentAt.IsZero() {
		s.m.roundTrip.Observe(now.Sub(c.SentAt).Seconds())
	}
	s.finished(c.ID)
	return nil
}
