package sdk

import "context"

// Host is what a component can ask of the host it runs under.
type Host interface {
	// WatchServices streams the local registry: first one Create per
	// registered instance, then changes.
	WatchServices(ctx context.Context) (ServiceWatcher, error)
	// WatchRoutes streams the routing table as Router.Watch does: first a
	// Resync holding every route, then each change.
	WatchRoutes(ctx context.Context) (Watcher, error)
	// Tunnel returns a client of the tunnel's data path: sessions on direct
	// local connections to the tunnel plugin, no byte of which passes through
	// the host. It carries sessions only (Dial, Listen); closing it closes
	// the sessions and listeners opened through it.
	Tunnel(ctx context.Context) (Tunnel, error)
}

// Service is one registered instance of a service.
type Service struct {
	Name      string            `json:"name"`
	Address   string            `json:"address"`
	Endpoints []string          `json:"endpoints,omitempty"` // gRPC service names
	Metadata  map[string]string `json:"metadata,omitempty"`
}

// ServiceEvent is a change to the local registry.
type ServiceEvent struct {
	Type    EventType // Create, Update or Delete
	Service Service
}

// ServiceWatcher yields registry events.
type ServiceWatcher interface {
	Next(ctx context.Context) (ServiceEvent, error)
	Stop()
}
