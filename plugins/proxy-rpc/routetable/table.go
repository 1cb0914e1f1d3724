// Package routetable is the proxy's local copy of the routing table: it is
// fed by a router watch and answers, without any call to the router, which
// routes serve the service a call is addressed to.
package routetable

import (
	"cmp"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/microhost/microhost/sdk"
)

// Errors Resolve wraps, so that callers can map them to status codes.
var (
	// ErrUnknownService: no route names the service the call asked for.
	ErrUnknownService = errors.New("unknown service")
	// ErrNoRoute: the service is known but none of its routes is usable.
	ErrNoRoute = errors.New("no usable route")
)

// Table holds routes by service. It is safe for concurrent use.
type Table struct {
	mu        sync.RWMutex
	routes    map[uint64]sdk.Route
	byService map[string][]sdk.Route // lowest metric first
	// byEndpoint maps a gRPC service name to the services that serve it.
	byEndpoint map[string][]string

	// rotation spreads calls over routes of equal metric.
	rotation atomic.Uint64
}

// New returns an empty table.
func New() *Table {
	t := &Table{}
	t.reset()
	return t
}

func (t *Table) reset() {
	t.routes = make(map[uint64]sdk.Route)
	t.byService = make(map[string][]sdk.Route)
	t.byEndpoint = make(map[string][]string)
}

// Apply applies one watch event. Resync replaces the whole table with the
// event's snapshot.
func (t *Table) Apply(ev sdk.Event) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	switch ev.Type {
	case sdk.Create, sdk.Update:
		t.routes[ev.Route.Hash()] = ev.Route
	case sdk.Delete:
		delete(t.routes, ev.Route.Hash())
	case sdk.Resync:
		t.reset()
		for _, r := range ev.Snapshot {
			t.routes[r.Hash()] = r
		}
	default:
		return fmt.Errorf("route event of unknown type %d", int(ev.Type))
	}
	t.reindex()
	return nil
}

// Replace swaps in a whole new set of routes.
func (t *Table) Replace(routes []sdk.Route) {
	_ = t.Apply(sdk.Event{Type: sdk.Resync, Snapshot: routes})
}

// reindex rebuilds the lookup indexes; route changes are rare next to
// lookups, so lookups get the precomputed, sorted answer.
func (t *Table) reindex() {
	t.byService = make(map[string][]sdk.Route)
	endpoints := make(map[string]map[string]bool)
	for _, r := range t.routes {
		t.byService[r.Service] = append(t.byService[r.Service], r)
		for _, e := range r.Endpoints {
			if endpoints[e] == nil {
				endpoints[e] = make(map[string]bool)
			}
			endpoints[e][r.Service] = true
		}
	}
	for _, rs := range t.byService {
		slices.SortFunc(rs, compareRoutes)
	}
	t.byEndpoint = make(map[string][]string, len(endpoints))
	for e, set := range endpoints {
		names := make([]string, 0, len(set))
		for s := range set {
			names = append(names, s)
		}
		slices.Sort(names)
		t.byEndpoint[e] = names
	}
}

// compareRoutes orders by metric, then local before remote, then by a stable
// key so that the order does not depend on map iteration.
func compareRoutes(a, b sdk.Route) int {
	if c := cmp.Compare(a.Metric, b.Metric); c != 0 {
		return c
	}
	if c := cmp.Compare(linkRank(a.Link), linkRank(b.Link)); c != 0 {
		return c
	}
	return cmp.Or(cmp.Compare(a.Address, b.Address), cmp.Compare(a.Gateway, b.Gateway), cmp.Compare(a.Router, b.Router))
}

func linkRank(link string) int {
	if link == sdk.LinkLocal {
		return 0
	}
	return 1
}

// Routes returns every route in the table.
func (t *Table) Routes() []sdk.Route {
	t.mu.RLock()
	defer t.mu.RUnlock()
	out := make([]sdk.Route, 0, len(t.routes))
	for _, r := range t.routes {
		out = append(out, r)
	}
	return out
}

// Target says what a call is addressed to, as the proxy sees it.
type Target struct {
	// Service is the explicit service name (the micro-service metadata).
	Service string
	// Authority is the :authority of the call (host or host:port).
	Authority string
	// Method is the full gRPC method, "/pkg.Service/Method".
	Method string
}

// Resolution is the answer for one call.
type Resolution struct {
	Service string
	// Routes are the usable routes, the one to try first at index 0.
	Routes []sdk.Route
}

// Resolve picks the service a call is for and its usable routes: the
// explicit service name if given, else the authority's host if it names a
// known service, else the service whose endpoints include the method's gRPC
// service name (or a service that is named like it).
func (t *Table) Resolve(target Target) (Resolution, error) {
	t.mu.RLock()
	defer t.mu.RUnlock()

	service, err := t.pickService(target)
	if err != nil {
		return Resolution{}, err
	}
	routes := t.usable(t.byService[service])
	if len(routes) == 0 {
		return Resolution{}, fmt.Errorf("%w for service %q: all %d of its routes lack an address or gateway", ErrNoRoute, service, len(t.byService[service]))
	}
	t.rotateEqual(routes)
	return Resolution{Service: service, Routes: routes}, nil
}

func (t *Table) pickService(target Target) (string, error) {
	if target.Service != "" {
		if _, ok := t.byService[target.Service]; !ok {
			return "", fmt.Errorf("%w %q (asked for by micro-service metadata)", ErrUnknownService, target.Service)
		}
		return target.Service, nil
	}
	if host := authorityHost(target.Authority); host != "" {
		if _, ok := t.byService[host]; ok {
			return host, nil
		}
	}
	grpcService, ok := MethodService(target.Method)
	if !ok {
		return "", fmt.Errorf("%w: method %q is not of the form /package.Service/Method and authority %q names no known service", ErrUnknownService, target.Method, target.Authority)
	}
	if services := t.byEndpoint[grpcService]; len(services) > 0 {
		return services[0], nil
	}
	if _, ok := t.byService[grpcService]; ok {
		return grpcService, nil
	}
	return "", fmt.Errorf("%w: no service is named %q or serves gRPC service %q (method %s)", ErrUnknownService, authorityHost(target.Authority), grpcService, target.Method)
}

// usable filters out routes that lack the address or gateway a call
// needs. Expiry is the router's business: it withdraws a route that
// expires, while a sync that renews one only moves its expiry in the
// router's table and tells no watcher, so the Expires a watcher holds is
// that of the route's first advert.
func (t *Table) usable(routes []sdk.Route) []sdk.Route {
	out := make([]sdk.Route, 0, len(routes))
	for _, r := range routes {
		switch r.Link {
		case sdk.LinkNetwork:
			if r.Gateway == "" {
				continue
			}
		default:
			if r.Address == "" {
				continue
			}
		}
		out = append(out, r)
	}
	return out
}

// rotateEqual rotates the leading group of routes that share the best
// metric, so that successive calls spread over equal instances.
func (t *Table) rotateEqual(routes []sdk.Route) {
	n := 1
	for n < len(routes) && compareRank(routes[0], routes[n]) == 0 {
		n++
	}
	if n < 2 {
		return
	}
	k := int(t.rotation.Add(1) % uint64(n))
	slices.Reverse(routes[:k])
	slices.Reverse(routes[k:n])
	slices.Reverse(routes[:n])
}

func compareRank(a, b sdk.Route) int {
	return cmp.Or(cmp.Compare(a.Metric, b.Metric), cmp.Compare(linkRank(a.Link), linkRank(b.Link)))
}

// MethodService returns the gRPC service name of a full method name:
// "/pkg.Service/Method" gives "pkg.Service".
func MethodService(method string) (string, bool) {
	rest, ok := strings.CutPrefix(method, "/")
	if !ok {
		return "", false
	}
	service, name, ok := strings.Cut(rest, "/")
	if !ok || service == "" || name == "" || strings.Contains(name, "/") {
		return "", false
	}
	return service, true
}

// authorityHost returns the host part of an authority.
func authorityHost(authority string) string {
	if host, _, err := net.SplitHostPort(authority); err == nil {
		return host
	}
	return authority
}

// Targets returns what the routes point at: the instance addresses of local
// routes and the gateway node ids of remote ones. Connections to anything
// else are no longer needed.
func (t *Table) Targets() (addresses, gateways map[string]bool) {
	t.mu.RLock()
	defer t.mu.RUnlock()
	addresses = make(map[string]bool)
	gateways = make(map[string]bool)
	for _, r := range t.routes {
		if r.Link == sdk.LinkNetwork {
			gateways[r.Gateway] = true
		} else {
			addresses[r.Address] = true
		}
	}
	return addresses, gateways
}
