package sdk

import (
	"context"
	"hash/fnv"
	"time"
)

// Router keeps the routing table and produces and consumes adverts.
type Router interface {
	Component
	Create(ctx context.Context, r Route) error
	Update(ctx context.Context, r Route) error
	Delete(ctx context.Context, r Route) error
	List(ctx context.Context) ([]Route, error)
	// Lookup returns the routes matching every non-empty field of q, lowest
	// metric first, or an error wrapping ErrNotFound.
	Lookup(ctx context.Context, q Query) ([]Route, error)
	// Watch streams the table: first a Resync event holding every route,
	// then each change. A watcher that falls behind gets a Resync again.
	Watch(ctx context.Context) (Watcher, error)
	// Advertise streams the adverts this node sends to its peers.
	Advertise(ctx context.Context) (AdvertStream, error)
	// Process applies an advert received from a peer.
	Process(ctx context.Context, a *Advert) error
	// Solicit returns a full-table advert for a new peer.
	Solicit(ctx context.Context) (*Advert, error)
	// Damping lists the routes that carry a flap penalty.
	Damping(ctx context.Context) ([]DampingState, error)
}

// Link values of a Route.
const (
	LinkLocal   = "local"
	LinkNetwork = "network"
)

// Route says how to reach one instance of a service.
type Route struct {
	Service string `json:"service"`
	Address string `json:"address"` // instance address; masked by the origin when advertised
	Gateway string `json:"gateway"` // next-hop node id; "" for a local route
	Network string `json:"network"`
	Router  string `json:"router"` // origin node id
	Link    string `json:"link"`   // LinkLocal or LinkNetwork
	Metric  int64  `json:"metric"`
	// Seq is the origin's sequence number for this route; newer wins.
	Seq uint64 `json:"seq"`
	// Path lists the node ids the route travelled, origin first.
	Path []string `json:"path,omitempty"`
	// Expires is when a learned route lapses unless refreshed; zero never.
	Expires time.Time `json:"expires,omitzero"`
	// Endpoints are the gRPC service names the instance serves.
	Endpoints []string          `json:"endpoints,omitempty"`
	Metadata  map[string]string `json:"metadata,omitempty"`
}

// Hash identifies a route; it deliberately leaves out the metric, so that a
// metric change is an update of the same route.
func (r Route) Hash() uint64 {
	h := fnv.New64a()
	for _, s := range []string{r.Service, r.Address, r.Gateway, r.Network, r.Router, r.Link} {
		h.Write([]byte(s))
		h.Write([]byte{0})
	}
	return h.Sum64()
}

// Query selects routes; empty fields match anything.
type Query struct {
	Service string
	Address string
	Gateway string
	Network string
	Router  string
	Link    string
}

// EventType says what happened to a route.
type EventType int

const (
	Create EventType = iota
	Update
	Delete
	// Resync tells a watcher that fell behind that events were lost; Snapshot
	// holds the whole table to start again from.
	Resync
)

func (t EventType) String() string {
	switch t {
	case Create:
		return "create"
	case Update:
		return "update"
	case Delete:
		return "delete"
	case Resync:
		return "resync"
	}
	return "unknown"
}

// Event is a change to the routing table.
type Event struct {
	Type      EventType
	Timestamp time.Time
	Route     Route
	Snapshot  []Route // only for Resync
}

// Watcher yields table events until ctx ends or Stop.
type Watcher interface {
	Next(ctx context.Context) (Event, error)
	Stop()
}

// AdvertType says how to apply an advert.
type AdvertType int

const (
	// Announce carries a batch of events.
	Announce AdvertType = iota
	// Sync carries the full set of routes of Origin: whatever of Origin's the
	// receiver has that is not in it is withdrawn.
	Sync
)

// Advert is what routers exchange.
type Advert struct {
	ID        string // advertising node id (authenticated by the tunnel)
	Type      AdvertType
	Origin    string // for Sync: whose routes the snapshot replaces
	Timestamp time.Time
	TTL       time.Duration // learned routes expire after this unless refreshed
	Events    []Event
}

// AdvertStream yields adverts to send to peers.
type AdvertStream interface {
	Next(ctx context.Context) (*Advert, error)
	Stop()
}

// DampingState is the flap-damping state of one route.
type DampingState struct {
	Route      Route     `json:"route"`
	Penalty    float64   `json:"penalty"`
	Flaps      int       `json:"flaps"`
	Suppressed bool      `json:"suppressed"`
	Since      time.Time `json:"since,omitzero"` // when suppression began
}
