// Package cli holds the microhost subcommands that talk to a running node
// through its admin API: network, service and plugin status.
package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"text/tabwriter"
	"time"

	"github.com/microhost/microhost/host/admin"
	"github.com/microhost/microhost/host/config"
	"github.com/spf13/cobra"
)

// DefaultAdmin is the admin address used when neither --admin nor
// MICROHOST_ADMIN is set; it matches the node { admin } default.
const DefaultAdmin = config.DefaultAdmin

// EnvAdmin names the environment variable that overrides DefaultAdmin.
const EnvAdmin = "MICROHOST_ADMIN"

// callTimeout bounds each command: the admin API is local and quick.
const callTimeout = 10 * time.Second

// Commands returns the network and service command groups. The plugin
// status command is PluginStatusCommand, for the plugin group.
func Commands() []*cobra.Command {
	return []*cobra.Command{NetworkCommand(), ServiceCommand()}
}

// clientFlags are the flags every admin command takes.
type clientFlags struct {
	admin  string
	asJSON bool
}

func (f *clientFlags) add(cmd *cobra.Command, persistent bool) {
	fs := cmd.Flags()
	if persistent {
		fs = cmd.PersistentFlags()
	}
	def := os.Getenv(EnvAdmin)
	if def == "" {
		def = DefaultAdmin
	}
	fs.StringVar(&f.admin, "admin", def, "admin API address of the node, HOST:PORT or unix:/path (env "+EnvAdmin+")")
	fs.BoolVar(&f.asJSON, "json", false, "print JSON instead of a table")
}

// call runs fn with a client of the admin API and explains what to do when
// the node cannot be reached.
func (f *clientFlags) call(cmd *cobra.Command, fn func(ctx context.Context, c *admin.Client) error) error {
	c, err := admin.Dial(f.admin)
	if err != nil {
		return fmt.Errorf("%w (set --admin or %s)", err, EnvAdmin)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(cmd.Context(), callTimeout)
	defer cancel()
	err = fn(ctx, c)
	switch {
	case errors.Is(err, admin.ErrUnreachable):
		return fmt.Errorf("%w (is `microhost run` running? set --admin or %s)", err, EnvAdmin)
	case errors.Is(err, context.DeadlineExceeded):
		return fmt.Errorf("the admin API at %s did not answer within %v (is `microhost run` running? set --admin or %s)", f.admin, callTimeout, EnvAdmin)
	}
	return err
}

// output prints v as JSON with --json, else as the table that table writes.
func (f *clientFlags) output(cmd *cobra.Command, v any, table func(w io.Writer)) error {
	if f.asJSON {
		return writeJSON(cmd.OutOrStdout(), v)
	}
	tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
	table(tw)
	return tw.Flush()
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// orDash shows an empty cell as "-", so that columns stay readable.
func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// nonNil makes an empty list print as [] rather than null.
func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}

func formatTime(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.Local().Format(time.RFC3339)
}

func formatDuration(d time.Duration) string {
	if d == 0 {
		return "-"
	}
	return d.String()
}
