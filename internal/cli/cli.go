// Package cli holds fieldhub's subcommands: it parses flags and
// configuration and hands over to the hub, the demo, the benchmarks and the
// admin client.
package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/fieldhub/fieldhub/internal/config"
)

// Version is set at build time with -ldflags "-X …/cli.Version=…".
var Version = "dev"

// Main runs the command line args and returns the process exit code.
func Main(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	root := &cobra.Command{
		Use:           "fieldhub",
		Short:         "fieldhub carries data from sensors to the cloud and commands back",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.SetArgs(args)
	root.AddCommand(
		serveCmd(stdout, stderr),
		demoCmd(stdout, stderr),
		edgeCmd(stdout, stderr),
		deviceCmd(stdout),
		cmdCmd(stdout),
		benchCmd(stdout, stderr),
		simCmd(stdout, stderr),
		&cobra.Command{
			Use:   "version",
			Short: "Print the version",
			Run:   func(cmd *cobra.Command, _ []string) { fmt.Fprintln(stdout, "fieldhub", Version) },
		},
	)
	if err := root.ExecuteContext(ctx); err != nil {
		fmt.Fprintln(stderr, "fieldhub:", err)
		var ue usageError
		if errors.As(err, &ue) {
			return 2
		}
		return 1
	}
	return 0
}

type usageError struct{ error }

// newLogger builds the process logger.
func newLogger(w io.Writer, level, format string) *slog.Logger {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		lv = slog.LevelInfo
	}
	opts := &slog.HandlerOptions{Level: lv}
	if format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// addHubFlags registers one flag per config setting plus --config.
func addHubFlags(fs *pflag.FlagSet) {
	fs.String("config", "", "YAML configuration file (FIELDHUB_CONFIG)")
	def := config.Default()
	for _, s := range config.Settings {
		usage := s.Usage + " (" + s.Env + ")"
		if s.Bool {
			fs.Bool(s.Flag(), false, usage)
			continue
		}
		fs.String(s.Flag(), defaultString(def, s.Key), usage)
	}
}

func defaultString(c config.Hub, key string) string {
	switch key {
	case "data":
		return c.Data
	case "mqtts_addr":
		return c.MQTTSAddr
	case "http_addr":
		return c.HTTPAddr
	}
	return ""
}

// loadHubConfig applies defaults, the file, the environment, then the
// flags the user set, and validates the result.
func loadHubConfig(fs *pflag.FlagSet, getenv func(string) string) (config.Hub, error) {
	c := config.Default()
	path, _ := fs.GetString("config")
	if path == "" {
		path = getenv("FIELDHUB_CONFIG")
	}
	if path != "" {
		if err := c.LoadFile(path); err != nil {
			return c, err
		}
	}
	if err := c.ApplyEnv(getenv); err != nil {
		return c, err
	}
	for _, s := range config.Settings {
		f := fs.Lookup(s.Flag())
		if f == nil || !f.Changed {
			continue
		}
		if err := s.Set(&c, f.Value.String()); err != nil {
			return c, usageError{fmt.Errorf("--%s: %w", s.Flag(), err)}
		}
	}
	if err := c.Validate(); err != nil {
		return c, err
	}
	return c, nil
}

func envOr(key, def string) string {
	if v := strings.TrimSpace(os.Getenv(key)); v != "" {
		return v
	}
	return def
}

func numCPU() int { return runtime.NumCPU() }

func jsonIndent(v any) ([]byte, error) { return json.MarshalIndent(v, "", "  ") }
