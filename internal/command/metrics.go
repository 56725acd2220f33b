package command

import (
	"errors"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/fieldhub/fieldhub/internal/store"
)

type metrics struct {
	states    *prometheus.CounterVec
	resends   prometheus.Counter
	responses *prometheus.CounterVec
	refused   *prometheus.CounterVec
	roundTrip prometheus.Histogram
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		states: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "fieldhub_commands_total",
			Help: "Commands that reached each state (queued counts every command created; sent the first send).",
		}, []string{"state"}),
		resends: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "fieldhub_command_resends_total",
			Help: "Commands sent again to a device that reconnected without answering.",
		}),
		responses: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "fieldhub_command_responses_total",
			Help: "Answers from devices by result: stored, duplicate (of a recorded answer) or refused.",
		}, []string{"result"}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "fieldhub_command_responses_refused_total",
			Help: "Answers refused, by reason.",
		}, []string{"reason"}),
		roundTrip: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "fieldhub_command_round_trip_seconds",
			Help:    "Time from the (latest) publish of a command to its stored answer.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2.5, 14), // 1 ms … ~150 s
		}),
	}
	for _, st := range []store.CommandState{store.CommandQueued, store.CommandSent, store.CommandSucceeded, store.CommandFailed, store.CommandExpired} {
		m.states.WithLabelValues(string(st))
	}
	for _, r := range []string{"stored", "duplicate", "refused"} {
		m.responses.WithLabelValues(r)
	}
	if reg == nil {
		return m, nil
	}
	for _, c := range []prometheus.Collector{m.states, m.resends, m.responses, m.refused, m.roundTrip} {
		if err := reg.Register(c); err != nil {
			var are prometheus.AlreadyRegisteredError
			if !errors.As(err, &are) {
				return nil, fmt.Errorf("command: registering metrics: %w", err)
			}
		}
	}
	return m, nil
}

func (m *metrics) state(s store.CommandState) { m.states.WithLabelValues(string(s)).Inc() }
