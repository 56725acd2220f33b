package edge

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/fieldhub/fieldhub/internal/config"
	"github.com/fieldhub/fieldhub/internal/pipeline"
	"github.com/fieldhub/fieldhub/topic"
)

// Config is the configuration of `fieldhub edge`, read from one YAML file.
// Zero values mean the documented defaults (see docs/edge.md).
type Config struct {
	// ID is the gateway's device id at the hub (its MQTT client id).
	ID string `yaml:"id"`
	// Data is the folder of the spool and other state. Default ./fieldhub-edge.
	Data string `yaml:"data"`
	Hub  Hub    `yaml:"hub"`
	// Listen is the local MQTT listener for sensors.
	Listen Listen `yaml:"listen"`
	// Sensors are the devices allowed on the local listener.
	Sensors []Sensor `yaml:"sensors"`
	Spool   Spool    `yaml:"spool"`
	Uplink  Uplink   `yaml:"uplink"`
	// Pipeline is the processing applied to every reading (see internal/pipeline).
	Pipeline pipeline.Config `yaml:"pipeline"`
	// HTTPAddr serves /healthz, /readyz and /metrics. Default 127.0.0.1:9102; "off" disables it.
	HTTPAddr string `yaml:"http_addr"`
	// FlushInterval is how often closed aggregation windows are emitted. Default 1s.
	FlushInterval config.Duration `yaml:"flush_interval"`
	LogLevel      string          `yaml:"log_level"`
	LogFormat     string          `yaml:"log_format"`
	// Version is reported to the hub as the gateway's firmware (reported
	// "firmware"); empty means this build's fieldhub version.
	Version string `yaml:"-"`
}

// Hub says how the gateway reaches the hub.
type Hub struct {
	// Addr is the hub's MQTT address, host:port. Required.
	Addr string `yaml:"addr"`
	// TLS is on unless Plaintext is set; CAFile is the hub's ca.pem.
	CAFile string `yaml:"ca_file"`
	// CertFile and KeyFile are the gateway's client certificate (from
	// `fieldhub device add ID --auth certificate --out DIR`).
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
	// PasswordFile holds the gateway's password when it uses one instead of a certificate.
	PasswordFile string `yaml:"password_file"`
	// ServerName overrides the name checked in the hub's certificate.
	ServerName string `yaml:"server_name"`
	// Plaintext connects without TLS: only for a hub on loopback (the demo).
	Plaintext bool `yaml:"plaintext"`
}

// Listen configures the local broker.
type Listen struct {
	// MQTTAddr is the plain MQTT listener for sensors. Default 127.0.0.1:1884.
	MQTTAddr string `yaml:"mqtt_addr"`
	// AllowAnonymous admits sensors without credentials (any configured or
	// unconfigured id); only when MQTTAddr is a loopback address.
	AllowAnonymous bool `yaml:"allow_anonymous"`
}

// Sensor is one device allowed on the local listener.
type Sensor struct {
	ID string `yaml:"id"`
	// PasswordHash is an argon2id PHC string (`fieldhub edge hash-password`).
	PasswordHash string `yaml:"password_hash"`
}

// Spool bounds the store-and-forward queue.
type Spool struct {
	// MaxBytes bounds the spool on disk. Default 1 GiB.
	MaxBytes int64 `yaml:"max_bytes"`
	// MaxAge drops readings older than this; 0 keeps them until MaxBytes.
	MaxAge config.Duration `yaml:"max_age"`
	// Overflow is drop_oldest (default) or refuse_new.
	Overflow string `yaml:"overflow"`
	// SegmentBytes is the size of one spool file. Default 8 MiB.
	SegmentBytes int64 `yaml:"segment_bytes"`
	// EncryptionKeyFile holds a base64 32-byte key; when set every record is
	// sealed with AES-256-GCM.
	EncryptionKeyFile string `yaml:"encryption_key_file"`
}

// Uplink shapes the traffic to the hub.
type Uplink struct {
	// BatchMax is the most readings and alerts in one uplink message. Default 500.
	BatchMax int `yaml:"batch_max"`
	// BatchBytes bounds one uplink message before compression. Default 512 KiB.
	BatchBytes int `yaml:"batch_bytes"`
	// Rate bounds readings per second sent to the hub, so that a backlog
	// drains steadily after an outage. 0 means unlimited. Default 5000.
	Rate float64 `yaml:"rate"`
	// Compress gzips uplink messages. Default true.
	Compress *bool `yaml:"compress"`
	// BackoffMin and BackoffMax bound the reconnect delay (exponential with jitter). Defaults 500ms and 30s.
	BackoffMin config.Duration `yaml:"backoff_min"`
	BackoffMax config.Duration `yaml:"backoff_max"`
	// ReportInterval is how often the gateway reports its spool state to
	// the hub in its twin (reported "edge.spool"), besides at once when the
	// uplink connects or a drop count changes. Default 30s.
	ReportInterval config.Duration `yaml:"report_interval"`
}

// Defaults fills in zero fields.
func (c *Config) Defaults() {
	if c.Data == "" {
		c.Data = "./fieldhub-edge"
	}
	if c.Listen.MQTTAddr == "" {
		c.Listen.MQTTAddr = "127.0.0.1:1884"
	}
	if c.HTTPAddr == "" {
		c.HTTPAddr = "127.0.0.1:9102"
	}
	if c.FlushInterval == 0 {
		c.FlushInterval = config.Duration(time.Second)
	}
	if c.Spool.MaxBytes == 0 {
		c.Spool.MaxBytes = 1 << 30
	}
	if c.Spool.Overflow == "" {
		c.Spool.Overflow = "drop_oldest"
	}
	if c.Uplink.BatchMax == 0 {
		c.Uplink.BatchMax = 500
	}
	if c.Uplink.BatchBytes == 0 {
		c.Uplink.BatchBytes = 512 << 10
	}
	if c.Uplink.Rate == 0 {
		c.Uplink.Rate = 5000
	}
	if c.Uplink.Compress == nil {
		t := true
		c.Uplink.Compress = &t
	}
	if c.Uplink.BackoffMin == 0 {
		c.Uplink.BackoffMin = config.Duration(500 * time.Millisecond)
	}
	if c.Uplink.BackoffMax == 0 {
		c.Uplink.BackoffMax = config.Duration(30 * time.Second)
	}
	if c.Uplink.ReportInterval == 0 {
		c.Uplink.ReportInterval = config.Duration(30 * time.Second)
	}
	if c.Version == "" {
		c.Version = BuildVersion()
	}
	if c.LogLevel == "" {
		c.LogLevel = "info"
	}
	if c.LogFormat == "" {
		c.LogFormat = "text"
	}
	c.Pipeline = c.Pipeline.WithDefaults()
}

// Validate checks c and names the first bad field.
func (c *Config) Validate() error {
	if !topic.ValidDeviceID(c.ID) {
		return fmt.Errorf("id: %q is not a valid device id", c.ID)
	}
	if c.Hub.Addr == "" {
		return errors.New("hub.addr: required")
	}
	if !c.Hub.Plaintext {
		if c.Hub.CAFile == "" {
			return errors.New("hub.ca_file: required with TLS (the hub's ca.pem)")
		}
		if (c.Hub.CertFile == "") != (c.Hub.KeyFile == "") {
			return errors.New("hub.cert_file and hub.key_file go together")
		}
	} else if !config.IsLoopback(c.Hub.Addr) {
		return fmt.Errorf("hub.plaintext: only for a hub on loopback, not %q", c.Hub.Addr)
	}
	if c.Hub.CertFile == "" && c.Hub.PasswordFile == "" {
		return errors.New("hub: set cert_file/key_file or password_file")
	}
	if c.Listen.AllowAnonymous && !config.IsLoopback(c.Listen.MQTTAddr) {
		return fmt.Errorf("listen.allow_anonymous: only on a loopback listener, not %q", c.Listen.MQTTAddr)
	}
	seen := map[string]bool{}
	for i, s := range c.Sensors {
		if !topic.ValidDeviceID(s.ID) {
			return fmt.Errorf("sensors[%d].id: %q is not a valid device id", i, s.ID)
		}
		if seen[s.ID] {
			return fmt.Errorf("sensors[%d].id: %q listed twice", i, s.ID)
		}
		seen[s.ID] = true
		if s.PasswordHash == "" && !c.Listen.AllowAnonymous {
			return fmt.Errorf("sensors[%d].password_hash: required unless listen.allow_anonymous", i)
		}
		if s.PasswordHash != "" && !strings.HasPrefix(s.PasswordHash, "$argon2id$") {
			return fmt.Errorf("sensors[%d].password_hash: want an argon2id hash from `fieldhub edge hash-password`", i)
		}
	}
	switch c.Spool.Overflow {
	case "drop_oldest", "refuse_new":
	default:
		return fmt.Errorf("spool.overflow: %q is not drop_oldest or refuse_new", c.Spool.Overflow)
	}
	if c.Spool.MaxBytes < 1<<20 {
		return fmt.Errorf("spool.max_bytes: %d is below 1 MiB", c.Spool.MaxBytes)
	}
	if c.Uplink.BatchMax < 1 || c.Uplink.BatchMax > 10000 {
		return fmt.Errorf("uplink.batch_max: %d out of range [1, 10000]", c.Uplink.BatchMax)
	}
	if c.Uplink.Rate < 0 {
		return errors.New("uplink.rate: must not be negative")
	}
	if c.Uplink.BackoffMin <= 0 || c.Uplink.BackoffMax < c.Uplink.BackoffMin {
		return errors.New("uplink.backoff_min/backoff_max: want 0 < min ≤ max")
	}
	if c.Uplink.ReportInterval < config.Duration(time.Second) {
		return fmt.Errorf("uplink.report_interval: %v is below 1s", time.Duration(c.Uplink.ReportInterval))
	}
	if err := c.Pipeline.Validate(); err != nil {
		return fmt.Errorf("pipeline: %w", err)
	}
	return nil
}

// LoadConfig reads and validates an edge configuration file. Unknown
// fields are errors.
func LoadConfig(path string) (Config, error) {
	var c Config
	b, err := os.ReadFile(path)
	if err != nil {
		return c, fmt.Errorf("reading edge config: %w", err)
	}
	dec := yaml.NewDecoder(strings.NewReader(string(b)))
	dec.KnownFields(true)
	if err := dec.Decode(&c); err != nil {
		return c, fmt.Errorf("edge config %s: %w", path, err)
	}
	c.Defaults()
	if err := c.Validate(); err != nil {
		return c, fmt.Errorf("edge config %s: %w", path, err)
	}
	return c, nil
}
