package cli

import (
	"context"
	"fmt"
	"io"
	"strconv"

	"github.com/microhost/microhost/host/admin"
	"github.com/spf13/cobra"
)

// PluginStatusCommand is `status`, for the `microhost plugin` group: the
// state of each component instance of a running node.
func PluginStatusCommand() *cobra.Command {
	var f clientFlags
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show the state of each plugin of a running node",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return f.call(cmd, func(ctx context.Context, c *admin.Client) error {
				plugins, err := c.Plugins(ctx)
				if err != nil {
					return err
				}
				return f.output(cmd, nonNil(plugins), func(w io.Writer) {
					fmt.Fprintln(w, "NAME\tKIND\tTYPE\tPROCESS\tSTATE\tSINCE\tRESTARTS\tLAST ERROR")
					for _, p := range plugins {
						process := p.Address // a standalone component
						if p.PID != 0 {
							process = "pid " + strconv.Itoa(p.PID)
						}
						fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%d\t%s\n", p.Name, p.Kind, p.Type, orDash(process),
							p.State, formatTime(p.Since), p.Restarts, orDash(p.LastError))
					}
				})
			})
		},
	}
	f.add(cmd, false)
	return cmd
}
