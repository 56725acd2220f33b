-- Telemetry (telemetry.go).
--
-- telemetry_series gives each (device, metric) an id and keeps its value
-- kind: 0 number, 1 bool, 2 string (payload.ValueKind). A metric keeps its
-- first kind until DeleteDevice, which deletes its rows (a series made
-- again gets a new id; ids are never reused).
CREATE TABLE telemetry_series (
	id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	device text NOT NULL,
	metric text NOT NULL,
	kind smallint NOT NULL CHECK (kind BETWEEN 0 AND 2),
	UNIQUE (device, metric)
);

-- telemetry_points holds one row per (series, ts), ts in Unix
-- nanoseconds. It is range partitioned by ts into UTC days; the store
-- creates the partitions telemetry_points_YYYYMMDD on demand and drops
-- whole partitions for retention. num holds numbers and bools (0 or 1),
-- str strings (bytea: values may hold NUL bytes); the other is NULL.
--
-- The row is as narrow as a row can be: 24 bytes of header and 24 of
-- data. A series id of 4 bytes would save nothing (alignment pads it to
-- 8 in the row and in the index), hence bigint. The fixed-width 2-column
-- key also lets B-tree split pages where a series' points are appended
-- (localized monotonic insertions) instead of in the middle, so with
-- fillfactor 100 (points are rarely inserted into the past) the index
-- stays nearly full: about 84 bytes a point on disk, 52 of them heap.
CREATE TABLE telemetry_points (
	series bigint NOT NULL,
	ts bigint NOT NULL,
	num double precision,
	str bytea,
	PRIMARY KEY (series, ts) WITH (fillfactor = 100)
) PARTITION BY RANGE (ts);

-- telemetry_devices numbers the devices for the dedup keys.
CREATE TABLE telemetry_devices (
	id integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	device text NOT NULL UNIQUE
);

-- telemetry_seqs is the dedup state: every stored (device, seq), device a
-- telemetry_devices id, seq a uint64 stored as its int64 bit pattern. The
-- primary key is what makes hubs sharing the database agree on
-- duplicates. received (when it was stored) lets retention prune it; rows
-- are appended roughly in received order, so a BRIN index is enough and
-- costs nearly nothing to maintain. About 83 bytes a key on disk.
CREATE TABLE telemetry_seqs (
	device integer NOT NULL,
	seq bigint NOT NULL,
	received timestamptz NOT NULL,
	PRIMARY KEY (device, seq) WITH (fillfactor = 100)
);
CREATE INDEX telemetry_seqs_received ON telemetry_seqs USING brin (received);
