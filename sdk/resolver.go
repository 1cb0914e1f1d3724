package sdk

import "context"

// Resolver finds the addresses of peer nodes of a network.
type Resolver interface {
	Component
	// Resolve returns the nodes of network, lowest Priority first.
	Resolve(ctx context.Context, network string) ([]Node, error)
}

// Node is one peer address returned by a resolver.
type Node struct {
	Address  string `json:"address"` // host:port
	Priority int    `json:"priority"`
}
