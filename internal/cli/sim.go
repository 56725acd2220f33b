package cli

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/fieldhub/fieldhub/internal/bench"
	"github.com/fieldhub/fieldhub/internal/sim"
)

type simFlags struct {
	scenario, token, tokenFile, apiCACert, saveCreds, logLevel string
	provisionConcurrency                                       int
	sc                                                         sim.Scenario
}

// simCmd is `fieldhub sim`: a fleet of simulated devices built on the
// device SDK, from flags or a scenario file.
func simCmd(stdout, stderr io.Writer) *cobra.Command {
	cmd, _ := newSimCmd(stdout, stderr)
	return cmd
}

// newSimCmd is simCmd with the flags it parses into.
func newSimCmd(stdout, stderr io.Writer) (*cobra.Command, *simFlags) {
	f := &simFlags{sc: sim.DefaultScenario()}
	cmd := &cobra.Command{
		Use:   "sim",
		Short: "Run a fleet of simulated devices against a hub or an edge gateway (also the load generator)",
		Long: `Runs --devices simulated devices, each on its own MQTT connection, built on the device SDK
(github.com/fieldhub/fieldhub/device). Every device publishes QoS 1 telemetry every --interval with
realistic waveforms (sine plus noise, random walk, steps, vibration, and anomalies as spikes), answers
commands ("reboot", "set_interval", and any other name by echoing its params), reports its firmware
version and interval in the twin, and applies a desired "interval".

Credentials: --provision registers the devices through the hub's API (--server-api, admin token from
--token or FIELDHUB_ADMIN_TOKEN) with --auth password or certificate, rotating the credentials of
devices that already exist; or --credentials FILE of "id,password" lines.

A scenario file (--scenario) holds the same settings in YAML plus the metrics; flags that are set win.
See README.md (Simulator) for its format. Prints a status line every --status-every and a summary.`,
		Example: `  fieldhub sim --provision --devices 500 --ramp 30s --duration 10m
  fieldhub sim --server mqtts://hub:8883 --cafile ca.pem --credentials fleet.csv --interval 5s
  fieldhub sim --scenario plant.yml --duration 1h`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runSim(cmd.Context(), cmd.Flags(), *f, stdout, stderr)
		},
	}
	fl := cmd.Flags()
	d := &f.sc
	fl.StringVar(&f.scenario, "scenario", "", "YAML scenario file (flags that are set override it)")
	fl.IntVar(&d.Devices, "devices", d.Devices, "number of simulated devices (one connection each)")
	fl.IntVar(&d.First, "first", d.First, "number of the first device: ids are PREFIX{first}…; split a fleet over processes with it")
	fl.StringVar(&d.IDPrefix, "id-prefix", d.IDPrefix, "device id prefix")
	fl.StringVar(&d.Server, "server", d.Server, "MQTT URL of the hub or edge: mqtt://host:port or mqtts://host:port")
	fl.StringVar(&d.CAFile, "cafile", "", "CA certificates for mqtts (the hub's DATA/ca.pem; with --provision fetched from the API when unset)")
	fl.StringVar(&d.ServerName, "server-name", "", "name checked in the server's certificate (default: the host of --server)")
	fl.BoolVar(&d.Provision, "provision", false, "register the devices through the hub's API and use the credentials it returns")
	fl.StringVar(&d.ServerAPI, "server-api", envOr("FIELDHUB_SERVER", d.ServerAPI), "hub API URL for --provision (FIELDHUB_SERVER)")
	fl.StringVar(&f.token, "token", "", "admin token for --provision (default FIELDHUB_ADMIN_TOKEN, then --token-file)")
	fl.StringVar(&f.tokenFile, "token-file", "./fieldhub-data/admin-token", "file holding the admin token")
	fl.StringVar(&f.apiCACert, "api-cacert", "", "CA bundle to trust for an https --server-api")
	fl.StringVar(&d.Auth, "auth", d.Auth, "credentials made by --provision: password or certificate (mqtts only; no argon2id cost)")
	fl.IntVar(&f.provisionConcurrency, "provision-concurrency", 4, "registrations in flight with --provision")
	fl.StringVar(&d.Credentials, "credentials", "", `file of "id,password" lines (instead of --provision)`)
	fl.StringVar(&f.saveCreds, "save-credentials", "", `with --provision --auth password: write the "id,password" lines to this file (mode 0600)`)
	fl.DurationVar(&d.Interval, "interval", d.Interval, "time between two messages of a device (its rate is 1/interval)")
	fl.StringVar(&d.Format, "format", d.Format, "payload format: json (through the SDK) or senml (RFC 8428, the simulator's own client: no offline buffer)")
	fl.DurationVar(&d.Ramp, "ramp", 0, "spread the first connections evenly over this time")
	fl.IntVar(&d.ConnectConcurrency, "connect-concurrency", d.ConnectConcurrency, "connections being set up at once")
	fl.DurationVar(&d.Duration, "duration", 0, "stop after this long (0: until Ctrl-C)")
	fl.DurationVar(&d.StatusEvery, "status-every", d.StatusEvery, "time between two status lines")
	fl.StringVar(&d.Firmware, "firmware", d.Firmware, "firmware version the devices report in their twin")
	fl.IntVar(&d.OfflineBuffer, "offline-buffer", d.OfflineBuffer, "unacknowledged messages each device holds while disconnected (json)")
	fl.StringVar(&f.logLevel, "log-level", "warn", "debug, info, warn or error")
	return cmd, f
}

// simFlagFields maps each flag that overrides a scenario field to a
// function copying the flag's value into a scenario.
var simFlagFields = map[string]func(dst *sim.Scenario, src sim.Scenario){
	"devices":             func(d *sim.Scenario, s sim.Scenario) { d.Devices = s.Devices },
	"first":               func(d *sim.Scenario, s sim.Scenario) { d.First = s.First },
	"id-prefix":           func(d *sim.Scenario, s sim.Scenario) { d.IDPrefix = s.IDPrefix },
	"server":              func(d *sim.Scenario, s sim.Scenario) { d.Server = s.Server },
	"cafile":              func(d *sim.Scenario, s sim.Scenario) { d.CAFile = s.CAFile },
	"server-name":         func(d *sim.Scenario, s sim.Scenario) { d.ServerName = s.ServerName },
	"provision":           func(d *sim.Scenario, s sim.Scenario) { d.Provision = s.Provision },
	"server-api":          func(d *sim.Scenario, s sim.Scenario) { d.ServerAPI = s.ServerAPI },
	"auth":                func(d *sim.Scenario, s sim.Scenario) { d.Auth = s.Auth },
	"credentials":         func(d *sim.Scenario, s sim.Scenario) { d.Credentials = s.Credentials },
	"interval":            func(d *sim.Scenario, s sim.Scenario) { d.Interval = s.Interval },
	"format":              func(d *sim.Scenario, s sim.Scenario) { d.Format = s.Format },
	"ramp":                func(d *sim.Scenario, s sim.Scenario) { d.Ramp = s.Ramp },
	"connect-concurrency": func(d *sim.Scenario, s sim.Scenario) { d.ConnectConcurrency = s.ConnectConcurrency },
	"duration":            func(d *sim.Scenario, s sim.Scenario) { d.Duration = s.Duration },
	"status-every":        func(d *sim.Scenario, s sim.Scenario) { d.StatusEvery = s.StatusEvery },
	"firmware":            func(d *sim.Scenario, s sim.Scenario) { d.Firmware = s.Firmware },
	"offline-buffer":      func(d *sim.Scenario, s sim.Scenario) { d.OfflineBuffer = s.OfflineBuffer },
}

// simScenario is the scenario file (or the defaults) with the flags that
// were set applied over it.
func simScenario(fs *pflag.FlagSet, f simFlags) (sim.Scenario, error) {
	sc := f.sc
	if f.scenario != "" {
		var err error
		if sc, err = sim.LoadScenario(f.scenario); err != nil {
			return sc, usageError{err}
		}
		for name, set := range simFlagFields {
			if fl := fs.Lookup(name); fl != nil && fl.Changed {
				set(&sc, f.sc)
			}
		}
	}
	if sc.Credentials != "" && (f.scenario == "" && !fs.Changed("devices")) {
		sc.Devices = 0 // every device of the file
	}
	if sc.Devices == 0 && sc.Credentials == "" {
		sc.Devices = sim.DefaultScenario().Devices
	}
	return sc, nil
}

func runSim(ctx context.Context, fs *pflag.FlagSet, f simFlags, stdout, stderr io.Writer) error {
	sc, err := simScenario(fs, f)
	if err != nil {
		return err
	}
	log := newLogger(stderr, f.logLevel, "text").With("component", "sim")
	var creds []sim.Credential
	if sc.Credentials != "" {
		if creds, err = sim.ReadCredentials(sc.Credentials); err != nil {
			return err
		}
		if sc.Devices > 0 {
			if sc.Devices > len(creds) {
				return usageError{fmt.Errorf("--devices %d: the credentials file has %d devices", sc.Devices, len(creds))}
			}
			creds = creds[:sc.Devices]
		}
		sc.Devices = len(creds)
	}
	if err := sc.Validate(); err != nil {
		return usageError{err}
	}
	if sc.Credentials == "" && !sc.Provision {
		return usageError{errors.New("say where the credentials come from: --provision (with an admin token) or --credentials FILE")}
	}
	if f.saveCreds != "" && (!sc.Provision || sc.Auth != sim.AuthPassword) {
		return usageError{errors.New("--save-credentials needs --provision with --auth password")}
	}
	if err := checkDescriptors(sc.Devices); err != nil {
		return err
	}
	if sc.Duration > 0 {
		// The bound covers provisioning too.
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, sc.Duration+provisionAllowance(sc))
		defer cancel()
	}

	var roots *x509.CertPool
	if sc.Provision {
		api, err := simAPIClient(f, sc.ServerAPI)
		if err != nil {
			return err
		}
		start := time.Now()
		creds, roots, err = provisionDevices(ctx, api, sc, f.provisionConcurrency)
		if err != nil {
			return err
		}
		el := time.Since(start)
		fmt.Fprintf(stdout, "provisioned %d devices (%s auth) in %v, %.1f ms each\n", len(creds), sc.Auth, el.Round(time.Millisecond), float64(el.Microseconds())/1000/float64(len(creds)))
		if f.saveCreds != "" {
			if err := sim.WriteCredentials(f.saveCreds, creds); err != nil {
				return err
			}
			fmt.Fprintf(stdout, "wrote %s (use it with --credentials to skip provisioning)\n", f.saveCreds)
		}
		if sc.CAFile != "" {
			roots = nil // the user's file wins
		}
	}

	fleet, err := sim.NewFleet(sim.FleetConfig{Scenario: sc, Credentials: creds, RootCAs: roots, Logger: log,
		OnStatus: func(s sim.Status) { printSimStatus(stdout, s) }})
	if err != nil {
		return usageError{err}
	}
	until := "until interrupted"
	if sc.Duration > 0 {
		until = "for " + sc.Duration.String()
	}
	fmt.Fprintf(stdout, "fieldhub sim: %d devices (%s … %s) → %s, %s every %v (%d metrics), ramp %v, %s\n",
		len(creds), creds[0].ID, creds[len(creds)-1].ID, sc.Server, sc.Format, sc.Interval, len(sc.Metrics), sc.Ramp, until)
	st, runErr := fleet.Run(ctx)
	printSimSummary(stdout, st)
	return runErr
}

// provisionAllowance is the time --duration leaves for registering the
// devices: an argon2id hash per password device at the hub.
func provisionAllowance(sc sim.Scenario) time.Duration {
	if !sc.Provision {
		return 0
	}
	return time.Minute + time.Duration(sc.Devices)*100*time.Millisecond
}

// simAPIClient is the admin API client of --provision.
func simAPIClient(f simFlags, server string) (*apiClient, error) {
	cf := clientFlags{server: server, token: f.token, tokenFile: f.tokenFile, cacert: f.apiCACert}
	return cf.client()
}

// provisionDevices registers the scenario's devices with the hub (or
// rotates the credentials of those that exist) and returns their
// credentials, in order, and the CA to trust for mqtts when the hub gave
// one.
func provisionDevices(ctx context.Context, api *apiClient, sc sim.Scenario, concurrency int) ([]sim.Credential, *x509.CertPool, error) {
	concurrency = min(max(concurrency, 1), 64)
	creds := make([]sim.Credential, sc.Devices)
	var (
		next     atomic.Int64
		wg       sync.WaitGroup
		errOnce  sync.Once
		firstErr error
		caMu     sync.Mutex
		caPEM    string
	)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	for range min(concurrency, sc.Devices) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= sc.Devices || ctx.Err() != nil {
					return
				}
				id := sc.DeviceID(i)
				d, err := registerSimDevice(ctx, api, id, sc.Auth)
				if err == nil {
					creds[i], err = simCredential(id, d)
				}
				if err != nil {
					errOnce.Do(func() { firstErr = fmt.Errorf("provisioning %s: %w", id, err); cancel() })
					return
				}
				if d.Credentials.CA != "" {
					caMu.Lock()
					caPEM = d.Credentials.CA
					caMu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	if firstErr != nil {
		return nil, nil, firstErr
	}
	if caPEM == "" && strings.HasPrefix(sc.Server, "mqtts") && sc.CAFile == "" {
		pem, err := fetchCA(ctx, api)
		if err != nil {
			return nil, nil, fmt.Errorf("fetching the hub's CA (or give --cafile): %w", err)
		}
		caPEM = pem
	}
	var pool *x509.CertPool
	if caPEM != "" {
		pool = x509.NewCertPool()
		if !pool.AppendCertsFromPEM([]byte(caPEM)) {
			return nil, nil, errors.New("the hub's CA is not PEM")
		}
	}
	return creds, pool, nil
}

// registerSimDevice creates device id, or rotates its credentials when it
// exists already (a sim run again).
func registerSimDevice(ctx context.Context, api *apiClient, id, auth string) (deviceJSON, error) {
	var d deviceJSON
	status, err := apiPost(ctx, api, "/api/v1/devices", map[string]any{"id": id, "auth": auth, "labels": map[string]string{"simulated": "true"}}, &d)
	if status == http.StatusConflict {
		d = deviceJSON{}
		_, err = apiPost(ctx, api, "/api/v1/devices/"+url.PathEscape(id)+"/credentials", map[string]any{}, &d)
		if err == nil && d.Auth != "" && d.Auth != auth {
			err = fmt.Errorf("exists with %s auth, not %s", d.Auth, auth)
		}
	}
	if err == nil && d.Credentials == nil {
		err = errors.New("the hub returned no credentials")
	}
	return d, err
}

// simCredential turns a device's credentials into a sim.Credential.
func simCredential(id string, d deviceJSON) (sim.Credential, error) {
	c := sim.Credential{ID: id, Password: d.Credentials.Password}
	if d.Credentials.Certificate != "" {
		kp, err := tls.X509KeyPair([]byte(d.Credentials.Certificate), []byte(d.Credentials.PrivateKey))
		if err != nil {
			return c, fmt.Errorf("certificate: %w", err)
		}
		c.Certificate = kp
	}
	if c.Password == "" && len(c.Certificate.Certificate) == 0 {
		return c, errors.New("the hub returned neither a password nor a certificate")
	}
	return c, nil
}

// apiPost posts body as JSON and decodes the answer into out; it returns
// the HTTP status (0 when no answer came) and an error for any status
// from 300 up.
func apiPost(ctx context.Context, c *apiClient, path string, body, out any) (int, error) {
	b, err := json.Marshal(body)
	if err != nil {
		return 0, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.base+path, bytes.NewReader(b))
	if err != nil {
		return 0, err
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.http.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	rb, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return resp.StatusCode, err
	}
	if resp.StatusCode >= 300 {
		var e struct {
			Error struct{ Code, Message string } `json:"error"`
		}
		if json.Unmarshal(rb, &e) == nil && e.Error.Message != "" {
			return resp.StatusCode, fmt.Errorf("%s (%s, HTTP %d)", e.Error.Message, e.Error.Code, resp.StatusCode)
		}
		return resp.StatusCode, fmt.Errorf("HTTP %d: %s", resp.StatusCode, strings.TrimSpace(string(rb)))
	}
	if out != nil {
		if err := json.Unmarshal(rb, out); err != nil {
			return resp.StatusCode, fmt.Errorf("decoding the answer: %w", err)
		}
	}
	return resp.StatusCode, nil
}

// fetchCA reads GET /api/v1/ca.pem.
func fetchCA(ctx context.Context, c *apiClient) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.base+"/api/v1/ca.pem", nil)
	if err != nil {
		return "", err
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("HTTP %d", resp.StatusCode)
	}
	return string(b), nil
}

func printSimStatus(w io.Writer, s sim.Status) {
	rate := 0.0
	if s.Elapsed > 0 {
		rate = float64(s.Published) / s.Elapsed.Seconds()
	}
	fmt.Fprintf(w, "[%6s] connected %d/%d · published %d (%.0f/s) · buffered %d · dropped %d · commands answered %d (failed %d) · refused %d\n",
		s.Elapsed.Round(time.Second), s.Connected, s.Devices, s.Published, rate, s.Buffered, s.Dropped, s.CommandsAnswered, s.CommandsFailed, s.Refused)
}

func printSimSummary(w io.Writer, s sim.Status) {
	rate := 0.0
	if s.Elapsed > 0 {
		rate = float64(s.Published) / s.Elapsed.Seconds()
	}
	fmt.Fprintf(w, "sim summary after %v: %d devices, %d connected at least once (first connect p50 %v, p99 %v), %d refused by the hub\n",
		s.Elapsed.Round(time.Millisecond), s.Devices, s.EverConnected, s.ConnectP50.Round(time.Millisecond), s.ConnectP99.Round(time.Millisecond), s.Refused)
	fmt.Fprintf(w, "  telemetry: %d messages acknowledged (%.0f/s), %d left buffered, %d dropped, %d refused; %d reconnects\n",
		s.Published, rate, s.Buffered, s.Dropped, s.PayloadsRefused, s.Reconnects)
	fmt.Fprintf(w, "  commands: %d answered, %d failed, %d reboots; twin: %d reports, %d desired states applied\n",
		s.CommandsAnswered, s.CommandsFailed, s.Reboots, s.TwinReports, s.DesiredApplied)
	if rss, err := bench.ProcRSS(os.Getpid()); err == nil {
		fmt.Fprintf(w, "  sim process RSS %.1f MiB (%.1f KiB per device)\n", float64(rss)/(1<<20), float64(rss)/1024/float64(max(s.Devices, 1)))
	}
}
