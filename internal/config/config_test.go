package config

import (
	"strings"
	"testing"
	"time"
)

// TestLoadScaleOut reads the settings of a hub instance behind an
// external broker on PostgreSQL with the InfluxDB export.
func TestLoadScaleOut(t *testing.T) {
	c := Default()
	err := c.LoadYAML("hub.yml", []byte(`
storage: postgres
postgres_url: postgres://fieldhub@db/fieldhub
broker: external
external_broker_url: mqtts://broker:8883
external_broker_client_id: hub-1
mosquitto_password_file: /srv/m/passwd
mosquitto_acl_file: /srv/m/acl
export:
  influxdb:
    url: http://influx:8086
    database: fieldhub
    username: writer
    flush_interval: 2s
`))
	if err != nil {
		t.Fatal(err)
	}
	c.ApplyEnv(func(k string) string {
		return map[string]string{"FIELDHUB_EXTERNAL_BROKER_PASSWORD": "pw", "FIELDHUB_INFLUXDB_PASSWORD": "ipw"}[k]
	})
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if c.ExternalBrokerPassword != "pw" || c.Export.InfluxDB.Password != "ipw" || c.Export.InfluxDB.FlushInterval != 2*time.Second {
		t.Errorf("loaded %+v", c)
	}
	if c.ShareGroup != "fieldhub" || c.MosquittoSyncInterval != Duration(10*time.Second) {
		t.Errorf("defaults lost: share_group %q, mosquitto_sync_interval %s", c.ShareGroup, c.MosquittoSyncInterval)
	}
}

func TestLoadGood(t *testing.T) {
	c := Default()
	err := c.LoadYAML("good.yml", []byte(`
data: /var/lib/fieldhub
mqtt_addr: 127.0.0.1:1883
retention: 30d
checkpoint_interval: 30s
hostnames: [hub.example.com, 10.0.0.5]
log_format: json
`))
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if c.Retention != Duration(30*24*time.Hour) || c.CheckpointInterval != Duration(30*time.Second) {
		t.Errorf("durations = %v, %v", c.Retention, c.CheckpointInterval)
	}
	if c.MQTTSAddr != ":8883" || c.HTTPAddr != ":8080" {
		t.Errorf("defaults lost: %+v", c)
	}
}

// TestLoadBad checks that every broken file fails with an error naming the field.
func TestLoadBad(t *testing.T) {
	for _, tc := range []struct{ name, yaml, want string }{
		{"unknown field", "mqtt_adr: :1883\n", "mqtt_adr"},
		{"wrong type", "max_payload_bytes: lots\n", "max_payload_bytes"},
		{"bad duration", "retention: forever\n", "forever"},
		{"bad address", "mqtts_addr: nohostport\n", "mqtts_addr"},
		{"bad port", "http_addr: :99999\n", "http_addr"},
		{"short retention", "retention: 10m\n", "retention"},
		{"log level", "log_level: loud\n", "log_level"},
		{"log format", "log_format: xml\n", "log_format"},
		{"dedup window", "dedup_window: 3\n", "dedup_window"},
		{"idle after", "mqtt_idle_after: -1s\n", "mqtt_idle_after"},
		{"payload limit", "max_payload_bytes: 1\n", "max_payload_bytes"},
		{"key in data", "data: /tmp/fh\nmaster_key_file: /tmp/fh/master.key\n", "master_key_file"},
		{"hostname", "hostnames: ['a b']\n", "hostnames[0]"},
		{"not a map", "- 1\n- 2\n", "cannot unmarshal"},
		{"no http", "http_addr: off\n", "http_addr"},
		{"storage", "storage: mysql\n", "storage"},
		{"postgres without url", "storage: postgres\n", "postgres_url"},
		{"broker", "broker: remote\n", "broker"},
		{"external without url", "broker: external\n", "external_broker_url"},
		{"external url scheme", "broker: external\nexternal_broker_url: http://b:1883\n", "external_broker_url"},
		{"external url port", "broker: external\nexternal_broker_url: mqtt://b\n", "external_broker_url"},
		{"share group", "broker: external\nexternal_broker_url: mqtt://b:1883\nshare_group: a/b\n", "share_group"},
		{"mosquitto files", "mosquitto_password_file: /tmp/p\n", "mosquitto_password_file"},
		{"influx unknown field", "export:\n  influxdb:\n    urll: http://i:8086\n", "urll"},
		{"influx url", "export:\n  influxdb:\n    url: ftp://i\n    database: d\n", "export.influxdb"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := Default()
			err := c.LoadYAML("bad.yml", []byte(tc.yaml))
			if err == nil {
				err = c.Validate()
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("load(%q) = %v; want an error naming %q", tc.yaml, err, tc.want)
			}
		})
	}
}

func TestEnv(t *testing.T) {
	env := map[string]string{
		"FIELDHUB_MQTT_ADDR":            "127.0.0.1:1999",
		"FIELDHUB_INSECURE_OPEN_POLICY": "true",
		"FIELDHUB_RETENTION":            "2d",
		"FIELDHUB_ADMIN_TOKEN":          "0123456789abcdef0123",
	}
	c := Default()
	if err := c.ApplyEnv(func(k string) string { return env[k] }); err != nil {
		t.Fatal(err)
	}
	if c.MQTTAddr != "127.0.0.1:1999" || !c.InsecureOpenPolicy || c.Retention != Duration(48*time.Hour) || c.AdminToken == "" {
		t.Errorf("env not applied: %+v", c)
	}
	env["FIELDHUB_DEDUP_WINDOW"] = "many"
	if err := c.ApplyEnv(func(k string) string { return env[k] }); err == nil || !strings.Contains(err.Error(), "FIELDHUB_DEDUP_WINDOW") {
		t.Errorf("bad env = %v; want an error naming FIELDHUB_DEDUP_WINDOW", err)
	}
	c = Default()
	c.AdminToken = "short"
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "FIELDHUB_ADMIN_TOKEN") {
		t.Errorf("short token = %v", err)
	}
}

func TestOpenPolicyLoopbackOnly(t *testing.T) {
	for _, tc := range []struct {
		addr string
		ok   bool
	}{
		{"127.0.0.1:1883", true}, {"[::1]:1883", true}, {"localhost:1883", true},
		{":1883", false}, {"0.0.0.0:1883", false}, {"10.1.2.3:1883", false}, {"[::]:1883", false},
	} {
		c := Default()
		c.InsecureOpenPolicy, c.MQTTAddr, c.MQTTSAddr = true, tc.addr, "off"
		err := c.Validate()
		if (err == nil) != tc.ok {
			t.Errorf("open policy on %s: %v; want ok=%v", tc.addr, err, tc.ok)
		}
	}
}
