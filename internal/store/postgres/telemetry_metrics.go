package postgres

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/fieldhub/fieldhub/internal/promutil"
)

// telMetrics are the telemetry store's Prometheus collectors.
type telMetrics struct {
	batches           prometheus.Counter
	batchMessages     prometheus.Histogram
	messages          prometheus.Counter
	points            prometheus.Counter
	duplicates        prometheus.Counter
	typeMismatches    prometheus.Counter
	retries           prometheus.Counter
	upserts           prometheus.Counter
	commitSeconds     prometheus.Histogram
	partitionsDropped prometheus.Counter
	failed            prometheus.Gauge
	all               []prometheus.Collector
}

func newTelMetrics(t *Telemetry) *telMetrics {
	m := &telMetrics{
		batches: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "fieldhub_pg_telemetry_batches_total",
			Help: "Telemetry batches committed to PostgreSQL (one transaction each).",
		}),
		batchMessages: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "fieldhub_pg_telemetry_batch_messages",
			Help:    "Messages decided by one committed telemetry batch.",
			Buckets: prometheus.ExponentialBuckets(1, 4, 9),
		}),
		messages: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "fieldhub_pg_telemetry_messages_stored_total",
			Help: "Telemetry messages committed to PostgreSQL.",
		}),
		points: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "fieldhub_pg_telemetry_points_written_total",
			Help: "Telemetry points written to PostgreSQL.",
		}),
		duplicates: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "fieldhub_pg_telemetry_duplicates_total",
			Help: "Messages acknowledged as duplicates of an already stored (device, seq).",
		}),
		typeMismatches: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "fieldhub_pg_telemetry_type_mismatches_total",
			Help: "Messages refused because a value kind differs from its series' kind.",
		}),
		retries: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "fieldhub_pg_telemetry_batch_retries_total",
			Help: "Telemetry batches retried (deadlock, serialization failure, race, lost connection).",
		}),
		upserts: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "fieldhub_pg_telemetry_upsert_fallbacks_total",
			Help: "Batches whose direct COPY hit stored points and were upserted instead.",
		}),
		commitSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "fieldhub_pg_telemetry_commit_duration_seconds",
			Help:    "Time from BEGIN to COMMIT of one telemetry batch.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14),
		}),
		partitionsDropped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "fieldhub_pg_telemetry_partitions_dropped_total",
			Help: "Daily telemetry partitions dropped by retention.",
		}),
		failed: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "fieldhub_pg_telemetry_failed",
			Help: "1 while telemetry batches cannot be written to PostgreSQL.",
		}),
	}
	queued := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "fieldhub_pg_telemetry_queued_messages",
		Help: "Telemetry messages waiting for the committer.",
	}, func() float64 {
		t.mu.Lock()
		defer t.mu.Unlock()
		return float64(len(t.queue))
	})
	m.all = []prometheus.Collector{m.batches, m.batchMessages, m.messages, m.points, m.duplicates,
		m.typeMismatches, m.retries, m.upserts, m.commitSeconds, m.partitionsDropped, m.failed, queued}
	return m
}

func (m *telMetrics) register(r prometheus.Registerer) error {
	if err := promutil.Register(r, m.all); err != nil {
		return fmt.Errorf("postgres: telemetry: %w", err)
	}
	return nil
}

func (m *telMetrics) unregister(r prometheus.Registerer) { promutil.Unregister(r, m.all) }
