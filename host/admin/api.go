// Package admin serves the node's admin API over gRPC (the microhost CLI
// and the sdk/register helper use it) and gives clients a typed Client.
// The server is a thin adapter over Node, which the host runtime implements.
package admin

import (
	"context"
	"time"

	"github.com/microhost/microhost/host/registry"
	"github.com/microhost/microhost/sdk"
)

// Node is what the admin API exposes of a running node.
type Node interface {
	ID() string
	Network() string
	// Nodes lists the nodes of the network graph, this one included.
	Nodes(ctx context.Context) ([]NodeInfo, error)
	// Graph returns the network graph as this node knows it.
	Graph(ctx context.Context) (Graph, error)
	Routes(ctx context.Context, q sdk.Query) ([]sdk.Route, error)
	// Links lists the tunnel's links to peers.
	Links(ctx context.Context) ([]sdk.Link, error)
	// Services lists the local registry, inactive instances included.
	Services(ctx context.Context) ([]ServiceInfo, error)
	Register(ctx context.Context, svc sdk.Service, ttl time.Duration) error
	// Deregister and Heartbeat return an error wrapping sdk.ErrNotFound
	// for an instance that is not registered.
	Deregister(ctx context.Context, name, address string) error
	Heartbeat(ctx context.Context, name, address string) error
	Plugins(ctx context.Context) ([]PluginStatus, error)
	Damping(ctx context.Context) ([]sdk.DampingState, error)
	// ProxyAddress is where gRPC clients reach the network through this node.
	ProxyAddress(ctx context.Context) (string, error)
}

// NodeInfo is one node of the network graph.
type NodeInfo struct {
	ID      string `json:"id"`
	Address string `json:"address,omitempty"` // its tunnel address, if known
	// Hops is the number of links from this node; 0 for this node.
	Hops int `json:"hops"`
	// Metric is the cost of the link to a neighbour; 0 for this node and for
	// nodes further away, whose links it does not measure.
	Metric int64 `json:"metric"`
	// Via is the neighbour the cheapest path goes through; "" for this node
	// and its neighbours.
	Via string `json:"via,omitempty"`
}

// Edge is a link between two nodes of the graph.
type Edge struct {
	From string `json:"from"`
	To   string `json:"to"`
	// Metric is the link's cost when it is one of this node's links, else 0.
	Metric int64 `json:"metric"`
}

// Graph is the network graph as seen from Local.
type Graph struct {
	Local string     `json:"local"`
	Nodes []NodeInfo `json:"nodes"`
	Edges []Edge     `json:"edges"`
}

// ServiceInfo is one instance of the local registry.
type ServiceInfo = registry.Instance

// PluginStatus is the state of one component instance.
type PluginStatus struct {
	Name string   `json:"name"` // instance name, e.g. "resolver.dns" or the name = "..." given
	Kind sdk.Kind `json:"kind"`
	Type string   `json:"type"`
	// PID is the plugin process, 0 for a standalone component at Address.
	PID     int    `json:"pid,omitempty"`
	Address string `json:"address,omitempty"`
	// State is e.g. "starting", "running", "restarting", "failed", "stopped".
	State     string    `json:"state"`
	Restarts  int       `json:"restarts"`
	LastError string    `json:"last_error,omitempty"`
	Since     time.Time `json:"since,omitzero"` // when it entered State
}
