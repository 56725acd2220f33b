package edge

import "github.com/prometheus/client_golang/prometheus"

type metrics struct {
	readings       prometheus.Counter
	refused        *prometheus.CounterVec
	dropped        *prometheus.CounterVec
	alerts         *prometheus.CounterVec
	connected      prometheus.Gauge
	reconnects     prometheus.Counter
	batches        prometheus.Counter
	uplinked       *prometheus.CounterVec
	uplinkBytes    prometheus.Counter
	batchLatency   prometheus.Histogram
	hubRefusedRecs prometheus.Counter
	commands       *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		readings: prometheus.NewCounter(prometheus.CounterOpts{Name: "fieldhub_edge_readings_total", Help: "Readings received from sensors."}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "fieldhub_edge_refused_total",
			Help: "Sensor messages refused as invalid, by reason."}, []string{"reason"}),
		dropped: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "fieldhub_edge_dropped_total",
			Help: "Readings dropped on purpose or refused, by reason (pipeline filters, spool refusals, hub refusals)."}, []string{"reason"}),
		alerts: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "fieldhub_edge_alerts_total",
			Help: "Alerts raised and cleared by the pipeline."}, []string{"severity", "state"}),
		connected:  prometheus.NewGauge(prometheus.GaugeOpts{Name: "fieldhub_edge_uplink_connected", Help: "1 while the uplink to the hub is up."}),
		reconnects: prometheus.NewCounter(prometheus.CounterOpts{Name: "fieldhub_edge_uplink_reconnects_total", Help: "Failed or lost uplink connections."}),
		batches:    prometheus.NewCounter(prometheus.CounterOpts{Name: "fieldhub_edge_uplink_batches_total", Help: "Batches acknowledged by the hub."}),
		uplinked: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "fieldhub_edge_uplink_records_total",
			Help: "Spool records acknowledged by the hub, by kind."}, []string{"kind"}),
		uplinkBytes: prometheus.NewCounter(prometheus.CounterOpts{Name: "fieldhub_edge_uplink_bytes_total", Help: "Uplink payload bytes (after compression)."}),
		batchLatency: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "fieldhub_edge_uplink_batch_seconds",
			Help: "Time from publishing a batch to the hub's PUBACK.", Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14)}),
		hubRefusedRecs: prometheus.NewCounter(prometheus.CounterOpts{Name: "fieldhub_edge_uplink_refused_records_total",
			Help: "Spool records in batches the hub refused for good (also counted in fieldhub_edge_dropped_total)."}),
	}
	m.commands = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "fieldhub_edge_commands_total",
		Help: "Commands from the hub for sensors behind the gateway: received, answered (forwarded to the hub), sensor_offline (failed at once)."}, []string{"event"})
	reg.MustRegister(m.commands, m.readings, m.refused, m.dropped, m.alerts, m.connected, m.reconnects, m.batches, m.uplinked, m.uplinkBytes, m.batchLatency, m.hubRefusedRecs)
	return m
}
