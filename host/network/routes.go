package network

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"slices"
	"time"

	"github.com/microhost/microhost/sdk"
)

// routeKey names one instance of a service the same way on every node: the
// gateway, which differs per node, is not part of it.
type routeKey struct{ service, address, router string }

func keyOf(r sdk.Route) routeKey { return routeKey{r.Service, r.Address, r.Router} }

// maskAddress hides the address of a local instance from other nodes. What
// peers see is an opaque key, unique per instance, so that one instance can
// be withdrawn without touching the others. A remote caller needs no
// address: its proxy sends the call to the route's Gateway node over the
// tunnel, and the proxies on the way forward it towards Router, whose proxy
// picks a local instance of the service.
func maskAddress(node, address string) string {
	h := fnv.New64a()
	h.Write([]byte(node))
	h.Write([]byte{0})
	h.Write([]byte(address))
	return fmt.Sprintf("%s#%016x", node, h.Sum64())
}

// forPeers turns a route of this node's table into what peers are told.
// Routes this node originates are its local instances: their addresses are
// masked. The receiver sets gateway, link and expiry itself.
func (n *Node) forPeers(r sdk.Route) sdk.Route {
	if r.Router == n.cfg.NodeID {
		r.Address = maskAddress(n.cfg.NodeID, r.Address)
	}
	if len(r.Path) == 0 {
		r.Path = []string{r.Router}
	}
	r.Network = n.cfg.Network
	r.Metric = max(r.Metric, 1)
	r.Gateway, r.Link, r.Expires = "", "", time.Time{}
	return r
}

// outbound rewrites an advert of the router into what peers are told. It
// returns nil when there is nothing to send.
func (n *Node) outbound(a *sdk.Advert) *sdk.Advert {
	out := &sdk.Advert{ID: n.cfg.NodeID, Type: a.Type, Origin: a.Origin, Timestamp: a.Timestamp, TTL: a.TTL}
	n.mu.Lock()
	for _, e := range collapse(a.Events) {
		if _, closed := n.tombstones[e.Route.Router]; (closed || n.leaving[e.Route.Router] != nil) && e.Type == sdk.Delete {
			// We passed the origin's close on to every peer: they dropped
			// its routes through us already.
			continue
		}
		e.Route = n.forPeers(e.Route)
		if w, ok := n.withdrawn[keyOf(e.Route)]; ok && e.Type == sdk.Delete && w.seq > e.Route.Seq {
			e.Route.Seq = w.seq
		}
		out.Events = append(out.Events, e)
	}
	n.mu.Unlock()
	if out.Type == sdk.Announce && len(out.Events) == 0 {
		return nil
	}
	return out
}

// collapse keeps one event per instance. A receiver installs every route it
// hears from us with us as the gateway, so two of our routes to one instance
// (through two neighbours) would collide there, and withdrawing the worse
// one would withdraw both: peers must hear only our best route to each
// instance, and a delete only when no route to it is left in the advert.
// Routers that already advertise that way (router-memory does) pass through
// unchanged.
func collapse(events []sdk.Event) []sdk.Event {
	type entry struct {
		event   sdk.Event
		present bool // a create or update was seen, so deletes are moot
	}
	byKey := map[routeKey]*entry{}
	var keys []routeKey
	for _, e := range events {
		k := keyOf(e.Route)
		cur := byKey[k]
		if cur == nil {
			cur = &entry{}
			byKey[k] = cur
			keys = append(keys, k)
		}
		switch {
		case e.Type == sdk.Delete:
			if !cur.present {
				cur.event = e
			}
		case !cur.present || e.Route.Metric < cur.event.Route.Metric:
			cur.event, cur.present = e, true
		}
	}
	out := make([]sdk.Event, len(keys))
	for i, k := range keys {
		out[i] = byKey[k].event
	}
	return out
}

// inbound validates an advert that sender sent and rewrites it for our
// router: each route's gateway becomes the sender, its metric grows by the
// cost of our link to the sender and the sender joins its path. Routes that
// loop through us are dropped quietly; routes the sender may not speak for
// are refused and counted. It returns nil when nothing is left to apply,
// and the sweeps that the withdrawals in the advert call for.
func (n *Node) inbound(sender string, a *sdk.Advert) (*sdk.Advert, []sweep) {
	n.mu.Lock()
	defer n.mu.Unlock()
	var sweeps []sweep
	graph := n.senderGraph(sender)
	cost := n.costLocked(sender)
	out := &sdk.Advert{ID: sender, Type: a.Type, Origin: a.Origin, Timestamp: a.Timestamp, TTL: a.TTL}
	if a.Type == sdk.Sync && a.Origin == "" {
		// A whole table, not one origin's: apply it without withdrawing anything.
		out.Type = sdk.Announce
	}
	for _, e := range a.Events {
		r := e.Route
		switch {
		case r.Router == n.cfg.NodeID:
			continue // our own route, echoed back
		case r.Router == "":
			n.refuseLocked(sender, r, "route has no origin")
			continue
		case r.Network != "" && r.Network != n.cfg.Network:
			n.refuseLocked(sender, r, fmt.Sprintf("route is for network %q", r.Network))
			continue
		case out.Type == sdk.Sync && r.Router != a.Origin:
			n.refuseLocked(sender, r, fmt.Sprintf("sync for origin %q carries a route of another origin", a.Origin))
			continue
		case sdk.ValidateName("service name", r.Service) != nil:
			n.refuseLocked(sender, r, sdk.ValidateName("service name", r.Service).Error())
			continue
		}
		k := keyOf(r)
		if e.Type == sdk.Delete {
			// A delete can only take away a route through the sender,
			// which the sender may always do.
			out.Events = append(out.Events, withdrawal(e, sender, n.cfg.Network))
			if w, ok := n.withdrawn[k]; r.Seq > 0 && (!ok || r.Seq > w.seq) {
				n.withdrawn[k] = withdrawn{seq: r.Seq, at: n.clock.Now()}
				sweeps = append(sweeps, sweep{k, r.Seq})
			}
			continue
		}
		path := slices.Clone(r.Path)
		if len(path) == 0 || path[len(path)-1] != sender {
			path = append(path, sender)
		}
		switch {
		case slices.Contains(path, n.cfg.NodeID):
			// It goes through us: installing it would make a loop.
		case path[0] != r.Router:
			n.refuseLocked(sender, r, fmt.Sprintf("path %v does not start at the origin", path))
		case n.tombstonedLocked(r.Router, sender, graph):
		case r.Seq < n.withdrawn[k].seq:
			// Older than a withdrawal we heard: a stale path.
		case !n.vouched(sender, r.Router, path, graph):
			n.refuseLocked(sender, r, "origin is neither the sender nor in the sender's graph")
			if nb := n.neighbours[sender]; nb != nil {
				nb.refused = true
			}
		default:
			r.Path = path
			r.Gateway = sender
			r.Link = sdk.LinkNetwork
			r.Network = n.cfg.Network
			r.Metric = addMetric(r.Metric, cost)
			r.Expires = time.Time{} // the router sets it from the advert's TTL
			out.Events = append(out.Events, sdk.Event{Type: e.Type, Timestamp: e.Timestamp, Route: r})
			continue
		}
		// The sender's route to this instance changed into one we cannot
		// use, so the one we had through the sender is gone (in a sync,
		// leaving it out withdraws it).
		if out.Type == sdk.Announce {
			out.Events = append(out.Events, withdrawal(e, sender, n.cfg.Network))
		}
	}
	// A sync is applied even when every route in it was dropped: it only
	// withdraws routes through the sender.
	if out.Type == sdk.Announce && len(out.Events) == 0 {
		return nil, sweeps
	}
	return out, sweeps
}

// Withdrawals and path hunting.
//
// When an origin withdraws an instance, its router sends the delete with a
// sequence number newer than the route's. Without more, every node would
// fall back to its other (now stale) paths to the instance and advertise
// them, one after another, until each was withdrawn in turn: a storm of
// path hunting. Instead, a node remembers the newest withdrawal it heard per
// instance, drops every route to it that is older (through any gateway),
// refuses older routes that arrive later, and passes the newer sequence
// number on in its own delete, so the withdrawal sweeps the network once.

type withdrawn struct {
	seq uint64
	at  time.Time
}

// sweep asks to drop our routes to an instance older than seq.
type sweep struct {
	key routeKey
	seq uint64
}

// sweepStale deletes, through any gateway, the routes that a withdrawal
// made stale.
func (n *Node) sweepStale(ctx context.Context, sweeps []sweep) {
	for _, s := range sweeps {
		routes, err := n.cfg.Router.Lookup(ctx, sdk.Query{Service: s.key.service, Address: s.key.address, Router: s.key.router, Link: sdk.LinkNetwork})
		if err != nil {
			continue
		}
		for _, r := range routes {
			if r.Seq < s.seq {
				if err := n.cfg.Router.Delete(ctx, r); err != nil && !errors.Is(err, sdk.ErrNotFound) {
					n.log.Warn("cannot drop stale route", "service", r.Service, "gateway", r.Gateway, "error", err)
				}
			}
		}
	}
}

// withdrawal turns e into the delete of our route through sender to the
// same instance. Its path is just origin and sender: the route being
// withdrawn may have gone through us, and routers skip looping routes.
func withdrawal(e sdk.Event, sender, network string) sdk.Event {
	r := e.Route
	return sdk.Event{Type: sdk.Delete, Timestamp: e.Timestamp, Route: sdk.Route{
		Service: r.Service, Address: r.Address, Network: network, Router: r.Router,
		Gateway: sender, Link: sdk.LinkNetwork, Seq: r.Seq, Path: []string{r.Router, sender},
	}}
}

// vouched reports whether sender may speak for origin: it is the sender,
// or a node of the sender's graph (up to MaxDepth hops), or further away
// along a path whose last MaxDepth hops the sender's graph confirms, each
// at most that many hops from the sender.
func (n *Node) vouched(sender, origin string, path []string, graph map[string]reach) bool {
	if origin == sender {
		return true
	}
	if graph == nil {
		return false
	}
	if _, ok := graph[origin]; ok {
		return true
	}
	if len(path) <= MaxDepth+1 {
		return false
	}
	for i := 1; i <= MaxDepth; i++ {
		r, ok := graph[path[len(path)-1-i]]
		if !ok || r.depth > i {
			return false
		}
	}
	return true
}

func (n *Node) refuseLocked(sender string, r sdk.Route, why string) {
	n.stats.RefusedRoutes++
	n.log.Warn("refused route from peer", "peer", sender, "service", r.Service, "origin", r.Router, "reason", why)
}
