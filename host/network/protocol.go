package network

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/microhost/microhost/host/network/networkpb"
	"github.com/microhost/microhost/sdk"
)

// handleNetwork handles one message of the network channel.
func (n *Node) handleNetwork(s sdk.Session, m *sdk.Message) {
	sender := s.Peer()
	if n.repeatedPeer(sender, m.Body) {
		n.countReceived("peer")
		return
	}
	var msg networkpb.NetworkMessage
	if err := proto.Unmarshal(m.Body, &msg); err != nil {
		n.countInvalid(sender, fmt.Errorf("network channel: %w", err))
		return
	}
	if msg.GetNetwork() != n.cfg.Network {
		n.foreignPeer(sender, msg.GetNetwork())
		n.countIgnored(sender, fmt.Sprintf("message for network %q", msg.GetNetwork()))
		return
	}
	switch b := msg.GetBody().(type) {
	case *networkpb.NetworkMessage_Connect:
		n.countReceived("connect")
		n.heard(sender, b.Connect.GetNode(), nil)
	case *networkpb.NetworkMessage_Peer:
		n.countReceived("peer")
		n.heard(sender, b.Peer.GetNode(), m.Body)
	case *networkpb.NetworkMessage_Close:
		n.countReceived("close")
		n.handleClose(sender, b.Close)
	default:
		n.countIgnored(sender, "network message of an unknown type")
	}
}

// repeatedPeer takes a peer message that repeats, byte for byte, the last
// one the sender sent, as nearly all do: the graph in it is known already,
// so it only refreshes the sender's liveness and the sightings of the
// nodes in its graph, without decoding it again. A neighbour whose table
// is still to be asked for goes the long way, which asks.
func (n *Node) repeatedPeer(sender string, body []byte) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	nb := n.neighbours[sender]
	if nb == nil || nb.lastPeer == nil || nb.refused || !(nb.solicited || nb.soliciting) || !bytes.Equal(nb.lastPeer, body) {
		return false
	}
	nb.lastSeen = n.clock.Now()
	n.rememberLocked(nb.tree, nb.lastSeen)
	return true
}

// heard records a connect message, or a peer message with its body: the
// sender becomes (or stays) a neighbour with the graph it sent. A new
// neighbour is asked for its table and told our graph at once, and so is
// one that just connected.
func (n *Node) heard(sender string, node *networkpb.Node, peerBody []byte) {
	connect := peerBody == nil
	switch {
	case node.GetId() == "":
		n.countInvalid(sender, errors.New("peer message without a node id"))
		return
	case sender == "" || sender == n.cfg.NodeID:
		n.countIgnored(sender, "peer message from no peer or from ourselves")
		return
	case node.GetId() != sender:
		n.countIgnored(sender, fmt.Sprintf("peer message names node %q", node.GetId()))
		n.log.Warn("peer message for another node refused", "peer", sender, "names", node.GetId())
		return
	}
	t := treeFromPB(node, MaxDepth)
	depths := t.depths()
	rs := make(map[string]reach, len(depths))
	var instances func(*tree)
	instances = func(x *tree) {
		if r, ok := rs[x.ID]; !ok || r.instance == "" {
			rs[x.ID] = reach{depth: depths[x.ID], instance: x.Instance}
		}
		for _, p := range x.Peers {
			instances(p)
		}
	}
	instances(t)

	n.mu.Lock()
	nb := n.neighbours[sender]
	isNew := nb == nil
	if isNew {
		nb = &neighbour{id: sender}
		n.neighbours[sender] = nb
		n.log.Info("new neighbour", "peer", sender, "instance", t.Instance)
	}
	if nb.instance != "" && t.Instance != "" && nb.instance != t.Instance {
		n.log.Info("neighbour restarted", "peer", sender, "instance", t.Instance)
		nb.solicited = false
	}
	if tomb, ok := n.tombstones[sender]; ok && tomb.instance != t.Instance {
		delete(n.tombstones, sender)
	}
	for id, l := range n.leaving {
		if r, ok := rs[id]; ok && r.instance != "" && r.instance != l.instance {
			delete(n.leaving, id) // it came back
		}
	}
	nb.instance, nb.address, nb.tree, nb.reach = t.Instance, t.Address, t, rs
	nb.lastPeer = bytes.Clone(peerBody)
	nb.lastSeen = n.clock.Now()
	n.rememberLocked(t, nb.lastSeen)
	solicit := (!nb.solicited || nb.refused) && !nb.soliciting
	if solicit {
		nb.soliciting, nb.refused = true, false
	}
	n.mu.Unlock()

	if isNew || connect {
		n.triggerPeer()
	} else {
		signal(n.changed)
	}
	if solicit && !n.goRun(func() { n.solicit(sender) }) {
		n.mu.Lock()
		nb.soliciting = false
		n.mu.Unlock()
	}
}

// handleClose removes a node that announced it leaves, with its routes, and
// floods the announcement on once. The node itself may announce it, or a
// neighbour whose graph holds it or through which we route to it.
func (n *Node) handleClose(sender string, c *networkpb.Close) {
	id, inst := c.GetId(), c.GetInstance()
	if id == "" {
		n.countInvalid(sender, errors.New("close message without a node id"))
		return
	}
	if id == n.cfg.NodeID {
		return // our own close, flooded back
	}
	if id != sender {
		n.relayedClose(sender, id, inst)
		return
	}
	key := id + "\x00" + inst
	n.mu.Lock()
	if _, seen := n.closesSeen[key]; seen {
		n.mu.Unlock()
		return
	}
	now := n.clock.Now()
	n.closesSeen[key] = now.Add(2 * n.cfg.KeepaliveTimeout)
	n.tombstones[id] = tombstone{instance: inst, until: now.Add(n.cfg.KeepaliveTimeout)}
	_, wasNeighbour := n.neighbours[id]
	delete(n.neighbours, id)
	n.mu.Unlock()

	n.log.Info("node left the network", "left", id)
	n.relayClose(id, inst)
	n.removeRoutes(sdk.Query{Router: id})
	n.removeRoutes(sdk.Query{Gateway: id})
	if wasNeighbour {
		n.triggerPeer()
	}
}

// relayedClose applies a close that a neighbour passed on. Only a node
// itself can say everywhere that it left; from anyone else the close takes
// away just the leaving node's routes through that neighbour — no more than
// the neighbour could withdraw anyway — so a forged close cannot cut a
// node off. The flood still removes every route: each of our neighbours
// with a route to the node passes the close on too.
//
// Routes of the leaving node that the neighbour sends after its close are
// stale (a node passes a close on at once, and advertises what it changed
// only at its router's next flush) and are refused, as from a node that
// closed itself, until the neighbour's graph shows the node back. Without
// that, a node that the close reached late fell back on another stale path
// and advertised it, and its neighbours took it up and hunted through
// their own stale paths in turn: thousands of adverts in 50 nodes. This
// holds even for a close we otherwise ignore (the neighbour neither sees
// the node nor leads to it): the neighbour will not send a delete for what
// it sends after its close.
func (n *Node) relayedClose(sender, id, inst string) {
	n.mu.Lock()
	l := n.leaving[id]
	if l == nil || l.instance != inst {
		l = &leaving{instance: inst, via: map[string]bool{}}
		n.leaving[id] = l
	}
	l.via[sender], l.until = true, n.clock.Now().Add(n.cfg.KeepaliveTimeout)
	_, inGraph := n.senderGraph(sender)[id]
	n.mu.Unlock()
	if !inGraph && !n.routesThrough(id, sender) {
		n.countIgnored(sender, fmt.Sprintf("close of node %q, which the sender neither sees nor leads to", id))
		return
	}
	n.log.Debug("a neighbour passed on a close", "left", id, "told_by", sender)
	n.removeRoutes(sdk.Query{Router: id, Gateway: sender})
	n.relayClose(id, inst)
}

// relayClose passes a close on, once per node and instance.
func (n *Node) relayClose(id, inst string) {
	key := id + "\x00" + inst + "\x00relayed"
	n.mu.Lock()
	_, seen := n.closesSeen[key]
	if !seen {
		n.closesSeen[key] = n.clock.Now().Add(2 * n.cfg.KeepaliveTimeout)
	}
	n.mu.Unlock()
	if seen {
		return
	}
	n.sendNetwork(n.runCtx, "close", &networkpb.NetworkMessage{
		Body: &networkpb.NetworkMessage_Close{Close: &networkpb.Close{Id: id, Instance: inst}},
	})
}

// routesThrough reports whether we have a route originated by origin with
// gateway as next hop.
func (n *Node) routesThrough(origin, gateway string) bool {
	ctx, cancel := context.WithTimeout(n.runCtx, callTimeout)
	defer cancel()
	routes, err := n.cfg.Router.Lookup(ctx, sdk.Query{Router: origin, Gateway: gateway})
	return err == nil && len(routes) > 0
}

// handleControl handles one message of the control channel.
func (n *Node) handleControl(s sdk.Session, m *sdk.Message) {
	sender := s.Peer()
	if sender == "" || sender == n.cfg.NodeID {
		n.countIgnored(sender, "control message from no peer or from ourselves")
		return
	}
	var msg networkpb.ControlMessage
	if err := proto.Unmarshal(m.Body, &msg); err != nil {
		n.countInvalid(sender, fmt.Errorf("control channel: %w", err))
		return
	}
	if msg.GetNetwork() != n.cfg.Network {
		n.countIgnored(sender, fmt.Sprintf("control message for network %q", msg.GetNetwork()))
		return
	}
	n.mu.Lock()
	if nb := n.neighbours[sender]; nb != nil {
		nb.lastSeen = n.clock.Now()
	}
	n.mu.Unlock()
	switch b := msg.GetBody().(type) {
	case *networkpb.ControlMessage_Advert:
		n.countReceived("advert")
		n.apply(sender, b.Advert)
	case *networkpb.ControlMessage_Sync:
		n.countReceived("sync")
		n.apply(sender, b.Sync)
	case *networkpb.ControlMessage_Solicit:
		n.countReceived("solicit")
		n.answerSolicit(s)
	default:
		n.countIgnored(sender, "control message of an unknown type")
	}
}

// apply validates a peer's advert and hands what is left to the router.
func (n *Node) apply(sender string, p *networkpb.Advert) {
	a, err := advertFromPB(p, sender, n.clock.Now())
	if err != nil {
		n.countInvalid(sender, err)
		return
	}
	n.knowCost(sender)
	ctx, cancel := context.WithTimeout(n.runCtx, callTimeout)
	defer cancel()
	// A link cost must not change between being added to a route and the
	// route reaching the table, or recost would miss the route.
	n.costMu.RLock()
	in, sweeps := n.inbound(sender, a)
	if in != nil {
		if err := n.cfg.Router.Process(ctx, in); err != nil {
			n.log.Warn("router refused advert", "peer", sender, "error", err)
		}
	}
	n.costMu.RUnlock()
	n.sweepStale(ctx, sweeps)
}

// solicit asks a new neighbour for its whole table and applies the answer.
func (n *Node) solicit(peer string) {
	ok := n.trySolicit(peer)
	n.mu.Lock()
	if nb := n.neighbours[peer]; nb != nil {
		nb.soliciting = false
		nb.solicited = ok
	}
	n.mu.Unlock()
}

func (n *Node) trySolicit(peer string) bool {
	ctx, cancel := context.WithTimeout(n.runCtx, callTimeout)
	defer cancel()
	s, err := n.cfg.Tunnel.Dial(ctx, ChannelControl, sdk.DialOptions{Node: peer})
	if err != nil {
		n.log.Debug("cannot solicit peer yet", "peer", peer, "error", err)
		return false
	}
	defer s.Close()
	if !n.send(ctx, s, "solicit", &networkpb.ControlMessage{Network: n.cfg.Network, Body: &networkpb.ControlMessage_Solicit{Solicit: &networkpb.Solicit{}}}) {
		return false
	}
	s.CloseSend()
	for {
		m, err := s.Recv(ctx)
		if err == io.EOF {
			return true
		}
		if err != nil {
			n.log.Debug("solicit answer cut short", "peer", peer, "error", err)
			return false
		}
		n.handleControl(s, m)
	}
}

// answerSolicit sends our whole table back, even when it is empty, so that
// the asker knows the answer is complete.
func (n *Node) answerSolicit(s sdk.Session) {
	ctx, cancel := context.WithTimeout(n.runCtx, callTimeout)
	defer cancel()
	a, err := n.cfg.Router.Solicit(ctx)
	if err != nil {
		n.log.Warn("router cannot answer solicit", "peer", s.Peer(), "error", err)
		return
	}
	out := n.outbound(a)
	if out == nil {
		out = &sdk.Advert{ID: n.cfg.NodeID, Type: sdk.Announce, Timestamp: n.clock.Now()}
	}
	reply := s
	if s.Mode() != sdk.Unicast {
		if reply, err = n.cfg.Tunnel.Dial(ctx, ChannelControl, sdk.DialOptions{Node: s.Peer()}); err != nil {
			n.log.Warn("cannot answer solicit", "peer", s.Peer(), "error", err)
			return
		}
		defer reply.Close()
	}
	// A large table goes in several messages; a sync cannot be split, since
	// each part would withdraw the others.
	parts := [][]sdk.Event{out.Events}
	if out.Type == sdk.Announce && len(out.Events) > maxSolicitEvents {
		parts = slices.Collect(slices.Chunk(out.Events, maxSolicitEvents))
	}
	for _, events := range parts {
		part := *out
		part.Events = events
		if !n.sendAdvert(ctx, reply, &part) {
			break
		}
	}
	reply.CloseSend()
}

// maxSolicitEvents is how many routes one message of a solicit answer carries.
const maxSolicitEvents = 500

// sendAdvert encodes an advert as an advert or sync control message.
func (n *Node) sendAdvert(ctx context.Context, s sdk.Session, a *sdk.Advert) bool {
	msg := &networkpb.ControlMessage{Network: n.cfg.Network}
	kind := "advert"
	if a.Type == sdk.Sync {
		kind = "sync"
		msg.Body = &networkpb.ControlMessage_Sync{Sync: advertToPB(a)}
	} else {
		msg.Body = &networkpb.ControlMessage_Advert{Advert: advertToPB(a)}
	}
	return n.send(ctx, s, kind, msg)
}

// advertiseLoop multicasts the router's adverts on the control channel. If
// the router's stream ends (a plugin restart), it opens a new one.
func (n *Node) advertiseLoop() {
	stream := n.stream
	defer func() { stream.Stop() }()
	for {
		a, err := stream.Next(n.runCtx)
		if err != nil {
			if n.runCtx.Err() != nil {
				return
			}
			n.log.Warn("router advert stream ended; reopening", "error", err)
			select {
			case <-n.clock.After(n.cfg.LinkPollInterval):
			case <-n.runCtx.Done():
				return
			}
			next, err := n.cfg.Router.Advertise(n.runCtx)
			if err != nil {
				n.log.Warn("cannot reopen router advert stream", "error", err)
				continue
			}
			stream.Stop()
			stream = next
			continue
		}
		if out := n.outbound(a); out != nil {
			n.sendAdvert(n.runCtx, n.ctlOut, out)
		}
	}
}

// tickLoop sends peer messages and watches links and keepalives. A peer
// message goes out every PeerInterval, at once when the links or the
// neighbours change, and when a neighbour's graph changed and ours with it:
// nodes further away learn of a change in as many messages as they are
// hops away, instead of in as many peer intervals. Those last ones are
// spaced by a tenth of the interval, so a burst of changes (a node with
// many peers coming up) costs a few messages, not one per change.
func (n *Node) tickLoop() {
	peerC := n.clock.After(n.cfg.PeerInterval)
	pollC := n.clock.After(n.cfg.LinkPollInterval)
	var (
		sent    []byte    // the last peer message
		sentAt  time.Time // when it went out
		changeC <-chan time.Time
	)
	peer := func(always bool) {
		body := n.peerMessage()
		if body != nil && (always || !bytes.Equal(body, sent)) && n.sendBody(n.runCtx, n.netOut, "peer", body) {
			sent, sentAt = body, n.clock.Now()
		}
	}
	for {
		select {
		case <-n.runCtx.Done():
			return
		case <-n.trigger:
			peer(true)
		case <-n.changed:
			if changeC != nil {
				continue // already waiting to send
			}
			if wait := n.cfg.PeerInterval/10 - n.clock.Now().Sub(sentAt); wait > 0 {
				changeC = n.clock.After(wait)
				continue
			}
			peer(false)
		case <-changeC:
			changeC = nil
			peer(false)
		case <-peerC:
			peer(true)
			peerC = n.clock.After(n.cfg.PeerInterval)
		case <-pollC:
			n.pollLinks()
			n.expire()
			n.fillPeers()
			pollC = n.clock.After(n.cfg.LinkPollInterval)
		}
	}
}

// peerMessage encodes our graph as a peer message; the encoding is
// deterministic, so an unchanged graph gives the same bytes.
func (n *Node) peerMessage() []byte {
	body, err := proto.MarshalOptions{Deterministic: true}.Marshal(&networkpb.NetworkMessage{
		Network: n.cfg.Network,
		Body:    &networkpb.NetworkMessage_Peer{Peer: &networkpb.Peer{Node: n.treePB()}},
	})
	if err != nil {
		n.log.Error("cannot encode message", "type", "peer", "error", err)
		return nil
	}
	return body
}

// pollLinks reads the tunnel's links: a new link gets our graph at once,
// a neighbour whose link went down is pruned, and link costs follow the
// links' lowest RTTs.
func (n *Node) pollLinks() {
	n.pollMu.Lock()
	defer n.pollMu.Unlock()
	ctx, cancel := context.WithTimeout(n.runCtx, callTimeout)
	defer cancel()
	links, err := n.cfg.Tunnel.Links(ctx)
	if err != nil {
		n.log.Warn("cannot list tunnel links", "error", err)
		return
	}
	type change struct {
		peer     string
		old, new int64
	}
	var changes []change
	up := map[string]bool{}
	n.costMu.Lock()
	defer n.costMu.Unlock()
	n.mu.Lock()
	now := n.clock.Now()
	for _, l := range links {
		if l.State != sdk.LinkUp || l.Peer == "" {
			continue
		}
		up[l.Peer] = true
		c, known := n.costs[l.Peer]
		if !known {
			c = &peerCost{}
			n.costs[l.Peer] = c
		}
		old := c.cost
		if c.update(now, costRTT(l), n.cfg.CostWindow) != old && known {
			changes = append(changes, change{l.Peer, old, c.cost})
		}
	}
	added := false
	for p := range up {
		if !n.links[p] {
			added = true
		}
	}
	var down []string
	for p := range n.links {
		if !up[p] {
			delete(n.costs, p)
			if n.neighbours[p] != nil {
				down = append(down, p)
			}
		}
	}
	n.links = up
	n.mu.Unlock()
	if added {
		n.triggerPeer()
	}
	n.prune(down, "link down")
	for _, c := range changes {
		n.log.Debug("link cost changed", "peer", c.peer, "from", c.old, "to", c.new)
		n.recost(ctx, c.peer, c.new-c.old)
	}
}

// knowCost makes sure the cost of the link to peer has been measured before
// a route from it is installed, so that no route starts with a guess.
func (n *Node) knowCost(peer string) {
	n.mu.Lock()
	_, ok := n.costs[peer]
	n.mu.Unlock()
	if !ok {
		n.pollLinks()
	}
}

// recost moves the metric of every route learned through peer by delta,
// when the cost of the link to it changed; the router re-advertises them.
func (n *Node) recost(ctx context.Context, peer string, delta int64) {
	routes, err := n.cfg.Router.Lookup(ctx, sdk.Query{Gateway: peer, Link: sdk.LinkNetwork})
	if err != nil {
		if !errors.Is(err, sdk.ErrNotFound) {
			n.log.Warn("cannot look up routes to re-cost", "peer", peer, "error", err)
		}
		return
	}
	for _, r := range routes {
		r.Metric = min(max(r.Metric+delta, 2), maxMetric)
		if err := n.cfg.Router.Update(ctx, r); err != nil {
			n.log.Warn("cannot update route metric", "service", r.Service, "peer", peer, "error", err)
		}
	}
}

// expire prunes neighbours silent for longer than the keepalive timeout and
// forgets old tombstones and close floods.
func (n *Node) expire() {
	now := n.clock.Now()
	var silent []string
	n.mu.Lock()
	for id, nb := range n.neighbours {
		if now.Sub(nb.lastSeen) > n.cfg.KeepaliveTimeout {
			silent = append(silent, id)
		}
	}
	maps.DeleteFunc(n.tombstones, func(_ string, t tombstone) bool { return now.After(t.until) })
	maps.DeleteFunc(n.leaving, func(_ string, l *leaving) bool { return now.After(l.until) })
	maps.DeleteFunc(n.closesSeen, func(_ string, until time.Time) bool { return now.After(until) })
	maps.DeleteFunc(n.withdrawn, func(_ routeKey, w withdrawn) bool { return now.Sub(w.at) > withdrawnMemory*n.cfg.KeepaliveTimeout })
	n.mu.Unlock()
	n.prune(silent, "keepalive timeout")
}

// prune removes neighbours and the routes learned through them.
func (n *Node) prune(ids []string, reason string) {
	if len(ids) == 0 {
		return
	}
	slices.Sort(ids)
	n.mu.Lock()
	for _, id := range ids {
		delete(n.neighbours, id)
	}
	n.mu.Unlock()
	for _, id := range ids {
		n.log.Info("neighbour pruned", "peer", id, "reason", reason)
		n.removeRoutes(sdk.Query{Gateway: id})
	}
	n.triggerPeer()
}

// removeRoutes deletes the learned routes matching q; the router advertises
// the withdrawals.
func (n *Node) removeRoutes(q sdk.Query) {
	ctx, cancel := context.WithTimeout(n.runCtx, callTimeout)
	defer cancel()
	q.Link = sdk.LinkNetwork
	routes, err := n.cfg.Router.Lookup(ctx, q)
	if err != nil {
		if !errors.Is(err, sdk.ErrNotFound) {
			n.log.Warn("cannot look up routes to remove", "error", err)
		}
		return
	}
	for _, r := range routes {
		if err := n.cfg.Router.Delete(ctx, r); err != nil && !errors.Is(err, sdk.ErrNotFound) {
			n.log.Warn("cannot remove route", "service", r.Service, "gateway", r.Gateway, "error", err)
		}
	}
}
