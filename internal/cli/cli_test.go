package cli

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestServeRefusesBadConfig(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct{ name, yaml, want string }{
		{"unknown field", "mqtts_adress: :8883\n", `unknown field "mqtts_adress"`},
		{"wrong type", "dedup_window: [1]\n", "dedup_window"},
		{"invalid value", "log_level: chatty\n", "log_level"},
		{"open policy off loopback", "insecure_open_policy: true\nmqtt_addr: 0.0.0.0:1883\nmqtts_addr: off\nhttp_addr: 127.0.0.1:0\n", "insecure_open_policy"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(dir, "bad.yml")
			os.WriteFile(path, []byte(tc.yaml+"data: "+filepath.Join(dir, "data")+"\nmaster_key_file: "+filepath.Join(dir, "k")+"\n"), 0o600)
			var out, errb bytes.Buffer
			code := Main(context.Background(), []string{"serve", "--config", path}, &out, &errb)
			if code == 0 || !strings.Contains(errb.String(), tc.want) {
				t.Errorf("serve with %q = exit %d, %q; want failure naming %q", tc.yaml, code, errb.String(), tc.want)
			}
		})
	}
}

func TestFlagsBeatEnvBeatFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "hub.yml")
	os.WriteFile(path, []byte("mqtt_addr: 127.0.0.1:1001\nws_addr: 127.0.0.1:1002\nhttp_addr: 127.0.0.1:1003\n"), 0o600)
	cmd := serveCmd(&bytes.Buffer{}, &bytes.Buffer{})
	if err := cmd.ParseFlags([]string{"--config", path, "--mqtt-addr", "127.0.0.1:3001"}); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{"FIELDHUB_MQTT_ADDR": "127.0.0.1:2001", "FIELDHUB_WS_ADDR": "127.0.0.1:2002"}
	c, err := loadHubConfig(cmd.Flags(), func(k string) string { return env[k] })
	if err != nil {
		t.Fatal(err)
	}
	if c.MQTTAddr != "127.0.0.1:3001" || c.WSAddr != "127.0.0.1:2002" || c.HTTPAddr != "127.0.0.1:1003" || c.MQTTSAddr != ":8883" {
		t.Errorf("got mqtt=%s ws=%s http=%s mqtts=%s; want flag, env, file, default", c.MQTTAddr, c.WSAddr, c.HTTPAddr, c.MQTTSAddr)
	}
}
