package spool

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/fieldhub/fieldhub/internal/promutil"
)

// metrics are the spool's Prometheus collectors.
type metrics struct {
	appended    prometheus.Counter
	appendBytes prometheus.Counter
	replayed    prometheus.Counter
	acked       prometheus.Counter
	dropped     *prometheus.CounterVec
	damaged     *prometheus.CounterVec
	writeErrors prometheus.Counter
	fsyncs      prometheus.Counter
	commitRecs  prometheus.Histogram
	commitSecs  prometheus.Histogram
	all         []prometheus.Collector

	dropOverflow, dropAge, dropRefused, dropNoSpace prometheus.Counter
	damageTorn, damageCorrupt                       prometheus.Counter
}

func newMetrics(s *Spool) *metrics {
	m := &metrics{
		appended: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "fieldhub_spool_appended_records_total",
			Help: "Records made durable in the spool.",
		}),
		appendBytes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "fieldhub_spool_appended_bytes_total",
			Help: "Bytes written to spool segments (records with their framing).",
		}),
		replayed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "fieldhub_spool_replayed_records_total",
			Help: "Records read from the spool for the uplink (again after a rewind).",
		}),
		acked: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "fieldhub_spool_acked_records_total",
			Help: "Records acknowledged by the hub.",
		}),
		dropped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "fieldhub_spool_dropped_total",
			Help: "Unacknowledged records lost or refused: overflow (drop oldest), age (MaxAge), refused (refuse new), nospace (disk full).",
		}, []string{"reason"}),
		damaged: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "fieldhub_spool_damaged_records_total",
			Help: "Damaged ranges found in spool segments (each at least one record): torn tails and corrupt ranges.",
		}, []string{"kind"}),
		writeErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "fieldhub_spool_write_errors_total",
			Help: "Appends failed by a write or sync error other than a full disk.",
		}),
		fsyncs: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "fieldhub_spool_fsyncs_total",
			Help: "Segment syncs (one per group commit and segment).",
		}),
		commitRecs: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "fieldhub_spool_group_commit_records",
			Help:    "Records made durable by one group commit.",
			Buckets: prometheus.ExponentialBuckets(1, 4, 9),
		}),
		commitSecs: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "fieldhub_spool_commit_duration_seconds",
			Help:    "Time to write and sync one group commit.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2, 14),
		}),
	}
	m.dropOverflow = m.dropped.WithLabelValues("overflow")
	m.dropAge = m.dropped.WithLabelValues("age")
	m.dropRefused = m.dropped.WithLabelValues("refused")
	m.dropNoSpace = m.dropped.WithLabelValues("nospace")
	m.damageTorn = m.damaged.WithLabelValues("torn")
	m.damageCorrupt = m.damaged.WithLabelValues("corrupt")
	gauges := []prometheus.Collector{
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "fieldhub_spool_records",
			Help: "Unacknowledged records in the spool.",
		}, func() float64 { return float64(s.Stats().Records) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "fieldhub_spool_bytes",
			Help: "Bytes of spool segments on disk.",
		}, func() float64 { return float64(s.Stats().Bytes) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "fieldhub_spool_segments",
			Help: "Spool segment files.",
		}, func() float64 { return float64(s.Stats().Segments) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "fieldhub_spool_oldest_record_age_seconds",
			Help: "Age of the oldest unacknowledged record (0 when none).",
		}, func() float64 { return s.Stats().OldestAge.Seconds() }),
	}
	m.all = append([]prometheus.Collector{
		m.appended, m.appendBytes, m.replayed, m.acked, m.dropped, m.damaged,
		m.writeErrors, m.fsyncs, m.commitRecs, m.commitSecs,
	}, gauges...)
	return m
}

// register registers every collector with r, undoing on failure.
func (m *metrics) register(r prometheus.Registerer) error {
	if err := promutil.Register(r, m.all); err != nil {
		return fmt.Errorf("spool: %w", err)
	}
	return nil
}

func (m *metrics) unregister(r prometheus.Registerer) { promutil.Unregister(r, m.all) }
