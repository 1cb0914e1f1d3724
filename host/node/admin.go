package node

import (
	"context"
	"errors"
	"strings"
	"time"

	"github.com/microhost/microhost/host/admin"
	"github.com/microhost/microhost/sdk"
	"google.golang.org/grpc"
)

// adminServer serves the admin API, and the host's callbacks for
// standalone components, on the node's admin address.
type adminServer struct {
	address string
	server  *grpc.Server
}

func startAdmin(n *Node, addr string) (*adminServer, error) {
	ln, err := admin.Listen(addr)
	if err != nil {
		return nil, err
	}
	s := admin.NewServer(adminNode{n}, sdk.MessageSizeServerOptions()...)
	sdk.NewHostServer(n).Register(s)
	go s.Serve(ln)
	return &adminServer{address: addr, server: s}, nil
}

func (a *adminServer) stop() {
	done := make(chan struct{})
	go func() { a.server.GracefulStop(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		a.server.Stop()
	}
}

// adminNode is the node as the admin API sees it.
type adminNode struct{ n *Node }

var errRestarting = errors.New("the network protocol is restarting after a plugin restart; try again")

func (a adminNode) ID() string      { return a.n.id }
func (a adminNode) Network() string { return a.n.node.Network }

func (a adminNode) Nodes(ctx context.Context) ([]admin.NodeInfo, error) {
	g, err := a.Graph(ctx)
	return g.Nodes, err
}

func (a adminNode) Graph(context.Context) (admin.Graph, error) {
	nw := a.n.protocol()
	if nw == nil {
		return admin.Graph{}, errRestarting
	}
	costs := map[string]int64{}
	for _, p := range nw.Peers() {
		costs[p.ID] = p.Cost
	}
	g := nw.Graph()
	out := admin.Graph{Local: g.Root}
	for _, nd := range g.Nodes {
		info := admin.NodeInfo{ID: nd.ID, Address: nd.Address, Hops: nd.Hops}
		if nd.Hops == 1 {
			info.Metric = costs[nd.ID]
		}
		if nd.Hops > 1 && len(nd.Via) > 0 {
			info.Via = cheapest(nd.Via, costs)
		}
		out.Nodes = append(out.Nodes, info)
	}
	for _, e := range g.Edges {
		edge := admin.Edge{From: e.A, To: e.B}
		switch g.Root {
		case e.A:
			edge.Metric = costs[e.B]
		case e.B:
			edge.Metric = costs[e.A]
		}
		out.Edges = append(out.Edges, edge)
	}
	return out, nil
}

// cheapest is the neighbour of vias with the lowest link cost.
func cheapest(vias []string, costs map[string]int64) string {
	best := vias[0]
	for _, v := range vias[1:] {
		if costs[v] < costs[best] {
			best = v
		}
	}
	return best
}

func (a adminNode) Routes(ctx context.Context, q sdk.Query) ([]sdk.Route, error) {
	return a.n.Routes(ctx, q)
}

func (a adminNode) Links(ctx context.Context) ([]sdk.Link, error) { return a.n.tunnel.Links(ctx) }

func (a adminNode) Services(context.Context) ([]admin.ServiceInfo, error) {
	return a.n.registry.List(), nil
}

func (a adminNode) Register(_ context.Context, svc sdk.Service, ttl time.Duration) error {
	return a.n.registry.Register(svc, ttl)
}

func (a adminNode) Deregister(_ context.Context, name, address string) error {
	return a.n.registry.Deregister(name, address)
}

func (a adminNode) Heartbeat(_ context.Context, name, address string) error {
	return a.n.registry.Heartbeat(name, address)
}

func (a adminNode) Plugins(context.Context) ([]admin.PluginStatus, error) {
	var out []admin.PluginStatus
	for _, inst := range a.n.sup.Instances() {
		st := inst.Status()
		spec := inst.Spec()
		ps := admin.PluginStatus{
			Name: st.Name, Kind: st.Kind, Type: strings.TrimPrefix(spec.Builtin, string(spec.Kind)+"-"),
			PID: st.PID, Address: spec.Address, State: string(st.State), Restarts: st.Restarts,
			LastError: st.LastErr, Since: st.Since,
		}
		if spec.Path != "" {
			ps.Type = spec.Path
		}
		out = append(out, ps)
	}
	return out, nil
}

func (a adminNode) Damping(ctx context.Context) ([]sdk.DampingState, error) {
	return a.n.router.Damping(ctx)
}

func (a adminNode) ProxyAddress(ctx context.Context) (string, error) { return a.n.ProxyAddress(ctx) }

// Routes looks routes up in the router; an empty query lists them all.
func (n *Node) Routes(ctx context.Context, q sdk.Query) ([]sdk.Route, error) {
	if q == (sdk.Query{}) {
		return n.router.List(ctx)
	}
	return n.router.Lookup(ctx, q)
}

// ProxyAddress is where gRPC clients reach the network through this node.
func (n *Node) ProxyAddress(ctx context.Context) (string, error) {
	if n.proxy == nil {
		return "", errors.New("this node runs no proxy: add a proxy \"rpc\" { } block")
	}
	return n.proxy.Address(ctx)
}
