package network

import (
	"cmp"
	"context"
	"maps"
	"slices"
	"time"

	"github.com/microhost/microhost/sdk"
)

// connectStagger is how long a Connect call may hold up the next one. The
// tunnel's Connect should return at once; one that does not (a plugin stuck
// on a dead address) must not keep the node from its other peers.
const connectStagger = 500 * time.Millisecond

// connectLoop links the static peers and then, every ResolveInterval, the
// peers the resolver names, lowest priority first. Start does not wait for
// it, so a dead address never delays start-up.
func (n *Node) connectLoop() {
	n.connectAll(n.cfg.Peers)
	if n.cfg.Resolve == nil {
		return
	}
	for {
		n.resolve()
		select {
		case <-n.clock.After(n.cfg.ResolveInterval):
		case <-n.runCtx.Done():
			return
		}
	}
}

// resolve asks the resolver for peers, links the new ones and lets go of
// resolved peers it no longer names (static peers are kept).
// MaxResolvedPeers bounds how many resolved addresses a node links to: a
// node needs a few peers, and an answer listing thousands must not make it
// dial thousands.
const MaxResolvedPeers = 32

func (n *Node) resolve() {
	ctx, cancel := context.WithTimeout(n.runCtx, callTimeout)
	nodes, err := n.cfg.Resolve(ctx)
	cancel()
	if err != nil {
		n.log.Warn("resolving peers failed; keeping the current ones", "error", err)
		return
	}
	slices.SortStableFunc(nodes, func(a, b sdk.Node) int { return a.Priority - b.Priority })
	if len(nodes) > MaxResolvedPeers {
		n.log.Warn("resolvers named more peers than a node links to; using the ones of lowest priority",
			"named", len(nodes), "used", MaxResolvedPeers)
		nodes = nodes[:MaxResolvedPeers]
	}
	named := map[string]bool{}
	var fresh []string
	n.mu.Lock()
	for _, node := range nodes {
		if node.Address == "" || node.Address == n.cfg.Address || named[node.Address] {
			continue
		}
		named[node.Address] = true
		if !n.resolved[node.Address] {
			n.resolved[node.Address] = true
			fresh = append(fresh, node.Address)
		}
	}
	var gone []string
	for addr := range n.resolved {
		if !named[addr] {
			delete(n.resolved, addr)
			if !slices.Contains(n.cfg.Peers, addr) {
				gone = append(gone, addr)
			}
		}
	}
	n.mu.Unlock()
	n.connectAll(slices.DeleteFunc(fresh, func(addr string) bool { return slices.Contains(n.cfg.Peers, addr) }))
	for _, addr := range gone {
		n.goRun(func() {
			ctx, cancel := context.WithTimeout(n.runCtx, callTimeout)
			defer cancel()
			if err := n.cfg.Tunnel.Disconnect(ctx, addr); err != nil {
				n.log.Warn("cannot disconnect from peer the resolver dropped", "address", addr, "error", err)
			}
		})
	}
}

// connectAll asks the tunnel to keep links to addrs, in order, giving each
// Connect call at most connectStagger before starting the next one.
func (n *Node) connectAll(addrs []string) {
	for _, addr := range addrs {
		done := make(chan struct{})
		started := n.goRun(func() {
			defer close(done)
			ctx, cancel := context.WithTimeout(n.runCtx, callTimeout)
			defer cancel()
			if err := n.cfg.Tunnel.Connect(ctx, addr); err != nil {
				n.log.Warn("cannot connect to peer", "address", addr, "error", err)
			}
		})
		if !started {
			return
		}
		stagger := time.NewTimer(connectStagger)
		select {
		case <-done:
		case <-stagger.C:
			n.log.Warn("connecting to peer is slow; going on with the others", "address", addr)
		case <-n.runCtx.Done():
		}
		stagger.Stop()
	}
}

// seenNode is a node of our network that a neighbour's graph showed.
type seenNode struct {
	address string
	hops    int       // from us, when last seen
	at      time.Time // when last seen
	tried   time.Time // when we last asked the tunnel to link to it
}

// maxSeen bounds the nodes remembered for MinPeers.
const maxSeen = 4096

// rememberLocked records the addresses in a neighbour's tree.
func (n *Node) rememberLocked(t *tree, now time.Time) {
	var walk func(*tree, int)
	walk = func(x *tree, hops int) {
		if x.ID != n.cfg.NodeID && x.Address != "" {
			s, ok := n.seen[x.ID]
			if ok || len(n.seen) < maxSeen {
				// The nearest sighting in this tree counts.
				if !ok || !s.at.Equal(now) || hops < s.hops {
					s.hops = hops
				}
				s.address, s.at = x.Address, now
				n.seen[x.ID] = s
			}
		}
		for _, p := range x.Peers {
			walk(p, hops+1)
		}
	}
	walk(t, 1)
}

// fillPeers links to remembered nodes, nearest and most recently seen
// first, while the node has fewer than MinPeers links. Each address is
// tried at most once per ResolveInterval.
func (n *Node) fillPeers() {
	if n.cfg.MinPeers == 0 {
		return
	}
	now := n.clock.Now()
	n.mu.Lock()
	maps.DeleteFunc(n.seen, func(_ string, s seenNode) bool { return now.Sub(s.at) > withdrawnMemory*n.cfg.KeepaliveTimeout })
	missing := n.cfg.MinPeers - len(n.links)
	var candidates []string
	for id, s := range n.seen {
		if !n.links[id] && (s.tried.IsZero() || now.Sub(s.tried) >= n.cfg.ResolveInterval) {
			candidates = append(candidates, id)
		}
	}
	slices.SortFunc(candidates, func(a, b string) int {
		sa, sb := n.seen[a], n.seen[b]
		return cmp.Or(cmp.Compare(sa.hops, sb.hops), sb.at.Compare(sa.at), cmp.Compare(a, b))
	})
	var addrs []string
	for _, id := range candidates[:max(0, min(missing, len(candidates)))] {
		s := n.seen[id]
		s.tried = now
		n.seen[id] = s
		addrs = append(addrs, s.address)
	}
	n.mu.Unlock()
	if len(addrs) > 0 {
		n.log.Info("too few peers; linking to nodes seen in the graph", "have", n.cfg.MinPeers-missing, "want", n.cfg.MinPeers, "addresses", addrs)
		n.goRun(func() { n.connectAll(addrs) })
	}
}
