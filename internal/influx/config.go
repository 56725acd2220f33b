package influx

import (
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strings"
	"time"
)

// Config configures a Sink. It is the export.influxdb section of the hub
// configuration; the zero value means the export is off (see Enabled).
// Zero numeric fields mean their defaults.
type Config struct {
	// URL is the base URL of the InfluxDB HTTP API, e.g.
	// http://influxdb:8086 (a path prefix, for a reverse proxy, is kept).
	URL string `yaml:"url"`
	// APIVersion is 1 (POST /write, InfluxDB 1.x) or 2 (POST
	// /api/v2/write, InfluxDB 2.x and 3.x); 0 means 1.
	APIVersion int `yaml:"api_version"`

	// Database and RetentionPolicy (empty: the database's default) name
	// where points go with API version 1. The database must exist.
	Database        string `yaml:"database"`
	RetentionPolicy string `yaml:"retention_policy"`
	// Username and Password, when Username is set, authenticate with
	// HTTP basic authentication (API version 1). The password comes from
	// FIELDHUB_INFLUXDB_PASSWORD, never from the file.
	Username string `yaml:"username"`
	Password string `yaml:"-"`

	// Org, Bucket and Token are for API version 2. The token comes from
	// FIELDHUB_INFLUXDB_TOKEN, never from the file.
	Org    string `yaml:"org"`
	Bucket string `yaml:"bucket"`
	Token  string `yaml:"-"`

	// Measurement receives every point, with the device id as tag
	// "device" and each metric as a field; default "telemetry".
	Measurement string `yaml:"measurement"`

	// BatchSize is the most points in one request; default 5,000.
	BatchSize int `yaml:"batch_size"`
	// FlushInterval is the longest a point waits for a batch to fill;
	// default 1 s.
	FlushInterval time.Duration `yaml:"flush_interval"`
	// BufferSize bounds the points held, in the batch being sent included;
	// beyond it new messages are dropped and counted. Default 100,000.
	BufferSize int `yaml:"buffer_size"`
	// Timeout bounds one HTTP request; default 10 s.
	Timeout time.Duration `yaml:"timeout"`
	// MaxBackoff bounds the wait between two attempts at a batch;
	// default 30 s.
	MaxBackoff time.Duration `yaml:"max_backoff"`
}

// Defaults of the zero Config fields.
const (
	DefaultMeasurement   = "telemetry"
	DefaultBatchSize     = 5000
	DefaultFlushInterval = time.Second
	DefaultBufferSize    = 100_000
	DefaultTimeout       = 10 * time.Second
	DefaultMaxBackoff    = 30 * time.Second
)

// Environment variables read by ApplyEnv.
const (
	EnvToken    = "FIELDHUB_INFLUXDB_TOKEN"
	EnvPassword = "FIELDHUB_INFLUXDB_PASSWORD"
)

// ApplyEnv sets Token and Password from FIELDHUB_INFLUXDB_TOKEN and
// FIELDHUB_INFLUXDB_PASSWORD, read through getenv, when they are set.
func (c *Config) ApplyEnv(getenv func(string) string) {
	if v := getenv(EnvToken); v != "" {
		c.Token = v
	}
	if v := getenv(EnvPassword); v != "" {
		c.Password = v
	}
}

// Enabled reports whether the export is configured (URL set).
func (c Config) Enabled() bool { return c.URL != "" }

// WithDefaults returns c with zero fields set to their defaults.
func (c Config) WithDefaults() Config {
	if c.APIVersion == 0 {
		c.APIVersion = 1
	}
	if c.Measurement == "" {
		c.Measurement = DefaultMeasurement
	}
	if c.BatchSize == 0 {
		c.BatchSize = DefaultBatchSize
	}
	if c.FlushInterval == 0 {
		c.FlushInterval = DefaultFlushInterval
	}
	if c.BufferSize == 0 {
		c.BufferSize = DefaultBufferSize
	}
	if c.Timeout == 0 {
		c.Timeout = DefaultTimeout
	}
	if c.MaxBackoff == 0 {
		c.MaxBackoff = DefaultMaxBackoff
	}
	return c
}

// ErrInvalid is wrapped by every error of Validate.
var ErrInvalid = errors.New("invalid influxdb export configuration")

func invalid(field, format string, args ...any) error {
	return fmt.Errorf("%w: %s: %s", ErrInvalid, field, fmt.Sprintf(format, args...))
}

// Validate checks c after defaults. The zero Config (export off) is
// valid. Each error names the YAML field at fault.
func (c Config) Validate() error {
	if c == (Config{}) {
		return nil
	}
	c = c.WithDefaults()
	var errs []error
	if c.URL == "" {
		errs = append(errs, invalid("url", "required"))
	} else if u, err := url.Parse(c.URL); err != nil {
		errs = append(errs, invalid("url", "%v", err))
	} else if u.Scheme != "http" && u.Scheme != "https" || u.Host == "" {
		errs = append(errs, invalid("url", "%q is not an http:// or https:// URL with a host", c.URL))
	} else if u.RawQuery != "" || u.Fragment != "" || u.User != nil {
		errs = append(errs, invalid("url", "must have no query, fragment or user info (credentials come from username and the environment)"))
	}
	switch c.APIVersion {
	case 1:
		if c.Database == "" {
			errs = append(errs, invalid("database", "required with api_version 1"))
		}
		if c.Org != "" || c.Bucket != "" || c.Token != "" {
			errs = append(errs, invalid("org", "org, bucket and token (%s) are for api_version 2", EnvToken))
		}
		if c.Password != "" && c.Username == "" {
			errs = append(errs, invalid("username", "required when a password (%s) is set", EnvPassword))
		}
	case 2:
		if c.Org == "" {
			errs = append(errs, invalid("org", "required with api_version 2"))
		}
		if c.Bucket == "" {
			errs = append(errs, invalid("bucket", "required with api_version 2"))
		}
		if c.Token == "" {
			errs = append(errs, invalid("token", "required with api_version 2: set %s", EnvToken))
		}
		if c.Database != "" || c.RetentionPolicy != "" || c.Username != "" || c.Password != "" {
			errs = append(errs, invalid("database", "database, retention_policy, username and password are for api_version 1"))
		}
	default:
		errs = append(errs, invalid("api_version", "%d: want 1 or 2", c.APIVersion))
	}
	if err := checkName(c.Measurement); err != nil {
		errs = append(errs, invalid("measurement", "%q: %v", c.Measurement, err))
	} else if strings.HasPrefix(c.Measurement, "#") {
		errs = append(errs, invalid("measurement", "%q: a line starting with # is a comment in line protocol", c.Measurement))
	}
	if c.BatchSize < 1 {
		errs = append(errs, invalid("batch_size", "%d: must be positive", c.BatchSize))
	}
	if c.BufferSize < 1 {
		errs = append(errs, invalid("buffer_size", "%d: must be positive", c.BufferSize))
	} else if c.BufferSize < c.BatchSize {
		errs = append(errs, invalid("buffer_size", "%d is smaller than batch_size %d", c.BufferSize, c.BatchSize))
	}
	if c.FlushInterval < time.Millisecond {
		errs = append(errs, invalid("flush_interval", "%s: at least 1ms (write durations with a unit, e.g. 1s)", c.FlushInterval))
	}
	if c.Timeout < time.Millisecond {
		errs = append(errs, invalid("timeout", "%s: at least 1ms (write durations with a unit, e.g. 10s)", c.Timeout))
	}
	if c.MaxBackoff < time.Millisecond {
		errs = append(errs, invalid("max_backoff", "%s: at least 1ms (write durations with a unit, e.g. 30s)", c.MaxBackoff))
	}
	return errors.Join(errs...)
}

// LogValue logs c without its password and token.
func (c Config) LogValue() slog.Value {
	redact := func(s string) string {
		if s == "" {
			return ""
		}
		return "REDACTED"
	}
	c.Password, c.Token = redact(c.Password), redact(c.Token)
	return slog.GroupValue(
		slog.String("url", c.URL), slog.Int("api_version", c.APIVersion),
		slog.String("database", c.Database), slog.String("retention_policy", c.RetentionPolicy),
		slog.String("username", c.Username), slog.String("password", c.Password),
		slog.String("org", c.Org), slog.String("bucket", c.Bucket), slog.String("token", c.Token),
		slog.String("measurement", c.Measurement), slog.Int("batch_size", c.BatchSize),
		slog.Duration("flush_interval", c.FlushInterval), slog.Int("buffer_size", c.BufferSize),
		slog.Duration("timeout", c.Timeout), slog.Duration("max_backoff", c.MaxBackoff),
	)
}
