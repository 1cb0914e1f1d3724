// Package admintest provides an in-memory admin.Node and a way to serve it,
// for tests of the admin API's clients (the CLI, sdk/register).
package admintest

import (
	"cmp"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/microhost/microhost/host/admin"
	"github.com/microhost/microhost/host/registry"
	"github.com/microhost/microhost/sdk"
)

// Node is an admin.Node whose services live in a real registry and whose
// network state is whatever the test puts in its fields. Set the fields
// before serving the node; they are read without locking.
type Node struct {
	NodeID      string
	NetworkName string
	Registry    *registry.Registry

	NodeList    []admin.NodeInfo
	Edges       []admin.Edge
	RouteTable  []sdk.Route
	LinkList    []sdk.Link
	PluginList  []admin.PluginStatus
	DampingList []sdk.DampingState
	Proxy       string
}

// New returns a node with an empty registry, closed when t ends.
func New(t testing.TB, id, network string, opts ...registry.Option) *Node {
	r := registry.New(opts...)
	t.Cleanup(r.Close)
	return &Node{NodeID: id, NetworkName: network, Registry: r}
}

func (n *Node) ID() string      { return n.NodeID }
func (n *Node) Network() string { return n.NetworkName }

func (n *Node) Nodes(context.Context) ([]admin.NodeInfo, error) { return n.NodeList, nil }

func (n *Node) Graph(context.Context) (admin.Graph, error) {
	return admin.Graph{Local: n.NodeID, Nodes: n.NodeList, Edges: n.Edges}, nil
}

// Routes filters the table like a router's Lookup: every non-empty field
// of q must match, lowest metric first, ErrNotFound for no match.
func (n *Node) Routes(_ context.Context, q sdk.Query) ([]sdk.Route, error) {
	var out []sdk.Route
	for _, r := range n.RouteTable {
		if matches(q.Service, r.Service) && matches(q.Address, r.Address) && matches(q.Gateway, r.Gateway) &&
			matches(q.Network, r.Network) && matches(q.Router, r.Router) && matches(q.Link, r.Link) {
			out = append(out, r)
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no route matches %+v: %w", q, sdk.ErrNotFound)
	}
	slices.SortStableFunc(out, func(a, b sdk.Route) int { return cmp.Compare(a.Metric, b.Metric) })
	return out, nil
}

func matches(want, got string) bool { return want == "" || want == got }

func (n *Node) Links(context.Context) ([]sdk.Link, error) { return n.LinkList, nil }

func (n *Node) Services(context.Context) ([]admin.ServiceInfo, error) { return n.Registry.List(), nil }

func (n *Node) Register(_ context.Context, svc sdk.Service, ttl time.Duration) error {
	return n.Registry.Register(svc, ttl)
}

func (n *Node) Deregister(_ context.Context, name, address string) error {
	return n.Registry.Deregister(name, address)
}

func (n *Node) Heartbeat(_ context.Context, name, address string) error {
	return n.Registry.Heartbeat(name, address)
}

func (n *Node) Plugins(context.Context) ([]admin.PluginStatus, error) { return n.PluginList, nil }

func (n *Node) Damping(context.Context) ([]sdk.DampingState, error) { return n.DampingList, nil }

func (n *Node) ProxyAddress(context.Context) (string, error) {
	if n.Proxy == "" {
		return "", fmt.Errorf("no proxy is configured: %w", sdk.ErrNotFound)
	}
	return n.Proxy, nil
}

// Serve serves node's admin API on a unix socket until t ends and returns
// its address ("unix:/tmp/..."). The socket sits in a short directory of
// its own: t.TempDir() paths can exceed the ~104 byte socket path limit.
func Serve(t testing.TB, node admin.Node) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "mh")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	addr := "unix:" + filepath.Join(dir, "admin.sock")
	lis, err := admin.Listen(addr)
	if err != nil {
		t.Fatal(err)
	}
	srv := admin.NewServer(node)
	done := make(chan struct{})
	go func() {
		defer close(done)
		srv.Serve(lis)
	}()
	t.Cleanup(func() {
		srv.Stop()
		<-done
	})
	return addr
}
