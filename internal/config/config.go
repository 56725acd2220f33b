// Package config loads the hub's configuration: defaults, then a YAML file,
// then FIELDHUB_* environment variables, then command-line flags (flags
// win). Every field is documented in docs/configuration.md; every
// validation error names the field it is about.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/fieldhub/fieldhub/internal/influx"
)

// Duration is a time.Duration that YAML, flags and environment variables
// write as "90s", "15m", "36h" or "30d" (days).
type Duration time.Duration

// ParseDuration parses a Go duration or a whole number of days ("30d").
func ParseDuration(s string) (Duration, error) {
	s = strings.TrimSpace(s)
	if d, ok := strings.CutSuffix(s, "d"); ok {
		n, err := strconv.ParseUint(d, 10, 32)
		if err != nil {
			return 0, fmt.Errorf("invalid duration %q", s)
		}
		return Duration(time.Duration(n) * 24 * time.Hour), nil
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("invalid duration %q", s)
	}
	return Duration(d), nil
}

// UnmarshalYAML implements yaml.Unmarshaler.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return errors.New("want a duration such as 90s, 15m or 30d")
	}
	v, err := ParseDuration(n.Value)
	if err != nil {
		return err
	}
	*d = v
	return nil
}

// String formats d like time.Duration.
func (d Duration) String() string { return time.Duration(d).String() }

// Hub is the configuration of `fieldhub serve`. The zero value of each
// field means its documented default, filled in by Default.
type Hub struct {
	// Data is the folder of all state. Default ./fieldhub-data.
	Data string `yaml:"data"`
	// MQTTAddr is the plain MQTT listener; off unless set.
	MQTTAddr string `yaml:"mqtt_addr"`
	// MQTTSAddr is the MQTT over TLS listener. Default ":8883"; "off" disables it.
	MQTTSAddr string `yaml:"mqtts_addr"`
	// WSAddr is plain MQTT over WebSocket (path /mqtt); off unless set.
	WSAddr string `yaml:"ws_addr"`
	// WSSAddr is MQTT over WebSocket with TLS (path /mqtt); off unless set.
	WSSAddr string `yaml:"wss_addr"`
	// MQTTIdleAfter is how long an MQTT connection (TCP or TLS) may go
	// without receiving a byte before it parks: it keeps no goroutine
	// until its next packet. Default 1s; 0 never parks.
	MQTTIdleAfter Duration `yaml:"mqtt_idle_after"`
	// HTTPAddr is the REST API listener. Default ":8080".
	HTTPAddr string `yaml:"http_addr"`
	// HTTPTLS serves the REST API over TLS with the hub's certificate.
	HTTPTLS bool `yaml:"http_tls"`
	// InsecureOpenPolicy enables the loopback-only open policy (DESIGN §2.3).
	InsecureOpenPolicy bool `yaml:"insecure_open_policy"`
	// Hostnames are extra DNS names or IPs for the hub's server certificate,
	// beside localhost, 127.0.0.1, ::1 and the machine's host name.
	Hostnames []string `yaml:"hostnames"`
	// MasterKeyFile holds the key that seals the CA's private keys. It must
	// live outside Data. Default: $XDG_CONFIG_HOME/fieldhub/master.key
	// (~/.config/fieldhub/master.key). FIELDHUB_MASTER_KEY (base64) wins.
	MasterKeyFile string `yaml:"master_key_file"`
	// Retention deletes telemetry older than this; 0 keeps it forever.
	Retention Duration `yaml:"retention"`
	// MaxPayloadBytes bounds one telemetry payload. Default 65536.
	MaxPayloadBytes int `yaml:"max_payload_bytes"`
	// MaxPointsPerMessage bounds the points of one message. Default 1000.
	MaxPointsPerMessage int `yaml:"max_points_per_message"`
	// DedupWindow is how many recent seq numbers per device are remembered
	// to drop resent duplicates. Default 1024.
	DedupWindow int `yaml:"dedup_window"`
	// CheckpointInterval is how often the write-ahead log is folded into
	// compressed chunks. Default 1m.
	CheckpointInterval Duration `yaml:"checkpoint_interval"`
	// Storage is where the hub keeps its state: "embedded" (default; files
	// under Data) or "postgres" (PostgresURL; needed to run several hub
	// instances).
	Storage string `yaml:"storage"`
	// PostgresURL is the PostgreSQL database for storage: postgres, as a
	// libpq URL or key=value string. Prefer FIELDHUB_POSTGRES_URL when it
	// holds a password.
	PostgresURL string `yaml:"postgres_url"`
	// Broker is "embedded" (default: the hub's own MQTT listeners) or
	// "external": devices connect to the broker at ExternalBrokerURL and
	// the hub consumes their messages through shared subscriptions.
	Broker string `yaml:"broker"`
	// ExternalBrokerURL is mqtt://host:port or mqtts://host:port.
	ExternalBrokerURL string `yaml:"external_broker_url"`
	// ExternalBrokerClientID is this instance's MQTT client id, stable
	// across restarts and different for each instance. Default
	// "fieldhub-" + the host name.
	ExternalBrokerClientID string `yaml:"external_broker_client_id"`
	// ExternalBrokerUsername is the hub's user at the external broker;
	// its password is FIELDHUB_EXTERNAL_BROKER_PASSWORD.
	ExternalBrokerUsername string `yaml:"external_broker_username"`
	// ExternalBrokerCAFile holds the certificates that sign the external
	// broker's (mqtts://); default: the system's roots.
	ExternalBrokerCAFile string `yaml:"external_broker_ca_file"`
	// ShareGroup names the shared subscriptions the instances split the
	// load with. Default "fieldhub".
	ShareGroup string `yaml:"share_group"`
	// MosquittoPasswordFile and MosquittoACLFile, when set, are Mosquitto's
	// password_file and acl_file, kept in step with the registry
	// (docs/brokers.md); MosquittoPIDFile is its pid_file, signalled
	// (SIGHUP) after a change.
	MosquittoPasswordFile string `yaml:"mosquitto_password_file"`
	MosquittoACLFile      string `yaml:"mosquitto_acl_file"`
	MosquittoPIDFile      string `yaml:"mosquitto_pid_file"`
	// MosquittoSyncInterval is how often the files are rewritten from the
	// registry (changes made through other instances). Default 10s.
	MosquittoSyncInterval Duration `yaml:"mosquitto_sync_interval"`
	// BrokerAuthCertificates lets the HTTP authentication endpoint accept
	// certificate logins (the broker verified the certificate).
	BrokerAuthCertificates bool `yaml:"broker_auth_certificates"`
	// Export configures optional copies of telemetry to other systems.
	Export Export `yaml:"export"`
	// LogLevel is debug, info, warn or error. Default info.
	LogLevel string `yaml:"log_level"`
	// LogFormat is text or json. Default text.
	LogFormat string `yaml:"log_format"`

	// MasterKey is FIELDHUB_MASTER_KEY; never read from the file.
	MasterKey string `yaml:"-"`
	// AdminToken is FIELDHUB_ADMIN_TOKEN; never read from the file.
	AdminToken string `yaml:"-"`
	// ExternalBrokerPassword is FIELDHUB_EXTERNAL_BROKER_PASSWORD; never
	// read from the file.
	ExternalBrokerPassword string `yaml:"-"`
	// BrokerAuthSecret is FIELDHUB_BROKER_AUTH_SECRET: when set, the HTTP
	// authentication/authorization endpoint for external brokers (EMQX)
	// is served under /internal/broker/ and the broker must send it.
	BrokerAuthSecret string `yaml:"-"`
}

// Export holds the telemetry export sinks (docs/export.md).
type Export struct {
	// InfluxDB, when its url is set, receives every stored point.
	InfluxDB influx.Config `yaml:"influxdb"`
}

// Default returns the configuration with every default filled in.
func Default() Hub {
	return Hub{
		Data:                  "./fieldhub-data",
		MQTTSAddr:             ":8883",
		HTTPAddr:              ":8080",
		MQTTIdleAfter:         Duration(time.Second),
		MaxPayloadBytes:       64 << 10,
		MaxPointsPerMessage:   1000,
		DedupWindow:           1024,
		CheckpointInterval:    Duration(time.Minute),
		LogLevel:              "info",
		LogFormat:             "text",
		Storage:               "embedded",
		Broker:                "embedded",
		ShareGroup:            "fieldhub",
		MosquittoSyncInterval: Duration(10 * time.Second),
	}
}

// LoadFile reads a YAML file over c. Unknown fields are errors.
func (c *Hub) LoadFile(path string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("reading config file: %w", err)
	}
	return c.LoadYAML(path, b)
}

// LoadYAML decodes YAML over c; name labels errors. Each error names the
// field and line it is about; unknown fields are errors.
func (c *Hub) LoadYAML(name string, b []byte) error {
	var doc yaml.Node
	if err := yaml.Unmarshal(b, &doc); err != nil {
		return fmt.Errorf("config file %s: %w", name, err)
	}
	if len(doc.Content) == 0 {
		return nil // an empty file keeps the defaults
	}
	root := doc.Content[0]
	if root.Kind != yaml.MappingNode {
		return fmt.Errorf("config file %s: line %d: cannot unmarshal: want a mapping of settings", name, root.Line)
	}
	fields := yamlFields(c)
	for i := 0; i+1 < len(root.Content); i += 2 {
		k, v := root.Content[i], root.Content[i+1]
		ptr, ok := fields[k.Value]
		if !ok {
			return fmt.Errorf("config file %s: line %d: unknown field %q", name, k.Line, k.Value)
		}
		if err := decodeStrict(v, ptr); err != nil {
			var te *yaml.TypeError
			if errors.As(err, &te) && len(te.Errors) > 0 {
				err = errors.New(te.Errors[0])
			}
			return fmt.Errorf("config file %s: line %d: %s: %w", name, k.Line, k.Value, err)
		}
	}
	return nil
}

// decodeStrict decodes a value node; in nested mappings, unknown fields
// are errors too.
func decodeStrict(v *yaml.Node, ptr any) error {
	if v.Kind != yaml.MappingNode {
		return v.Decode(ptr)
	}
	b, err := yaml.Marshal(v)
	if err != nil {
		return err
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	return dec.Decode(ptr)
}

// yamlFields maps each YAML key of c to a pointer to its field.
func yamlFields(c *Hub) map[string]any {
	v := reflect.ValueOf(c).Elem()
	m := make(map[string]any, v.NumField())
	for i := 0; i < v.NumField(); i++ {
		tag, _, _ := strings.Cut(v.Type().Field(i).Tag.Get("yaml"), ",")
		if tag != "" && tag != "-" {
			m[tag] = v.Field(i).Addr().Interface()
		}
	}
	return m
}

// Setting is one option settable from the environment and from a flag.
type Setting struct {
	Key   string // YAML key, also the flag name with _ → -
	Env   string // environment variable
	Usage string
	Bool  bool // a flag without a value
	Set   func(c *Hub, v string) error
}

// Flag returns the command-line flag name of s.
func (s Setting) Flag() string { return strings.ReplaceAll(s.Key, "_", "-") }

func str(f func(c *Hub) *string) func(*Hub, string) error {
	return func(c *Hub, v string) error { *f(c) = v; return nil }
}

func boolean(f func(c *Hub) *bool) func(*Hub, string) error {
	return func(c *Hub, v string) error {
		b, err := strconv.ParseBool(v)
		if err != nil {
			return fmt.Errorf("want true or false, got %q", v)
		}
		*f(c) = b
		return nil
	}
}

func integer(f func(c *Hub) *int) func(*Hub, string) error {
	return func(c *Hub, v string) error {
		n, err := strconv.Atoi(v)
		if err != nil {
			return fmt.Errorf("want an integer, got %q", v)
		}
		*f(c) = n
		return nil
	}
}

func duration(f func(c *Hub) *Duration) func(*Hub, string) error {
	return func(c *Hub, v string) error {
		d, err := ParseDuration(v)
		if err != nil {
			return err
		}
		*f(c) = d
		return nil
	}
}

// Settings lists every option that has an environment variable and a flag.
var Settings = []Setting{
	{Key: "data", Env: "FIELDHUB_DATA", Usage: "data folder (all state)", Set: str(func(c *Hub) *string { return &c.Data })},
	{Key: "mqtt_addr", Env: "FIELDHUB_MQTT_ADDR", Usage: "plain MQTT listener address (off unless set)", Set: str(func(c *Hub) *string { return &c.MQTTAddr })},
	{Key: "mqtts_addr", Env: "FIELDHUB_MQTTS_ADDR", Usage: `MQTT over TLS listener address ("off" to disable)`, Set: str(func(c *Hub) *string { return &c.MQTTSAddr })},
	{Key: "ws_addr", Env: "FIELDHUB_WS_ADDR", Usage: "plain MQTT over WebSocket listener address, path /mqtt (off unless set)", Set: str(func(c *Hub) *string { return &c.WSAddr })},
	{Key: "wss_addr", Env: "FIELDHUB_WSS_ADDR", Usage: "MQTT over secure WebSocket listener address, path /mqtt (off unless set)", Set: str(func(c *Hub) *string { return &c.WSSAddr })},
	{Key: "mqtt_idle_after", Env: "FIELDHUB_MQTT_IDLE_AFTER", Usage: "idle time after which an MQTT connection parks without a goroutine (0: never)", Set: duration(func(c *Hub) *Duration { return &c.MQTTIdleAfter })},
	{Key: "http_addr", Env: "FIELDHUB_HTTP_ADDR", Usage: "REST API listener address", Set: str(func(c *Hub) *string { return &c.HTTPAddr })},
	{Key: "http_tls", Env: "FIELDHUB_HTTP_TLS", Bool: true, Usage: "serve the REST API over TLS", Set: boolean(func(c *Hub) *bool { return &c.HTTPTLS })},
	{Key: "insecure_open_policy", Env: "FIELDHUB_INSECURE_OPEN_POLICY", Bool: true, Usage: "allow anonymous clients on any topic (loopback listeners only)", Set: boolean(func(c *Hub) *bool { return &c.InsecureOpenPolicy })},
	{Key: "master_key_file", Env: "FIELDHUB_MASTER_KEY_FILE", Usage: "file of the key that seals the CA keys (outside the data folder)", Set: str(func(c *Hub) *string { return &c.MasterKeyFile })},
	{Key: "retention", Env: "FIELDHUB_RETENTION", Usage: "delete telemetry older than this (e.g. 30d; 0 keeps all)", Set: duration(func(c *Hub) *Duration { return &c.Retention })},
	{Key: "max_payload_bytes", Env: "FIELDHUB_MAX_PAYLOAD_BYTES", Usage: "largest telemetry payload", Set: integer(func(c *Hub) *int { return &c.MaxPayloadBytes })},
	{Key: "max_points_per_message", Env: "FIELDHUB_MAX_POINTS_PER_MESSAGE", Usage: "most points in one telemetry message", Set: integer(func(c *Hub) *int { return &c.MaxPointsPerMessage })},
	{Key: "dedup_window", Env: "FIELDHUB_DEDUP_WINDOW", Usage: "recent seq numbers remembered per device", Set: integer(func(c *Hub) *int { return &c.DedupWindow })},
	{Key: "checkpoint_interval", Env: "FIELDHUB_CHECKPOINT_INTERVAL", Usage: "how often the WAL is folded into compressed chunks", Set: duration(func(c *Hub) *Duration { return &c.CheckpointInterval })},
	{Key: "storage", Env: "FIELDHUB_STORAGE", Usage: "embedded or postgres", Set: str(func(c *Hub) *string { return &c.Storage })},
	{Key: "postgres_url", Env: "FIELDHUB_POSTGRES_URL", Usage: "PostgreSQL database URL (storage: postgres)", Set: str(func(c *Hub) *string { return &c.PostgresURL })},
	{Key: "broker", Env: "FIELDHUB_BROKER", Usage: "embedded, or external (devices connect to external_broker_url)", Set: str(func(c *Hub) *string { return &c.Broker })},
	{Key: "external_broker_url", Env: "FIELDHUB_EXTERNAL_BROKER_URL", Usage: "mqtt:// or mqtts:// URL of the external broker", Set: str(func(c *Hub) *string { return &c.ExternalBrokerURL })},
	{Key: "external_broker_client_id", Env: "FIELDHUB_EXTERNAL_BROKER_CLIENT_ID", Usage: "this instance's client id at the external broker (stable, unique per instance)", Set: str(func(c *Hub) *string { return &c.ExternalBrokerClientID })},
	{Key: "external_broker_username", Env: "FIELDHUB_EXTERNAL_BROKER_USERNAME", Usage: "the hub's user name at the external broker", Set: str(func(c *Hub) *string { return &c.ExternalBrokerUsername })},
	{Key: "external_broker_ca_file", Env: "FIELDHUB_EXTERNAL_BROKER_CA_FILE", Usage: "CA certificates of the external broker (mqtts://)", Set: str(func(c *Hub) *string { return &c.ExternalBrokerCAFile })},
	{Key: "share_group", Env: "FIELDHUB_SHARE_GROUP", Usage: "shared subscription group of the hub instances", Set: str(func(c *Hub) *string { return &c.ShareGroup })},
	{Key: "mosquitto_password_file", Env: "FIELDHUB_MOSQUITTO_PASSWORD_FILE", Usage: "Mosquitto password_file kept in step with the registry", Set: str(func(c *Hub) *string { return &c.MosquittoPasswordFile })},
	{Key: "mosquitto_acl_file", Env: "FIELDHUB_MOSQUITTO_ACL_FILE", Usage: "Mosquitto acl_file kept in step with the registry", Set: str(func(c *Hub) *string { return &c.MosquittoACLFile })},
	{Key: "mosquitto_pid_file", Env: "FIELDHUB_MOSQUITTO_PID_FILE", Usage: "Mosquitto pid_file, signalled to reload after a change", Set: str(func(c *Hub) *string { return &c.MosquittoPIDFile })},
	{Key: "mosquitto_sync_interval", Env: "FIELDHUB_MOSQUITTO_SYNC_INTERVAL", Usage: "how often Mosquitto's files are rewritten from the registry", Set: duration(func(c *Hub) *Duration { return &c.MosquittoSyncInterval })},
	{Key: "broker_auth_certificates", Env: "FIELDHUB_BROKER_AUTH_CERTIFICATES", Bool: true, Usage: "accept certificate logins at the broker authentication endpoint", Set: boolean(func(c *Hub) *bool { return &c.BrokerAuthCertificates })},
	{Key: "log_level", Env: "FIELDHUB_LOG_LEVEL", Usage: "debug, info, warn or error", Set: str(func(c *Hub) *string { return &c.LogLevel })},
	{Key: "log_format", Env: "FIELDHUB_LOG_FORMAT", Usage: "text or json", Set: str(func(c *Hub) *string { return &c.LogFormat })},
}

// ApplyEnv applies FIELDHUB_* variables read through getenv.
func (c *Hub) ApplyEnv(getenv func(string) string) error {
	for _, s := range Settings {
		if v := getenv(s.Env); v != "" {
			if err := s.Set(c, v); err != nil {
				return fmt.Errorf("%s: %s: %w", s.Env, s.Key, err)
			}
		}
	}
	c.MasterKey = getenv("FIELDHUB_MASTER_KEY")
	c.AdminToken = getenv("FIELDHUB_ADMIN_TOKEN")
	c.ExternalBrokerPassword = getenv("FIELDHUB_EXTERNAL_BROKER_PASSWORD")
	c.BrokerAuthSecret = getenv("FIELDHUB_BROKER_AUTH_SECRET")
	c.Export.InfluxDB.ApplyEnv(getenv)
	return nil
}

// MinAdminTokenLength is the shortest admin token accepted from the environment.
const MinAdminTokenLength = 16

// Validate checks every field and names the first bad one.
func (c *Hub) Validate() error {
	if c.Data == "" {
		return errors.New("data: must not be empty")
	}
	for _, a := range []struct{ key, v string }{
		{"mqtt_addr", c.MQTTAddr}, {"mqtts_addr", c.MQTTSAddr}, {"ws_addr", c.WSAddr},
		{"wss_addr", c.WSSAddr}, {"http_addr", c.HTTPAddr},
	} {
		if a.v == "" || a.v == "off" {
			continue
		}
		if _, port, err := net.SplitHostPort(a.v); err != nil {
			return fmt.Errorf("%s: invalid address %q: %w", a.key, a.v, err)
		} else if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
			return fmt.Errorf("%s: invalid port in %q", a.key, a.v)
		}
	}
	if c.HTTPAddr == "" || c.HTTPAddr == "off" {
		return errors.New("http_addr: must be set (the API serves health checks)")
	}
	if c.Retention < 0 {
		return errors.New("retention: must not be negative")
	}
	if c.Retention != 0 && time.Duration(c.Retention) < time.Hour {
		return errors.New("retention: must be at least 1h (or 0 to keep everything)")
	}
	if c.MaxPayloadBytes < 128 || c.MaxPayloadBytes > 16<<20 {
		return fmt.Errorf("max_payload_bytes: %d out of range [128, 16777216]", c.MaxPayloadBytes)
	}
	if c.MaxPointsPerMessage < 1 || c.MaxPointsPerMessage > 100000 {
		return fmt.Errorf("max_points_per_message: %d out of range [1, 100000]", c.MaxPointsPerMessage)
	}
	if c.DedupWindow < 64 || c.DedupWindow > 1<<16 {
		return fmt.Errorf("dedup_window: %d out of range [64, 65536]", c.DedupWindow)
	}
	if c.MQTTIdleAfter < 0 {
		return fmt.Errorf("mqtt_idle_after: %s is negative", c.MQTTIdleAfter)
	}
	if c.CheckpointInterval < Duration(time.Second) {
		return fmt.Errorf("checkpoint_interval: %s is shorter than 1s", c.CheckpointInterval)
	}
	switch c.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		return fmt.Errorf("log_level: %q is not debug, info, warn or error", c.LogLevel)
	}
	switch c.LogFormat {
	case "text", "json":
	default:
		return fmt.Errorf("log_format: %q is not text or json", c.LogFormat)
	}
	for i, h := range c.Hostnames {
		if h == "" || strings.ContainsAny(h, " /") {
			return fmt.Errorf("hostnames[%d]: invalid name %q", i, h)
		}
	}
	if c.MasterKeyFile != "" && c.MasterKey == "" {
		if inside(c.Data, c.MasterKeyFile) {
			return fmt.Errorf("master_key_file: %s is inside the data folder; keep the key apart from what it protects", c.MasterKeyFile)
		}
	}
	if c.InsecureOpenPolicy {
		for _, a := range []struct{ key, v string }{
			{"mqtt_addr", c.MQTTAddr}, {"mqtts_addr", c.MQTTSAddr}, {"ws_addr", c.WSAddr}, {"wss_addr", c.WSSAddr},
		} {
			if a.v != "" && a.v != "off" && !IsLoopback(a.v) {
				return fmt.Errorf("insecure_open_policy: the open policy is for loopback listeners only, but %s is %q", a.key, a.v)
			}
		}
	}
	switch c.Storage {
	case "embedded":
	case "postgres":
		if c.PostgresURL == "" {
			return errors.New("postgres_url: must be set when storage is postgres (or FIELDHUB_POSTGRES_URL)")
		}
	default:
		return fmt.Errorf("storage: %q is not embedded or postgres", c.Storage)
	}
	switch c.Broker {
	case "embedded":
	case "external":
		u, err := url.Parse(c.ExternalBrokerURL)
		if c.ExternalBrokerURL == "" || err != nil {
			return fmt.Errorf("external_broker_url: must be an mqtt:// or mqtts:// URL when broker is external, got %q", c.ExternalBrokerURL)
		}
		if u.Scheme != "mqtt" && u.Scheme != "mqtts" {
			return fmt.Errorf("external_broker_url: scheme %q is not mqtt or mqtts", u.Scheme)
		}
		if u.Port() == "" {
			return fmt.Errorf("external_broker_url: %q has no port", c.ExternalBrokerURL)
		}
		if c.ShareGroup == "" || strings.ContainsAny(c.ShareGroup, "/+#") {
			return fmt.Errorf("share_group: %q must be a non-empty name without /, + or #", c.ShareGroup)
		}
	default:
		return fmt.Errorf("broker: %q is not embedded or external", c.Broker)
	}
	if err := c.Export.InfluxDB.Validate(); err != nil {
		return fmt.Errorf("export.influxdb: %w", err)
	}
	if (c.MosquittoPasswordFile == "") != (c.MosquittoACLFile == "") {
		return errors.New("mosquitto_password_file: set together with mosquitto_acl_file, or neither")
	}
	if c.MosquittoPasswordFile != "" && c.MosquittoSyncInterval < Duration(time.Second) {
		return fmt.Errorf("mosquitto_sync_interval: %s is shorter than 1s", c.MosquittoSyncInterval)
	}
	if c.BrokerAuthSecret != "" && len(c.BrokerAuthSecret) < 16 {
		return errors.New("FIELDHUB_BROKER_AUTH_SECRET: shorter than 16 characters")
	}
	if c.AdminToken != "" && len(c.AdminToken) < MinAdminTokenLength {
		return fmt.Errorf("FIELDHUB_ADMIN_TOKEN: shorter than %d characters", MinAdminTokenLength)
	}
	return nil
}

// IsLoopback reports whether a listener address binds to loopback only.
func IsLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

func inside(dir, path string) bool {
	d, err1 := filepath.Abs(dir)
	p, err2 := filepath.Abs(path)
	if err1 != nil || err2 != nil {
		return false
	}
	rel, err := filepath.Rel(d, p)
	return err == nil && rel != ".." && !strings.HasPrefix(rel, ".."+string(filepath.Separator))
}

// DefaultMasterKeyFile is where the master key lives when not configured.
func DefaultMasterKeyFile() string {
	dir, err := os.UserConfigDir()
	if err != nil {
		dir = filepath.Join(os.TempDir(), "fieldhub-config")
	}
	return filepath.Join(dir, "fieldhub", "master.key")
}
