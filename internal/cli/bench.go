package cli

import (
	"io"

	"github.com/spf13/cobra"
)

func benchCmd(stdout, stderr io.Writer) *cobra.Command {
	cmd := &cobra.Command{Use: "bench", Short: "Reproducible benchmarks that print figures"}
	return cmd
}
