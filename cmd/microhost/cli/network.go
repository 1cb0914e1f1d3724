package cli

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"

	"github.com/microhost/microhost/host/admin"
	"github.com/microhost/microhost/sdk"
	"github.com/spf13/cobra"
)

// NetworkCommand is `microhost network`: what a node knows of its network.
func NetworkCommand() *cobra.Command {
	var f clientFlags
	cmd := &cobra.Command{
		Use:   "network",
		Short: "Show the network as a running node sees it",
	}
	f.add(cmd, true)
	cmd.AddCommand(
		nodesCommand(&f),
		routesCommand(&f),
		servicesCommand(&f, "services", "List the services registered with this node"),
		connectionsCommand(&f),
		graphCommand(&f),
		dampingCommand(&f),
	)
	return cmd
}

func nodesCommand(f *clientFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "nodes",
		Short: "List the nodes of the network, nearest first",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return f.call(cmd, func(ctx context.Context, c *admin.Client) error {
				nodes, err := c.Nodes(ctx)
				if err != nil {
					return err
				}
				slices.SortStableFunc(nodes, func(a, b admin.NodeInfo) int {
					return cmp.Or(cmp.Compare(a.Hops, b.Hops), cmp.Compare(a.Metric, b.Metric), strings.Compare(a.ID, b.ID))
				})
				return f.output(cmd, nonNil(nodes), func(w io.Writer) {
					fmt.Fprintln(w, "ID\tADDRESS\tHOPS\tMETRIC\tVIA")
					for _, n := range nodes {
						fmt.Fprintf(w, "%s\t%s\t%d\t%s\t%s\n", n.ID, orDash(n.Address), n.Hops, metricText(n.Metric), orDash(n.Via))
					}
				})
			})
		},
	}
}

func routesCommand(f *clientFlags) *cobra.Command {
	var service string
	cmd := &cobra.Command{
		Use:   "routes",
		Short: "List the routing table, cheapest route of each service first",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return f.call(cmd, func(ctx context.Context, c *admin.Client) error {
				routes, err := c.Routes(ctx, sdk.Query{Service: service})
				if err != nil {
					return err
				}
				slices.SortStableFunc(routes, func(a, b sdk.Route) int {
					return cmp.Or(strings.Compare(a.Service, b.Service), cmp.Compare(a.Metric, b.Metric), strings.Compare(a.Address, b.Address))
				})
				return f.output(cmd, nonNil(routes), func(w io.Writer) {
					fmt.Fprintln(w, "SERVICE\tADDRESS\tGATEWAY\tROUTER\tNETWORK\tLINK\tMETRIC")
					for _, r := range routes {
						fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%d\n", r.Service, r.Address, orDash(r.Gateway), r.Router, r.Network, r.Link, r.Metric)
					}
				})
			})
		},
	}
	cmd.Flags().StringVar(&service, "service", "", "only the routes of this service")
	return cmd
}

func connectionsCommand(f *clientFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "connections",
		Short: "List this node's links to its peers",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return f.call(cmd, func(ctx context.Context, c *admin.Client) error {
				links, err := c.Links(ctx)
				if err != nil {
					return err
				}
				slices.SortStableFunc(links, func(a, b sdk.Link) int { return strings.Compare(a.Peer, b.Peer) })
				return f.output(cmd, nonNil(links), func(w io.Writer) {
					fmt.Fprintln(w, "PEER\tADDRESS\tDIRECTION\tSTATE\tRTT\tMIN RTT\tBYTES IN\tBYTES OUT\tERRORS\tDROPS")
					for _, l := range links {
						dir := "in"
						if l.Outbound {
							dir = "out"
						}
						fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%d\t%d\t%d\t%d\n", orDash(l.Peer), l.Address, dir, l.State,
							formatDuration(l.RTT), formatDuration(l.MinRTT), l.BytesIn, l.BytesOut, l.Errors, l.Drops)
					}
				})
			})
		},
	}
}

func dampingCommand(f *clientFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "damping",
		Short: "List the routes that carry a flap penalty",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return f.call(cmd, func(ctx context.Context, c *admin.Client) error {
				states, err := c.Damping(ctx)
				if err != nil {
					return err
				}
				slices.SortStableFunc(states, func(a, b sdk.DampingState) int { return cmp.Compare(b.Penalty, a.Penalty) })
				return f.output(cmd, nonNil(states), func(w io.Writer) {
					fmt.Fprintln(w, "SERVICE\tADDRESS\tROUTER\tPENALTY\tFLAPS\tSUPPRESSED\tSINCE")
					for _, d := range states {
						suppressed := "no"
						if d.Suppressed {
							suppressed = "yes"
						}
						fmt.Fprintf(w, "%s\t%s\t%s\t%.0f\t%d\t%s\t%s\n", d.Route.Service, d.Route.Address, d.Route.Router,
							d.Penalty, d.Flaps, suppressed, formatTime(d.Since))
					}
				})
			})
		},
	}
}

func graphCommand(f *clientFlags) *cobra.Command {
	var format string
	cmd := &cobra.Command{
		Use:   "graph",
		Short: "Show the network graph as a table, as Graphviz DOT or as JSON",
		Example: `  microhost network graph
  microhost network graph --format dot | dot -Tsvg > network.svg`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if f.asJSON {
				format = "json"
			}
			if format != "table" && format != "dot" && format != "json" {
				return fmt.Errorf("--format %q: want table, dot or json", format)
			}
			return f.call(cmd, func(ctx context.Context, c *admin.Client) error {
				g, err := c.Graph(ctx)
				if err != nil {
					return err
				}
				switch format {
				case "json":
					g.Nodes, g.Edges = nonNil(g.Nodes), nonNil(g.Edges)
					return writeJSON(cmd.OutOrStdout(), g)
				case "dot":
					_, err := io.WriteString(cmd.OutOrStdout(), graphDOT(g))
					return err
				}
				return f.output(cmd, g, func(w io.Writer) { graphTable(w, g) })
			})
		},
	}
	cmd.Flags().StringVar(&format, "format", "table", "table, dot or json")
	return cmd
}

// undirected folds a→b and b→a into one edge with the lower metric: links
// are symmetric, but each end measures its own metric.
func undirected(edges []admin.Edge) []admin.Edge {
	best := make(map[[2]string]int64)
	for _, e := range edges {
		k := [2]string{min(e.From, e.To), max(e.From, e.To)}
		// 0 is an unknown metric: any known one is better.
		if m, ok := best[k]; !ok || m == 0 || (e.Metric != 0 && e.Metric < m) {
			best[k] = e.Metric
		}
	}
	out := make([]admin.Edge, 0, len(best))
	for k, m := range best {
		out = append(out, admin.Edge{From: k[0], To: k[1], Metric: m})
	}
	slices.SortFunc(out, func(a, b admin.Edge) int {
		return cmp.Or(strings.Compare(a.From, b.From), strings.Compare(a.To, b.To))
	})
	return out
}

// graphNodes lists every node id of g, those only named by an edge too.
func graphNodes(g admin.Graph) []string {
	seen := map[string]bool{}
	var ids []string
	add := func(id string) {
		if id != "" && !seen[id] {
			seen[id] = true
			ids = append(ids, id)
		}
	}
	add(g.Local)
	for _, n := range g.Nodes {
		add(n.ID)
	}
	for _, e := range g.Edges {
		add(e.From)
		add(e.To)
	}
	slices.Sort(ids)
	return ids
}

// metricText shows a link metric; 0 means this node does not know it (the
// link is not one of its own).
func metricText(m int64) string {
	if m == 0 {
		return "-"
	}
	return strconv.FormatInt(m, 10)
}

func graphTable(w io.Writer, g admin.Graph) {
	peers := map[string][]string{}
	for _, e := range undirected(g.Edges) {
		peers[e.From] = append(peers[e.From], fmt.Sprintf("%s (%s)", e.To, metricText(e.Metric)))
		peers[e.To] = append(peers[e.To], fmt.Sprintf("%s (%s)", e.From, metricText(e.Metric)))
	}
	fmt.Fprintln(w, "NODE\tPEERS (METRIC)")
	for _, id := range graphNodes(g) {
		name := id
		if id == g.Local {
			name += " (local)"
		}
		p := peers[id]
		slices.Sort(p)
		fmt.Fprintf(w, "%s\t%s\n", name, orDash(strings.Join(p, ", ")))
	}
}

// graphDOT renders g in Graphviz DOT, as an undirected graph with the
// metric on each edge and the local node in bold.
func graphDOT(g admin.Graph) string {
	var b strings.Builder
	b.WriteString("graph network {\n")
	for _, id := range graphNodes(g) {
		if id == g.Local {
			fmt.Fprintf(&b, "  %s [style=bold];\n", dotQuote(id))
		} else {
			fmt.Fprintf(&b, "  %s;\n", dotQuote(id))
		}
	}
	for _, e := range undirected(g.Edges) {
		if e.Metric == 0 {
			fmt.Fprintf(&b, "  %s -- %s;\n", dotQuote(e.From), dotQuote(e.To))
			continue
		}
		fmt.Fprintf(&b, "  %s -- %s [label=%s];\n", dotQuote(e.From), dotQuote(e.To), dotQuote(strconv.FormatInt(e.Metric, 10)))
	}
	b.WriteString("}\n")
	return b.String()
}

// dotQuote makes s a DOT quoted string, whose only escape is \".
func dotQuote(s string) string {
	s = strings.NewReplacer(`"`, `\"`, "\n", " ").Replace(s)
	return `"` + s + `"`
}
