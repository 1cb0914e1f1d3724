package cli

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/microhost/microhost/host/admin"
	"github.com/microhost/microhost/sdk"
	"github.com/spf13/cobra"
)

// ServiceCommand is `microhost service`: the node's local registry.
func ServiceCommand() *cobra.Command {
	var f clientFlags
	cmd := &cobra.Command{
		Use:   "service",
		Short: "Register, deregister and list the services of a running node",
	}
	f.add(cmd, true)
	cmd.AddCommand(
		registerCommand(&f),
		deregisterCommand(&f),
		heartbeatCommand(&f),
		servicesCommand(&f, "list", "List the services registered with this node"),
	)
	return cmd
}

func servicesCommand(f *clientFlags, use, short string) *cobra.Command {
	return &cobra.Command{
		Use:   use,
		Short: short,
		Long: short + `. Services come from the admin API ("api", kept while
they heartbeat within their ttl) or from service blocks in the config
("static", registered while their health check passes).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return f.call(cmd, func(ctx context.Context, c *admin.Client) error {
				svcs, err := c.Services(ctx)
				if err != nil {
					return err
				}
				return f.output(cmd, nonNil(svcs), func(w io.Writer) {
					fmt.Fprintln(w, "NAME\tADDRESS\tENDPOINTS\tSOURCE\tHEALTH\tTTL\tEXPIRES")
					for _, s := range svcs {
						health := string(s.Health)
						if s.LastError != "" {
							health += ": " + s.LastError
						}
						fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", s.Name, s.Address, orDash(strings.Join(s.Endpoints, ",")),
							s.Source, health, formatDuration(s.TTL), formatTime(s.Expires))
					}
				})
			})
		},
	}
}

func registerCommand(f *clientFlags) *cobra.Command {
	var (
		address   string
		endpoints []string
		metadata  map[string]string
		ttl       time.Duration
	)
	cmd := &cobra.Command{
		Use:   "register NAME --address HOST:PORT",
		Short: "Register a service instance with the node",
		Long: `Register a service instance with the node. Without --ttl it stays until
deregistered. With --ttl it is removed unless something heartbeats within
every ttl ("microhost service heartbeat", or the sdk/register Go helper).
Registering the same NAME and address again updates it.`,
		Example: `  microhost service register greeter --address 127.0.0.1:50051 --endpoint helloworld.Greeter`,
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			svc := sdk.Service{Name: args[0], Address: address, Endpoints: endpoints, Metadata: metadata}
			return f.call(cmd, func(ctx context.Context, c *admin.Client) error {
				if err := c.Register(ctx, svc, ttl); err != nil {
					return err
				}
				if f.asJSON {
					return writeJSON(cmd.OutOrStdout(), map[string]any{"registered": svc, "ttl": ttl.String()})
				}
				msg := fmt.Sprintf("registered %s at %s", svc.Name, svc.Address)
				if ttl > 0 {
					msg += fmt.Sprintf(" (ttl %v: heartbeat or it expires)", ttl)
				}
				_, err := fmt.Fprintln(cmd.OutOrStdout(), msg)
				return err
			})
		},
	}
	cmd.Flags().StringVar(&address, "address", "", "HOST:PORT where the instance serves gRPC (required)")
	cmd.Flags().StringArrayVar(&endpoints, "endpoint", nil, "gRPC service name the instance serves, e.g. helloworld.Greeter (repeatable)")
	cmd.Flags().StringToStringVar(&metadata, "metadata", nil, "KEY=VALUE metadata (repeatable)")
	cmd.Flags().DurationVar(&ttl, "ttl", 0, "remove the instance unless it heartbeats within this long; 0 keeps it")
	cmd.MarkFlagRequired("address")
	return cmd
}

func deregisterCommand(f *clientFlags) *cobra.Command {
	return instanceCommand(f, "deregister", "Remove a service instance registered through the API", "deregistered",
		func(ctx context.Context, c *admin.Client, name, address string) error {
			return c.Deregister(ctx, name, address)
		})
}

func heartbeatCommand(f *clientFlags) *cobra.Command {
	return instanceCommand(f, "heartbeat", "Postpone the expiry of a service instance registered with --ttl", "refreshed",
		func(ctx context.Context, c *admin.Client, name, address string) error {
			return c.Heartbeat(ctx, name, address)
		})
}

// instanceCommand is a command acting on one instance: NAME --address A.
func instanceCommand(f *clientFlags, use, short, done string, act func(ctx context.Context, c *admin.Client, name, address string) error) *cobra.Command {
	var address string
	cmd := &cobra.Command{
		Use:   use + " NAME --address HOST:PORT",
		Short: short,
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return f.call(cmd, func(ctx context.Context, c *admin.Client) error {
				if err := act(ctx, c, args[0], address); err != nil {
					return err
				}
				if f.asJSON {
					return writeJSON(cmd.OutOrStdout(), map[string]string{done: args[0], "address": address})
				}
				_, err := fmt.Fprintf(cmd.OutOrStdout(), "%s %s at %s\n", done, args[0], address)
				return err
			})
		},
	}
	cmd.Flags().StringVar(&address, "address", "", "HOST:PORT of the instance (required)")
	cmd.MarkFlagRequired("address")
	return cmd
}
