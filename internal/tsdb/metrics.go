package tsdb

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/fieldhub/fieldhub/internal/promutil"
)

// metrics are the store's Prometheus collectors.
type metrics struct {
	walBytes        prometheus.Counter
	walFsyncs       prometheus.Counter
	commitRecords   prometheus.Histogram
	commitSeconds   prometheus.Histogram
	checkpointSecs  prometheus.Histogram
	checkpointErrs  prometheus.Counter
	compactionSecs  prometheus.Histogram
	compactedChunks prometheus.Counter
	duplicates      prometheus.Counter
	windowResets    prometheus.Counter
	typeMismatches  prometheus.Counter
	walCorrupt      *prometheus.CounterVec
	messages        prometheus.Counter
	points          prometheus.Counter
	retentionChunks prometheus.Counter
	failed          prometheus.Gauge
	all             []prometheus.Collector
}

func newMetrics(db *DB) *metrics {
	m := &metrics{
		walBytes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "fieldhub_tsdb_wal_bytes_written_total",
			Help: "Bytes written to the telemetry write-ahead log.",
		}),
		walFsyncs: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "fieldhub_tsdb_wal_fsyncs_total",
			Help: "Write-ahead log syncs (one per group commit).",
		}),
		commitRecords: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "fieldhub_tsdb_wal_group_commit_records",
			Help:    "Records made durable by one group commit.",
			Buckets: prometheus.ExponentialBuckets(1, 4, 9),
		}),
		commitSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "fieldhub_tsdb_wal_commit_duration_seconds",
			Help:    "Time to write and sync one group commit.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2, 14),
		}),
		checkpointSecs: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "fieldhub_tsdb_checkpoint_duration_seconds",
			Help:    "Time to write the in-memory head to chunks in SQLite.",
			Buckets: prometheus.ExponentialBuckets(0.001, 4, 9),
		}),
		checkpointErrs: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "fieldhub_tsdb_checkpoint_errors_total",
			Help: "Checkpoints that failed (the WAL keeps the data; retried later).",
		}),
		compactionSecs: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "fieldhub_tsdb_compaction_duration_seconds",
			Help:    "Time of one compaction pass.",
			Buckets: prometheus.ExponentialBuckets(0.001, 4, 9),
		}),
		compactedChunks: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "fieldhub_tsdb_compacted_chunks_total",
			Help: "Chunks merged away by compaction.",
		}),
		duplicates: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "fieldhub_dedup_duplicates_total",
			Help: "Messages acknowledged as duplicates of an already stored (device, seq).",
		}),
		windowResets: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "fieldhub_dedup_window_resets_total",
			Help: "Messages whose seq fell below the dedup window, read as a device counter restart.",
		}),
		typeMismatches: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "fieldhub_tsdb_type_mismatches_total",
			Help: "Messages refused because a value kind differs from its series' kind.",
		}),
		walCorrupt: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "fieldhub_tsdb_wal_damaged_total",
			Help: "Damaged write-ahead log regions found at open: torn tails (truncated) and corrupt ranges.",
		}, []string{"kind"}),
		messages: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "fieldhub_tsdb_messages_stored_total",
			Help: "Messages made durable.",
		}),
		points: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "fieldhub_tsdb_points_stored_total",
			Help: "Points made durable.",
		}),
		retentionChunks: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "fieldhub_tsdb_retention_deleted_chunks_total",
			Help: "Chunks deleted by retention.",
		}),
		failed: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "fieldhub_tsdb_failed",
			Help: "1 when the store stopped accepting writes after an I/O error.",
		}),
	}
	m.walCorrupt.WithLabelValues("torn")
	m.walCorrupt.WithLabelValues("corrupt")
	gauges := []prometheus.Collector{
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "fieldhub_tsdb_series",
			Help: "Series (device, metric) known to the store.",
		}, func() float64 { return float64(db.seriesCount.Load()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "fieldhub_tsdb_chunks",
			Help: "Chunk rows in SQLite.",
		}, func() float64 { return float64(db.chunks.Load()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "fieldhub_tsdb_wal_bytes",
			Help: "Bytes of write-ahead log on disk.",
		}, func() float64 { return float64(db.walBytes.Load()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "fieldhub_tsdb_head_points",
			Help: "Points in memory not yet checkpointed.",
		}, func() float64 { return float64(db.headPoints.Load()) }),
	}
	m.all = append([]prometheus.Collector{
		m.walBytes, m.walFsyncs, m.commitRecords, m.commitSeconds, m.checkpointSecs,
		m.checkpointErrs, m.compactionSecs, m.compactedChunks, m.duplicates,
		m.windowResets, m.typeMismatches, m.walCorrupt, m.messages, m.points,
		m.retentionChunks, m.failed,
	}, gauges...)
	return m
}

// register registers every collector with r, undoing on failure.
func (m *metrics) register(r prometheus.Registerer) error {
	if err := promutil.Register(r, m.all); err != nil {
		return fmt.Errorf("tsdb: %w", err)
	}
	return nil
}

func (m *metrics) unregister(r prometheus.Registerer) { promutil.Unregister(r, m.all) }
