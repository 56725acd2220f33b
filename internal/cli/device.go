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
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
)

// apiClient calls the hub's REST API for the admin commands.
type apiClient struct {
	base  string
	token string
	http  *http.Client
}

type clientFlags struct {
	server, token, tokenFile, cacert string
}

func (f *clientFlags) register(cmd *cobra.Command) {
	p := cmd.PersistentFlags()
	p.StringVar(&f.server, "server", envOr("FIELDHUB_SERVER", "http://127.0.0.1:8080"), "hub API URL (FIELDHUB_SERVER)")
	p.StringVar(&f.token, "token", "", "admin token (default FIELDHUB_ADMIN_TOKEN, then --token-file)")
	p.StringVar(&f.tokenFile, "token-file", "./fieldhub-data/admin-token", "file holding the admin token")
	p.StringVar(&f.cacert, "cacert", "", "CA bundle to trust for an https server (e.g. DATA/ca.pem)")
}

func (f *clientFlags) client() (*apiClient, error) {
	tok := f.token
	if tok == "" {
		tok = os.Getenv("FIELDHUB_ADMIN_TOKEN")
	}
	if tok == "" {
		b, err := os.ReadFile(f.tokenFile)
		if err != nil {
			return nil, fmt.Errorf("no admin token: set FIELDHUB_ADMIN_TOKEN or --token-file (%w)", err)
		}
		tok = strings.TrimSpace(string(b))
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	if f.cacert != "" {
		pem, err := os.ReadFile(f.cacert)
		if err != nil {
			return nil, fmt.Errorf("--cacert: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("--cacert: no certificate in %s", f.cacert)
		}
		tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	}
	if _, err := url.Parse(f.server); err != nil {
		return nil, fmt.Errorf("--server: %w", err)
	}
	return &apiClient{base: strings.TrimRight(f.server, "/"), token: tok, http: &http.Client{Transport: tr, Timeout: 30 * time.Second}}, nil
}

// do sends a request and decodes a JSON answer into out (when not nil).
func (c *apiClient) do(ctx context.Context, method, path string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, rd)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode >= 300 {
		var e struct {
			Error struct{ Code, Message string } `json:"error"`
		}
		if json.Unmarshal(b, &e) == nil && e.Error.Message != "" {
			return fmt.Errorf("%s (%s, HTTP %d)", e.Error.Message, e.Error.Code, resp.StatusCode)
		}
		return fmt.Errorf("HTTP %d: %s", resp.StatusCode, strings.TrimSpace(string(b)))
	}
	if out != nil && len(b) > 0 {
		return json.Unmarshal(b, out)
	}
	return nil
}

type deviceJSON struct {
	ID                 string            `json:"id"`
	Name               string            `json:"name"`
	Labels             map[string]string `json:"labels"`
	Gateway            string            `json:"gateway"`
	Auth               string            `json:"auth"`
	Online             bool              `json:"online"`
	LastSeen           *time.Time        `json:"last_seen"`
	CredentialsVersion int               `json:"credentials_version"`
	Credentials        *struct {
		Password    string `json:"password"`
		Certificate string `json:"certificate"`
		PrivateKey  string `json:"private_key"`
		CA          string `json:"ca"`
	} `json:"credentials"`
}

func deviceCmd(stdout io.Writer) *cobra.Command {
	var cf clientFlags
	cmd := &cobra.Command{Use: "device", Short: "Manage devices through the hub's API"}
	cf.register(cmd)

	var name, auth, csrFile, outDir string
	var labels []string
	add := &cobra.Command{
		Use:   "add ID",
		Short: "Register a device and print its credentials (shown once)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := cf.client()
			if err != nil {
				return err
			}
			body := map[string]any{"id": args[0], "auth": auth}
			if name != "" {
				body["name"] = name
			}
			if len(labels) > 0 {
				m := map[string]string{}
				for _, l := range labels {
					k, v, ok := strings.Cut(l, "=")
					if !ok {
						return usageError{fmt.Errorf("--label %q: want key=value", l)}
					}
					m[k] = v
				}
				body["labels"] = m
			}
			if csrFile != "" {
				b, err := os.ReadFile(csrFile)
				if err != nil {
					return fmt.Errorf("--csr: %w", err)
				}
				body["csr"] = string(b)
			}
			var d deviceJSON
			if err := c.do(cmd.Context(), http.MethodPost, "/api/v1/devices", body, &d); err != nil {
				return err
			}
			return printCredentials(stdout, d, outDir)
		},
	}
	add.Flags().StringVar(&name, "name", "", "display name")
	add.Flags().StringArrayVar(&labels, "label", nil, "label key=value (repeatable)")
	add.Flags().StringVar(&auth, "auth", "password", "password or certificate")
	add.Flags().StringVar(&csrFile, "csr", "", "PEM certificate signing request (certificate auth; else the hub makes the key)")
	add.Flags().StringVar(&outDir, "out", "", "write credentials into this folder instead of printing secrets")

	var prefix string
	var limit int
	list := &cobra.Command{
		Use:   "list",
		Short: "List devices with online state and last seen",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := cf.client()
			if err != nil {
				return err
			}
			tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tNAME\tAUTH\tONLINE\tLAST SEEN")
			after, n := "", 0
			for {
				var page struct {
					Devices []deviceJSON `json:"devices"`
					Next    string       `json:"next"`
				}
				q := url.Values{"limit": {"1000"}, "prefix": {prefix}, "after": {after}}
				if err := c.do(cmd.Context(), http.MethodGet, "/api/v1/devices?"+q.Encode(), nil, &page); err != nil {
					return err
				}
				for _, d := range page.Devices {
					seen := "never"
					if d.LastSeen != nil {
						seen = d.LastSeen.Local().Format(time.DateTime)
					}
					fmt.Fprintf(tw, "%s\t%s\t%s\t%v\t%s\n", d.ID, d.Name, d.Auth, d.Online, seen)
					if n++; limit > 0 && n >= limit {
						return tw.Flush()
					}
				}
				if page.Next == "" {
					return tw.Flush()
				}
				after = page.Next
			}
		},
	}
	list.Flags().StringVar(&prefix, "prefix", "", "only ids with this prefix")
	list.Flags().IntVar(&limit, "limit", 0, "at most this many (0 for all)")

	show := &cobra.Command{
		Use:   "show ID",
		Short: "Show a device",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := cf.client()
			if err != nil {
				return err
			}
			var d json.RawMessage
			if err := c.do(cmd.Context(), http.MethodGet, "/api/v1/devices/"+url.PathEscape(args[0]), nil, &d); err != nil {
				return err
			}
			var buf bytes.Buffer
			json.Indent(&buf, d, "", "  ")
			fmt.Fprintln(stdout, buf.String())
			return nil
		},
	}
	rm := &cobra.Command{
		Use:   "rm ID",
		Short: "Delete a device: revoke its credentials and close its session",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := cf.client()
			if err != nil {
				return err
			}
			if err := c.do(cmd.Context(), http.MethodDelete, "/api/v1/devices/"+url.PathEscape(args[0]), nil, nil); err != nil {
				return err
			}
			fmt.Fprintln(stdout, "deleted", args[0])
			return nil
		},
	}
	var rotCSR, rotOut string
	rotate := &cobra.Command{
		Use:   "rotate ID",
		Short: "Issue new credentials; the old ones stop working at once",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := cf.client()
			if err != nil {
				return err
			}
			body := map[string]any{}
			if rotCSR != "" {
				b, err := os.ReadFile(rotCSR)
				if err != nil {
					return fmt.Errorf("--csr: %w", err)
				}
				body["csr"] = string(b)
			}
			var d deviceJSON
			if err := c.do(cmd.Context(), http.MethodPost, "/api/v1/devices/"+url.PathEscape(args[0])+"/credentials", body, &d); err != nil {
				return err
			}
			return printCredentials(stdout, d, rotOut)
		},
	}
	rotate.Flags().StringVar(&rotCSR, "csr", "", "PEM certificate signing request for the new certificate")
	rotate.Flags().StringVar(&rotOut, "out", "", "write credentials into this folder instead of printing secrets")
	cmd.AddCommand(add, list, show, rm, rotate)
	return cmd
}

// printCredentials prints the once-shown credentials, or writes them as
// files (mode 0600 for secrets) into dir.
func printCredentials(w io.Writer, d deviceJSON, dir string) error {
	if d.Credentials == nil {
		return errors.New("the hub returned no credentials")
	}
	cr := d.Credentials
	if dir == "" {
		fmt.Fprintf(w, "device %s (credentials version %d); these credentials are shown once:\n", d.ID, d.CredentialsVersion)
		if cr.Password != "" {
			fmt.Fprintf(w, "username: %s\npassword: %s\n", d.ID, cr.Password)
		}
		if cr.Certificate != "" {
			fmt.Fprintf(w, "%s%s", cr.Certificate, cr.PrivateKey)
		}
		return nil
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	files := []struct {
		name, data string
		mode       os.FileMode
	}{
		{d.ID + ".password", cr.Password, 0o600},
		{d.ID + ".crt", cr.Certificate, 0o644},
		{d.ID + ".key", cr.PrivateKey, 0o600},
		{"ca.pem", cr.CA, 0o644},
	}
	for _, f := range files {
		if f.data == "" {
			continue
		}
		p := filepath.Join(dir, f.name)
		if err := os.WriteFile(p, []byte(f.data), f.mode); err != nil {
			return err
		}
		fmt.Fprintln(w, "wrote", p)
	}
	return nil
}
