// Package config loads the hub's configuration: defaults, then a YAML file,
// then FIELDHUB_* environment variables, then command-line flags (flags
// win). Every field is documented in docs/configuration.md; every
// validation error names the field it is about.
package config

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
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
	// LogLevel is debug, info, warn or error. Default info.
	LogLevel string `yaml:"log_level"`
	// LogFormat is text or json. Default text.
	LogFormat string `yaml:"log_format"`

	// MasterKey is FIELDHUB_MASTER_KEY; never read from the file.
	MasterKey string `yaml:"-"`
	// AdminToken is FIELDHUB_ADMIN_TOKEN; never read from the file.
	AdminToken string `yaml:"-"`
}

// Default returns the configuration with every default filled in.
func Default() Hub {
	return Hub{
		Data:                "./fieldhub-data",
		MQTTSAddr:           ":8883",
		HTTPAddr:            ":8080",
		MaxPayloadBytes:     64 << 10,
		MaxPointsPerMessage: 1000,
		DedupWindow:         1024,
		CheckpointInterval:  Duration(time.Minute),
		LogLevel:            "info",
		LogFormat:           "text",
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
		if err := v.Decode(ptr); err != nil {
			var te *yaml.TypeError
			if errors.As(err, &te) && len(te.Errors) > 0 {
				err = errors.New(te.Errors[0])
			}
			return fmt.Errorf("config file %s: line %d: %s: %w", name, k.Line, k.Value, err)
		}
	}
	return nil
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
	{Key: "http_addr", Env: "FIELDHUB_HTTP_ADDR", Usage: "REST API listener address", Set: str(func(c *Hub) *string { return &c.HTTPAddr })},
	{Key: "http_tls", Env: "FIELDHUB_HTTP_TLS", Bool: true, Usage: "serve the REST API over TLS", Set: boolean(func(c *Hub) *bool { return &c.HTTPTLS })},
	{Key: "insecure_open_policy", Env: "FIELDHUB_INSECURE_OPEN_POLICY", Bool: true, Usage: "allow anonymous clients on any topic (loopback listeners only)", Set: boolean(func(c *Hub) *bool { return &c.InsecureOpenPolicy })},
	{Key: "master_key_file", Env: "FIELDHUB_MASTER_KEY_FILE", Usage: "file of the key that seals the CA keys (outside the data folder)", Set: str(func(c *Hub) *string { return &c.MasterKeyFile })},
	{Key: "retention", Env: "FIELDHUB_RETENTION", Usage: "delete telemetry older than this (e.g. 30d; 0 keeps all)", Set: duration(func(c *Hub) *Duration { return &c.Retention })},
	{Key: "max_payload_bytes", Env: "FIELDHUB_MAX_PAYLOAD_BYTES", Usage: "largest telemetry payload", Set: integer(func(c *Hub) *int { return &c.MaxPayloadBytes })},
	{Key: "max_points_per_message", Env: "FIELDHUB_MAX_POINTS_PER_MESSAGE", Usage: "most points in one telemetry message", Set: integer(func(c *Hub) *int { return &c.MaxPointsPerMessage })},
	{Key: "dedup_window", Env: "FIELDHUB_DEDUP_WINDOW", Usage: "recent seq numbers remembered per device", Set: integer(func(c *Hub) *int { return &c.DedupWindow })},
	{Key: "checkpoint_interval", Env: "FIELDHUB_CHECKPOINT_INTERVAL", Usage: "how often the WAL is folded into compressed chunks", Set: duration(func(c *Hub) *Duration { return &c.CheckpointInterval })},
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
