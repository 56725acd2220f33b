-- Telemetry (telemetry.go).
--
-- telemetry_points holds one row per (device, metric, ts), ts in Unix
-- nanoseconds. It is range partitioned by ts into UTC days; the store
-- creates the partitions telemetry_points_YYYYMMDD on demand and drops
-- whole partitions for retention. num holds numbers and bools (0 or 1),
-- str strings (bytea: values may hold NUL bytes); the other is NULL.
CREATE TABLE telemetry_points (
	device text NOT NULL,
	metric text NOT NULL,
	ts bigint NOT NULL,
	num double precision,
	str bytea,
	PRIMARY KEY (device, metric, ts)
) PARTITION BY RANGE (ts);

-- telemetry_series keeps the value kind of each (device, metric): 0
-- number, 1 bool, 2 string (payload.ValueKind). A metric keeps its first
-- kind until DeleteDevice.
CREATE TABLE telemetry_series (
	device text NOT NULL,
	metric text NOT NULL,
	kind smallint NOT NULL CHECK (kind BETWEEN 0 AND 2),
	PRIMARY KEY (device, metric)
);

-- telemetry_seqs is the dedup state: every stored (device, seq), seq a
-- uint64 stored as its int64 bit pattern. The primary key is what makes
-- hubs sharing the database agree on duplicates. received (when it was
-- stored) lets retention prune it; rows are appended roughly in received
-- order, so a BRIN index is enough and costs nearly nothing to maintain.
CREATE TABLE telemetry_seqs (
	device text NOT NULL,
	seq bigint NOT NULL,
	received timestamptz NOT NULL,
	PRIMARY KEY (device, seq)
);
CREATE INDEX telemetry_seqs_received ON telemetry_seqs USING brin (received);
