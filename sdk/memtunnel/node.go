package memtunnel

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"

	"github.com/microhost/microhost/sdk"
)

// Node is one node of a Fabric; it implements sdk.Tunnel.
type Node struct {
	f  *Fabric
	id string
	// The fields below are guarded by f.mu.
	listeners map[string]*listener // by channel
	sessions  map[*session]struct{}
	wants     map[string]bool // addresses given to Connect
	queueSize int
	closed    bool
}

var _ sdk.Tunnel = (*Node)(nil)

// ID returns the node id, which is also its address.
func (n *Node) ID() string { return n.id }

// Info describes the in-memory tunnel.
func (n *Node) Info() sdk.Info {
	return sdk.Info{Name: "tunnel-memory", Kind: sdk.KindTunnel, Version: "0.1.0",
		Capabilities: []string{"unicast", "multicast", "broadcast"}}
}

// Schema lists the one setting the in-memory tunnel has.
func (n *Node) Schema() sdk.Schema {
	return sdk.Schema{Attributes: []sdk.Attribute{{
		Name: "queue_size", Type: sdk.TypeNumber, Default: "256",
		Description: "Messages a session buffers before further multicast messages are dropped (and counted).",
	}}}
}

// Configure applies queue_size to sessions opened from now on.
func (n *Node) Configure(_ context.Context, req sdk.ConfigureRequest) sdk.Diagnostics {
	var cfg struct {
		QueueSize *int `json:"queue_size"`
	}
	if d := req.Decode(&cfg); d.HasErrors() {
		return d
	}
	if cfg.QueueSize == nil {
		return nil
	}
	if *cfg.QueueSize <= 0 {
		return sdk.Diagnostics{sdk.Errorf("queue_size", "invalid queue size", "must be positive, got %d", *cfg.QueueSize)}
	}
	n.f.mu.Lock()
	n.queueSize = *cfg.QueueSize
	n.f.mu.Unlock()
	return nil
}

// Health fails once the node is closed.
func (n *Node) Health(context.Context) error {
	n.f.mu.Lock()
	defer n.f.mu.Unlock()
	if n.closed {
		return fmt.Errorf("memtunnel: node %q: %w", n.id, ErrClosed)
	}
	return nil
}

// Close closes every listener and session of the node, cuts its links and
// removes it from the fabric, so that its id can be used again.
func (n *Node) Close() error {
	f := n.f
	f.mu.Lock()
	defer f.mu.Unlock()
	if n.closed {
		return nil
	}
	n.closed = true
	for _, l := range n.listeners {
		l.closeLocked()
	}
	for s := range n.sessions {
		s.closeLocked()
	}
	for _, p := range f.peersLocked(n.id) {
		f.unlinkLocked(n.id, p)
	}
	delete(f.nodes, n.id)
	return nil
}

// Connect links the node to the node whose address (id) is address, now if
// it exists, else as soon as it is created. It never waits.
func (n *Node) Connect(_ context.Context, address string) error {
	if address == "" {
		return errors.New("memtunnel: connect: address is empty")
	}
	f := n.f
	f.mu.Lock()
	defer f.mu.Unlock()
	if n.closed {
		return ErrClosed
	}
	n.wants[address] = true
	if address != n.id && f.nodes[address] != nil {
		f.linkLocked(n.id, address)
	}
	return nil
}

// Disconnect forgets address and cuts the link to it.
func (n *Node) Disconnect(_ context.Context, address string) error {
	f := n.f
	f.mu.Lock()
	defer f.mu.Unlock()
	if n.closed {
		return ErrClosed
	}
	delete(n.wants, address)
	f.unlinkLocked(n.id, address)
	return nil
}

// Links lists the node's links, sorted by peer id.
func (n *Node) Links(context.Context) ([]sdk.Link, error) {
	f := n.f
	f.mu.Lock()
	defer f.mu.Unlock()
	if n.closed {
		return nil, ErrClosed
	}
	var links []sdk.Link
	for _, peer := range f.peersLocked(n.id) {
		l := f.links[pairOf(n.id, peer)]
		links = append(links, sdk.Link{
			ID:       l.id,
			Peer:     peer,
			Address:  peer,
			Outbound: l.from == n.id,
			State:    sdk.LinkUp,
			RTT:      l.rtt,
			BytesIn:  l.bytes[peer],
			BytesOut: l.bytes[n.id],
			Drops:    l.drops[n.id],
			Channels: slices.Sorted(maps.Keys(f.nodes[peer].listeners)),
		})
	}
	return links, nil
}

// Listen accepts the sessions peers open on channel. One listener per
// channel; closing it leaves accepted sessions alone.
func (n *Node) Listen(_ context.Context, channel string) (sdk.Listener, error) {
	if channel == "" {
		return nil, errors.New("memtunnel: listen: channel is empty")
	}
	f := n.f
	f.mu.Lock()
	defer f.mu.Unlock()
	if n.closed {
		return nil, ErrClosed
	}
	if n.listeners[channel] != nil {
		return nil, fmt.Errorf("memtunnel: node %q already listens on channel %q", n.id, channel)
	}
	l := &listener{node: n, channel: channel, backlog: newQueue[*session](n.queueSize)}
	n.listeners[channel] = l
	return l, nil
}

// Dial opens a session on channel. A unicast dial fails at once unless the
// chosen peer (opts.Node, or the lowest-RTT linked peer that listens) listens
// on channel. Multicast and broadcast sessions reach whichever linked peers
// listen at the time of each Send, possibly none; in memory, where listeners
// are known at once, the two modes behave the same.
func (n *Node) Dial(_ context.Context, channel string, opts sdk.DialOptions) (sdk.Session, error) {
	if channel == "" {
		return nil, errors.New("memtunnel: dial: channel is empty")
	}
	f := n.f
	f.mu.Lock()
	defer f.mu.Unlock()
	if n.closed {
		return nil, ErrClosed
	}
	switch opts.Mode {
	case sdk.Multicast, sdk.Broadcast:
		s := n.newSession(channel, opts.Mode, "")
		s.fanout = map[string]*session{}
		return s, nil
	case sdk.Unicast:
	default:
		return nil, fmt.Errorf("memtunnel: dial: unknown mode %d", opts.Mode)
	}
	target, err := n.pickPeer(channel, opts.Node)
	if err != nil {
		return nil, err
	}
	l := target.listeners[channel]
	local := n.newSession(channel, sdk.Unicast, target.id)
	remote := target.newSession(channel, sdk.Unicast, n.id)
	local.remote, remote.remote = remote, local
	if ok, _ := l.backlog.offer(remote); !ok {
		local.closeLocked()
		remote.closeLocked()
		f.links[pairOf(n.id, target.id)].drops[target.id]++
		f.stats.Dropped++
		return nil, fmt.Errorf("memtunnel: dial %q on node %q: listener backlog is full", channel, target.id)
	}
	return local, nil
}

// pickPeer finds the unicast target; f.mu must be held.
func (n *Node) pickPeer(channel, want string) (*Node, error) {
	f := n.f
	if want != "" {
		if f.links[pairOf(n.id, want)] == nil {
			return nil, fmt.Errorf("memtunnel: dial %q: no link to node %q", channel, want)
		}
		target := f.nodes[want]
		if target.listeners[channel] == nil {
			return nil, fmt.Errorf("memtunnel: dial %q: node %q does not listen on that channel: %w", channel, want, sdk.ErrNotFound)
		}
		return target, nil
	}
	var best *Node
	var bestLink *link
	for _, peer := range f.peersLocked(n.id) {
		target, l := f.nodes[peer], f.links[pairOf(n.id, peer)]
		if target.listeners[channel] == nil {
			continue
		}
		if best == nil || l.rtt < bestLink.rtt {
			best, bestLink = target, l
		}
	}
	if best == nil {
		return nil, fmt.Errorf("memtunnel: dial %q from node %q: no linked peer listens on that channel: %w", channel, n.id, sdk.ErrNotFound)
	}
	return best, nil
}

// newSession registers a session of this node; f.mu must be held.
func (n *Node) newSession(channel string, mode sdk.Mode, peer string) *session {
	n.f.nextID++
	s := &session{
		id:      fmt.Sprintf("%s/s%d", n.id, n.f.nextID),
		channel: channel,
		mode:    mode,
		node:    n,
		peer:    peer,
		in:      newQueue[*sdk.Message](n.queueSize),
	}
	n.sessions[s] = struct{}{}
	return s
}

// listener implements sdk.Listener.
type listener struct {
	node    *Node
	channel string
	backlog *queue[*session]
}

func (l *listener) Channel() string { return l.channel }

func (l *listener) Accept(ctx context.Context) (sdk.Session, error) {
	s, err := l.backlog.take(ctx)
	if err != nil {
		return nil, err
	}
	return s, nil
}

func (l *listener) Close() error {
	l.node.f.mu.Lock()
	defer l.node.f.mu.Unlock()
	l.closeLocked()
	return nil
}

// closeLocked stops accepting and closes sessions nobody accepted yet.
func (l *listener) closeLocked() {
	if l.node.listeners[l.channel] == l {
		delete(l.node.listeners, l.channel)
	}
	for _, s := range l.backlog.drain(ErrClosed) {
		s.closeLocked()
	}
}
