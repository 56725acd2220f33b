package cli

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"time"

	"github.com/spf13/cobra"
)

// maxCmdWait is the API's bound on ?wait=.
const maxCmdWait = time.Minute

// commandJSON is the API's view of a command, as far as the CLI reads it.
type commandJSON struct {
	ID    string `json:"id"`
	State string `json:"state"`
	Error string `json:"error"`
}

// cmdCmd is `fieldhub cmd DEVICE NAME`: send a command through the API
// and, with --wait, wait for the device's answer. It prints the command
// as JSON; with --wait it fails (exit 1) unless the command succeeded.
func cmdCmd(stdout io.Writer) *cobra.Command {
	var (
		cf      clientFlags
		params  string
		expires string
		wait    time.Duration
	)
	cmd := &cobra.Command{
		Use:   "cmd DEVICE NAME",
		Short: "Send a command to a device; with --wait, print its outcome",
		Long: `Send a command to a device through the hub's API. The command waits on the
hub (queued) while the device is offline, until it expires.

With --wait the call returns once the device has answered (succeeded or
failed), the command has expired, or the wait is over; it exits 1 unless
the command succeeded.`,
		Example: `  fieldhub cmd sensor-1 reboot --params '{"delay":5}' --wait 10s --expires 1m`,
		Args:    cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			if wait < 0 || wait > maxCmdWait {
				return usageError{fmt.Errorf("--wait %v: want 0 to %v", wait, maxCmdWait)}
			}
			body := map[string]any{"name": args[1]}
			if params != "" {
				var p map[string]any
				if err := json.Unmarshal([]byte(params), &p); err != nil || p == nil {
					return usageError{fmt.Errorf("--params: want a JSON object, got %q", params)}
				}
				body["params"] = json.RawMessage(params)
			}
			if expires != "" {
				d, err := time.ParseDuration(expires)
				if err != nil || d <= 0 {
					return usageError{fmt.Errorf("--expires %q: want a positive duration such as 30s or 1h", expires)}
				}
				body["expires_in"] = expires
			}
			c, err := cf.client()
			if err != nil {
				return err
			}
			c.http.Timeout = wait + 30*time.Second
			path := "/api/v1/devices/" + url.PathEscape(args[0]) + "/commands"
			if wait > 0 {
				path += "?wait=" + url.QueryEscape(wait.String())
			}
			var raw json.RawMessage
			if err := c.do(cmd.Context(), http.MethodPost, path, body, &raw); err != nil {
				return err
			}
			var buf bytes.Buffer
			if err := json.Indent(&buf, raw, "", "  "); err != nil {
				return fmt.Errorf("decoding the answer: %w", err)
			}
			fmt.Fprintln(stdout, buf.String())
			if wait == 0 {
				return nil
			}
			var got commandJSON
			if err := json.Unmarshal(raw, &got); err != nil {
				return fmt.Errorf("decoding the answer: %w", err)
			}
			switch got.State {
			case "succeeded":
				return nil
			case "failed":
				return fmt.Errorf("command %s failed: %s", got.ID, got.Error)
			case "expired":
				return fmt.Errorf("command %s expired without an answer", got.ID)
			}
			return fmt.Errorf("command %s: no answer within %v (state %s; follow it with GET /api/v1/commands/%s)", got.ID, wait, got.State, got.ID)
		},
	}
	cf.register(cmd)
	cmd.Flags().StringVar(&params, "params", "", `parameters, a JSON object (e.g. '{"delay":5}')`)
	cmd.Flags().DurationVar(&wait, "wait", 0, "wait up to this long for the outcome (at most 1m)")
	cmd.Flags().StringVar(&expires, "expires", "", "expire after this long if not answered (default 1h on the hub, at most 168h)")
	return cmd
}
