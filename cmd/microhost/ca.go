package main

import (
	"fmt"
	"net"

	"github.com/microhost/microhost/sdk/pki"
	"github.com/spf13/cobra"
)

func caCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "ca",
		Short: "Create a network's certificate authority and issue node certificates",
	}
	var dir string
	initCmd := &cobra.Command{
		Use:   "init",
		Short: "Create a CA: DIR/ca.pem and DIR/ca-key.pem",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if _, err := pki.InitCA(dir); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "CA written to %s/%s (keep %s/%s secret)\n", dir, pki.CAFile, dir, pki.CAKeyFile)
			return nil
		},
	}
	var id string
	var dnsNames, ips []string
	issue := &cobra.Command{
		Use:   "issue",
		Short: "Issue a node certificate: DIR/NODE.pem and DIR/NODE-key.pem",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var parsed []net.IP
			for _, s := range ips {
				ip := net.ParseIP(s)
				if ip == nil {
					return fmt.Errorf("--ip %q is not an IP address", s)
				}
				parsed = append(parsed, ip)
			}
			cert, key, err := pki.Issue(dir, id, dnsNames, parsed)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "node %s: certificate %s, key %s\n", id, cert, key)
			return nil
		},
	}
	for _, c := range []*cobra.Command{initCmd, issue} {
		c.Flags().StringVar(&dir, "dir", "certs", "directory of the CA and certificates")
	}
	issue.Flags().StringVar(&id, "id", "", "node id to put in the certificate (required)")
	issue.Flags().StringSliceVar(&dnsNames, "dns", nil, "DNS name the node is reached at (repeatable)")
	issue.Flags().StringSliceVar(&ips, "ip", nil, "IP address the node is reached at (repeatable)")
	issue.MarkFlagRequired("id")
	cmd.AddCommand(initCmd, issue)
	return cmd
}
