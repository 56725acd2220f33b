-- 001: the registry side of the store: devices, kv, alerts, commands and
-- twins (telemetry has its own migrations from 100 on).
--
-- Times are Unix nanoseconds in bigint columns, 0 for the zero time:
-- timestamptz keeps only microseconds and the store interfaces promise
-- nanoseconds. Ids are COLLATE "C" so that they sort in byte order, as in
-- the embedded store. JSON documents are kept as text, byte for byte.

CREATE TABLE devices (
	id                  text COLLATE "C" PRIMARY KEY,
	name                text NOT NULL DEFAULT '',
	labels              text NOT NULL DEFAULT '{}', -- JSON object
	gateway             text COLLATE "C" NOT NULL DEFAULT '',
	auth                text NOT NULL,
	created_at          bigint NOT NULL DEFAULT 0,
	password_hash       text NOT NULL DEFAULT '',
	cert_serial         text NOT NULL DEFAULT '',
	cert_fingerprint    text NOT NULL DEFAULT '',
	cert_not_after      bigint NOT NULL DEFAULT 0,
	credentials_version integer NOT NULL DEFAULT 0,
	last_seen           bigint NOT NULL DEFAULT 0
);
CREATE INDEX devices_gateway ON devices (gateway) WHERE gateway <> '';

CREATE TABLE kv (
	key   text COLLATE "C" PRIMARY KEY,
	value bytea NOT NULL
);

-- Alerts: id is the arrival order. alert_count holds how many rows alerts
-- has; appenders lock its one row, which orders them and lets each trim
-- the table to the bound without counting it.
CREATE TABLE alerts (
	id       bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	device   text COLLATE "C" NOT NULL,
	ts       bigint NOT NULL,
	received bigint NOT NULL,
	metric   text NOT NULL DEFAULT '',
	value    double precision NOT NULL DEFAULT 0,
	rule     text NOT NULL DEFAULT '',
	severity text NOT NULL,
	message  text NOT NULL DEFAULT '',
	state    text NOT NULL
);
CREATE UNIQUE INDEX alerts_identity ON alerts (device, ts, metric, rule, state);
CREATE INDEX alerts_ts ON alerts (ts, id);
CREATE INDEX alerts_device_ts ON alerts (device, ts, id);
CREATE INDEX alerts_severity_ts ON alerts (severity, ts, id);

CREATE TABLE alert_count (
	one boolean PRIMARY KEY DEFAULT true CHECK (one),
	n   bigint NOT NULL
);
INSERT INTO alert_count (n) VALUES (0);

-- Commands: seq is the creation order.
CREATE TABLE commands (
	seq          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	id           text COLLATE "C" NOT NULL UNIQUE,
	device       text COLLATE "C" NOT NULL,
	name         text NOT NULL,
	params       text NOT NULL,             -- JSON object
	state        text NOT NULL,             -- queued, sent, succeeded, failed, expired
	created_at   bigint NOT NULL,
	expires_at   bigint NOT NULL,
	sent_at      bigint NOT NULL DEFAULT 0, -- 0 = never
	attempts     integer NOT NULL DEFAULT 0,
	completed_at bigint NOT NULL DEFAULT 0,
	result       text,                      -- JSON value, NULL when none
	error        text NOT NULL DEFAULT ''
);
CREATE INDEX commands_device ON commands (device, created_at, seq);
CREATE INDEX commands_pending ON commands (device, seq) WHERE state IN ('queued', 'sent');
CREATE INDEX commands_expiry ON commands (expires_at, seq) WHERE state IN ('queued', 'sent');
CREATE INDEX commands_completed ON commands (completed_at) WHERE state IN ('succeeded', 'failed', 'expired');

CREATE TABLE twins (
	device           text COLLATE "C" PRIMARY KEY,
	desired_version  bigint NOT NULL DEFAULT 0,
	desired          text,                -- JSON object, NULL until written
	desired_updated  bigint NOT NULL DEFAULT 0,
	reported_version bigint NOT NULL DEFAULT 0,
	reported         text,
	reported_updated bigint NOT NULL DEFAULT 0
);
