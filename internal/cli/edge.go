package cli

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/fieldhub/fieldhub/internal/edge"
	"github.com/fieldhub/fieldhub/internal/registry"
)

func edgeCmd(stdout, stderr io.Writer) *cobra.Command {
	var cfgPath string
	cmd := &cobra.Command{
		Use:   "edge",
		Short: "Run the edge gateway: local MQTT for sensors, pipeline, durable spool, uplink to the hub",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if cfgPath == "" {
				cfgPath = os.Getenv("FIELDHUB_EDGE_CONFIG")
			}
			if cfgPath == "" {
				return usageError{errors.New("--config: the edge configuration file is required (see docs/edge.md)")}
			}
			cfg, err := edge.LoadConfig(cfgPath)
			if err != nil {
				return err
			}
			log := newLogger(stderr, cfg.LogLevel, cfg.LogFormat)
			e, err := edge.New(cfg, log)
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			if err := e.Start(ctx); err != nil {
				return err
			}
			fmt.Fprintf(stdout, "fieldhub edge %s ready: sensors on mqtt://%s, uplink to %s\n", cfg.ID, e.Addr("mqtt"), cfg.Hub.Addr)
			<-ctx.Done()
			sctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			return e.Shutdown(sctx)
		},
	}
	cmd.Flags().StringVar(&cfgPath, "config", "", "edge configuration file (FIELDHUB_EDGE_CONFIG)")
	cmd.AddCommand(&cobra.Command{
		Use:   "hash-password",
		Short: "Read a sensor password on stdin and print its argon2id hash for the edge config",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			line, err := bufio.NewReader(cmd.InOrStdin()).ReadString('\n')
			if err != nil && !errors.Is(err, io.EOF) {
				return err
			}
			pw := strings.TrimRight(line, "\r\n")
			if len(pw) < 12 {
				return errors.New("password shorter than 12 characters")
			}
			fmt.Fprintln(stdout, registry.HashPassword([]byte(pw), registry.PasswordParams{}))
			return nil
		},
	})
	return cmd
}
